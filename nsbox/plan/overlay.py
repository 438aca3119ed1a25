"""Copy-on-write workspaces: each overlay run's directory, and what the run changed.

In overlay mode (Policy.workspace_mode) the sandbox sees the workspace as an
overlayfs: the real tree below, never written, and above it this run's own
`<state>/runs/<id>/upper`, which takes every write. The state directory is hidden
in every sandbox, so no command can reach a run's layers except through the mount.
After the run the manifest is read from the upper layer alone (its cost grows with
what changed, not with the workspace): overlayfs marks a deletion with a whiteout
(a character device 0:0, or a file carrying user.overlay.whiteout) and a directory
that replaced a lower one wholesale with user.overlay.opaque=y. A file rename shows
as a deletion and a creation; overlayfs refuses to rename directories here
(redirect_dir is off with userxattr), so tools copy them, and it shows the same way.

Every walk opens one component at a time with O_NOFOLLOW, relative to descriptors:
`nsbox exec` computes the manifest after the run from inside the sandbox's mount
namespace, where the workspace's path names the overlay, through descriptors it
took before the launch.

The policy's extra writable roots (`writable`, `--writable DIR`) are overlaid the same
way, each with its own `roots/<n>/{upper,work}`; nsbox's cache area and the private
/tmp are not. Manifest paths of the workspace stay relative to it; those of an extra
root are absolute host paths, so an entry names the root it lies in. A root inside
another overlaid root is part of that one's overlay; a root that holds the workspace
is refused (see plan/prepare.py).
"""

import errno
import os
import stat
import time

from nsbox.kernel import mounts
from nsbox.plan.layer_dirs import LayerDirs, make_upper_work, remove_tree
from nsbox.plan.watch import Change

RUNS = "runs"
ROOTS = "roots"  # a run's extra writable roots' layers: <run>/roots/<n>/{upper,work}
# Runs that changed nothing wait here to be removed while a later run starts (sweep):
# removing an overlay's directories costs a journal write per directory.
GONE = "gone"
META = "meta.json"
MANIFEST = "manifest.json"
OPAQUE_XATTR = "user.overlay.opaque"
WHITEOUT_XATTR = "user.overlay.whiteout"
# Linux's CLOCK_REALTIME_COARSE: the clock ctimes are stamped with (see start_stamp).
CLOCK_REALTIME_COARSE = 5
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Run(LayerDirs):
    """One overlay run's directory: <state>/runs/<id>/{upper,work,meta.json,manifest.json},
    and roots/<n>/{upper,work} for the n-th extra writable root."""
    id: str
    dir: str
    workspace: str  # the real tree: the overlay's lower layer
    policy: object = None  # the run's Policy: its digest is recorded once the run is kept
    roots: tuple = ()  # the extra writable roots, overlaid too (absolute host paths)
    started_ns: int = 0  # see start_stamp

    def layers(self) -> tuple:
        """((root, upper, work), ...) of every overlaid root, as mount_steps takes them."""
        return tuple((part.workspace, part.upper, part.work) for _, part in self.parts())

    def parts(self) -> list:
        """(manifest prefix, Run of one root's layers): the workspace's first (prefix ''),
        then each extra root's (prefix: its path)."""
        return [("", self)] + [
            (root, Run(id=self.id, dir=os.path.join(self.dir, ROOTS, str(n)), workspace=root))
            for n, root in enumerate(self.roots)]

    def locate(self, path: str) -> tuple:
        """(prefix, Run of the root, path relative to that root) of a manifest path."""
        if os.path.isabs(path):
            found = [(prefix, part) for prefix, part in self.parts()[1:]
                     if path == prefix or path.startswith(prefix + "/")]
            if found:
                prefix, part = max(found, key=lambda f: len(f[0]))
                return prefix, part, os.path.relpath(path, prefix) if path != prefix else ""
            raise ValueError(f"{path} lies in none of run {self.id}'s roots")
        return "", self, path

    def manifest_path(self, path: str) -> str:
        """A user's path (absolute, or relative to the workspace) as the manifest names
        it: relative inside the workspace, absolute inside an extra root."""
        full = os.path.normpath(os.path.join(self.workspace, path))
        if full == self.workspace or full.startswith(self.workspace.rstrip("/") + "/"):
            return os.path.relpath(full, self.workspace) if full != self.workspace else ""
        return full


