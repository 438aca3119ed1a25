"""Which write the plan stops, and why: the pure half of denial reporting.

The mechanism (launch/denial_watch.py): the command's seccomp filter is compiled in a
reporting variant (kernel/seccomp_compile.py) that, besides the profile's own rules,
notifies write-intent calls (opens with a write, create or truncate flag; mkdir, mknod,
unlink, rmdir, rename, link, symlink, chmod, chown, truncate, utimes, setxattr and their
*at forms) and, instead of failing them, the calls the profile denies. The sandbox's
PID 1 holds the listener, outside the command, and answers every write-intent call
with CONTINUE: the kernel, Landlock and the mounts decide as before, the report is a
diagnostic that can never widen anything. A denied call is answered with the
profile's errno, never CONTINUE. With the listener closed (PID 1 gone) the kernel fails
every notified call with ENOSYS: closed, not open.

Why one filter and not a second, small one for writes: the kernel lets a process
tree hold one listener only, and between stacked filters ERRNO outranks USER_NOTIF,
so a profile-denied call could never reach a separate notifying filter. The variant
has its own cache entry (plan/bpf_cache.py). Calls the profile denies with ENOSYS
(clone3: "fall back to clone") or with different errnos by argument stay plain
ERRNO, unreported: they are not what a user can act on.

This module: the write-intent calls and their arguments, the plan's writable roots,
protected and hidden paths as `Rules`, and `classify`, which must agree with how the
plan decides writability: an event for allowed work would be a bug.
"""

import posixpath

from nsbox.record import Record

# When a call is notified, as the seccomp compiler's conditions on its arguments:
ALWAYS = ("always",)


def _write_flags(index: int) -> tuple:  # an open with a write, create or truncate flag
    return ("flags", index)


def _path_given(index: int) -> tuple:  # not the fd form (futimens: a NULL path)
    return ("nonzero", index)


# The session server's "tell the repeats now" (launch/denial_channel.py): fchmod of fd
# -1 with this mode, the only fchmod notified (calls on an open file are not reported).
FLUSH_MODE = 0xF1A5

# name -> (operation, path arguments, when notified). A path argument is (index of its
# directory fd or None, index of the path), or ("fd", index) for a call on an open file.
CALLS = {
    "open": ("write", ((None, 0),), _write_flags(1)),
    "openat": ("write", ((0, 1),), _write_flags(2)),
    "openat2": ("write", ((0, 1),), ALWAYS),  # flags in struct open_how: read by the supervisor
    "creat": ("write", ((None, 0),), ALWAYS),
    "truncate": ("write", ((None, 0),), ALWAYS),
    "mkdir": ("create", ((None, 0),), ALWAYS),
    "mkdirat": ("create", ((0, 1),), ALWAYS),
    "mknod": ("create", ((None, 0),), ALWAYS),
    "mknodat": ("create", ((0, 1),), ALWAYS),
    "link": ("create", ((None, 1),), ALWAYS),
    "linkat": ("create", ((2, 3),), ALWAYS),
    "symlink": ("create", ((None, 1),), ALWAYS),
    "symlinkat": ("create", ((1, 2),), ALWAYS),
    "unlink": ("delete", ((None, 0),), ALWAYS),
    "unlinkat": ("delete", ((0, 1),), ALWAYS),
    "rmdir": ("delete", ((None, 0),), ALWAYS),
    "rename": ("rename", ((None, 0), (None, 1)), ALWAYS),
    "renameat": ("rename", ((0, 1), (2, 3)), ALWAYS),
    "renameat2": ("rename", ((0, 1), (2, 3)), ALWAYS),
    "chmod": ("chmod", ((None, 0),), ALWAYS),
    "fchmod": ("chmod", (("fd", 0),), ("equals", 1, FLUSH_MODE)),
    "fchmodat": ("chmod", ((0, 1),), ALWAYS),
    "fchmodat2": ("chmod", ((0, 1),), ALWAYS),
    "chown": ("chown", ((None, 0),), ALWAYS),
    "lchown": ("chown", ((None, 0),), ALWAYS),
    "fchownat": ("chown", ((0, 1),), _path_given(1)),
    "utime": ("set times", ((None, 0),), ALWAYS),
    "utimes": ("set times", ((None, 0),), ALWAYS),
    "futimesat": ("set times", ((0, 1),), _path_given(1)),
    "utimensat": ("set times", ((0, 1),), _path_given(1)),
    "setxattr": ("set xattr", ((None, 0),), ALWAYS),
    "lsetxattr": ("set xattr", ((None, 0),), ALWAYS),
    "removexattr": ("set xattr", ((None, 0),), ALWAYS),
    "lremovexattr": ("set xattr", ((None, 0),), ALWAYS),
}
# For the seccomp compiler: ((name, condition), ...), in a stable order. Calls on an open
# file (fchmod, fchown, futimens, fsetxattr ...) are left out: a write-intent open came
# first, and they are most of an archive extraction's calls.
WRITE_INTENT = tuple((name, spec[2]) for name, spec in CALLS.items())
# connect(2), notified under full isolation only (landlock-only: the host's /run, and
# seccomp already refuses inet sockets with the network closed). Reported only when it
# cannot reach what it names: see classify_connect.
CONNECT = (("connect", ALWAYS),)


