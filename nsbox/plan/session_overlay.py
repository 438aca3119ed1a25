"""A Session's copy-on-write workspace while the sandbox runs: snapshots, restores, apply.

The overlay stays mounted for the whole session, and its upper layer is changed only
by overlayfs itself. Writing into the upper layer of a mounted overlay is undefined
behaviour, and remounting a fresh overlay is not possible either: the session's
Landlock rules are tied to the mounted overlay's root inode, so commands could not
write into a new mount. So:

- a snapshot is a copy, taken from the host, of what the upper layer holds: the
  manifest (entries relative to the workspace), the files' contents by SHA-256 and
  the modification times; reading the upper layer is safe while nothing writes it;
- a restore is a command run inside the sandbox (RESTORER, as any session command,
  under the session's restrictions) that rewrites, through the mount, exactly the
  paths where the current view and the snapshot's view differ: those in either
  manifest. Its cost grows with what changed, never with the workspace.

A writable image root on disk (rootfs_writable, plan/container.py) is one more such
layer (RootLayer): its tree is the image, its mount /. One snapshot id covers it and
the workspace. Its entries at the other mounts (/proc, the workspace, masks) are not
the layer's, and the directories those need stay. A tmpfs layer (rootfs_layer
"memory") is out of the host's reach: no snapshots.

Both, and apply, need the session idle: RESTORER first lists the sandbox's processes
and refuses (exit BUSY) when any besides its init, the session's server and the
network forwarder lives, so a background process cannot write while a snapshot is
copied or a restore rewrites.
"""

import json
import os
import stat
import time

from nsbox import state
from nsbox.plan import apply as applying
from nsbox.plan import overlay
from nsbox.plan.watch import Change

SNAPSHOTS = "snapshots"
SNAPSHOT = "snapshot.json"
BLOBS = "blobs"
BUSY = 3  # RESTORER's exit status when another process runs in the sandbox
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

# Runs inside the sandbox, in a fork of the session's server (a Python process already
# there: an image needs no interpreter of its own), with `mode` ("check" | "restore")
# as sys.argv[1] and stdin the op stream (see _Stream): records of a 4-byte length and
# NUL-separated fields (NUL can't occur in a path), a file's bytes right after its
# record. A path is relative to the working directory (the layer's mount) or absolute.
# Nothing is removed across a mount point. Only modules os has loaded already.
RESTORER = r"""
import os, stat, sys

def others():
    mine = {1, os.getpid(), os.getppid()}
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in mine:
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            with open(f"/proc/{name}/comm") as f:
                comm = f.read().strip()
        except (OSError, IndexError):
            continue
        if state != "Z" and comm != "nsbox-netfwd":
            found.append(f"pid {name} ({comm})")
    return found

def remove(path, dev=None):
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(info.st_mode):
        os.unlink(path)
        return
    if dev is None:  # the layer's: its parent's (a mount point's differs)
        dev = os.lstat(os.path.dirname(path) or b".").st_dev
    if info.st_dev != dev:
        raise OSError(16, "another mount is there: left alone", path)
    if info.st_mode & 0o700 != 0o700:
        os.chmod(path, 0o700)
    for name in os.listdir(path):
        remove(os.path.join(path, name), dev)
    os.rmdir(path)

opened = {}  # directory -> its mode, given write rights for a moment

def open_parent(path):
    parent = os.path.dirname(path) or b"."
    try:
        info = os.lstat(parent)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(info.st_mode) and info.st_mode & 0o300 != 0o300:
        opened.setdefault(parent, stat.S_IMODE(info.st_mode))
        os.chmod(parent, stat.S_IMODE(info.st_mode) | 0o700)

def exactly(src, size):
    data = src.read(size)
    if len(data) != size:
        raise EOFError("the op stream ended early")
    return data

def restore(src):
    later = {}  # directory -> [mode, mtime]: set last, the last one given winning
    while True:
        op = exactly(src, int.from_bytes(exactly(src, 4), "big")).split(b"\0")
        kind = op[0]
        if kind == b"end":
            break
        path = op[1]
        open_parent(path)
        if kind == b"rm":
            remove(path)
        elif kind == b"dir":
            os.mkdir(path, 0o700)
            later[path] = [int(op[2]), int(op[3])]
        elif kind == b"file":
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            left = int(op[4])
            with open(fd, "wb") as f:
                while left:
                    chunk = src.read(min(left, 1 << 20))
                    if not chunk:
                        raise EOFError(path)
                    f.write(chunk)
                    left -= len(chunk)
            os.chmod(path, int(op[2]))
            os.utime(path, ns=(int(op[3]), int(op[3])))
        elif kind == b"link":
            os.symlink(op[2], path)
        elif kind == b"fifo":
            os.mkfifo(path, 0o600)
            os.chmod(path, int(op[2]))
        elif kind == b"chmod":
            if stat.S_ISDIR(os.lstat(path).st_mode):
                os.chmod(path, int(op[2]) | 0o700)  # its content may change before the end
                later.setdefault(path, [0, None])[0] = int(op[2])
            else:
                os.chmod(path, int(op[2]))
    for path, (mode, mtime) in reversed(later.items()):  # deepest first: modes take rights
        opened.pop(path, None)
        os.chmod(path, mode)
        if mtime is not None:
            os.utime(path, ns=(mtime, mtime))
    for path in sorted(opened, reverse=True):
        if os.path.isdir(path):
            os.chmod(path, opened[path])

busy = others()
if busy:
    os.write(1, ", ".join(busy).encode())
    sys.exit(3)
if sys.argv[1:] == ["restore"]:
    with open(0, "rb", closefd=False) as stream:
        restore(stream)
"""


