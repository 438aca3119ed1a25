"""The command's environment, from the caller's and the policy. Pure functions."""

from nsbox.policy import defaults
from nsbox.policy.model import Policy


def looks_secret(name: str) -> bool:
    upper = name.upper()
    return any(word in upper for word in defaults.SECRET_ENV_WORDS)


def sandbox_env(policy: Policy, host_env: dict, tmpdir: str = "/tmp") -> dict:
    """What the command sees: host variables minus secrets (or a minimal set), then --setenv."""
    keep = set(policy.env_keep)
    if policy.clearenv:
        keep |= set(defaults.MINIMAL_ENV)
        env = {k: v for k, v in host_env.items() if k in keep}
        env.setdefault("PATH", defaults.DEFAULT_PATH)
    else:
        env = {k: v for k, v in host_env.items() if k in keep or not looks_secret(k)}
    env["TMPDIR"] = tmpdir  # the host's TMPDIR is not visible inside
    env.update(policy.extra_env)
    return env


def dropped_names(policy: Policy, host_env: dict) -> list:
    """Names of the caller's variables the command will not see, for review."""
    kept = sandbox_env(policy, host_env)
    return sorted(k for k in host_env if k not in kept)
