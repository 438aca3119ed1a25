"""nsbox's own directories on the host, and the rule that guards them.

config: the user's policy defaults (config.toml). state: the trust store and the
cache key; hidden in every sandbox. cache: compiled seccomp programs, accepted
only with a valid MAC under the state directory's key. A sandbox may never write
any of them (see launch/protect.py), because later runs read them.
"""

import os


def home(env=None) -> str:
    """$HOME, else the password database's entry (what `~` means for nsbox's own files)."""
    env = os.environ if env is None else env
    value = env.get("HOME", "")
    if os.path.isabs(value):
        return value
    return password_home() or "/"


def password_home() -> str:
    """The home directory the password database gives this user ('' if none)."""
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_dir or ""
    except KeyError:
        return ""


def _xdg(env, variable: str, default: str) -> str:
    env = os.environ if env is None else env
    base = env.get(variable, "")
    if not os.path.isabs(base):
        base = os.path.join(home(env), default)
    return os.path.join(base, "nsbox")


def config_dir(env=None) -> str:
    return _xdg(env, "XDG_CONFIG_HOME", ".config")


def state_dir(env=None) -> str:
    return _xdg(env, "XDG_STATE_HOME", os.path.join(".local", "state"))


def cache_dir(env=None) -> str:
    return _xdg(env, "XDG_CACHE_HOME", ".cache")


def ensure_state_dir(env=None) -> str:
    """The state directory, created 0700 if missing; PolicyError if it is not safely ours.

    Made before any sandbox starts, so that it exists (and is hidden) in every run.
    """
    from nsbox.errors import PolicyError

    path = state_dir(env)
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        info = os.lstat(path)
    except OSError as err:
        raise PolicyError(f"cannot create nsbox's state directory {path}: {err.strerror}; "
                          "set XDG_STATE_HOME to a directory you own") from None
    if not _owned_dir(info):
        raise PolicyError(f"nsbox's state directory {path} is not a directory owned by you "
                          "and closed to others; remove it (nsbox recreates it)")
    return path


def _owned_dir(info) -> bool:
    import stat

    return (stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid()
            and not info.st_mode & 0o022)