class RootLayer(overlay.Run):
    """A writable image root's disk layer (plan/container.py) as a run whose real tree is
    the image: the sandbox sees it at /, so its manifest paths are relative to /.
    `skip`: paths whose entries are another mount's, not the layer's; `keep`: directories
    that must stay (mount points' parents, the mount points the image lacks), their
    content handled entry by entry."""
    skip: tuple = ()
    keep: tuple = ()


def layers(plan) -> tuple:
    """The runs a session's snapshots cover: its overlay workspace's, then its writable
    image root's (disk layer). ValueError when that root's layer is a tmpfs inside the
    sandbox."""
    found = [plan.overlay] if plan.overlay is not None else []
    root = next((m for m in plan.mounts if m.target == "/"), None)
    if root is not None and root.kind == "overlay" and plan.rootfs_layer is None:
        raise ValueError("the image root's writable layer is a tmpfs inside the sandbox "
                         "(rootfs_layer \"memory\"), out of reach of snapshots; use "
                         "rootfs_layer=\"disk\" (--rootfs-layer disk) to snapshot it")
    if plan.rootfs_layer is not None:
        mounted = {m.target.strip("/") for m in plan.mounts if m.target != "/"}
        parents = {a for m in mounted for a in _ancestors(m)}
        found.append(RootLayer(id=plan.rootfs_layer.id, dir=plan.rootfs_layer.dir,
                               workspace=root.source, skip=tuple(sorted(mounted)),
                               keep=tuple(sorted(parents | {d for d, _ in root.dirs}))))
    return tuple(found)


def mount_of(run: overlay.Run) -> str:
    """Where the sandbox sees the run's tree."""
    return "/" if isinstance(run, RootLayer) else run.workspace


def manifest(run: overlay.Run) -> list:
    """overlay.recompute, without a root layer's entries that are other mounts'."""
    found = overlay.recompute(run)
    if not isinstance(run, RootLayer):
        return found
    keep = set(run.keep)
    return [e for e in found if e.path not in keep and not any(
        e.path == s or e.path.startswith(s + "/") for s in run.skip)]


class Snapshot:
    """A snapshot's manifest (path -> Change, as the manifest names it) and where its
    files are: the session's blobs beside its directory, or (`kept`) a kept run's upper
    layers."""

    def __init__(self, directory: str, entries: dict, mtimes: dict, kept=None):
        self.dir, self.entries, self.mtimes, self.kept = directory, entries, mtimes, kept

    def open_file(self, entry) -> int:
        if self.kept is None:
            return os.open(os.path.join(os.path.dirname(self.dir), BLOBS, entry.sha256), _FILE)
        return _open_in(self.kept, entry.path, _FILE, upper=True)


