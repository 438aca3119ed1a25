"""Landlock: ABI detection and restricting the calling thread with a prepared ruleset.

The ruleset arrives as plain data (nsbox.policy.landlock_rules.Ruleset); this
module only opens its paths and makes the three syscalls.
"""

import errno
import os
import stat

from nsbox import _ffi
from nsbox.errors import SyscallError

CREATE_RULESET_VERSION = 1 << 0
RULE_PATH_BENEATH = 1
RULE_NET_PORT = 2

KERNEL_FIX = ("enable Landlock: build the kernel with CONFIG_SECURITY_LANDLOCK=y and add "
              "it to the boot parameter lsm=...,landlock (or CONFIG_LSM)")


def abi_version() -> int:
    """The running kernel's Landlock ABI; 0 when Landlock is missing or disabled."""
    try:
        return _ffi.syscall("landlock_create_ruleset", _ffi.NULL, 0, CREATE_RULESET_VERSION,
                            detail="NULL, 0, LANDLOCK_CREATE_RULESET_VERSION")
    except SyscallError as err:
        # ENOSYS: not built in; EOPNOTSUPP: built in but not enabled at boot.
        if err.errno in (errno.ENOSYS, errno.EOPNOTSUPP):
            return 0
        raise


def unavailable_reason() -> str:
    """Why abi_version() is 0, with the fix."""
    try:
        _ffi.syscall("landlock_create_ruleset", _ffi.NULL, 0, CREATE_RULESET_VERSION)
    except SyscallError as err:
        if err.errno == errno.EOPNOTSUPP:
            return f"Landlock is built into this kernel but disabled at boot; {KERNEL_FIX}"
        return f"this kernel has no Landlock (CONFIG_SECURITY_LANDLOCK is off); {KERNEL_FIX}"
    return ""


def restrict_self(ruleset, own_files: bool = False) -> None:
    """Create the ruleset, add its rules and enforce it on the calling thread.

    Needs no_new_privs (or CAP_SYS_ADMIN). Paths that do not exist are skipped:
    a missing rule only takes access away. Symlinks are never followed, so a rule
    lands on the path the parent listed and nowhere else.
    own_files: also grant add_own_files()'s rules (for the command's process).
    """
    ruleset_fd = create(ruleset)
    try:
        if own_files and ruleset.handled_fs:
            add_own_files(ruleset_fd, ruleset.handled_fs)
        enforce(ruleset_fd)
    finally:
        os.close(ruleset_fd)


def enforce(ruleset_fd: int) -> None:
    """The calling thread (only) enters a new domain, nested in the one it is in;
    its children inherit it. One ruleset fd can make any number of domains."""
    _ffi.syscall("landlock_restrict_self", ruleset_fd, 0, detail=f"fd {ruleset_fd}")


def create(ruleset) -> int:
    """A close-on-exec fd of the ruleset with its rules added, for enforce()."""
    attr = _ffi.new("struct landlock_ruleset_attr *", {
        "handled_access_fs": ruleset.handled_fs,
        "handled_access_net": ruleset.handled_net,
        "scoped": ruleset.scoped,
    })
    ruleset_fd = _ffi.syscall(
        "landlock_create_ruleset", attr, _ffi.ffi.sizeof("struct landlock_ruleset_attr"), 0,
        detail=f"fs={ruleset.handled_fs:#x} net={ruleset.handled_net:#x} "
               f"scoped={ruleset.scoped:#x}")
    try:
        for rule in ruleset.paths:
            _add_path_rule(ruleset_fd, rule.path, rule.access, ruleset.file_access)
        for port, access in ruleset.ports:
            _add_port_rule(ruleset_fd, port, access)
    except BaseException:
        os.close(ruleset_fd)
        raise
    return ruleset_fd


def _add_path_rule(ruleset_fd: int, path: str, access: int, file_access: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISLNK(mode):
            return
        if not stat.S_ISDIR(mode):
            access &= file_access  # other rights on a non-directory are EINVAL
        if not access:
            return
        rule = _ffi.new("struct landlock_path_beneath_attr *",
                        {"allowed_access": access, "parent_fd": fd})
        _ffi.syscall("landlock_add_rule", ruleset_fd, RULE_PATH_BENEATH, rule, 0,
                     detail=f"{path!r}, access={access:#x}")
    finally:
        os.close(fd)


def _add_port_rule(ruleset_fd: int, port: int, access: int) -> None:
    rule = _ffi.new("struct landlock_net_port_attr *", {"allowed_access": access, "port": port})
    _ffi.syscall("landlock_add_rule", ruleset_fd, RULE_NET_PORT, rule, 0,
                 detail=f"port {port}, access={access:#x}")


_WRITE = 1 << 1 | 1 << 14  # FS_WRITE_FILE, FS_TRUNCATE
_IOCTL_DEV = 1 << 15
_O_ACCMODE = 3
_F_GETFL = 3


def add_own_files(ruleset_fd: int, handled_fs: int) -> None:
    """Write rights on what this process may already write about itself:

    - the files its fds 0-2 are open for writing on (a regular file, named FIFO or
      terminal), so /dev/stdout and /proc/self/fd/N reopen them. The rule is on the
      file itself: its other names become writable too, no other file does.
    - its own /proc/PID directory (comm, oom_score_adj, task/TID/comm): the process
      calling this and, after exec, the command; never another process's, and not
      its children's (a rule lands on one process's directory inode).
    """
    for fd in (0, 1, 2):
        try:
            mode = os.fstat(fd).st_mode
            writing = _ffi.syscall("fcntl", fd, _F_GETFL) & _O_ACCMODE != os.O_RDONLY
        except (OSError, SyscallError):
            continue  # closed
        if not writing:
            continue  # also O_PATH
        if stat.S_ISREG(mode) or stat.S_ISFIFO(mode):
            access = _WRITE
        elif stat.S_ISCHR(mode) and os.isatty(fd):
            access = _WRITE | _IOCTL_DEV
        else:
            continue
        _add_fd_rule(ruleset_fd, fd, access & handled_fs)
    try:
        own = os.open("/proc/self", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return  # no /proc: nothing to grant
    try:
        _add_fd_rule(ruleset_fd, own, _WRITE & handled_fs)
    finally:
        os.close(own)


def _add_fd_rule(ruleset_fd: int, fd: int, access: int) -> None:
    rule = _ffi.new("struct landlock_path_beneath_attr *",
                    {"allowed_access": access, "parent_fd": fd})
    try:
        _ffi.syscall("landlock_add_rule", ruleset_fd, RULE_PATH_BENEATH, rule, 0,
                     detail=f"fd {fd}, access={access:#x}")
    except SyscallError as err:
        if err.errno != errno.EBADFD:  # a pipe or socket: Landlock never checks those
            raise
