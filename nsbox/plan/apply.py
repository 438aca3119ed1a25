"""Applying a kept overlay run (plan/overlay.py) to the real workspace, or part of it.

Three rules keep it safe:
- Protected paths are not applied unless named: what runs later outside a sandbox
  (policy.defaults.PROTECTED at any depth, git dirs' GIT_PROTECTED: hooks, config,
  redirects) and every `.git` entry itself. Applying `.git/config` only when asked is
  what makes a run's git config changes safe: that file can name commands git runs.
- Conflicts stop the whole apply before anything is written: a real path that changed
  since the run started (its ctime, which no process can set, is not older than the
  run's start), appeared where the run created one, or vanished where the run changed
  one. `force` applies over them.
- Nothing follows a symlink: each directory on the way is opened with O_NOFOLLOW, files
  are written to a new name in their directory and renamed over the old one.
"""

import errno
import fnmatch
import hashlib
import os
import stat

from nsbox.plan import overlay
from nsbox.policy import defaults
from nsbox.record import Record

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Conflict(Record):
    path: str  # relative to the workspace
    why: str


class Outcome(Record):
    applied: tuple  # Change records, relative paths
    skipped_protected: tuple  # relative paths left out as protected
    not_applicable: tuple = ()  # (path, why): FIFOs, sockets, device nodes


class ApplyError(Exception):
    pass


def is_protected(path: str, home: str = "", workspace: str = "") -> bool:
    """`path` (relative to the workspace) is execution-sensitive: a PROTECTED entry at
    any depth, a `.git` entry itself, or a GIT_PROTECTED path inside a git dir."""
    parts = [p for p in path.split("/") if p]
    for i in range(len(parts)):
        rest = parts[i:]
        if rest[0] == ".git":
            if len(rest) == 1 or _matches_any(rest[1:], defaults.GIT_PROTECTED):
                return True
        if _matches_any(rest, [e for e in defaults.PROTECTED if not e.startswith("~")]):
            return True
    if home and workspace:  # a workspace that holds the home: its shell start-up files
        full = os.path.join(workspace, path)
        for entry in defaults.PROTECTED:
            if entry.startswith("~/"):
                top = home.rstrip("/") + entry[1:].rstrip("/")
                if full == top or full.startswith(top + "/"):
                    return True
    return False


def _matches_any(parts: list, patterns) -> bool:
    for pattern in patterns:
        want = pattern.rstrip("/").split("/")
        if len(parts) >= len(want) and all(fnmatch.fnmatchcase(p, w)
                                           for p, w in zip(parts, want)):
            return True
    return False


def with_new_parents(entries, chosen) -> list:
    """The chosen entries and the new directories they lie in, sorted by path."""
    by_path = {e.path: e for e in entries}
    out = list(chosen)
    for entry in chosen:
        parent = os.path.dirname(entry.path)
        while parent and parent != "/":  # "/": above an extra root's absolute paths
            made = by_path.get(parent)
            if made is not None and made.what in ("created", "type changed") and made not in out:
                out.append(made)
            parent = os.path.dirname(parent)
    return sorted(out, key=lambda e: e.path)


def select(entries, paths=(), include_protected=(), home: str = "", workspace: str = ""):
    """(entries to apply, protected paths left out). `paths`: only changes at or below
    them (with the new directories they need); ApplyError for a path with no change."""
    entries = sorted(entries, key=lambda e: e.path)
    chosen = list(entries)
    if paths:
        chosen = []
        for wanted in (_clean(p) for p in paths):
            found = [e for e in entries if _under(e.path, wanted)]
            if not found:
                above = [e for e in entries if _under(wanted, e.path)]
                if above:
                    raise ApplyError(f"{wanted} is inside {above[0].path}, which the run "
                                     f"{'deleted' if above[0].what == 'deleted' else 'replaced'}:"
                                     f" apply {above[0].path}")
                raise ApplyError(f"the run changed nothing at {wanted}")
            chosen += [e for e in found if e not in chosen]
        chosen = with_new_parents(entries, chosen)
    allowed = [_clean(p) for p in include_protected]
    kept, skipped = [], []
    for entry in chosen:
        if is_protected(entry.path, home, workspace) and not any(
                _under(entry.path, a) for a in allowed):
            skipped.append(entry.path)
        else:
            kept.append(entry)
    # A change inside a protected path that is left out can't be applied either.
    kept = [e for e in kept if not any(_under(e.path, s) for s in skipped)]
    return kept, skipped