def snapshots_dir(run: overlay.Run) -> str:
    return os.path.join(run.dir, SNAPSHOTS)


def take(run: overlay.Run, snapshot_id: str = "") -> str:
    """Copy what the upper layer holds now; returns the snapshot's id (`snapshot_id`,
    that of the session's other layers, or a new one). The session must be idle (see
    the module's docstring)."""
    entries = manifest(run)
    snapshot_id = snapshot_id or (time.strftime("%H%M%S", time.gmtime()) + "-"
                                  + os.urandom(3).hex())
    directory = os.path.join(snapshots_dir(run), snapshot_id)
    # Contents by SHA-256, shared by the session's snapshots: a file already kept is
    # not copied again, and a blob never changes once written.
    blobs = os.path.join(snapshots_dir(run), BLOBS)
    os.makedirs(blobs, mode=0o700, exist_ok=True)
    os.mkdir(directory, 0o700)
    mtimes = {}
    for entry in entries:
        if entry.what == "deleted" or entry.kind not in ("file", "dir"):
            continue
        parent = _open_in(run, os.path.dirname(entry.path), _DIR, upper=True)
        name = os.path.basename(entry.path)
        try:
            mtimes[entry.path] = os.stat(name, dir_fd=parent,
                                         follow_symlinks=False).st_mtime_ns
            if entry.kind == "file" and entry.what != "mode":
                _copy_blob(parent, name, blobs, entry.sha256)
        finally:
            os.close(parent)
    _write_json(os.path.join(directory, SNAPSHOT),
                {"entries": [e.as_dict() for e in entries], "mtimes": mtimes})
    return snapshot_id


def load(run: overlay.Run, snapshot_id: str) -> Snapshot:
    """LookupError if this session has no such snapshot."""
    directory, data = overlay.load_entry(snapshots_dir(run), snapshot_id, SNAPSHOT,
                                         f"no snapshot {snapshot_id!r} in this session")
    entries = {e["path"]: Change(**e) for e in data["entries"]}
    return Snapshot(directory, entries, data["mtimes"])


def of_kept_run(state_dir: str, run_id: str, workspace: str, roots: tuple = ()) -> Snapshot:
    """What a kept run on the same workspace (and extra roots) left, as a snapshot to
    restore; LookupError if there is no such run, ValueError if it ran on other roots."""
    kept, _, entries = overlay.load(state_dir, run_id)
    if kept.workspace != workspace:
        raise ValueError(f"run {run_id} changed {kept.workspace}, not {workspace}")
    if kept.roots != tuple(roots):
        raise ValueError(f"run {run_id} had the writable roots {list(kept.roots)}, not "
                         f"{list(roots)}")
    mtimes = {}
    for entry in entries:
        if entry.what != "deleted" and entry.kind in ("file", "dir"):
            parent = _open_in(kept, os.path.dirname(entry.path), _DIR, upper=True)
            try:
                mtimes[entry.path] = os.stat(os.path.basename(entry.path), dir_fd=parent,
                                             follow_symlinks=False).st_mtime_ns
            finally:
                os.close(parent)
    return Snapshot(kept.dir, {e.path: e for e in entries}, mtimes, kept=kept)


def _open_in(run: overlay.Run, path: str, flags: int, upper: bool = False) -> int:
    """open_beneath the real tree (or `upper` layer) of the root a manifest path lies in;
    an extra root's own path (its top) opens that root."""
    _, part, rel = run.locate(path) if path != "/" else ("", run, "")
    root = os.open(part.upper if upper else part.workspace, _DIR)
    try:
        return overlay.open_beneath(root, rel, flags, layer=upper)
    finally:
        os.close(root)


def empty() -> Snapshot:
    """The real tree itself: restoring it discards every change."""
    return Snapshot("", {}, {})


