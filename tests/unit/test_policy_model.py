"""Policy data, defaults, layering and the TOML loader: pure, no root needed."""

import json

import pytest

from nsbox.errors import PolicyError
from nsbox.policy import defaults, env, loader, plan
from nsbox.policy.model import Policy


def test_defaults_are_workspace_write_with_no_network_and_secrets_hidden():
    p = Policy()
    assert p.preset == "workspace-write" and p.network == "none"
    assert "~/.ssh" in p.hidden and "~/.aws" in p.hidden
    assert ".nsbox/" in p.protected
    assert "hooks/" in p.git_protected and "config" in p.git_protected
    # Commits write objects, refs, the index and logs; only alternates redirect git.
    assert not any(g.startswith(("objects", "refs", "index", "logs")) for g in p.git_protected
                   if g != "objects/info/alternates")


def test_full_access_implies_host_network_and_drops_hiding_unless_asked():
    p = Policy(preset="full-access")
    assert p.network == "host" and p.hidden == () and p.protected == ()
    assert Policy(preset="full-access", network="none").network == "none"
    assert Policy(preset="full-access", hidden=("~/.ssh",)).hidden == ("~/.ssh",)


def test_with_changes_rederives_preset_defaults_only_where_untouched():
    p = Policy().with_changes(preset="full-access")
    assert p.network == "host" and p.hidden == ()
    q = Policy(hidden=("~/x",)).with_changes(preset="full-access")
    assert q.hidden == ("~/x",)


def test_policy_is_frozen_and_validates():
    with pytest.raises(Exception):
        Policy().preset = "full-access"
    with pytest.raises(PolicyError, match="network must be one of"):
        Policy(network="bogus")
    with pytest.raises(PolicyError, match="hidden must be a list"):
        Policy(hidden="~/.ssh")
    with pytest.raises(PolicyError, match="extra_env"):
        Policy(extra_env=(("A=B", "c"),))


def test_hiding_and_unhiding():
    p = Policy().unhiding("~/.ssh").hiding("~/notes")
    assert "~/.ssh" not in p.hidden and p.hidden[-1] == "~/notes"


def test_as_dict_is_json_and_digest_is_stable_and_sensitive():
    d = Policy(extra_env=(("A", "1"),)).as_dict()
    json.dumps(d)
    assert d["extra_env"] == [["A", "1"]]
    assert Policy().digest() == Policy().digest()
    assert Policy().digest() != Policy(network="host").digest()
    assert Policy().digest().startswith("sha256:")


# --- merging layers -------------------------------------------------------------------

def test_flags_override_file_and_lists_add_up():
    file_layer = {"preset": "read-only", "network": "host", "writable": ["/a"], "env_keep": ["X"]}
    flags = {"preset": "workspace-write", "writable": ["/b"], "env_keep": ["Y"]}
    p = loader.merge([file_layer, flags])
    assert p.preset == "workspace-write" and p.network == "host"
    assert p.writable == ("/a", "/b") and p.env_keep == ("X", "Y")


def test_hide_and_unhide_apply_in_layer_order():
    p = loader.merge([{"hide": ["~/notes"]}, {"unhide": ["~/.ssh/", "~/notes"]}])
    assert "~/.ssh" not in p.hidden and "~/notes" not in p.hidden and "~/.aws" in p.hidden
    q = loader.merge([{"unhide": ["~/notes"]}, {"hide": ["~/notes"]}])
    assert "~/notes" in q.hidden
    r = loader.merge([{"hidden": ["~/only"]}])
    assert r.hidden == ("~/only",)


def test_full_access_from_file_keeps_explicit_network_from_flags():
    p = loader.merge([{"preset": "full-access"}, {"network": "none"}])
    assert p.network == "none"
    assert loader.merge([{"preset": "full-access"}]).network == "host"


def test_setenv_last_value_wins_and_needs_equals():
    p = loader.merge([{"extra_env": [("A", "file")]},
                      {"extra_env": loader.parse_setenv(["A=flag", "B=x=y"])}])
    assert dict(p.extra_env) == {"A": "flag", "B": "x=y"}
    with pytest.raises(PolicyError, match="NAME=VALUE"):
        loader.parse_setenv(["JUSTNAME"])


def test_unknown_layer_key_is_an_error():
    with pytest.raises(PolicyError, match="frobnicate"):
        loader.merge([{"frobnicate": 1}])


# --- TOML -----------------------------------------------------------------------------

GOOD = """
preset = "workspace-write"
network = "host"

[filesystem]
writable = ["cache", "/abs", "~/h"]
hide = ["~/secrets"]
unhide = ["~/.aws"]

[env]
keep = ["GITHUB_TOKEN"]
set = { FOO = "bar" }
clear = true
"""


