"""After the command: a git dir layer's changes (plan/gitsync.py) written into the
real git dir, the config merged key by key, the rest of what would run refused.

Order keeps the repository whole at every moment: new directories, then objects,
then the other data files, then refs, packed-refs and HEAD (a ref never names an
object not yet there), deletions last. Each file is written to a new name and renamed
over the old one. A file the host changed during the run too takes the run's version
(the last writer wins, as between two git processes: git itself locks a ref only
while it writes it); a config file is merged with the host's own changes.
"""

import os
import stat

from nsbox.plan import apply, overlay
from nsbox.plan.watch import Change, listing
from nsbox.policy import git_config

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CONFIGS = ("config", "config.worktree")


def conclude(held, ran: bool = True) -> tuple:
    """Apply every held layer (when the command ran), then remove the layers: the
    Change records of what was refused or could not be applied. A layer that failed
    part-way is kept, and said so."""
    report = []
    try:
        for layer, (parent, lower) in zip(held.layers, held.fds):
            name = os.path.basename(layer.dir)
            keep = False
            if ran:
                try:
                    report += (apply_layer(layer, parent, lower) if layer.dir
                               else revert_refused(layer, lower))
                except (OSError, apply.ApplyError, git_config.ConfigSyntaxError) as err:
                    keep = True
                    report.append(Change(layer.gitdir, f"not fully applied ({err}); the run's "
                                                       f"git changes are kept in {layer.dir}"))
            if not keep and layer.dir:
                try:
                    overlay.remove_tree(parent, name)
                except OSError:
                    pass
    finally:
        held.close()
    return tuple(report)


def apply_layer(layer, parent_fd: int, lower_fd: int, progress=None) -> list:
    """Apply one layer's changes; Change records for what was left out. `progress`
    (a session's, see Tracker): what earlier commands' applies saw, so that only what
    changed in the layer since is applied and reported again."""
    run_fd = os.open(os.path.basename(layer.dir), _DIR, dir_fd=parent_fd)
    try:
        upper_fd = os.open("upper", _DIR, dir_fd=run_fd)
    finally:
        os.close(run_fd)
    base = progress.base if progress is not None else dict(layer.base)
    try:
        entries = [e for e in overlay.changes(upper_fd, lower_fd) if not _transient(e.path)]
        if progress is not None:
            entries = progress.new(upper_fd, entries)
        report, data, configs = [], [], []
        refused_dirs = []
        for entry in entries:
            why = refusal(entry)
            if why and any(_under(entry.path, d) for d in refused_dirs):
                continue  # said once, for the directory
            if why and entry.kind == "dir":
                refused_dirs.append(entry.path)
                if entry.what == "created" and _only_samples(entry.path, entries):
                    continue  # git's template hooks (a clone's): never run, nothing to say
            if why:
                report.append(Change(os.path.join(layer.gitdir, entry.path), f"refused: {why}"))
            elif os.path.basename(entry.path) in _CONFIGS and entry.kind == "file":
                configs.append(entry)
            else:
                data.append(entry)
        # Only what the refusals left whole: nothing inside a refused directory.
        data = [e for e in data if not any(_under(e.path, d) for d in refused_dirs)]
        _, not_applicable = apply.write_entries(lower_fd, upper_fd, ordered(data))
        report += [Change(os.path.join(layer.gitdir, p), f"refused: {why}")
                   for p, why in not_applicable]
        for entry in configs:
            report += merge_config(layer, entry.path, base, upper_fd, lower_fd)
        return report
    finally:
        os.close(upper_fd)


def _only_samples(directory: str, entries) -> bool:
    return all(e.path.endswith(".sample") and e.kind == "file" and e.what == "created"
               for e in entries if e.path.startswith(directory + "/"))


def _transient(path: str) -> bool:
    """A lock or a temporary object git is writing (or an interrupted git left): never
    applied, and not worth a report."""
    name = path.rsplit("/", 1)[-1]
    return name.endswith(".lock") or (name.startswith(("tmp_", ".tmp-")) and "objects/" in path)