def by_root(run: Run, entries) -> list:
    """(Run of one root, [(entry, the same with its path relative to that root)]) for
    the roots the entries lie in, the workspace's first."""
    groups = {}
    for entry in entries:
        prefix, part, rel = run.locate(entry.path)
        pairs = groups.setdefault(prefix, (part, []))[1]
        pairs.append((entry, entry if not prefix else Change(**{**entry.as_dict(),
                                                                 "path": rel})))
    return [groups[p] for p, _ in run.parts() if p in groups]


def runs_dir(state_dir: str) -> str:
    return os.path.join(state_dir, RUNS)


def plan_run(state_dir: str, workspace: str, policy=None, roots: tuple = ()) -> Run:
    """A new run's name and paths; nothing is created (see create). `roots`: the extra
    writable roots overlaid too."""
    run_id = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + os.urandom(3).hex()
    return Run(id=run_id, dir=os.path.join(runs_dir(state_dir), run_id), workspace=workspace,
               policy=policy, roots=roots, started_ns=start_stamp())


def create(run: Run, argv, policy_digest: str = "", meta: bool = True) -> None:
    """Make the run's directories (0700, as the state directory) and its metadata
    (without `meta`, the caller writes it: write_meta). Without `policy_digest`,
    conclude() records the digest of run.policy, and only if the run is kept: hashing
    a policy costs `nsbox exec` an import before the command."""
    os.makedirs(os.path.dirname(run.dir), mode=0o700, exist_ok=True)
    os.mkdir(run.dir, 0o700)
    make_upper_work(run, run.workspace)  # the upper layer's root is the workspace's root
    if run.roots:
        os.mkdir(os.path.join(run.dir, ROOTS), 0o700)
        for _, part in run.parts()[1:]:
            os.mkdir(part.dir, 0o700)
            make_upper_work(part, part.workspace)
    if meta:
        _write_small_json(run.dir, META, _meta(run, argv, policy_digest))


def write_meta(held, argv) -> None:
    """create()'s metadata, written later through the held descriptors (`nsbox exec`
    writes it while the sandbox starts, when it would only wait)."""
    run_fd = os.open(held.run.id, _DIR, dir_fd=held.runs_fd)
    try:
        _write_small_json(run_fd, META, _meta(held.run, argv))
    finally:
        os.close(run_fd)


def _meta(run: Run, argv, policy_digest: str = "") -> dict:
    meta = {"id": run.id, "workspace": run.workspace, "command": list(argv),
            "started_ns": run.started_ns or start_stamp()}
    if run.roots:
        meta["roots"] = list(run.roots)
    if policy_digest:
        meta["policy_digest"] = policy_digest
    return meta


def start_stamp() -> int:
    """The run's start for ctime comparisons (apply: changed since the start when
    ctime >= it): the coarse clock now. A ctime is stamped from that clock, or from a
    finer one (multigrain timestamps) never behind it, so a real file changed after
    this call has a ctime no older: no change is missed. One changed in the same tick
    just before may compare as changed too, which only asks for --force."""
    return time.clock_gettime_ns(CLOCK_REALTIME_COARSE)


class Held:
    """Descriptors of the runs' directory and of the real workspace, taken before the
    launch: afterwards `nsbox exec` sees the sandbox's mounts, where neither path leads
    there."""

    def __init__(self, run: Run):
        self.run = run
        self.runs_fd = os.open(os.path.dirname(run.dir), _DIR)
        self.lower_fds = []  # the workspace's, then each extra root's
        try:
            for _, part in run.parts():
                self.lower_fds.append(os.open(part.workspace, _DIR))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        os.close(self.runs_fd)
        for fd in self.lower_fds:
            os.close(fd)


def conclude(held: Held, ran: bool = True, defer_removal: bool = False) -> tuple:
    """After the run: (its manifest as Change records with absolute paths, the run id).
    The manifest is saved as manifest.json in the run's directory; a run that changed
    nothing, or never ran, is removed (run id None); with `defer_removal` it is only
    moved aside, for a later run's sweep()."""
    try:
        entries = []
        if ran:
            run_fd = os.open(held.run.id, _DIR, dir_fd=held.runs_fd)
            try:
                for (prefix, part), lower in zip(held.run.parts(), held.lower_fds):
                    upper = os.open(os.path.relpath(part.upper, held.run.dir), _DIR,
                                    dir_fd=run_fd)
                    try:
                        entries += _prefixed(changes(upper, lower), prefix)
                    finally:
                        os.close(upper)
                if entries:
                    _write_json(run_fd, MANIFEST, {"workspace": held.run.workspace,
                                                   "entries": [e.as_dict() for e in entries]})
                    _record_digest(run_fd, held.run)
                    # The layer is mounted volatile (syncs inside the sandbox are no-ops):
                    # once kept, it goes to disk.
                    mounts.sync_filesystem(run_fd)
            finally:
                os.close(run_fd)
        if not entries:
            if not (defer_removal and _move_aside(held.runs_fd, held.run.id)):
                remove_tree(held.runs_fd, held.run.id)
            return (), None
        return tuple(absolute(entries, held.run.workspace)), held.run.id
    finally:
        held.close()


