"""Package managers' caches: an nsbox-owned area, writable in the sandbox, that the
host's own tools never read and nsbox never trusts.

Layout, under nsbox's cache directory (state.cache_dir(), ~/.cache/nsbox, whose
`seccomp/` holds the HMAC'd filters):

    packages/                       0700; never writable in any sandbox
      shared/                       writable in every run with cache "shared"
      workspaces/                   never writable in any sandbox
        <sha256(workspace)[:16]>/   writable in that workspace's runs with cache "workspace"

Only a leaf is ever writable, so no sandbox can plant a symlink or a directory where
another mode's leaf will be looked up; every leaf is checked (a real directory of
ours, no symlink on the way from the cache directory) before it is mounted. The
area is not a project: it is not scanned for repositories, watched, or searched for
policy files, and nothing nsbox decides is read from it. Inside, the package managers
are pointed at it through their variables (policy.defaults.CACHE_ENV).
"""

import os
import stat

from nsbox.errors import PolicyError
from nsbox.policy import defaults
from nsbox.record import Record

AREA = "packages"
SHARED = "shared"
WORKSPACES = "workspaces"
_KEY_CHARS = 16  # hex digits of the workspace's SHA-256: 64 bits
XDG_CACHE_DIR = defaults.CACHE_ENV[0][1]  # made with the area: some tools expect it


class Area(Record):
    mode: str  # shared | workspace
    path: str  # the leaf, as a real path: the writable root and the variables' base
    base: str  # nsbox's cache directory, as a real path
    exists: bool = True  # False: prepare creates it

    def env(self) -> tuple:
        return tuple((name, f"{self.path}/{rel}") for name, rel in defaults.CACHE_ENV)


def workspace_key(workspace: str) -> str:
    """The per-workspace area's name: a short SHA-256 of the resolved workspace path."""
    try:
        from _sha256 import sha256  # the builtin: no hashlib or OpenSSL at start-up
    except ImportError:
        try:
            from _sha2 import sha256  # Python >= 3.12
        except ImportError:
            from hashlib import sha256
    return sha256(os.fsencode(workspace)).hexdigest()[:_KEY_CHARS]


def leaf_path(base: str, mode: str, workspace: str = "") -> str:
    if mode == SHARED:
        return os.path.join(base, AREA, SHARED)
    return os.path.join(base, AREA, WORKSPACES, workspace_key(workspace))


def locate(mode: str, workspace: str, own) -> Area | None:
    """The run's area (None for "off"), checked as it is on disk; `own`: protect.OwnDirs.
    PolicyError if a symlink or a foreign directory sits on its way, or it overlaps
    nsbox's own state or config."""
    if mode == "off":
        return None
    base = os.path.realpath(own.cache)
    leaf = leaf_path(base, mode, workspace)
    # An area inside the state directory is hidden with it (see left_out); one that
    # holds nsbox's state or config would make them writable.
    for mine in (own.state, own.config):
        if mine and (_under(mine, leaf) or _under(mine, os.path.join(own.cache, AREA))):
            raise PolicyError(f"nsbox's own directory {mine} lies inside the package cache "
                              f"{leaf}; set XDG_CACHE_HOME apart from XDG_STATE_HOME and "
                              "XDG_CONFIG_HOME")
    return Area(mode, leaf, base, exists=_checked(base, leaf))


def _checked(base: str, leaf: str) -> bool:
    """True if the leaf exists, each directory from `base` down to it being ours."""
    path = base
    for part in [""] + leaf[len(base) + 1:].split("/"):
        path = os.path.join(path, part) if part else path
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return False
        except OSError as err:
            raise PolicyError(f"cannot use the package cache {path}: {err.strerror}") from None
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            raise PolicyError(f"{path} is not a directory owned by you (a symlink?); nsbox keeps "
                              "package caches there. Remove it (nsbox recreates it), or pass "
                              "--cache off")
    if info.st_mode & 0o077:  # a sandbox may chmod its own root: close it to others again
        try:
            os.chmod(leaf, 0o700)
        except OSError as err:
            raise PolicyError(f"cannot close the package cache {leaf} to others: "
                              f"{err.strerror}") from None
    return True


def create(area: Area | None) -> None:
    """Make the area's missing directories, 0700, then check them again."""
    if area is None or area.exists:
        return
    path = area.base
    for part in [""] + area.path[len(area.base) + 1:].split("/"):
        path = os.path.join(path, part) if part else path
        try:
            if part:
                os.mkdir(path, 0o700)
            else:  # nsbox's cache directory, and ~/.cache in a fresh home
                os.makedirs(path, 0o700, exist_ok=True)
        except FileExistsError:
            pass
        except OSError as err:
            raise PolicyError(f"cannot create the package cache {path}: {err.strerror}; "
                              "pass --cache off to run without one") from None
    if not _checked(area.base, area.path):
        raise PolicyError(f"the package cache {area.path} vanished while it was made")
    try:
        os.mkdir(os.path.join(area.path, XDG_CACHE_DIR), 0o700)
    except FileExistsError:
        pass


def apply_env(env: dict, area: Area | None, chosen=()) -> None:
    """Point the package managers at `area`, over the caller's variables but not over
    `chosen` (the names the policy sets, --setenv)."""
    if area is None:
        return
    _set(env, area.env(), chosen)
    for name, value in defaults.CACHE_ENV_UNLESS_SET:
        env.setdefault(name, value)


def carry(env: dict, plan_env: dict, chosen=()) -> None:
    """A Session command's own environment gets its plan's cache variables."""
    pairs = tuple((name, plan_env[name]) for name, _ in defaults.CACHE_ENV if name in plan_env)
    if pairs:
        _set(env, pairs, chosen)
        for name, _ in defaults.CACHE_ENV_UNLESS_SET:
            if name in plan_env:
                env.setdefault(name, plan_env[name])


def _set(env: dict, pairs, chosen) -> None:
    chosen = set(chosen)
    any_case = {n.lower() for n in chosen}
    for name, value in pairs:
        if name in chosen:
            continue
        if name in defaults.CACHE_ENV_ANY_CASE:
            if name.lower() in any_case:
                continue
            for other in [k for k in env if k.lower() == name.lower() and k != name]:
                del env[other]
        env[name] = value


def with_mount(protections: tuple, area: Area | None) -> tuple:
    """The protection steps with the area's writable bind among them: after the pins and
    read-only binds, before the masks (so a hidden path inside stays hidden)."""
    if area is None:
        return protections
    from nsbox.policy.plan import MountStep

    at = next((i for i, s in enumerate(protections) if s.kind.startswith("mask_")),
              len(protections))
    return protections[:at] + (MountStep("bind_rw", area.path, area.path),) + protections[at:]


def left_out(area: Area | None, hidden, roots) -> bool:
    """The area lies in a hidden path (the user hid ~/.cache, say), or in a writable root
    of the run, where the tools' own caches are writable and nsbox creates nothing."""
    return area is not None and any(_under(area.path, p) for p in (*hidden, *roots))


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def workspace_leaves(base: str) -> list:
    """The per-workspace areas that exist (their paths), for `nsbox cache`."""
    top = os.path.join(base, AREA, WORKSPACES)
    try:
        with os.scandir(top) as it:
            return sorted(e.path for e in it if e.is_dir(follow_symlinks=False))
    except OSError:
        return []


def is_ours(base: str, leaf: str) -> bool:
    """`leaf` exists as a real directory of ours, with none but ours on the way from `base`
    (PolicyError otherwise), for `nsbox cache clear`."""
    return _checked(base, leaf)
