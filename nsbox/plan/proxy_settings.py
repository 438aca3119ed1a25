"""The allowlist network's proxy: its settings for a plan, and the proxy variables that
point the command at it. Only runs with network 'allowlist' import this.
"""

from nsbox.errors import PolicyError, UnsupportedKernel
from nsbox.plan.types import LANDLOCK
from nsbox.policy import netallow
from nsbox.policy.model import Policy


def settings(policy: Policy, iso, host_env: dict):
    """The proxy's settings for the plan; a Landlock-only plan cannot hold one."""
    if iso.mode == LANDLOCK:
        # Without a network namespace the command's sockets are the host's: a proxy
        # port on the host loopback would not stop it from connecting anywhere else.
        why = f" ({iso.fallback_reason})" if iso.fallback_reason else ""
        raise UnsupportedKernel(
            "network 'allowlist' needs the sandbox's own network namespace, which "
            f"Landlock-only isolation does not have{why}. Use --isolation full on a host "
            "that allows user namespaces, or --network none")
    overrides = ()
    test_resolve = host_env.get("NSBOX_TEST_RESOLVE")
    if test_resolve:
        import sys

        try:
            overrides = netallow.parse_test_resolve(test_resolve)
        except ValueError as err:
            raise PolicyError(str(err)) from None
        sys.stderr.write("nsbox: WARNING: NSBOX_TEST_RESOLVE is set: the network proxy "
                         "resolves those names to the given addresses. Test use only.\n")
    return netallow.ProxySettings(allow=policy.network_allow, overrides=overrides)


def point_at_proxy(env: dict, policy: Policy, port: int) -> None:
    """Proxy variables override the caller's (its proxy is out of reach), not --setenv."""
    chosen = {name for name, _ in policy.extra_env}
    for name, value in netallow.proxy_env(port).items():
        if name not in chosen:
            env[name] = value
