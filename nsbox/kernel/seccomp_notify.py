"""seccomp user notification: receive a blocked call, answer it, read its arguments.

The ioctls on a filter's listener fd (linux/seccomp.h); fcntl.ioctl releases the GIL
while it blocks, so a thread can wait here.
"""

# _struct, not struct: built into Debian's and most Pythons, like fcntl, so PID 1 needs
# no file to import it once the sandbox's root hides the host's (denial_channel.preload).
import _struct as struct
import fcntl
import os

# _IOWR('!', 0, struct seccomp_notif), _IOWR('!', 1, struct seccomp_notif_resp),
# _IOW('!', 2, __u64)
_NOTIF_RECV = 0xC0502100
_NOTIF_SEND = 0xC0182101
_NOTIF_ID_VALID = 0x40082102
_NOTIF_SET_FLAGS = 0x40082104  # _IOW('!', 4, __u64), Linux 6.6
_FD_SYNC_WAKE_UP = 1  # SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP
# struct seccomp_notif { u64 id; u32 pid; u32 flags; struct seccomp_data { int nr;
#   u32 arch; u64 instruction_pointer; u64 args[6]; } }
_NOTIF = struct.Struct("=QIIiIQ6Q")
# struct seccomp_notif_resp { u64 id; s64 val; s32 error; u32 flags; }
_RESP = struct.Struct("=QqiI")
_ID = struct.Struct("=Q")
FLAG_CONTINUE = 1  # SECCOMP_USER_NOTIF_FLAG_CONTINUE
_EMPTY = bytes(_NOTIF.size)  # the kernel wants the buffer zeroed


class Channel:
    """A listener's receive and answer, with their buffers made once: the supervisor's
    hot path is a receive, a lookup and an answer."""

    __slots__ = ("fd", "_notif", "_resp")

    def __init__(self, listener: int):
        self.fd = listener
        self._notif = bytearray(_NOTIF.size)
        self._resp = bytearray(_RESP.size)

    def receive(self) -> tuple:
        """(id, pid, flags, nr, arch, instruction pointer, arg0 ... arg5); blocks."""
        notif = self._notif
        notif[:] = _EMPTY
        fcntl.ioctl(self.fd, _NOTIF_RECV, notif, True)
        return _NOTIF.unpack(notif)

    def answer_continue(self, notif_id: int) -> None:
        _RESP.pack_into(self._resp, 0, notif_id, 0, 0, FLAG_CONTINUE)
        try:
            fcntl.ioctl(self.fd, _NOTIF_SEND, self._resp, True)
        except (ProcessLookupError, FileNotFoundError):
            pass  # ENOENT: the caller was killed (or its call interrupted) meanwhile


def set_sync_wake_up(listener: int, on: bool) -> bool:
    """Have the kernel hand each notification to the supervisor, and its answer back,
    on the CPU that is running (no wake-up of an idle CPU); False if the kernel lacks it."""
    try:
        fcntl.ioctl(listener, _NOTIF_SET_FLAGS, _FD_SYNC_WAKE_UP if on else 0)
        return True
    except OSError:
        return False


class MemoryReader:
    """Reads the start of a string in another process with process_vm_readv: no
    /proc/PID/mem to open first, which costs tens of microseconds for each new process
    (most of a build's calls come from a process met for the first time)."""

    __slots__ = ("_call", "_local", "_remote", "_remote_iov", "_data")

    def __init__(self):
        from nsbox import _ffi

        ffi = _ffi.ffi
        self._call = _ffi.lib().process_vm_readv
        data = ffi.new("char[256]")
        self._local = ffi.new("struct iovec *", {"iov_base": data, "iov_len": 256})
        self._remote = ffi.new("uint64_t[2]")  # an iovec by value: no pointer cast per call
        self._remote_iov = ffi.cast("struct iovec *", self._remote)
        self._data = ffi.buffer(data)

    def head(self, pid: int, address: int) -> bytes:
        """The bytes from `address` to the next 256-byte boundary; b"" if unreadable."""
        remote = self._remote
        remote[0], remote[1] = address, 256 - address % 256
        size = self._call(pid, self._local, 1, self._remote_iov, 1, 0)
        return self._data[:size] if size > 0 else b""


def answer_error(listener: int, notif_id: int, errno: int) -> None:
    """Fail the call with `errno`, as an ERRNO filter rule would."""
    _send(listener, _RESP.pack(notif_id, 0, -errno, 0))


def answer_value(listener: int, notif_id: int, value: int) -> None:
    """Return `value` from the call without running it."""
    _send(listener, _RESP.pack(notif_id, value, 0, 0))


def _send(listener: int, resp: bytes) -> None:
    try:
        fcntl.ioctl(listener, _NOTIF_SEND, bytearray(resp), True)
    except (ProcessLookupError, FileNotFoundError):
        pass  # ENOENT: the caller was killed (or its call interrupted) meanwhile


def fchmod_answer(fd: int, mode: int) -> int:
    """fchmod's return value as the kernel gives it (os.fchmod keeps only 0 or an
    error): a supervisor may answer a notified call with any value; -1 if it failed."""
    from nsbox import _ffi

    return _ffi.lib().syscall(_ffi.SYSCALLS["fchmod"], _ffi.ffi.cast("long", fd),
                              _ffi.ffi.cast("long", mode))


def still_waiting(listener: int, notif_id: int) -> bool:
    """The notification's call is still blocked: what was read from its memory is its own."""
    try:
        fcntl.ioctl(listener, _NOTIF_ID_VALID, bytearray(_ID.pack(notif_id)), True)
        return True
    except OSError:
        return False


def read_memory(mem_fd: int, address: int, size: int) -> bytes:
    """Up to `size` bytes at `address` of a process, through its /proc/PID/mem fd;
    stops at the first unreadable page."""
    out = b""
    while len(out) < size:
        page_left = 4096 - (address + len(out)) % 4096
        try:
            chunk = os.pread(mem_fd, min(page_left, size - len(out)), address + len(out))
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    return out


def read_path(mem_fd: int, address: int, limit: int = 4096) -> bytes | None:
    """The NUL-terminated string at `address`, None if unreadable or too long."""
    out = b""
    while len(out) < limit:
        chunk = read_memory(mem_fd, address + len(out), min(256, limit - len(out)))
        if not chunk:
            return None
        end = chunk.find(b"\0")
        if end >= 0:
            return out + chunk[:end]
        out += chunk
    return None
