"""Per-process resource limits (setrlimit), inherited by every child of the caller."""

from nsbox import _ffi

# sys/resource.h (the same on x86_64 and aarch64); through cffi, which is loaded
# anyway, rather than the `resource` module's extra import on the start-up path.
RLIMITS = {"RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_NPROC": 6,
           "RLIMIT_NOFILE": 7, "RLIMIT_AS": 9, "RLIMIT_SIGPENDING": 11, "RLIMIT_MSGQUEUE": 12}
RLIM_INFINITY = (1 << 64) - 1


def lower(limits) -> None:
    """Set soft and hard limit of each (RLIMIT_NAME, value); never above the current hard limit.

    Raising a hard limit needs CAP_SYS_RESOURCE in the initial user namespace, which
    the sandbox never has; a lower existing ceiling already satisfies the limit.
    """
    for name, value in limits:
        which = RLIMITS[name]
        _, hard = _ffi.getrlimit(which, name)
        if hard != RLIM_INFINITY:
            value = min(value, hard)
        _ffi.setrlimit(which, value, value, name)


def soft(name: str) -> int:
    """The caller's current soft limit (RLIM_INFINITY when unlimited)."""
    return _ffi.getrlimit(RLIMITS[name], name)[0]