def _move_aside(runs_fd: int, name: str) -> bool:
    """Rename run `name` into <state>/gone (made if missing); False if that failed."""
    target = f"../{GONE}/{name}"
    try:
        os.rename(name, target, src_dir_fd=runs_fd, dst_dir_fd=runs_fd)
    except FileNotFoundError:
        try:
            os.mkdir(f"../{GONE}", 0o700, dir_fd=runs_fd)
            os.rename(name, target, src_dir_fd=runs_fd, dst_dir_fd=runs_fd)
        except OSError:
            return False
    except OSError:
        return False
    return True


def sweep(runs_fd: int, most: int | None = 2) -> None:
    """Remove up to `most` (None: all) runs moved aside by earlier runs (each run adds
    at most one, so a backlog shrinks); best effort, as another nsbox may be sweeping
    them too. `nsbox exec` calls it while the sandbox starts, when it would only wait."""
    try:
        gone = os.open(f"../{GONE}", _DIR, dir_fd=runs_fd)
    except OSError:
        return
    try:
        for name in os.listdir(gone)[:most]:
            try:
                remove_tree(gone, name)
            except OSError:
                pass
    finally:
        os.close(gone)


def _record_digest(run_fd: int, run: Run) -> None:
    """A kept run's meta gains its policy's digest (see create)."""
    import json

    if run.policy is None:
        return
    from nsbox.plan.prepare import policy_digest

    fd = os.open(META, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=run_fd)
    with open(fd) as f:
        meta = json.load(f)
    if "policy_digest" not in meta:
        meta["policy_digest"] = policy_digest(run.policy)
        _write_json(run_fd, META, meta)


def _prefixed(entries, prefix: str) -> list:
    """An extra root's entries named by absolute path (the workspace's stay relative)."""
    if not prefix:
        return entries
    return [Change(**{**e.as_dict(), "path": os.path.join(prefix, e.path)}) for e in entries]


def absolute(entries, workspace: str) -> list:
    return [Change(**{**e.as_dict(), "path": os.path.join(workspace, e.path)}) for e in entries]


def summary(entries) -> str:
    """`3 created, 2 modified, 1 deleted`; mode and type changes counted as modified."""
    created = sum(e.what == "created" for e in entries)
    deleted = sum(e.what == "deleted" for e in entries)
    return f"{created} created, {len(entries) - created - deleted} modified, {deleted} deleted"


# --- the manifest ------------------------------------------------------------------

def changes(upper_fd: int, lower_fd: int) -> list:
    """What applying the upper layer would change in the lower tree, by relative path:
    Change(path, what: created | modified | deleted | mode | type changed, kind: file
    | dir | symlink | other, size, sha256, mode, target). A deleted directory is one entry."""
    out = []
    _walk(upper_fd, lower_fd, "", False, out)
    return out


def _walk(upper_fd: int, lower_fd, rel: str, replaces: bool, out: list) -> None:
    """`replaces`: this directory stands for the lower one wholesale (opaque, or new),
    so lower entries it lacks are deleted."""
    names = sorted(os.listdir(upper_fd))
    for name in names:
        path = f"{rel}/{name}" if rel else name
        info = os.stat(name, dir_fd=upper_fd, follow_symlinks=False)
        below = _lstat(lower_fd, name)
        if _is_whiteout(upper_fd, name, info):
            if below is not None:
                out.append(Change(path, "deleted", kind=_kind(below.st_mode)))
            continue
        kind = _kind(info.st_mode)
        if kind == "dir":
            _directory(upper_fd, lower_fd, name, path, info, below, out, replaces)
        elif kind == "file":
            _file(upper_fd, lower_fd, name, path, info, below, out)
        elif kind == "symlink":
            target = os.readlink(name, dir_fd=upper_fd)
            if below is None or not stat.S_ISLNK(below.st_mode):
                out.append(Change(path, _new_or_replaced(below), kind=kind, target=target))
            elif os.readlink(name, dir_fd=lower_fd) != target:
                out.append(Change(path, "modified", kind=kind, target=target))
        else:  # a FIFO, socket or device node: reported, never applied
            out.append(Change(path, _new_or_replaced(below), kind="other",
                              mode=stat.S_IMODE(info.st_mode)))
    if replaces and lower_fd is not None:
        present = set(names)
        for name in sorted(os.listdir(lower_fd)):
            if name not in present:
                below = os.stat(name, dir_fd=lower_fd, follow_symlinks=False)
                out.append(Change(f"{rel}/{name}" if rel else name, "deleted",
                                  kind=_kind(below.st_mode)))


