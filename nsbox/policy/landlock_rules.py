"""Policy -> Landlock ruleset, as immutable data. Pure: no I/O, no kernel calls.

Landlock only ever allows, so a hidden path is denied by granting read on every
sibling along the way down to it instead of on its ancestors. The directory
listings that needs are read by the caller (see `dirs_to_list`) and passed in.
"""

import posixpath
from nsbox.record import Record

# Access rights (linux/landlock.h) and the ABI that introduced them.
FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_REMOVE_DIR = 1 << 4
FS_REMOVE_FILE = 1 << 5
FS_MAKE_CHAR = 1 << 6
FS_MAKE_DIR = 1 << 7
FS_MAKE_REG = 1 << 8
FS_MAKE_SOCK = 1 << 9
FS_MAKE_FIFO = 1 << 10
FS_MAKE_BLOCK = 1 << 11
FS_MAKE_SYM = 1 << 12
FS_REFER = 1 << 13  # ABI 2
FS_TRUNCATE = 1 << 14  # ABI 3
FS_IOCTL_DEV = 1 << 15  # ABI 5
FS_RESOLVE_UNIX = 1 << 16  # ABI 9: connecting to named unix sockets

NET_BIND_TCP = 1 << 0  # ABI 4
NET_CONNECT_TCP = 1 << 1  # ABI 4

SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1  # ABI 6

_FS_BY_ABI = ((1, (1 << 13) - 1), (2, FS_REFER), (3, FS_TRUNCATE), (5, FS_IOCTL_DEV),
              (9, FS_RESOLVE_UNIX))

READ = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR
# The only rights a rule on a non-directory may carry.
FILE_RIGHTS = (FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV
               | FS_RESOLVE_UNIX)
DEVICE_RIGHTS = FS_READ_FILE | FS_WRITE_FILE | FS_TRUNCATE | FS_IOCTL_DEV

# Device nodes a command may write to and use ioctls on. The sandbox's own /dev
# has a private devpts; the host's /dev/pts holds the user's other terminals.
# /dev/console, if there, is the caller's own terminal.
DEVICES_SANDBOX = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom",
                   "/dev/tty", "/dev/pts", "/dev/console")
DEVICES_HOST = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom",
                "/dev/tty")


class PathRule(Record):
    path: str
    access: int


class Ruleset(Record):
    abi: int
    handled_fs: int
    handled_net: int
    scoped: int
    paths: tuple = ()  # PathRule, applied beneath each path
    ports: tuple = ()  # (port, access) pairs
    file_access: int = 0  # the subset of rights valid on a non-directory


def fs_rights(abi: int) -> int:
    rights = 0
    for since, bits in _FS_BY_ABI:
        if abi >= since:
            rights |= bits
    return rights


def net_rights(abi: int) -> int:
    return NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0


def scopes(abi: int) -> int:
    return SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0


def command_domain(abi: int):
    """The ruleset of a session command's own domain, nested in the session's (which
    confines everything else): signals and abstract unix sockets scoped to the
    command's processes. None before ABI 6."""
    scoped = scopes(abi)
    return Ruleset(abi=abi, handled_fs=0, handled_net=0, scoped=scoped) if scoped else None


def build(abi: int, writable=(), tmp=(), network: str = "none", hidden=(), listings=None,
          devices=DEVICES_SANDBOX, confine_fs: bool = True, list_hidden_parents: bool = False,
          net_namespace: bool = False):
    """The ruleset for one sandbox, or None when Landlock would restrict nothing.

    Read and execute everywhere but `hidden`; every right beneath `writable` and
    `tmp`; device rights on `devices`; TCP denied when the network is off, unless
    the sandbox has its own empty net namespace (its loopback is its own business).
    `listings` maps each directory of `dirs_to_list(...)` to its entries.

    A writable root with a hidden path beneath it loses the right to create
    entries directly in the directories on the way down: Landlock has no rule
    for "this directory but not that child". `list_hidden_parents` keeps those
    directories (and, by inheritance, everything beneath) listable, never
    readable; use it only where mounts already hide the names.
    """
    if abi < 1:
        return None
    handled_fs = fs_rights(abi) if confine_fs else 0
    handled_net = net_rights(abi) if network == "none" and not net_namespace else 0
    scoped = scopes(abi)
    if not (handled_fs or handled_net or scoped):
        return None
    rules = []
    if handled_fs:
        hidden = _Hidden(_normalized(hidden))
        listings = listings or {}
        rules += _grant("/", READ, hidden, listings)
        if list_hidden_parents and hidden:
            rules += [PathRule(d, FS_READ_DIR) for d in dirs_to_list((), hidden)]
        for path in devices:
            rules += _grant(path, (READ | DEVICE_RIGHTS) & handled_fs, hidden, listings)
        for root in _unique(tuple(writable) + tuple(tmp)):
            rules += _grant(root, handled_fs, hidden, listings)
    return Ruleset(abi=abi, handled_fs=handled_fs, handled_net=handled_net, scoped=scoped,
                   paths=tuple(rules), file_access=FILE_RIGHTS & handled_fs)


def dirs_to_list(roots, hidden) -> tuple:
    """Directories whose entries `build` needs: every ancestor of a hidden path, from
    each granted root down to the hidden path's parent."""
    needed = {}  # ordered set
    tops = _unique(("/",) + tuple(posixpath.normpath(r) for r in roots))
    for h in _normalized(hidden):
        for root in tops:
            if not _strictly_beneath(h, root):
                continue
            d = posixpath.dirname(h)
            while True:
                needed[d] = None
                if d == root:
                    break
                d = posixpath.dirname(d)
    return tuple(needed)


def _grant(path: str, access: int, hidden: "_Hidden", listings) -> list:
    """Rules giving `access` beneath `path`, leaving out every hidden path.

    An explicitly granted path wins over a hidden ancestor of it.
    """
    path = posixpath.normpath(path)
    if not access:
        return []
    if path not in hidden.above:
        return [PathRule(path, access)]
    rules = []
    for name in sorted(listings.get(path, ())):
        child = posixpath.join(path, name)
        if child not in hidden.paths:
            rules += _grant(child, access, hidden, listings)
    return rules


class _Hidden:
    """Hidden paths and every directory above one, as sets: `_grant` asks per path."""

    def __init__(self, paths: tuple):
        self.ordered, self.paths, self.above = paths, frozenset(paths), set()
        for path in paths:
            while path not in ("/", ""):
                path = posixpath.dirname(path)
                self.above.add(path)

    def __iter__(self):
        return iter(self.ordered)

    def __bool__(self):
        return bool(self.ordered)


def _strictly_beneath(path: str, top: str) -> bool:
    return path != top and path.startswith(top.rstrip("/") + "/")


def _normalized(paths) -> tuple:
    return _unique(tuple(posixpath.normpath(p) for p in paths))


def _unique(items: tuple) -> tuple:
    return tuple(dict.fromkeys(items))
