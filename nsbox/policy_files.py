"""Find and read the policy file: --policy FILE, else the workspace's, else the user's.

Only `stat` runs when there is no file, so `nsbox exec` pays nothing for the feature;
the TOML parser is imported only once a file is found.
"""

import os

WORKSPACE_FILE = os.path.join(".nsbox", "policy.toml")
USER_FILE = os.path.join("nsbox", "config.toml")


def find(explicit: str | None, workspace: str | None, env=None) -> str | None:
    """The policy file that applies, or None. An explicit one must exist."""
    env = os.environ if env is None else env
    if explicit:
        return explicit
    candidate = os.path.join(workspace or os.getcwd(), WORKSPACE_FILE)
    if _is_file(candidate):
        return candidate
    config_home = env.get("XDG_CONFIG_HOME") or (
        os.path.join(env["HOME"], ".config") if env.get("HOME") else "")
    if config_home:
        candidate = os.path.join(config_home, USER_FILE)
        if _is_file(candidate):
            return candidate
    return None


def load(path: str, workspace: str | None) -> dict:
    """A policy layer from the file at `path`; PolicyError names the file on any problem."""
    from nsbox.errors import PolicyError
    from nsbox.policy import loader

    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as err:
        raise PolicyError(f"policy file {path}: {err.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PolicyError(f"policy file {path}: not UTF-8 text") from None
    base = os.path.realpath(workspace or os.getcwd())
    return loader.parse_toml(text, path, base=base)


def _is_file(path: str) -> bool:
    try:
        return os.stat(path).st_mode & 0o170000 == 0o100000
    except OSError:
        return False