class Progress:
    """What a session's earlier applies of one layer saw: each changed entry's state in
    the upper layer, and each config file as the sandbox last wrote it (the base the next
    command's config changes are taken against)."""

    def __init__(self, layer):
        self.base = dict(layer.base)
        self.seen = {}

    def new(self, upper_fd: int, entries) -> list:
        out = []
        for entry in entries:
            now = _state(upper_fd, entry.path)
            if self.seen.get(entry.path, _UNSEEN) != now:
                self.seen[entry.path] = now
                out.append(entry)
        return out


_UNSEEN = object()


def _state(upper_fd: int, path: str):
    parent_rel, name = os.path.split(path)
    try:
        parent = overlay.open_beneath(upper_fd, parent_rel, layer=True)
    except OSError:
        return None
    try:
        info = os.stat(name, dir_fd=parent, follow_symlinks=False)
        return (info.st_mode, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
    except OSError:
        return None
    finally:
        os.close(parent)


class Tracker:
    """A Session's git layers: applied after each command (the overlay stays mounted for
    the session's life, so only what changed in it since the last apply is carried over:
    a file the host changed meanwhile is not overwritten by the sandbox's older copy),
    and a last time, then removed, at close."""

    def __init__(self, layers):
        import threading

        from nsbox.plan import gitsync

        self.held = gitsync.Held(layers)
        self.progress = [Progress(layer) for layer in self.held.layers]
        self.lock = threading.Lock()

    def apply(self) -> tuple:
        report = []
        with self.lock:
            for layer, (parent, lower), progress in zip(self.held.layers, self.held.fds,
                                                        self.progress):
                try:
                    report += (apply_layer(layer, parent, lower, progress) if layer.dir
                               else revert_refused(layer, lower, progress))
                except (OSError, apply.ApplyError, git_config.ConfigSyntaxError) as err:
                    report.append(Change(layer.gitdir, f"not fully applied ({err})"))
        return tuple(report)

    def close(self) -> tuple:
        """After the session's sandbox has ended: the last apply, then the layers go."""
        report = self.apply()
        with self.lock:
            for layer, (parent, _) in zip(self.held.layers, self.held.fds):
                if layer.dir:
                    try:
                        overlay.remove_tree(parent, os.path.basename(layer.dir))
                    except OSError:
                        pass
            self.held.close()
        return report


def refusal(entry) -> str:
    """'' when this change of a git dir may be applied as it is; else why not."""
    parts = entry.path.split("/")
    name = parts[-1]
    if entry.kind == "symlink":
        return "a symlink in a git dir"
    nested = parts[0] == "modules"  # a submodule's git dir: names may hold anything
    top = parts if not nested else parts[1:]
    if any(p in ("hooks", "worktrees") for p in (top if nested else parts[:1])):
        return "a hook git runs" if "hooks" in parts else "a worktree's link to a checkout"
    if name.endswith(".lock"):
        return "a lock file an interrupted git left behind"
    if name in ("commondir", "gitdir") and (len(parts) == 1 or nested):
        return "it redirects git to another directory"
    if name in ("alternates", "http-alternates") and parts[-3:-1] == ["objects", "info"]:
        return "it makes git read objects from another directory"
    if name == "attributes" and parts[-2:-1] == ["info"]:
        return "it chooses the filters and diff drivers git runs"
    if name in _CONFIGS and (len(parts) == 1 or nested):
        if entry.what == "deleted":
            return "removing a config file"
        if entry.kind != "file":
            return "a config file that is not a regular file"
    return ""


def ordered(entries) -> list:
    """New directories first (parents before children), then objects, other data, refs
    and HEAD; deletions last."""
    def rank(entry) -> tuple:
        parts = entry.path.split("/")
        if entry.what == "deleted":
            group = 5
        elif entry.kind == "dir":
            group = 0
        elif "objects" in parts[:-1]:
            group = 1
        elif parts[-1] in ("HEAD", "packed-refs") or "refs" in parts[:-1]:
            group = 3
        else:
            group = 2
        return (group, entry.path)

    return sorted(entries, key=rank)


def merge_config(layer, rel: str, bases: dict, upper_fd: int, lower_fd: int) -> list:
    """Write the sandbox's allowed changes to the config file `rel` into the real one
    (one rename); Change records for the refused ones. `bases[rel]` becomes the
    sandbox's file: what a later apply (in a session) compares with."""
    source = overlay.open_beneath(upper_fd, rel, os.O_RDONLY | os.O_NONBLOCK, layer=True)
    try:
        if not stat.S_ISREG(os.fstat(source).st_mode):
            return [Change(os.path.join(layer.gitdir, rel),
                           "refused: a config file that is not a regular file")]
        sandbox = _read_all(source)
    finally:
        os.close(source)
    report = _write_merged(layer, rel, bases.get(rel), sandbox, lower_fd)
    bases[rel] = sandbox
    return report


def revert_refused(layer, lower_fd: int, progress=None) -> list:
    """Without an overlay (landlock-only isolation) the command wrote the real config
    files: each changed one loses the changes a sandbox may not make (one rename)."""
    from nsbox.plan import gitsync

    base = progress.base if progress is not None else dict(layer.base)
    report = []
    for rel in base:  # a config file replaced by a link (git follows it) or a directory
        path = os.path.join(layer.gitdir, rel)
        if os.path.lexists(path) and not (os.path.isfile(path) and not os.path.islink(path)):
            report += _restore(layer, rel, base[rel], lower_fd)
    for rel, now in gitsync.config_files(layer.gitdir):
        if now is not None and now != base.get(rel):
            report += _write_merged(layer, rel, base.get(rel), now, lower_fd, revert=True)
            base[rel] = gitsync.read_file(os.path.join(layer.gitdir, rel))
    return [Change(c.path, c.what.replace("refused:", "refused (undone):", 1)) for c in report]


def _restore(layer, rel: str, content, lower_fd: int) -> list:
    """Put back a config file as it was at the start (or remove what stands in its
    place when there was none)."""
    parent_rel, name = os.path.split(rel)
    parent = overlay.open_beneath(lower_fd, parent_rel)
    try:
        if content is None:
            overlay.remove_tree(parent, name)
        else:
            _replace(parent, name, content, 0o644)
    finally:
        os.close(parent)
    return [Change(os.path.join(layer.gitdir, rel),
                   "refused (undone): a config file replaced by a link or directory")]


def _replace(parent: int, name: str, content: bytes, mode: int) -> None:
    """`content` as `name` in `parent`: a new file renamed over whatever is there."""
    tmp = f".nsbox-git-{os.urandom(6).hex()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600, dir_fd=parent)
    try:
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view):]
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        info = os.stat(name, dir_fd=parent, follow_symlinks=False)
        if stat.S_ISDIR(info.st_mode):
            overlay.remove_tree(parent, name)
    except FileNotFoundError:
        pass
    os.rename(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)


