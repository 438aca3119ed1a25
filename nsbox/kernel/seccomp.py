"""seccomp: install a compiled BPF program on the calling thread with seccomp(2)."""

from nsbox import _ffi
from nsbox.errors import SyscallError

SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
_SOCK_FILTER_SIZE = 8  # struct sock_filter: u16 code, u8 jt, u8 jf, u32 k
_BPF_MAXINSNS = 4096

_REASONS = {
    22: "the kernel rejected the BPF program (EINVAL); the cached program may be corrupt: "
        "remove ~/.cache/nsbox/seccomp",
    13: "no_new_privs must be set before loading a filter without CAP_SYS_ADMIN (EACCES)",
    12: "the filter is too large for the kernel (ENOMEM)",
}


def load_filter(bpf: bytes, listener: bool = False):
    """Install `bpf` (raw struct sock_filter array) for this thread and its future children.

    listener: return the filter's user-notification fd (close-on-exec, made by the
    kernel), which the supervisor answers with (kernel/seccomp_notify.py)."""
    count, rest = divmod(len(bpf), _SOCK_FILTER_SIZE)
    if rest or not 0 < count <= _BPF_MAXINSNS:
        raise SyscallError(22, "seccomp", f"SECCOMP_SET_MODE_FILTER, {len(bpf)} bytes",
                           "not a whole number of BPF instructions")
    program = _ffi.from_buffer("struct sock_filter[]", bpf)
    fprog = _ffi.new("struct sock_fprog *", {"len": count, "filter": program})
    flags = SECCOMP_FILTER_FLAG_NEW_LISTENER if listener else 0
    try:
        fd = _ffi.syscall("seccomp", SECCOMP_SET_MODE_FILTER, flags, fprog,
                          detail=f"SECCOMP_SET_MODE_FILTER, {count} instructions")
    except SyscallError as err:
        raise SyscallError(err.errno, err.call, err.detail, _REASONS.get(err.errno, "")) from None
    return fd if listener else None