def conflicts(workspace_fd: int, entries, started_ns: int) -> list:
    """What changed in the real tree since the run started, where the run changed it."""
    found = []
    chosen = {e.path for e in entries}
    for entry in entries:
        info = _lstat_beneath(workspace_fd, entry.path)
        if info is _UNREACHABLE:
            parent = os.path.dirname(entry.path)
            if parent not in chosen:
                found.append(Conflict(entry.path, "a directory above it is gone or was "
                                                  "replaced since the run started"))
            continue
        if entry.what == "created":
            if info is not None:
                found.append(Conflict(entry.path, "it exists now; the run created it"))
        elif info is None:
            if entry.what != "deleted":
                found.append(Conflict(entry.path, "it was removed since the run started"))
        elif _changed_since(workspace_fd, entry.path, info, started_ns,
                            deep=entry.what in ("deleted", "type changed")):
            found.append(Conflict(entry.path, "it changed since the run started"))
    return found


def apply(run: overlay.Run, entries, force: bool = False, started_ns: int = 0) -> list:
    """Write `entries` (from select) into the real workspace and extra roots; ApplyError
    listing the conflicts (nothing written) unless `force`. Returns the entries applied
    and the (path, why) of those that can't be (FIFOs, sockets, devices)."""
    if not force:
        found = run_conflicts(run, entries, started_ns)
        if found:
            lines = "\n".join(f"  {c.path}: {c.why}" for c in found)
            raise ApplyError(f"not applied: the real workspace changed where the run did:"
                             f"\n{lines}\npass --force to apply over these changes")
    applied, not_applicable = [], []
    for part, pairs in overlay.by_root(run, entries):
        original = {rel.path: entry for entry, rel in pairs}
        workspace_fd = os.open(part.workspace, _DIR)
        try:
            upper_fd = os.open(part.upper, _DIR)
            try:
                done, odd = write_entries(workspace_fd, upper_fd, [rel for _, rel in pairs])
            finally:
                os.close(upper_fd)
        finally:
            os.close(workspace_fd)
        applied += [original[e.path] for e in done]
        not_applicable += [(original[path].path, why) for path, why in odd]
    return applied, not_applicable


def run_conflicts(run: overlay.Run, entries, started_ns: int) -> list:
    """conflicts() in each of the run's roots, paths as the manifest names them."""
    found = []
    for part, pairs in overlay.by_root(run, entries):
        original = {rel.path: entry for entry, rel in pairs}
        fd = os.open(part.workspace, _DIR)
        try:
            found += [Conflict(original[c.path].path, c.why)
                      for c in conflicts(fd, [rel for _, rel in pairs], started_ns)]
        finally:
            os.close(fd)
    return found


def write_entries(workspace_fd: int, upper_fd: int, entries) -> tuple:
    """Write `entries` in their order, each file atomically (also for git dirs, see
    plan/gitapply.py): (entries applied, (path, why) of those that can't be)."""
    applied, not_applicable = [], []
    for entry in entries:
        if entry.kind == "other" and entry.what != "deleted":
            not_applicable.append((entry.path, "a FIFO, socket or device node"))
            continue
        _apply_one(workspace_fd, upper_fd, entry)
        applied.append(entry)
    # New directories' modes last, deepest first: a directory the command made
    # unwritable (or 000) still had its content written into it.
    for entry in sorted(applied, key=lambda e: e.path, reverse=True):
        if entry.kind == "dir" and entry.what != "deleted":
            parent_rel, name = os.path.split(entry.path)
            parent = overlay.open_beneath(workspace_fd, parent_rel)
            try:
                _chmod(parent, name, entry)
            finally:
                os.close(parent)
    return applied, not_applicable