def _write_merged(layer, rel: str, base, sandbox: bytes, lower_fd: int,
                  revert: bool = False) -> list:
    real_path = os.path.join(layer.gitdir, rel)
    parent_rel, name = os.path.split(rel)
    parent = overlay.open_beneath(lower_fd, parent_rel)
    try:
        real, mode = _read_real(parent, name)
        in_module = rel.split("/")[0] == "modules"
        try:
            outcome = git_config.merge(base or b"", real or b"", sandbox, in_module=in_module,
                                       revert=revert)
        except git_config.ConfigSyntaxError as err:
            if revert:  # unreadable as git reads it: back to what it was (or nothing)
                outcome = git_config.Outcome(base or b"", (), ((rel, f"unreadable ({err})"),))
            else:
                return [Change(real_path, f"refused: not read as git reads it ({err})")]
        if outcome.text is not None:
            _replace(parent, name, outcome.text, mode)
    finally:
        os.close(parent)
    return [Change(real_path, f"refused: {key}: {why}") for key, why in outcome.refused]


def _read_real(parent: int, name: str) -> tuple:
    """(content or None, mode to write) of the real config file, never following a link."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=parent)
    except FileNotFoundError:
        return None, 0o644
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise apply.ApplyError(f"{name} in the real git dir is not a regular file")
        return _read_all(fd), stat.S_IMODE(info.st_mode)
    finally:
        os.close(fd)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def summary(changes, cwd: str = "") -> str:
    """One stderr line for what a run's git changes left out, or ''."""
    if not changes:
        return ""
    return ("git: left out of the repository what would run commands outside the "
            "sandbox: " + listing(changes, cwd, "; "))


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")
