"""Untrusted policy files may only narrow: the rules, the trust store, and the resolution."""

import json
import os

import pytest

from nsbox.policy import files as policy_files
from nsbox.policy import file_trust
from nsbox.errors import PolicyError
from nsbox import trust_store
from nsbox.policy import loader
from nsbox.policy.trust import only_narrowing


def narrow(layer: dict, **base) -> tuple:
    return only_narrowing(layer, loader.merge([base]))


def kept(layer: dict, **base) -> bool:
    """True if the whole layer narrows (nothing ignored), False if all of it was ignored."""
    narrowed, ignored = narrow(layer, **base)
    assert (narrowed == layer) != bool(ignored), (narrowed, ignored)
    return not ignored


# --- the rules, each in both directions ------------------------------------------------

def test_preset_may_only_go_toward_read_only():
    assert kept({"preset": "read-only"})
    assert kept({"preset": "workspace-write"}, preset="full-access")
    assert kept({"preset": "workspace-write"})
    assert not kept({"preset": "full-access"})
    assert not kept({"preset": "workspace-write"}, preset="read-only")


def test_workspace_and_writable_entries_widen():
    assert narrow({"workspace": "/elsewhere"}) == ({}, ["workspace"])
    assert narrow({"writable": ["/srv"]}) == ({}, ["filesystem.writable"])
    assert kept({"writable": []})


def test_hide_narrows_and_unhide_widens():
    assert kept({"hide": ["secret.txt", "~/notes"]})
    assert narrow({"unhide": ["~/.ssh"]}) == ({}, ["filesystem.unhide"])


@pytest.mark.parametrize("key", ["hidden", "protected", "git_protected"])
def test_replacement_lists_narrow_only_as_supersets(key):
    base = getattr(loader.merge([{}]), key)
    assert base, key
    assert kept({key: [*base, "more"]})
    assert kept({key: list(reversed(base))})
    assert narrow({key: list(base[1:])}) == ({}, [f"filesystem.{key}"])
    assert narrow({key: []}) == ({}, [f"filesystem.{key}"])


def test_hidden_superset_is_measured_against_the_flags():
    assert not kept({"hidden": ["~/.ssh"]}, hide=["/srv/x"])
    assert kept({"hidden": ["/srv/x"]}, preset="full-access")


def test_network_may_only_go_toward_none():
    assert kept({"network": "none"}, network="host")
    assert kept({"network": "allowlist"}, network="host")
    assert kept({"network": "none"}, network_allow=["example.org"])
    assert kept({"network": "none"})
    assert not kept({"network": "host"})
    assert not kept({"network": "allowlist"})
    assert not kept({"network": "host"}, network_allow=["example.org"])


def test_every_network_allow_entry_widens():
    assert narrow({"network_allow": ["example.org"]}, network="host") == ({}, ["network.allow"])
    assert narrow({"network": "allowlist", "network_allow": ["x.org"]}, network="host") == (
        {"network": "allowlist"}, ["network.allow"])


def test_seccomp_may_stay_or_go_from_default_to_strict():
    assert kept({"seccomp": "default"})
    assert kept({"seccomp": "strict"})
    assert kept({"seccomp": "strict"}, seccomp="strict")
    assert not kept({"seccomp": "default"}, seccomp="strict")
    assert not kept({"seccomp": "./mine.json"})
    assert not kept({"seccomp": "/etc/p.json"}, seccomp="/etc/p.json")  # a path never narrows


def test_isolation_may_only_go_toward_full():
    assert kept({"isolation": "full"}, isolation="landlock")
    assert kept({"isolation": "auto"}, isolation="landlock")
    assert kept({"isolation": "full"}, isolation="auto")
    assert not kept({"isolation": "landlock"})
    assert not kept({"isolation": "auto"})
    assert not kept({"isolation": "landlock"}, isolation="auto")


def test_switches_that_widen_when_on():
    assert narrow({"best_effort": True}) == ({}, ["best_effort"])
    assert kept({"best_effort": False})
    assert narrow({"allow_broad_workspace": True}) == ({}, ["allow_broad_workspace"])
    assert kept({"allow_broad_workspace": False})


def test_env_keep_widens_and_env_clear_narrows():
    assert narrow({"env_keep": ["MY_TOKEN"]}) == ({}, ["env.keep"])
    assert kept({"clearenv": True})
    assert kept({"clearenv": False})
    assert narrow({"clearenv": False}, clearenv=True) == ({}, ["env.clear"])


def test_env_set_and_hostname_are_kept():
    assert kept({"extra_env": [("A", "1")], "hostname": "box"})


