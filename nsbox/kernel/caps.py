"""Capabilities: drop every one, from every set, for good."""

from nsbox import _ffi

PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
PR_SET_SECUREBITS = 28
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

# SECBIT_NOROOT | SECBIT_NO_SETUID_FIXUP | SECBIT_KEEP_CAPS_LOCKED and their locks:
# uid 0 inside the sandbox regains nothing at exec.
_SECUREBITS_LOCKED = 0x01 | 0x02 | 0x04 | 0x08 | 0x20


def last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return 40


def drop_all(last: int) -> None:
    """Empty the bounding, ambient, effective, permitted and inheritable sets."""
    _ffi.prctl(PR_SET_SECUREBITS, _SECUREBITS_LOCKED, what="PR_SET_SECUREBITS")
    # Bounding set first: dropping it needs CAP_SETPCAP, which capset removes.
    for cap in range(last + 1):
        _ffi.prctl(PR_CAPBSET_DROP, cap, what=f"PR_CAPBSET_DROP, {cap}")
    _ffi.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, what="PR_CAP_AMBIENT_CLEAR_ALL")
    header = _ffi.new("struct cap_header *", {"version": _LINUX_CAPABILITY_VERSION_3, "pid": 0})
    data = _ffi.new("struct cap_data[2]")
    _ffi.syscall("capset", header, data, detail="all sets empty")
