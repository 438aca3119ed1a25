"""Process attributes: no_new_privs, parent-death signal, subreaper, dumpable, fd hygiene."""

from nsbox import _ffi

PR_SET_PDEATHSIG = 1
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
PR_SET_NO_NEW_PRIVS = 38
CLOSE_RANGE_CLOEXEC = 1 << 2


def set_no_new_privs() -> None:
    _ffi.prctl(PR_SET_NO_NEW_PRIVS, 1, what="PR_SET_NO_NEW_PRIVS")


def set_parent_death_signal(sig: int) -> None:
    _ffi.prctl(PR_SET_PDEATHSIG, sig, what=f"PR_SET_PDEATHSIG, {sig}")


def set_dumpable(dumpable: bool) -> None:
    """Not dumpable: no ptrace, no /proc/PID/{environ,mem,fd} for processes without
    CAP_SYS_PTRACE, whatever their uid. Inherited by fork, reset by exec."""
    _ffi.prctl(PR_SET_DUMPABLE, int(dumpable), what=f"PR_SET_DUMPABLE, {int(dumpable)}")


def is_dumpable() -> bool:
    return _ffi.prctl(PR_GET_DUMPABLE, what="PR_GET_DUMPABLE") == 1


def set_child_subreaper() -> None:
    _ffi.prctl(PR_SET_CHILD_SUBREAPER, 1, what="PR_SET_CHILD_SUBREAPER")


def is_child_subreaper() -> bool:
    flag = _ffi.new("int *")
    _ffi.prctl(PR_GET_CHILD_SUBREAPER, int(_ffi.ffi.cast("uintptr_t", flag)),
               what="PR_GET_CHILD_SUBREAPER")
    return bool(flag[0])


def clear_child_subreaper() -> None:
    _ffi.prctl(PR_SET_CHILD_SUBREAPER, 0, what="PR_SET_CHILD_SUBREAPER, 0")


F_SETPIPE_SZ = 1031


def set_pipe_size(fd: int, size: int) -> None:
    """fcntl(F_SETPIPE_SZ) through the binding nsbox has loaded anyway (the fcntl module
    costs an import on `nsbox exec`)."""
    _ffi.syscall("fcntl", fd, F_SETPIPE_SZ, size, detail=f"fd {fd}, F_SETPIPE_SZ {size}")


def cloexec_from(first_fd: int) -> None:
    """Mark every fd >= first_fd close-on-exec, so nothing the caller held leaks in."""
    _ffi.syscall("close_range", first_fd, 0xFFFFFFFF, CLOSE_RANGE_CLOEXEC,
                 detail=f"{first_fd}, ~0, CLOSE_RANGE_CLOEXEC")


PR_SET_NAME = 15


def set_name(name: str) -> None:
    """Name shown by ps for this process (at most 15 bytes)."""
    buf = _ffi.cstr(name[:15])
    _ffi.prctl(PR_SET_NAME, int(_ffi.ffi.cast("uintptr_t", buf)), what=f"PR_SET_NAME, {name!r}")