def test_limits_narrow_one_by_one():
    assert kept({"limits": {"memory": "512M", "wall": 30}})  # set where the base has none
    assert kept({"limits": {"pids": 100, "tmp": "1G"}})  # <= the defaults
    assert kept({"limits": {"memory": "256M"}}, limits={"memory": 512 << 20})
    narrowed, ignored = narrow({"limits": {"memory": "1G", "pids": 10, "nofile": "none"}},
                               limits={"memory": 512 << 20})
    assert narrowed == {"limits": {"pids": 10}}
    assert ignored == ["limits.memory", "limits.nofile"]
    assert narrow({"limits": {"tmp": "2G"}}) == ({}, ["limits.tmp"])


def test_unknown_keys_fail_closed():
    assert narrow({"some_new_setting": True}) == ({}, ["some_new_setting"])


def test_ignored_keys_are_named_as_written_in_toml():
    text = ('preset = "full-access"\nhostname = "box"\n[filesystem]\nunhide = ["~/.ssh"]\n'
            'hide = ["x"]\nwritable = ["/srv"]\n[network]\nmode = "host"\n'
            '[env]\nkeep = ["T"]\nset = { A = "1" }\n[limits]\nmemory = "none"\n')
    narrowed, ignored = narrow(loader.parse_toml(text, "p.toml", base="/ws"),
                               limits={"memory": 1 << 30})
    assert ignored == ["preset", "filesystem.unhide", "filesystem.writable", "network",
                       "env.keep", "limits.memory"]
    assert narrowed == {"hostname": "box", "hide": ["x"], "extra_env": [("A", "1")]}


# --- the trust store -------------------------------------------------------------------

