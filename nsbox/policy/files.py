"""The policy file: find it, and layer it under the flags (file_trust reads it and
decides whether to trust it).

A file a sandbox could have written (the workspace's, or any under a writable
root of the run) may only narrow the policy unless the user trusted its exact
bytes with `nsbox trust`. Only `stat` runs when there is no file, so `nsbox
exec` pays nothing for the feature; file_trust is imported once a file is found.
"""

import os

WORKSPACE_FILE = os.path.join(".nsbox", "policy.toml")
USER_FILE = os.path.join("nsbox", "config.toml")


def resolve(explicit: str | None, flags: dict, env=None):
    """(Policy, Decision or None): the policy file that applies (see find), whole if
    trusted, else only its narrowing settings, layered under `flags` (a layer with the
    run's `workspace` and `writable`). PolicyError names the file on any problem."""
    from nsbox.policy import loader

    workspace = flags.get("workspace")
    path = find(explicit, workspace, env)
    layers, decision = [], None
    if path:
        from nsbox.policy import file_trust

        layer, decision = file_trust.read(path, explicit, flags, env)
        layers.append(layer)
    # A --seccomp file in a writable root is checked where its bytes are compiled
    # (launch/seccomp_filter.py), against the trust store.
    return loader.merge(layers + [flags]), decision


def log(decision) -> None:
    """Report a decision to the "nsbox" logger (see file_trust.log)."""
    from nsbox.policy import file_trust

    file_trust.log(decision)


def find(explicit: str | None, workspace: str | None, env=None) -> str | None:
    """The policy file that applies, or None. An explicit one must exist."""
    env = os.environ if env is None else env
    if explicit:
        return explicit
    candidate = workspace_file(workspace)
    if _is_file(candidate):
        return candidate
    config_home = env.get("XDG_CONFIG_HOME") or (
        os.path.join(env["HOME"], ".config") if env.get("HOME") else "")
    if config_home:
        candidate = os.path.join(config_home, USER_FILE)
        if _is_file(candidate):
            return candidate
    return None


def workspace_file(workspace: str | None) -> str:
    return os.path.join(workspace or os.getcwd(), WORKSPACE_FILE)


def _is_file(path: str) -> bool:
    try:
        return os.stat(path).st_mode & 0o170000 == 0o100000
    except OSError:
        return False