def notified(full: bool) -> tuple:
    """The calls the reporting filter notifies, for the seccomp compiler."""
    return WRITE_INTENT + (CONNECT if full else ())


WRITE_FLAGS = 0o1 | 0o2 | 0o100 | 0o1000  # O_WRONLY | O_RDWR | O_CREAT | O_TRUNC

OUTSIDE = "outside the writable roots"
# Sockets the C library's name services try on every lookup and do without when absent
# (nscd; systemd's userdb and resolved for NSS): no event, whatever the host runs.
NAME_SERVICE_SOCKETS = ("/run/nscd", "/run/systemd/userdb", "/run/systemd/resolve")
# Pseudo filesystems decide per file (/dev/null, /proc/self/fd/1, ...): never reported.
PSEUDO = ("/proc", "/dev", "/sys")
_WRITABLE_MOUNTS = ("root_writable", "tmpfs", "bind_rw", "bind_new", "overlay", "dev")


class Rules(Record):
    """What the plan lets the command write, as resolved paths in the sandbox's view."""

    writable: tuple = ()  # roots where writes are allowed
    protected: tuple = ()  # read-only paths inside them
    pinned: tuple = ()  # mount points inside them: cannot be removed or renamed
    hidden: tuple = ()  # masked (unreadable, unwritable)
    # Landlock alone decides (no read-only mounts): its check comes after the lookup, so
    # deleting what does not exist fails with ENOENT, not as a denial (a read-only
    # mount refuses first, with EROFS).
    landlock_alone: bool = False
    network: str = "host"  # the policy's network mode, for connect(2)
    private_run: bool = False  # /run is the sandbox's own (full isolation)


class DenialWatch(Record):
    """The reporting variant of a plan's seccomp filter and what its supervisor needs."""

    program: bytes  # loaded in the command process with a listener
    # ((number, name, errno), ...); errno 0: a write-intent call (CONTINUE). A tuple, not a
    # dict: a plan is compared and hashed (service/spares.py)
    syscalls: tuple
    rules: Rules


def rules_for(mounts, landlock, writable) -> Rules:
    """The Rules of a plan: its mount steps, its Landlock ruleset (None: none) and its
    writable roots. With Landlock, its write grants are the writable roots (a mount
    alone does not make a path writable then); without, the writable mounts are."""
    roots = []
    if landlock is not None and getattr(landlock, "handled_fs", 0):
        make_reg = 1 << 8  # FS_MAKE_REG: a directory rule granting writes beneath
        roots = [rule.path for rule in landlock.paths if rule.access & make_reg]
    else:
        roots = [s.target for s in mounts if s.kind in _WRITABLE_MOUNTS]
        if not mounts:
            roots = list(writable)
    protected = [s.target for s in mounts if s.kind == "bind_ro"]
    pinned = [s.target for s in mounts if s.kind == "pin"]
    hidden = [s.target for s in mounts if s.kind in ("mask_dir", "mask_file")]
    return Rules(_norm(roots), _norm(protected), _norm(pinned), _norm(hidden),
                 landlock_alone=not mounts)


def _norm(paths) -> tuple:
    return tuple(dict.fromkeys(posixpath.normpath(p) for p in paths))


def classify(operation: str, path: str, rules: Rules):
    """None when the plan allows `operation` on the resolved absolute `path` (no event),
    else (wall, rule) naming why it is stopped."""
    if _deepest(path, PSEUDO) is not None:
        return None
    hidden = _deepest(path, rules.hidden)
    if hidden is not None:
        return ("hidden", f"hidden path {hidden}")
    if operation in ("delete", "rename") and path in rules.pinned:
        return ("filesystem", f"protected path {path}")
    root = _deepest(path, rules.writable)
    if root is None:
        return ("filesystem", OUTSIDE)
    protected = _deepest(path, rules.protected)
    if protected is not None and _depth(protected) > _depth(root):
        return ("filesystem", f"protected path {protected}")
    return None