def _directory(upper_fd, lower_fd, name, path, info, below, out, parent_replaces) -> None:
    mode = stat.S_IMODE(info.st_mode)
    child = open_layer(upper_fd, name, _DIR)
    lower_child = None
    try:
        if below is not None and stat.S_ISDIR(below.st_mode):
            if stat.S_IMODE(below.st_mode) != mode:
                out.append(Change(path, "mode", kind="dir", mode=mode))
            lower_child = os.open(name, _DIR, dir_fd=lower_fd)
            # Below an opaque directory no lower entry shows, whether or not this
            # one (made there afresh, not over a whiteout) is marked opaque itself.
            _walk(child, lower_child, path,
                  parent_replaces or _xattr(child, OPAQUE_XATTR) == b"y", out)
        else:
            out.append(Change(path, _new_or_replaced(below), kind="dir", mode=mode))
            _walk(child, None, path, False, out)
    finally:
        os.close(child)
        if lower_child is not None:
            os.close(lower_child)


def _file(upper_fd, lower_fd, name, path, info, below, out) -> None:
    mode = stat.S_IMODE(info.st_mode)
    digest = file_sha256(upper_fd, name, layer=True)
    if below is None or not stat.S_ISREG(below.st_mode):
        out.append(Change(path, _new_or_replaced(below), kind="file", size=info.st_size,
                          sha256=digest, mode=mode))
    elif below.st_size != info.st_size or file_sha256(lower_fd, name) != digest:
        out.append(Change(path, "modified", kind="file", size=info.st_size, sha256=digest,
                          mode=mode))
    elif stat.S_IMODE(below.st_mode) != mode:
        out.append(Change(path, "mode", kind="file", size=info.st_size, sha256=digest,
                          mode=mode))
    # else: copied up (opened for writing, touched) with nothing changed


def _new_or_replaced(below) -> str:
    return "created" if below is None else "type changed"


def _is_whiteout(dir_fd: int, name: str, info) -> bool:
    if stat.S_ISCHR(info.st_mode):
        return info.st_rdev == 0
    if stat.S_ISREG(info.st_mode) and info.st_size == 0:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=dir_fd)
        try:
            return _xattr(fd, WHITEOUT_XATTR) is not None
        finally:
            os.close(fd)
    return False


def _xattr(fd: int, name: str):
    try:
        return os.getxattr(fd, name)
    except OSError as err:
        if err.errno in (errno.ENODATA, errno.ENOTSUP):
            return None
        raise


def _lstat(dir_fd, name: str):
    if dir_fd is None:
        return None
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


