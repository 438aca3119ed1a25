"""Probes that must change a process to learn something: each runs in a forked,
throw-away child, so the caller is never altered.

Only single-threaded callers fork here: the CLI, and the fork server on behalf of
the library (which asks it once per process, see nsbox.service.relay).
"""

import os

from nsbox.kernel import namespaces


def in_child(probe) -> str:
    """Run `probe()` in a forked child: "" if it returned, else its error as text."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(read_end)
            probe()
        except BaseException as err:  # reported to the parent, never raised here
            os.write(write_end, (str(err) or type(err).__name__).encode()[:4000])
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        message = f.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) == 0:
        return ""
    return message or "the probe died"


def userns_failure() -> tuple:
    """("", "") if the namespaces of full isolation can be made here, else (the failing
    call, the host setting that stops them with the fix)."""
    error = in_child(_enter_namespaces)
    return (error, namespaces.userns_blocker()) if error else ("", "")


def userns_blocker() -> str:
    """"" if full isolation's namespaces can be made here, else why not, with the fix
    (the verdict `isolation="auto"` needs)."""
    return userns_failure()[1]


def seccomp_error() -> str:
    """"" if this process may load a seccomp filter, else why not."""
    return in_child(_load_allow_all_filter)


def _enter_namespaces() -> None:
    uid, gid = os.getuid(), os.getgid()  # after unshare they read as the overflow id
    namespaces.unshare(namespaces.CLONE_NEWUSER | namespaces.CLONE_NEWNS | namespaces.CLONE_NEWPID
                       | namespaces.CLONE_NEWNET)
    namespaces.write_id_maps(uid, gid)


def _load_allow_all_filter() -> None:
    import struct

    from nsbox.kernel import proc, seccomp

    proc.set_no_new_privs()
    allow_all = struct.pack("HBBI", 0x06, 0, 0, 0x7FFF0000)  # BPF_RET|BPF_K, SECCOMP_RET_ALLOW
    seccomp.load_filter(allow_all)