@pytest.fixture
def env(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    return {"HOME": str(home), "XDG_STATE_HOME": str(tmp_path / "state"),
            "XDG_CONFIG_HOME": str(tmp_path / "config")}


def store_file(env) -> str:
    return os.path.join(env["XDG_STATE_HOME"], "nsbox", trust_store.STORE_FILE)


def test_store_trusts_exact_bytes_and_forgets(env):
    sha = trust_store.digest(b"a = 1\n")
    assert trust_store.entries(env) == {}
    trust_store.add("/p/policy.toml", sha, env)
    assert trust_store.is_trusted("/p/policy.toml", sha, env)
    assert not trust_store.is_trusted("/p/policy.toml", trust_store.digest(b"a = 2\n"), env)
    assert not trust_store.is_trusted("/q/policy.toml", sha, env)
    assert json.load(open(store_file(env))) == {"/p/policy.toml": sha}
    assert oct(os.stat(store_file(env)).st_mode & 0o777) == "0o600"
    assert os.listdir(os.path.dirname(store_file(env))) == [trust_store.STORE_FILE]
    assert trust_store.remove("/p/policy.toml", env) is True
    assert trust_store.remove("/p/policy.toml", env) is False
    assert not trust_store.is_trusted("/p/policy.toml", sha, env)


def test_corrupt_store_trusts_nothing(env):
    os.makedirs(os.path.dirname(store_file(env)), mode=0o700)
    with open(store_file(env), "w") as f:
        f.write('["not", "a", "map"]')
    assert not trust_store.is_trusted("/p", "x", env)
    with pytest.raises(PolicyError, match="corrupt"):
        trust_store.add("/p", "x", env)


# --- resolution: which file, trusted or narrowed ---------------------------------------

WIDENING = '[filesystem]\nunhide = ["~/.ssh"]\nhide = ["x"]\n[env]\nkeep = ["MY_TOKEN"]\n'


@pytest.fixture
def ws(tmp_path):
    path = tmp_path / "ws"
    (path / ".nsbox").mkdir(parents=True)
    return path


def trust(path, env):
    real, data = file_trust.read_exact(str(path))
    trust_store.add(real, trust_store.digest(data), env)


def test_workspace_file_narrows_until_trusted_and_again_once_changed(ws, env, monkeypatch):
    monkeypatch.chdir(ws)
    file = ws / ".nsbox" / "policy.toml"
    file.write_text(WIDENING)
    policy, decision = policy_files.resolve(None, {"workspace": str(ws)}, env)
    assert "~/.ssh" in policy.hidden and "x" in policy.hidden and policy.env_keep == ()
    assert decision.as_dict() == {
        "path": str(file), "sha256": trust_store.digest(WIDENING.encode()),
        "decision": "untrusted", "reason": "workspace policy file",
        "ignored": ["filesystem.unhide", "env.keep"]}
    assert decision.describe() == ("policy .nsbox/policy.toml (untrusted: widening keys "
                                   "ignored: filesystem.unhide, env.keep)")
    trust(file, env)
    policy, decision = policy_files.resolve(None, {"workspace": str(ws)}, env)
    assert "~/.ssh" not in policy.hidden and policy.env_keep == ("MY_TOKEN",)
    assert decision.trusted and decision.describe() == "policy .nsbox/policy.toml (trusted)"
    assert decision.reason == "workspace policy file, trusted with nsbox trust"
    file.write_text(WIDENING + "# edited\n")
    policy, decision = policy_files.resolve(None, {"workspace": str(ws)}, env)
    assert not decision.trusted and "~/.ssh" in policy.hidden


def test_narrowing_file_needs_no_trust(ws, env):
    (ws / ".nsbox" / "policy.toml").write_text('[filesystem]\nhide = ["secret.txt"]\n')
    policy, decision = policy_files.resolve(None, {"workspace": str(ws)}, env)
    assert "secret.txt" in policy.hidden
    assert decision.ignored == () and decision.describe().endswith("(untrusted: narrows only)")


def test_explicit_file_is_trusted_outside_the_writable_roots(ws, env, tmp_path):
    outside = tmp_path / "outside.toml"
    outside.write_text(WIDENING)
    policy, decision = policy_files.resolve(str(outside), {"workspace": str(ws)}, env)
    assert decision.trusted and decision.reason == "outside every writable root"
    assert policy.env_keep == ("MY_TOKEN",)
    assert decision.describe() == f"policy {outside} (trusted)"


def test_explicit_file_under_any_writable_root_is_untrusted(ws, env, tmp_path):
    extra = tmp_path / "extra"
    (extra / "deep").mkdir(parents=True)
    planted = extra / "deep" / "p.toml"
    planted.write_text(WIDENING)
    link = tmp_path / "link.toml"  # the real path decides, not the name given
    link.symlink_to(planted)
    flags = {"workspace": str(ws), "writable": [str(extra)], "preset": "read-only"}
    for given in (planted, link):
        policy, decision = policy_files.resolve(str(given), flags, env)
        assert not decision.trusted and decision.reason == f"in writable root {extra}"
        assert decision.as_dict()["path"] == str(planted)
        assert policy.env_keep == ()
    in_ws = ws / "p.toml"
    in_ws.write_text(WIDENING)
    _, decision = policy_files.resolve(str(in_ws), {"workspace": str(ws)}, env)
    assert decision.reason == f"in writable root {ws}"


def test_user_config_is_trusted_unless_a_writable_root_holds_it(ws, env, tmp_path):
    config = tmp_path / "config" / "nsbox" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(WIDENING)
    policy, decision = policy_files.resolve(None, {"workspace": str(ws)}, env)
    assert decision.trusted and decision.path == str(config) and policy.env_keep == ("MY_TOKEN",)
    policy, decision = policy_files.resolve(None, {"workspace": str(tmp_path)}, env)
    assert not decision.trusted and policy.env_keep == ()


def test_no_file_no_decision(ws, env):
    policy, decision = policy_files.resolve(None, {"workspace": str(ws), "hide": ["y"]}, env)
    assert decision is None and "y" in policy.hidden


def test_seccomp_file_in_a_writable_root_is_refused_until_trusted(ws, env, tmp_path):
    profile = ws / "profile.json"
    profile.write_text('{"default_action": "allow", "rules": []}')

    def check(path):
        trust_store.check_profile(str(path), path.read_bytes(), (str(ws),), env)

    with pytest.raises(PolicyError) as refused:
        check(profile)
    message = str(refused.value)
    assert str(profile) in message and f"writable root {ws}" in message
    assert f"nsbox trust {profile}" in message and "move it" in message
    trust(profile, env)
    check(profile)
    profile.write_text('{"default_action": "allow", "rules": [ ]}')
    with pytest.raises(PolicyError):
        check(profile)
    outside = tmp_path / "outside.json"
    outside.write_text("{}")
    check(outside)


def test_seccomp_path_from_an_untrusted_file_is_ignored(ws, env):
    (ws / ".nsbox" / "policy.toml").write_text('seccomp = "/etc/x.json"\n')
    policy, decision = policy_files.resolve(None, {"workspace": str(ws)}, env)
    assert policy.seccomp == "default" and decision.ignored == ("seccomp",)


def test_bad_policy_file_names_it(ws, env):
    (ws / ".nsbox" / "policy.toml").write_bytes(b"\xff")
    with pytest.raises(PolicyError, match="not UTF-8"):
        policy_files.resolve(None, {"workspace": str(ws)}, env)
