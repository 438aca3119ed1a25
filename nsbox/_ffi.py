"""The only module that touches cffi: libc bound lazily, thin checked wrappers.

Every wrapper raises SyscallError naming the call and its key arguments, so a
failure deep in the launch sequence reads as `mount('/usr' -> '/x', MS_BIND): EPERM`.
"""

import os

from nsbox._libc import ffi
from nsbox.errors import SyscallError

_lib = None


def lib():
    global _lib
    if _lib is None:
        _lib = ffi.dlopen(None)
    return _lib


# Syscall numbers libc has no wrapper for. Calls numbered >= 424 are the same
# on every architecture.
_ARCH_SYSCALLS = {
    "x86_64": {"pivot_root": 155, "capget": 125, "capset": 126, "seccomp": 317, "statx": 332,
               "fcntl": 72, "syncfs": 306, "fchmod": 91},
    "aarch64": {"pivot_root": 41, "capget": 90, "capset": 91, "seccomp": 277, "statx": 291,
                "fcntl": 25, "syncfs": 267, "fchmod": 52},
}
_COMMON_SYSCALLS = {
    "open_tree": 428,
    "move_mount": 429,
    "close_range": 436,
    "openat2": 437,
    "mount_setattr": 442,
    "landlock_create_ruleset": 444,
    "landlock_add_rule": 445,
    "landlock_restrict_self": 446,
}
MACHINE = os.uname().machine
SYSCALLS = {**_ARCH_SYSCALLS.get(MACHINE, {}), **_COMMON_SYSCALLS}


def _fail(call: str, detail: str = "", hint: str = "") -> SyscallError:
    return SyscallError(ffi.errno, call, detail, hint)


def _b(path) -> bytes:
    return os.fsencode(path)


def _long(value):
    return ffi.cast("long", value)


def syscall(name: str, *args, detail: str = "") -> int:
    """Raw syscall by name; integer args are passed as long, cdata as-is."""
    number = SYSCALLS.get(name)
    if number is None:
        raise SyscallError(38, name, detail, f"no syscall number known for {name} on {MACHINE}")
    cargs = [a if isinstance(a, ffi.CData) else _long(a) for a in args]
    ret = lib().syscall(_long(number), *cargs)
    if ret < 0:
        raise _fail(name, detail)
    return ret


# --- flag names, for error messages -------------------------------------------------

MOUNT_FLAG_NAMES = {
    1: "MS_RDONLY", 2: "MS_NOSUID", 4: "MS_NODEV", 8: "MS_NOEXEC", 32: "MS_REMOUNT",
    4096: "MS_BIND", 8192: "MS_MOVE", 16384: "MS_REC", 1 << 18: "MS_PRIVATE",
    1 << 19: "MS_SLAVE", 1 << 20: "MS_SHARED",
}


def flag_names(flags: int, names: dict) -> str:
    parts = [name for bit, name in names.items() if flags & bit]
    rest = flags & ~sum(b for b in names if flags & b)
    if rest:
        parts.append(hex(rest))
    return "|".join(parts) or "0"


# --- wrappers -----------------------------------------------------------------------

def unshare(flags: int, detail: str = "") -> None:
    if lib().unshare(flags) != 0:
        raise _fail("unshare", detail or hex(flags))


def setns(fd: int, nstype: int) -> None:
    if lib().setns(fd, nstype) != 0:
        raise _fail("setns", f"fd {fd}, {hex(nstype)}")


def mount(source, target, fstype, flags: int, data=None) -> None:
    src = _b(source) if source is not None else ffi.NULL
    fs = _b(fstype) if fstype is not None else ffi.NULL
    opts = _b(data) if data is not None else ffi.NULL
    if lib().mount(src, _b(target), fs, flags, opts) != 0:
        what = f"{source!r} -> {target!r}" if source else repr(target)
        extra = f", {fstype}" if fstype else ""
        raise _fail("mount", f"{what}{extra}, {flag_names(flags, MOUNT_FLAG_NAMES)}")


def umount2(target, flags: int) -> None:
    if lib().umount2(_b(target), flags) != 0:
        raise _fail("umount2", f"{target!r}, {flags}")


def pivot_root(new_root, put_old) -> None:
    syscall("pivot_root", ffi.new("char[]", _b(new_root)), ffi.new("char[]", _b(put_old)),
            detail=f"{new_root!r}, {put_old!r}")


def getrlimit(resource: int, what: str = ""):
    limit = ffi.new("struct rlimit *")
    if lib().getrlimit(resource, limit) != 0:
        raise _fail("getrlimit", what or str(resource))
    return limit.rlim_cur, limit.rlim_max


def setrlimit(resource: int, soft: int, hard: int, what: str = "") -> None:
    limit = ffi.new("struct rlimit *", {"rlim_cur": soft, "rlim_max": hard})
    if lib().setrlimit(resource, limit) != 0:
        raise _fail("setrlimit", f"{what or resource}, {soft}, {hard}")


def sethostname(name: str) -> None:
    raw = name.encode()
    if lib().sethostname(raw, len(raw)) != 0:
        raise _fail("sethostname", repr(name))


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0,
          what: str = "") -> int:
    ret = lib().prctl(option, arg2, arg3, arg4, arg5)
    if ret < 0:
        raise _fail("prctl", what or str(option))
    return ret


def ioctl(fd: int, request: int, arg, what: str = "") -> int:
    ret = lib().ioctl(fd, request, arg)
    if ret < 0:
        raise _fail("ioctl", what or f"fd {fd}, {hex(request)}")
    return ret


def openat2(dirfd: int, path, flags: int, mode: int, resolve: int) -> int:
    """A new fd for `path` relative to `dirfd`, resolved as `resolve` (RESOLVE_*) says."""
    how = ffi.new("struct open_how *", {"flags": flags, "mode": mode, "resolve": resolve})
    return syscall("openat2", dirfd, cstr(path), how, ffi.sizeof("struct open_how"),
                   detail=f"fd {dirfd}, {os.fsdecode(path)!r}, resolve {hex(resolve)}")


def new(ctype: str, init=None):
    return ffi.new(ctype, init)


def cstr(value) -> "ffi.CData":
    return ffi.new("char[]", _b(value))


def from_buffer(ctype: str, data: bytes):
    """A C array viewing `data` without copying it (e.g. a BPF program)."""
    return ffi.from_buffer(ctype, data)


NULL = ffi.NULL