def remove_all(run: overlay.Run) -> None:
    try:
        parent = os.open(run.dir, _DIR)
    except FileNotFoundError:
        return
    try:
        overlay.remove_tree(parent, SNAPSHOTS)
    except FileNotFoundError:
        pass
    finally:
        os.close(parent)


# --- restore -------------------------------------------------------------------------

def actions(current, target: dict) -> list:
    """What makes the view `current` (manifest entries now) into `target`'s, as
    ("rm", path) | ("snapshot", path) | ("real", path) | ("chmod", path, mode or None:
    the real tree's) in order, parents first. Paths in neither manifest are the real
    tree's in both views and are left alone."""
    now = {e.path: e for e in current}
    rewritten = set()  # written anew here: their old content below is gone
    out = []
    for path in sorted(set(now) | set(target), key=lambda p: p.split("/")):
        below_rewritten = any(a in rewritten for a in _ancestors(path))
        have = None if below_rewritten else now.get(path)
        want = target.get(path)
        if want is None and have is None:
            continue
        if not below_rewritten and have == want:
            continue
        if want is not None and want.what == "deleted":
            out.append(("rm", path))
            rewritten.add(path)
        elif want is not None and want.what != "mode":  # created, modified, type changed
            out += [("rm", path), ("snapshot", path)]
            rewritten.add(path)
        elif have is None or have.what == "mode":  # the content is the real tree's already
            out.append(("chmod", path, want.mode if want is not None else None))
        else:
            out += [("rm", path), ("real", path)]
            rewritten.add(path)
            if want is not None:
                out.append(("chmod", path, want.mode))
    return out


def _ancestors(path: str):
    parent = os.path.dirname(path)
    while parent and parent != "/":  # "/": above an extra root's absolute paths
        yield parent
        parent = os.path.dirname(parent)


def write_stream(run: overlay.Run, steps: list, snapshot: Snapshot, out,
                 hidden=()) -> None:
    """RESTORER's input for `steps` (from actions), written to the binary file `out`.
    `hidden`: absolute paths the sandbox is not shown (masked): left out of the real
    tree's content sent in."""
    stream = _Stream(out, mount_of(run), hidden)
    for step in steps:
        kind, path = step[0], step[1]
        if kind == "rm":
            stream.op("rm", path)
        elif kind == "snapshot":
            _from_snapshot(stream, snapshot, snapshot.entries[path])
        elif kind == "real":
            _from_real(stream, run, path)
        elif kind == "chmod":
            mode = step[2]
            if mode is None:
                info = _lstat_in(run, path)
                if info is None:
                    continue
                mode = stat.S_IMODE(info.st_mode)
            stream.op("chmod", path, mode)
    stream.op("end")


def _from_snapshot(stream, snapshot: Snapshot, entry) -> None:
    mtime = snapshot.mtimes.get(entry.path, time.time_ns())
    if entry.kind == "dir":
        stream.op("dir", entry.path, entry.mode, mtime)
    elif entry.kind == "file":
        fd = snapshot.open_file(entry)
        try:
            stream.file(entry.path, entry.mode, mtime, fd, entry.size)
        finally:
            os.close(fd)
    elif entry.kind == "symlink":
        stream.op("link", entry.path, entry.target)
    else:  # a FIFO: sockets and device nodes can't be made by a sandboxed command
        stream.op("fifo", entry.path, entry.mode or 0o600)


def _from_real(stream, run: overlay.Run, path: str) -> None:
    """The real tree's `path` and all it holds; nothing if it is gone."""
    try:
        parent = _open_in(run, os.path.dirname(path), _DIR)
    except (FileNotFoundError, NotADirectoryError):
        return
    try:
        _real_entry(stream, parent, os.path.basename(path), path)
    finally:
        os.close(parent)