def _apply_one(workspace_fd: int, upper_fd: int, entry) -> None:
    parent_rel, name = os.path.split(entry.path)
    parent = overlay.open_beneath(workspace_fd, parent_rel)
    try:
        existing = _lstat(parent, name)
        if entry.what == "deleted":
            if existing is not None:
                overlay.remove_tree(parent, name)
        elif entry.kind == "dir" and entry.what == "mode":
            pass  # with the other directories' modes, at the end
        elif entry.what == "mode":
            _chmod(parent, name, entry)
        elif entry.kind == "dir":
            if existing is not None and not stat.S_ISDIR(existing.st_mode):
                os.unlink(name, dir_fd=parent)
                existing = None
            if existing is None:
                os.mkdir(name, 0o700, dir_fd=parent)  # its mode once its content is in
        elif entry.kind == "symlink":
            tmp = _temp_name()
            os.symlink(entry.target, tmp, dir_fd=parent)
            _rename_over(parent, tmp, name, existing)
        elif entry.kind == "file":
            tmp = _copy_from_upper(upper_fd, entry, parent)
            _rename_over(parent, tmp, name, existing)
    finally:
        os.close(parent)


def _chmod(parent: int, name: str, entry) -> None:
    """chmod without following a symlink (the real tree is not the command's, but the
    user's other programs may change it meanwhile)."""
    try:  # fchmod on the entry itself needs no /proc (gone where `nsbox exec` applies git dirs)
        fd = os.open(name, (_DIR if entry.kind == "dir" else os.O_RDONLY | os.O_NOFOLLOW
                            | os.O_NONBLOCK | os.O_CLOEXEC), dir_fd=parent)
    except PermissionError:
        fd = None
    if fd is not None:
        try:
            if not (stat.S_ISDIR if entry.kind == "dir" else stat.S_ISREG)(os.fstat(fd).st_mode):
                raise ApplyError(f"{entry.path} is not a {entry.kind} now")
            os.fchmod(fd, entry.mode)
            return
        finally:
            os.close(fd)
    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    try:
        if stat.S_ISLNK(os.fstat(fd).st_mode):
            raise ApplyError(f"{entry.path} is a symlink now")
        os.chmod(f"/proc/self/fd/{fd}", entry.mode)
    finally:
        os.close(fd)


def _copy_from_upper(upper_fd: int, entry, parent: int) -> str:
    source = overlay.open_beneath(upper_fd, entry.path, os.O_RDONLY | os.O_NONBLOCK, layer=True)
    tmp = _temp_name()
    try:
        if not stat.S_ISREG(os.fstat(source).st_mode):
            raise ApplyError(f"{entry.path} in the run's layer is not a regular file")
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                      0o600, dir_fd=parent)
        try:
            digest = hashlib.sha256()
            while chunk := os.read(source, 1 << 20):
                digest.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(out, view):]
            os.fchmod(out, entry.mode)
        finally:
            os.close(out)
        if entry.sha256 and digest.hexdigest() != entry.sha256:
            os.unlink(tmp, dir_fd=parent)
            raise ApplyError(f"{entry.path} in the run's layer is not what the manifest says")
        return tmp
    finally:
        os.close(source)


def _rename_over(parent: int, tmp: str, name: str, existing) -> None:
    if existing is not None and stat.S_ISDIR(existing.st_mode):
        overlay.remove_tree(parent, name)  # a directory the run replaced with a file or link
    os.rename(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)


def _temp_name() -> str:
    return f".nsbox-apply-{os.urandom(6).hex()}"


_UNREACHABLE = object()


def _lstat_beneath(root_fd: int, path: str):
    """lstat of `path` below `root_fd`; None if missing, _UNREACHABLE if a directory on
    the way is missing or a symlink."""
    parent_rel, name = os.path.split(path)
    try:
        parent = overlay.open_beneath(root_fd, parent_rel)
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return _UNREACHABLE
        raise
    try:
        return _lstat(parent, name)
    finally:
        os.close(parent)


def _lstat(dir_fd: int, name: str):
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _changed_since(root_fd: int, path: str, info, started_ns: int, deep: bool = True) -> bool:
    if info.st_ctime_ns >= started_ns:
        return True
    if not deep or not stat.S_ISDIR(info.st_mode):
        return False
    # A directory's ctime misses changes to what is inside: a tree the run removes or
    # replaces is looked at in full.
    fd = overlay.open_beneath(root_fd, path)
    try:
        for name in os.listdir(fd):
            child = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if _changed_since(fd, name, child, started_ns):
                return True
    finally:
        os.close(fd)
    return False


def _clean(path: str) -> str:
    """A relative path normalised; an absolute one (an extra root's) stays absolute."""
    return ("/" if path.startswith("/") else "") + "/".join(
        p for p in path.split("/") if p and p != ".")


def _under(path: str, top: str) -> bool:
    return not top or path == top or path.startswith(top + "/")
