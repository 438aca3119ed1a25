"""--isolation / --best-effort: parsing, the Policy they make, and what a run reports."""

from types import SimpleNamespace

import pytest

from conftest import literal_host
from nsbox.cli import exec_args
from nsbox.errors import PolicyError
from nsbox.plan import isolation
from nsbox.policy import landlock_rules


def _policy(*args):
    return exec_args.policy_from_options(exec_args.parse([*args, "--", "true"]).values)


def test_defaults_are_full_isolation_and_fail_closed():
    policy = _policy()
    assert policy.isolation == "full" and policy.best_effort is False


def test_options_map_to_the_policy():
    policy = _policy("--isolation", "auto", "--best-effort")
    assert policy.isolation == "auto" and policy.best_effort is True
    assert _policy("--isolation=landlock").isolation == "landlock"


def test_unknown_isolation_is_a_policy_error():
    with pytest.raises(PolicyError, match="isolation"):
        _policy("--isolation", "chroot")


def _plan(mode, missing=(), fallback="", ruleset=None, protected=()):
    policy = SimpleNamespace(isolation="auto", protected=protected, git_protected=())
    return SimpleNamespace(isolation=mode, isolation_missing=missing, isolation_fallback=fallback,
                           landlock=ruleset, policy=policy)


def test_full_isolation_reports_nothing():
    assert isolation.report(_plan("full")) == []


def test_weaker_isolation_says_so_and_why():
    ruleset = landlock_rules.build(7)
    lines = isolation.report(_plan("landlock", fallback="user.max_user_namespaces=0",
                                   ruleset=ruleset, protected=(".nsbox/",)))
    assert len(lines) == 1
    assert "landlock only" in lines[0] and "user.max_user_namespaces=0" in lines[0]
    assert "unix sockets reachable" in lines[0] and "stay writable" in lines[0]
    # ABI 9 confines named unix sockets too.
    lines = isolation.report(_plan("landlock", ruleset=landlock_rules.build(9)))
    assert "unix sockets" not in lines[0]


def test_best_effort_names_what_is_missing():
    lines = isolation.report(_plan("full", missing=("Landlock (...)",)))
    assert lines == ["best effort: running without Landlock (...)"]


def test_status_is_machine_readable():
    plan = _plan("landlock", missing=("x",), fallback="why", ruleset=landlock_rules.build(7))
    assert isolation.status(plan) == {"requested": "auto", "isolation": "landlock",
                                      "landlock_abi": 7, "missing": ["x"],
                                      "fallback_reason": "why"}


@pytest.mark.parametrize("mode, abi, fails", [
    ("full", 0, True), ("full", 1, False), ("landlock", 0, True),
    ("landlock", 3, True), ("landlock", 5, True), ("landlock", 6, False),
])
def test_missing_protections_fail_closed_unless_best_effort(mode, abi, fails):
    from nsbox.errors import UnsupportedKernel
    from nsbox.policy.model import Policy

    host = literal_host(landlock_abi=abi, landlock_unavailable="" if abi else "CONFIG_SECURITY_LANDLOCK")
    policy = Policy(isolation=mode)
    if fails:
        with pytest.raises(UnsupportedKernel, match="--best-effort"):
            isolation.resolve(policy, host)
        iso = isolation.resolve(policy.with_changes(best_effort=True), host)
        assert iso.missing and iso.mode == mode
    else:
        assert isolation.resolve(policy, host).missing == ()


@pytest.mark.parametrize("mode", ["full", "landlock"])
@pytest.mark.parametrize("abi", [1, 5, 6, 7])
def test_a_session_needs_a_landlock_domain_per_command(mode, abi):
    from nsbox.errors import UnsupportedKernel
    from nsbox.policy.model import Policy

    host = literal_host(landlock_abi=abi)
    policy = Policy(isolation=mode)
    if abi >= 6:
        assert isolation.resolve(policy, host, session=True).missing == ()
        assert landlock_rules.command_domain(abi).scoped == landlock_rules.scopes(abi)
        return
    assert landlock_rules.command_domain(abi) is None
    with pytest.raises(UnsupportedKernel, match="domain per session command"):
        isolation.resolve(policy, host, session=True)
    iso = isolation.resolve(policy.with_changes(best_effort=True), host, session=True)
    assert isolation.SESSION_DOMAINS_MISSING in iso.missing
    if mode == "full":  # a one-shot run needs no such domain
        assert isolation.resolve(policy, host).missing == ()