def classify_connect(address, rules: Rules, exists):
    """(wall, target, rule) for a connect(2) that cannot reach what it names, else None.
    address: socket_address's result, a unix path made absolute; exists(path) -> bool in
    the sandbox's view. A socket under the sandbox's own /run that is not there (a
    daemon's: docker, D-Bus; not a name service's), or an address off the loopback
    while the network is closed or only reached through the allowlist's proxy. Whether
    the host has that socket is not asked: its /run is hidden, existence included."""
    # Here, not at the top: the supervisor has it loaded, the launch path need not.
    from nsbox.policy.denials import DIRECT, NETWORK_CLOSED, NOT_IN_PRIVATE_RUN, PRIVATE_RUN

    if address[0] == "unix":
        path = posixpath.normpath(address[1])
        if not rules.private_run or _deepest(path, PRIVATE_RUN) is None or exists(path):
            return None
        as_run = "/run" + path[len("/var/run"):] if path.startswith("/var/run/") else path
        if _deepest(as_run, NAME_SERVICE_SOCKETS) is not None:
            return None
        return ("hidden", path, NOT_IN_PRIVATE_RUN)
    _, host, port = address
    if rules.network not in ("none", "allowlist") or _loopback(host):
        return None
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return ("network", target, NETWORK_CLOSED if rules.network == "none" else DIRECT)


def socket_address(data: bytes):
    """A struct sockaddr as ("unix", path) or ("inet", host, port); None for an abstract
    or unnamed unix socket, a short read or another family."""
    family = int.from_bytes(data[:2], "little") if len(data) >= 2 else -1
    if family == 1:  # AF_UNIX
        path = data[2:].split(b"\0", 1)[0]
        return ("unix", path.decode(errors="surrogateescape")) if path else None
    if family == 2 and len(data) >= 8:  # AF_INET
        return ("inet", ".".join(str(b) for b in data[4:8]), int.from_bytes(data[2:4], "big"))
    if family == 10 and len(data) >= 24:  # AF_INET6
        raw = data[8:24]
        if raw[:12] == bytes(10) + b"\xff\xff":  # an IPv4-mapped address
            host = ".".join(str(b) for b in raw[12:])
        else:
            host = _ipv6_text(raw)
        return ("inet", host, int.from_bytes(data[2:4], "big"))
    return None


def _ipv6_text(raw: bytes) -> str:
    groups = [int.from_bytes(raw[i:i + 2], "big") for i in range(0, 16, 2)]
    best, best_len, at = -1, 1, 0  # the longest run of zero groups (two or more)
    while at < 8:
        end = at
        while end < 8 and groups[end] == 0:
            end += 1
        if end - at > best_len:
            best, best_len = at, end - at
        at = end + 1 if end == at else end
    text = [f"{g:x}" for g in groups]
    if best < 0:
        return ":".join(text)
    return ":".join(text[:best]) + "::" + ":".join(text[best + best_len:])


def _loopback(host: str) -> bool:
    return host.startswith("127.") or host in ("::1", "::", "0.0.0.0")


def lexically_allowed(path: str, rules: Rules) -> bool:
    """`path` (absolute, normalized) is allowed with no symlink resolved: the
    supervisor's fast path (the kernel decides anyway; a symlink there that leads out
    goes unreported)."""
    return classify("write", path, rules) is None


def certainly_allowed(rules: Rules):
    """The supervisor's fast check: f(path) for an absolute `path` in bytes with no `.`,
    `..` or empty component. True: `classify` would allow it for every operation with
    nothing resolved (under /proc, /dev or /sys, or under a writable root and neither at
    nor under a protected or hidden path, nor a pinned one). False means "ask classify",
    never "denied"."""
    def tops(paths) -> tuple:
        return tuple(p.rstrip("/").encode(errors="surrogateescape") + b"/" for p in paths)

    pseudo, roots = tops(PSEUDO), tops(rules.writable)
    fenced = tops(rules.protected + rules.hidden)
    exact = frozenset(p.encode(errors="surrogateescape")
                      for p in rules.protected + rules.pinned + rules.hidden)

    def allowed(path: bytes) -> bool:
        if path.startswith(pseudo):
            return True
        return path.startswith(roots) and not path.startswith(fenced) and path not in exact

    return allowed


def _deepest(path: str, tops):
    found = None
    for top in tops:
        if path == top or path.startswith(top.rstrip("/") + "/"):
            if found is None or len(top) > len(found):
                found = top
    return found


def _depth(path: str) -> int:
    return len(path.rstrip("/"))
