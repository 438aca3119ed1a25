"""Namespaces: unshare, id maps, and why unprivileged user namespaces fail here."""

import os

from nsbox import _ffi
from nsbox.errors import SyscallError, UnsupportedKernel
from nsbox.kernel import proc

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

NAMES = {
    CLONE_NEWUSER: "user", CLONE_NEWNS: "mount", CLONE_NEWPID: "pid", CLONE_NEWIPC: "ipc",
    CLONE_NEWUTS: "uts", CLONE_NEWNET: "net", CLONE_NEWCGROUP: "cgroup",
}


def describe(flags: int) -> str:
    return "+".join(name for bit, name in NAMES.items() if flags & bit)


def unshare(flags: int) -> None:
    """Enter new namespaces; on failure explain which host setting blocks them."""
    try:
        _ffi.unshare(flags, detail=describe(flags))
    except SyscallError as err:
        if flags & CLONE_NEWUSER:
            reason = userns_blocker()
            if reason:
                raise UnsupportedKernel(f"{err}. {reason}") from None
        raise


def write_id_maps(uid: int, gid: int, as_root: bool = False) -> None:
    """Map the caller's own uid/gid to the same ids inside, or to 0 with `as_root`
    (setgroups denied first). Only that one id is mapped either way."""
    # A non-dumpable process's /proc/self files belong to root: an unprivileged
    # caller is dumpable for these three writes only.
    dumpable = proc.is_dumpable()
    if not dumpable:
        proc.set_dumpable(True)
    try:
        # The kernel refuses an unprivileged gid_map until setgroups is denied.
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write(f"{0 if as_root else uid} {uid} 1")
        with open("/proc/self/gid_map", "w") as f:
            f.write(f"{0 if as_root else gid} {gid} 1")
    finally:
        if not dumpable:
            proc.set_dumpable(False)


def set_hostname(name: str) -> None:
    """Set the hostname of the (new) UTS namespace."""
    _ffi.sethostname(name)


# Per-user counters of a user namespace (ucounts): each process's use is charged to its
# user in its own namespace and in every ancestor, and each level has its own maximum.
USER_COUNTERS = "/proc/sys/user/"


def user_counter_limits(names) -> dict:
    """name -> this namespace's maximum, for the counters this kernel has."""
    found = {}
    for name in names:
        try:
            fd = os.open(USER_COUNTERS + name, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            found[name] = int(os.read(fd, 64))
        finally:
            os.close(fd)
    return found


def limit_user_counters(limits) -> None:
    """Set (name, maximum) pairs in the caller's user namespace; needs CAP_SYS_RESOURCE
    there (a new namespace's creator has it). Usage also stays charged to the parent."""
    for name, value in limits:
        path = USER_COUNTERS + name
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, b"%d" % value)
            finally:
                os.close(fd)
        except OSError as err:
            raise SyscallError(err.errno, "write", f"{path!r}, {value}", "cannot bound the "
                               "sandbox's share of this per-user counter") from None


def _read_sysctl(path: str):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def userns_blocker() -> str:
    """Name the host setting that stops unprivileged user namespaces, with the fix."""
    if _read_sysctl("/proc/sys/user/max_user_namespaces") == "0":
        return ("User namespaces are disabled: user.max_user_namespaces=0. "
                "Fix: sysctl -w user.max_user_namespaces=15000")
    if os.geteuid() != 0 and _read_sysctl("/proc/sys/kernel/unprivileged_userns_clone") == "0":
        return ("Unprivileged user namespaces are disabled: kernel.unprivileged_userns_clone=0. "
                "Fix: sysctl -w kernel.unprivileged_userns_clone=1")
    if os.geteuid() != 0 and _read_sysctl(
            "/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == "1":
        return ("AppArmor restricts unprivileged user namespaces: "
                "kernel.apparmor_restrict_unprivileged_userns=1. Fix: "
                "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or add an AppArmor "
                "profile granting 'userns' to this Python interpreter")
    if _read_sysctl("/proc/sys/user/max_user_namespaces") is None:
        return "This kernel has no user namespaces (CONFIG_USER_NS is off)."
    return ("User namespaces could not be created here; inside a container, the container "
            "runtime's seccomp profile or missing capabilities usually forbid them.")