def _real_entry(stream, parent: int, name: str, path: str) -> None:
    if stream.hidden(path):
        return
    try:
        info = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return
    mode = stat.S_IMODE(info.st_mode)
    if stat.S_ISDIR(info.st_mode):
        stream.op("dir", path, mode, info.st_mtime_ns)
        fd = os.open(name, _DIR, dir_fd=parent)
        try:
            for child in sorted(os.listdir(fd)):
                _real_entry(stream, fd, child, f"{path}/{child}")
        finally:
            os.close(fd)
    elif stat.S_ISREG(info.st_mode):
        fd = os.open(name, _FILE, dir_fd=parent)
        try:
            stream.file(path, mode, info.st_mtime_ns, fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)
    elif stat.S_ISLNK(info.st_mode):
        stream.op("link", path, os.readlink(name, dir_fd=parent))
    elif stat.S_ISFIFO(info.st_mode):
        stream.op("fifo", path, mode)


def _lstat_in(run: overlay.Run, path: str):
    try:
        parent = _open_in(run, os.path.dirname(path), _DIR)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        return os.stat(os.path.basename(path), dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return None
    finally:
        os.close(parent)


class _Stream:
    def __init__(self, out, workspace: str = "", hidden=()):
        self.out = out
        # The workspace's manifest paths are relative, the extra roots' absolute.
        self._hidden = {os.path.relpath(h, workspace) if workspace and (
            h + "/").startswith(workspace.rstrip("/") + "/") else h for h in hidden}

    def hidden(self, path: str) -> bool:
        return any(path == h or path.startswith(h + "/") for h in self._hidden)

    def op(self, *fields) -> None:
        data = b"\0".join(os.fsencode(f) if isinstance(f, str) else b"%d" % f
                          for f in fields)
        self.out.write(len(data).to_bytes(4, "big") + data)

    def file(self, path: str, mode: int, mtime: int, fd: int, size: int) -> None:
        """The file's first `size` bytes (what it held when it was listed)."""
        self.op("file", path, mode, mtime, size)
        left = size
        while left:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                raise OSError(f"{path} shrank while it was read")
            self.out.write(chunk)
            left -= len(chunk)


# --- apply ---------------------------------------------------------------------------

def apply_now(run: overlay.Run, applied: dict, paths=(),
              include_protected=False) -> applying.Outcome:
    """Apply the session's changes (all, or those at or below `paths`) to the real tree,
    as `nsbox apply` does. `applied`: path -> (inode, ctime) of what this session applied
    before, updated here; a real path that still shows what it was given is not a
    conflict, although its ctime is newer than the session's start."""
    with open(os.path.join(run.dir, overlay.META)) as f:
        started_ns = json.load(f)["started_ns"]
    entries = overlay.recompute(run)
    allowed = ("",) if include_protected is True else tuple(include_protected or ())
    chosen, skipped = applying.select(entries, paths or (), allowed, state.home(),
                                      run.workspace)
    found = [c for c in applying.run_conflicts(run, chosen, started_ns)
             if applied.get(c.path) is None or _identity(run, c.path) != applied[c.path]]
    if found:
        lines = "\n".join(f"  {c.path}: {c.why}" for c in found)
        raise applying.ApplyError(f"not applied: the real workspace changed where the "
                                  f"session did:\n{lines}")
    done, not_applicable = applying.apply(run, chosen, force=True)
    for entry in done:
        applied[entry.path] = _identity(run, entry.path)
    return applying.Outcome(tuple(done), tuple(skipped), tuple(not_applicable))


def _identity(run: overlay.Run, path: str):
    info = _lstat_in(run, path)
    return None if info is None else (info.st_ino, info.st_ctime_ns)


# --- helpers -------------------------------------------------------------------------

def _copy_blob(parent: int, name: str, blobs: str, sha256: str) -> None:
    target = os.path.join(blobs, sha256)
    if os.path.exists(target):
        return
    src = overlay.open_layer(parent, name, _FILE)
    tmp = f"{target}.{os.urandom(4).hex()}"
    dst = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        size = os.fstat(src).st_size
        copied = 0
        while copied < size:
            n = os.copy_file_range(src, dst, size - copied)
            if n == 0:
                break
            copied += n
    finally:
        os.close(src)
        os.close(dst)
    os.rename(tmp, target)


def _write_json(path: str, data: dict) -> None:
    tmp = f"{path}.{os.urandom(4).hex()}"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600),
              "w") as f:
        json.dump(data, f)
    os.rename(tmp, path)