def test_toml_file_becomes_a_layer_with_workspace_relative_paths():
    layer = loader.parse_toml(GOOD, "p.toml", base="/ws")
    assert layer["writable"] == ["/ws/cache", "/abs", "~/h"]
    p = loader.merge([layer])
    assert p.network == "host" and p.clearenv and p.env_keep == ("GITHUB_TOKEN",)
    assert dict(p.extra_env) == {"FOO": "bar"}
    assert "~/secrets" in p.hidden and "~/.aws" not in p.hidden


def test_toml_syntax_error_names_file_and_line():
    with pytest.raises(PolicyError) as err:
        loader.parse_toml('preset = "read-only"\nnetwork = \n', "/x/policy.toml")
    assert "/x/policy.toml" in str(err.value) and "line 2" in str(err.value)


def test_unknown_key_names_table_and_line():
    text = 'preset = "read-only"\n\n[filesystem]\nwritable = []\nhidee = ["x"]\n'
    with pytest.raises(PolicyError) as err:
        loader.parse_toml(text, "f.toml")
    msg = str(err.value)
    assert msg.startswith("f.toml: line 5:") and "'hidee'" in msg and "[filesystem]" in msg


def test_bad_value_names_key_and_line():
    with pytest.raises(PolicyError) as err:
        loader.parse_toml('\n\npreset = "yolo"\n', "f.toml")
    assert "line 3" in str(err.value) and "preset must be one of" in str(err.value)
    with pytest.raises(PolicyError, match=r"line 2: \[filesystem\] hide must be a list"):
        loader.parse_toml('[filesystem]\nhide = "~/.x"\n', "f.toml")
    with pytest.raises(PolicyError, match="line 1: best_effort must be true or false"):
        loader.parse_toml('best_effort = "yes"\n', "f.toml")


def test_misplaced_key_gets_a_hint():
    with pytest.raises(PolicyError, match=r"line 1: unknown key 'hide'.*\[filesystem\]"):
        loader.parse_toml('hide = ["x"]\n', "f.toml")


def test_dotted_keys_are_located():
    with pytest.raises(PolicyError, match="line 2"):
        loader.parse_toml('preset = "read-only"\nfilesystem.bogus = 1\n', "f.toml")


# --- environment ----------------------------------------------------------------------

HOST = {"PATH": "/bin", "HOME": "/h", "TERM": "xterm", "LANG": "C", "OPENAI_API_KEY": "k",
        "github_token": "t", "DB_PASSWORD": "p", "AWS_SECRET_ACCESS_KEY": "s",
        "GOOGLE_APPLICATION_CREDENTIALS": "/c", "EDITOR": "vi", "TMPDIR": "/var/x"}


def test_secret_looking_variables_are_dropped():
    out = env.sandbox_env(Policy(), HOST)
    assert "EDITOR" in out and out["PATH"] == "/bin"
    for name in ("OPENAI_API_KEY", "github_token", "DB_PASSWORD", "AWS_SECRET_ACCESS_KEY",
                 "GOOGLE_APPLICATION_CREDENTIALS"):
        assert name not in out
    assert out["TMPDIR"] == "/tmp"


def test_env_keep_and_setenv():
    out = env.sandbox_env(Policy(env_keep=("OPENAI_API_KEY",), extra_env=(("X", "1"),)), HOST)
    assert out["OPENAI_API_KEY"] == "k" and out["X"] == "1"


def test_clearenv_keeps_a_minimal_set():
    out = env.sandbox_env(Policy(clearenv=True, env_keep=("EDITOR",)), HOST)
    assert set(out) == {"PATH", "HOME", "TERM", "LANG", "EDITOR", "TMPDIR"}
    assert env.sandbox_env(Policy(clearenv=True), {})["PATH"] == defaults.DEFAULT_PATH
    assert "EDITOR" in env.dropped_names(Policy(clearenv=True), HOST)


# --- the plan's protection steps ------------------------------------------------------

def test_protection_steps_go_after_writable_binds_pins_first_masks_last():
    steps = plan.protection_steps(pinned=("/ws/.git",), readonly=("/ws/.git/hooks", "/ws/.nsbox"),
                                  hidden=(("/h/.ssh", True), ("/h/.netrc", False)))
    order = [(s.kind, s.target) for s in plan.mount_steps(Policy(), ("/ws",), protections=steps)]
    assert order.index(("bind_rw", "/ws")) < order.index(("pin", "/ws/.git"))
    assert order.index(("pin", "/ws/.git")) < order.index(("bind_ro", "/ws/.git/hooks"))
    assert order.index(("bind_ro", "/ws/.nsbox")) < order.index(("mask_dir", "/h/.ssh"))
    assert ("mask_file", "/h/.netrc") in order
    assert order[-1] == ("proc", "/proc")


def test_visible_hidden_drops_nested_and_private_paths():
    hidden = (("/h/.docker", True), ("/h/.docker/config.json", False), ("/tmp/x/.ssh", True),
              ("/tmp/ws/.aws", True), ("/run/user/1/k", False))
    assert plan.visible_hidden(hidden, ("/tmp/ws",)) == (("/h/.docker", True),
                                                         ("/tmp/ws/.aws", True))