def file_sha256(dir_fd: int, name: str, layer: bool = False) -> str:
    """The SHA-256 of a regular file; `layer`: in a run's upper layer (see open_layer)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    if layer:
        fd = open_layer(dir_fd, name, flags)
    else:
        try:
            fd = os.open(name, flags, dir_fd=dir_fd)
        except PermissionError:
            return ""  # an unreadable real file: compared as different
    import hashlib  # only runs that changed a file hash it

    try:
        digest = hashlib.sha256()
        while chunk := os.read(fd, 1 << 20):
            digest.update(chunk)
        return digest.hexdigest()
    finally:
        os.close(fd)


# --- kept runs -----------------------------------------------------------------------

def open_layer(dir_fd: int, name: str, flags: int) -> int:
    """Open an entry of a run's upper layer, which nsbox owns: a command may have taken
    its owner's rights away (chmod 000), and without the user namespace's capabilities
    (the library, `nsbox apply`) they are given back first. The manifest keeps the mode
    the command set, and apply writes that one."""
    try:
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except PermissionError:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISLNK(info.st_mode) or info.st_uid != os.geteuid():
            raise
        wanted = 0o700 if stat.S_ISDIR(info.st_mode) else 0o600
        os.chmod(name, stat.S_IMODE(info.st_mode) | wanted, dir_fd=dir_fd)
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)


def open_beneath(root_fd: int, rel: str, final=_DIR, layer: bool = False) -> int:
    """An fd for `rel` below `root_fd`, never following a symlink on the way: each
    directory is opened with O_NOFOLLOW, the last component with the `final` flags.
    `layer`: below a run's upper layer (see open_layer)."""
    opener = open_layer if layer else (
        lambda fd, name, flags: os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd))
    parts = [p for p in rel.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise OSError(errno.EINVAL, "not a plain relative path", rel)
    fd = os.dup(root_fd)
    try:
        for part in parts[:-1]:
            nxt = opener(fd, part, _DIR)
            os.close(fd)
            fd = nxt
        if not parts:
            return fd
        last = opener(fd, parts[-1], final)
        os.close(fd)
        return last
    except BaseException:
        os.close(fd)
        raise


def load(state_dir: str, run_id: str) -> tuple:
    """(Run, meta, manifest entries with relative paths) of a kept run; LookupError if
    there is no such run."""
    import json

    directory, meta = load_entry(runs_dir(state_dir), run_id, META, f"no kept run {run_id!r}",
                                 "; `nsbox changes` lists them")
    run = Run(id=run_id, dir=directory, workspace=meta["workspace"],
              roots=tuple(meta.get("roots", ())))
    try:
        with open(os.path.join(directory, MANIFEST)) as f:
            entries = [Change(**e) for e in json.load(f)["entries"]]
    except FileNotFoundError:  # the run did not end normally: read its upper layer now
        entries = recompute(run)
    return run, meta, entries


def load_entry(top: str, name: str, filename: str, missing: str, hint: str = "") -> tuple:
    """(directory, JSON of its `filename`) of the entry `name` of directory `top`;
    LookupError(missing) for a name that is not a plain entry, and with `hint` added
    when it has no such file."""
    import json

    if not name or "/" in name or name.startswith("."):
        raise LookupError(missing)
    directory = os.path.join(top, name)
    try:
        with open(os.path.join(directory, filename)) as f:
            return directory, json.load(f)
    except FileNotFoundError:
        raise LookupError(missing + hint) from None


def recompute(run: Run) -> list:
    """The manifest read from the run's upper layers now (every root's)."""
    out = []
    for prefix, part in run.parts():
        upper = os.open(part.upper, _DIR)
        try:
            lower = os.open(part.workspace, _DIR)
            try:
                out += _prefixed(changes(upper, lower), prefix)
            finally:
                os.close(lower)
        finally:
            os.close(upper)
    return out


def save_manifest(run: Run, entries) -> None:
    _write_json(run.dir, MANIFEST, {"workspace": run.workspace,
                                    "entries": [e.as_dict() for e in entries]})


def kept(state_dir: str) -> list:
    """(id, meta, entry count or None) of every kept run, oldest first."""
    try:
        names = sorted(os.listdir(runs_dir(state_dir)))
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        try:
            _, meta, entries = load(state_dir, name)
        except (LookupError, OSError, ValueError, KeyError):
            continue
        out.append((name, meta, entries))
    return out


def discard(run: Run) -> None:
    """Remove a kept run's directory."""
    parent = os.open(os.path.dirname(run.dir), _DIR)
    try:
        remove_tree(parent, os.path.basename(run.dir))
    finally:
        os.close(parent)


def _write_json(directory, name: str, data: dict) -> None:
    """A new file renamed over `name` in `directory` (a path or a directory fd)."""
    import json

    _write_text(directory, name, json.dumps(data, indent=1))


def _write_small_json(directory, name: str, data: dict) -> None:
    """_write_json for a flat dict of strings, ints and lists of strings, without the
    json package (it imports re): before every overlay run, on `nsbox exec`'s path."""
    def quote(text: str) -> str:
        if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
            return f'"{text}"'  # JSON as it is; most paths and arguments are
        from _json import encode_basestring_ascii

        return encode_basestring_ascii(text)

    def value(v):
        if isinstance(v, str):
            return quote(v)
        if isinstance(v, int):
            return str(v)
        return "[" + ", ".join(quote(item) for item in v) + "]"

    _write_text(directory, name, "{\n" + ",\n".join(
        f" {quote(key)}: {value(v)}" for key, v in data.items()) + "\n}")


def _write_text(directory, name: str, text: str) -> None:
    dir_fd = directory if isinstance(directory, int) else os.open(
        directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        tmp = f".{name}.{os.urandom(4).hex()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=dir_fd)
        with open(fd, "w") as f:
            f.write(text)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    finally:
        if not isinstance(directory, int):
            os.close(dir_fd)
