"""Host-side file access inside a directory a sandboxed command controls.

Paths are resolved with openat2(RESOLVE_IN_ROOT): every component, symlinks and
".." included, is taken as if the directory were "/". A planted
`notes.txt -> /home/u/.ssh/id_rsa` then names `<root>/home/u/.ssh/id_rsa`, never
the key, and the check cannot race with the command swapping links.
"""

import errno
import os

from nsbox import _ffi
from nsbox.errors import SyscallError, UnsupportedKernel

# linux/openat2.h
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10
_RESOLVE = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS


def open_in_root(root_fd: int, path: str, flags: int, mode: int = 0o666) -> int:
    """An fd for `path` resolved beneath `root_fd`; OSError subclasses as open() raises them."""
    try:
        # openat2 rejects a mode without O_CREAT.
        mode = mode if flags & os.O_CREAT else 0
        return _ffi.openat2(root_fd, path.lstrip("/") or ".", flags | os.O_CLOEXEC, mode, _RESOLVE)
    except SyscallError as err:
        if err.errno == errno.ENOSYS:
            raise UnsupportedKernel("openat2 is missing (Linux 5.6 or later is needed) to "
                                    "read or write files in a sandbox's workspace safely") from None
        raise OSError(err.errno, os.strerror(err.errno), path) from None


def read_file(root: str, path: str, max_size: int | None = None) -> bytes:
    """The bytes of `path` under `root`; FileTooLarge past max_size (checked before reading)."""
    with _Dir(root) as root_fd:
        fd = open_in_root(root_fd, path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            info = _regular_file(fd, path)
            if max_size is not None and info.st_size > max_size:
                raise FileTooLarge(path, info.st_size)
            chunks = []
            while data := os.read(fd, 1 << 20):
                chunks.append(data)
                if max_size is not None and sum(map(len, chunks)) > max_size:
                    raise FileTooLarge(path, max_size + 1)
            return b"".join(chunks)
        finally:
            os.close(fd)


def write_file(root: str, path: str, data: bytes) -> None:
    """Create or replace `path` under `root` with `data`, creating parent directories."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts:
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    with _Dir(root) as root_fd:
        for depth in range(1, len(parts)):
            _ensure_dir(root_fd, parts[:depth])
        fd = open_in_root(root_fd, path, os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK)
        try:
            _regular_file(fd, path)
            os.ftruncate(fd, 0)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)


def _regular_file(fd: int, path: str) -> os.stat_result:
    """fstat of an fd opened non-blocking (a planted FIFO must not hang us); then blocking."""
    info = os.fstat(fd)
    kind = info.st_mode & 0o170000
    if kind == 0o040000:
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    if kind != 0o100000:
        raise OSError(errno.EINVAL, "not a regular file", path)
    os.set_blocking(fd, True)
    return info


class FileTooLarge(OSError):
    def __init__(self, path: str, size: int):
        super().__init__(errno.EFBIG, f"file is too large ({size} bytes)", path)
        self.size = size


def _ensure_dir(root_fd: int, parts: list) -> None:
    try:
        os.close(open_in_root(root_fd, "/".join(parts), os.O_PATH | os.O_DIRECTORY))
        return
    except FileNotFoundError:
        pass
    parent = open_in_root(root_fd, "/".join(parts[:-1]), os.O_PATH | os.O_DIRECTORY)
    try:
        # mkdirat never follows a link in its last component.
        os.mkdir(parts[-1], dir_fd=parent)
    except FileExistsError:
        pass
    finally:
        os.close(parent)


class _Dir:
    def __init__(self, path: str):
        self.path = path

    def __enter__(self) -> int:
        self.fd = os.open(self.path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        return self.fd

    def __exit__(self, *exc):
        os.close(self.fd)
