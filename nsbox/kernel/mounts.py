"""Mount primitives: detached tree clones, read-only binds, tmpfs, proc, pivot_root."""

import errno
import os

from nsbox import _ffi
from nsbox.errors import SyscallError
from nsbox.kernel import mountinfo

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2

AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 0x4

MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4

_EMPTY = b""


def make_private_recursive() -> None:
    """Stop mount events from propagating back to the host."""
    _ffi.mount(None, "/", None, MS_REC | MS_PRIVATE)


def clone_tree(path: str) -> int:
    """A detached recursive copy of the mount tree at `path`, as an fd."""
    return _ffi.syscall("open_tree", AT_FDCWD, _ffi.cstr(path),
                        OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE,
                        detail=f"{path!r}, OPEN_TREE_CLONE|AT_RECURSIVE")


def set_attrs_recursive(tree_fd: int, attr_set: int, attr_clr: int = 0, what: str = "") -> None:
    """Change mount flags of a tree and every submount in one call."""
    attr = _ffi.new("struct mount_attr *", {"attr_set": attr_set, "attr_clr": attr_clr})
    _ffi.syscall("mount_setattr", tree_fd, _ffi.cstr(""), AT_EMPTY_PATH | AT_RECURSIVE,
                 attr, _ffi.ffi.sizeof("struct mount_attr"),
                 detail=f"{what or tree_fd}, set={attr_set:#x} clr={attr_clr:#x}, AT_RECURSIVE")


def attach(tree_fd: int, target: str, what: str = "") -> None:
    """Attach a detached tree at `target`."""
    _ffi.syscall("move_mount", tree_fd, _ffi.cstr(""), AT_FDCWD, _ffi.cstr(target),
                 MOVE_MOUNT_F_EMPTY_PATH, detail=f"{what or tree_fd} -> {target!r}")


def has_mount_api() -> bool:
    """True when open_tree/move_mount/mount_setattr are there (Linux >= 5.12).

    Unknown flags are refused (EINVAL) before any permission check where the call
    exists, so this works unprivileged; ENOSYS (old kernel) or EPERM (a container's
    seccomp profile) mean the remount-per-submount fallback.
    """
    try:
        _ffi.syscall("mount_setattr", -1, _ffi.NULL, 0x80000000, _ffi.NULL, 0,
                     detail="probe")
    except SyscallError as err:
        return err.errno == errno.EINVAL
    return True


def bind(source: str, target: str, recursive: bool = True) -> None:
    _ffi.mount(source, target, None, MS_BIND | (MS_REC if recursive else 0))


def remount_readonly(target: str) -> None:
    """Make one bind mount read-only (no submounts to visit, e.g. a bound file)."""
    _ffi.mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def remount_readonly_recursive(target: str) -> None:
    """Fallback for kernels without mount_setattr: remount every submount read-only."""
    table = mountinfo.read()
    options = {m.mount_point: m.options for m in table}  # the last, topmost, wins
    for point in mountinfo.beneath(table, target):
        kept = kept_flags(options[point])
        try:
            _ffi.mount(None, point, None,
                       MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | kept)
        except SyscallError:
            # read-only is the part that must not be skipped
            _ffi.mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | kept)


_KEPT = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC,
         "nosymfollow": MS_NOSYMFOLLOW, "noatime": MS_NOATIME,
         "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME}


def kept_flags(options: str) -> int:
    """The MS_* flags a bind remount must repeat to keep a mount's per-mount options
    (mountinfo field 6): a remount clears what it omits, and a user namespace may
    not clear the host's nosuid/nodev/noexec/atime flags (they are locked)."""
    flags = 0
    for name in options.split(","):
        flags |= _KEPT.get(name, 0)
    if not flags & (MS_NOATIME | MS_RELATIME):
        flags |= MS_STRICTATIME  # shown as neither
    return flags


def mount_tmpfs(target: str, mode: int = 0o755, size: int = 0, flags: int = MS_NOSUID | MS_NODEV) -> None:
    data = f"mode={mode:o}" + (f",size={size}" if size else "")
    _ffi.mount("tmpfs", target, "tmpfs", flags, data)


def mount_overlay(target: str, lower: str, upper: str, work: str,
                  flags: int = MS_NOSUID | MS_NODEV, volatile: bool = False) -> None:
    """An overlayfs at `target`: `lower` read-only below, writes in `upper`. userxattr
    keeps overlayfs's own marks in user.overlay.* xattrs, which is what lets a user
    namespace mount it (Linux >= 5.11). Paths with ',' or ':' break the option string:
    pass /proc/self/fd/N names."""
    # volatile: no sync of the upper layer's filesystem at unmount (tens of ms on a busy
    # disk), for a layer that is thrown away; it cannot be mounted again after a crash.
    _ffi.mount("overlay", target, "overlay", flags,
               f"lowerdir={lower},upperdir={upper},workdir={work},userxattr"
               + (",volatile" if volatile else ""))


def mount_overlay_readonly(target: str, lowers: tuple,
                           flags: int = MS_RDONLY | MS_NOSUID | MS_NODEV) -> None:
    """A read-only overlayfs of `lowers`, topmost first (no upper layer: nothing can be
    written). Pass /proc/self/fd/N names, as for mount_overlay."""
    _ffi.mount("overlay", target, "overlay", flags, f"lowerdir={':'.join(lowers)},userxattr")


def mount_proc(target: str) -> None:
    _ffi.mount("proc", target, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def mount_devpts(target: str) -> None:
    _ffi.mount("devpts", target, "devpts", MS_NOSUID | MS_NOEXEC,
               "newinstance,ptmxmode=0666,mode=620")


def sync_filesystem(fd: int) -> None:
    """syncfs(2): write back what the filesystem holding `fd` has in memory."""
    _ffi.syscall("syncfs", fd, detail=f"fd {fd}")


def pivot_into(new_root: str) -> None:
    """Make `new_root` the root and detach the old one entirely."""
    # pivot_root(".", ".") stacks the old root on top of the new one; detaching
    # it needs no directory for the old root to live in.
    os.chdir(new_root)
    _ffi.pivot_root(".", ".")
    _ffi.umount2(".", MNT_DETACH)
    os.chdir("/")
