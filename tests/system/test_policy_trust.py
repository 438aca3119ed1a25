"""Policy files a sandbox could have written only narrow the policy until `nsbox trust`.

Every run uses a private HOME (outside /tmp, which is private inside the sandbox),
state and config directory, so the user's own trust store is never touched. Each
denial also checks that the sandbox started (the command printed its marker).
"""

import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import tempfile

import pytest

from conftest import host_tcp_listener, nsbox_cmd

PY = "/usr/bin/python3"  # an interpreter every test user can run inside the sandbox
KEY = "PRIVATE-KEY-MATERIAL"
WIDENING = 'network = "host"\n[filesystem]\nunhide = ["~/.ssh"]\n[env]\nkeep = ["MY_TOKEN"]\n'
IGNORED = "widening keys ignored: network, filesystem.unhide, env.keep"
PROBE = ('echo started; cat "$HOME/.ssh/id_ed25519"; echo "token=${MY_TOKEN:-absent}"; '
         f'{PY} -c "$NET_PROBE"')


@pytest.fixture
def env(tmp_path):
    """Environment for nsbox: a fake HOME with a key, private trust store and config."""
    home = tempfile.mkdtemp(prefix="nsbox-home-", dir="/var/tmp")
    os.makedirs(f"{home}/.ssh")
    with open(f"{home}/.ssh/id_ed25519", "w") as f:
        f.write(KEY + "\n")
    values = dict(os.environ, HOME=home, XDG_STATE_HOME=str(tmp_path / "state"),
                  XDG_CONFIG_HOME=str(tmp_path / "config"), MY_TOKEN="token-value",
                  NET_PROBE="print('no probe')")
    yield values
    shutil.rmtree(home, ignore_errors=True)


def nsbox(*args, env, cwd=None):
    return subprocess.run(nsbox_cmd(*args), capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=60)


def run(workspace, script, *opts, env, cwd=None):
    return nsbox("exec", "--workspace", str(workspace), *opts, "--", "sh", "-c", script,
                 env=env, cwd=cwd)


def policy_lines(r) -> list:
    return [line for line in r.stderr.splitlines() if line.startswith("nsbox: policy ")]


def assert_narrowed(r):
    """Started, and none of WIDENING applied: key hidden, token dropped, no host network."""
    assert "started" in r.stdout, r.stderr
    assert KEY not in r.stdout and "token=absent" in r.stdout
    assert "connected" not in r.stdout


@contextlib.contextmanager
def accepting_listener():
    """A host loopback listener; yields Python code that connects to it and prints 'connected'."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    try:
        yield (f"import socket; s = socket.socket(); s.settimeout(3); "
               f"s.connect(('127.0.0.1', {srv.getsockname()[1]})); print('connected')")
    finally:
        srv.close()


# (a) ----------------------------------------------------------------------------------

def test_narrowing_workspace_file_applies_without_trust(workspace, env):
    (workspace / ".nsbox").mkdir()
    (workspace / ".nsbox" / "policy.toml").write_text('[filesystem]\nhide = ["secret.txt"]\n')
    (workspace / "secret.txt").write_text("TOP-SECRET\n")
    r = run(workspace, "echo started; cat secret.txt", env=env, cwd=workspace)
    assert "started" in r.stdout and "TOP-SECRET" not in r.stdout, r.stderr
    assert policy_lines(r) == ["nsbox: policy .nsbox/policy.toml (untrusted: narrows only)"]


# (b) ----------------------------------------------------------------------------------

def test_widening_workspace_file_is_ignored_until_trusted(workspace, env, tmp_path):
    policy = workspace / ".nsbox" / "policy.toml"
    policy.parent.mkdir()
    policy.write_text(WIDENING)
    status = tmp_path / "status.json"
    with host_tcp_listener() as probe:
        r = run(workspace, PROBE, "--json-status", str(status), env={**env, "NET_PROBE": probe},
                cwd=workspace)
    assert_narrowed(r)
    assert policy_lines(r) == [f"nsbox: policy .nsbox/policy.toml (untrusted: {IGNORED})"]
    record = json.loads(status.read_text())
    assert record["policy_file"] == {
        "path": os.path.realpath(policy),
        "sha256": hashlib.sha256(WIDENING.encode()).hexdigest(),
        "decision": "untrusted", "reason": "workspace policy file",
        "ignored": ["network", "filesystem.unhide", "env.keep"]}
    assert record["policy"]["network"] == "none"

    trusted = nsbox("trust", env=env, cwd=workspace)
    assert trusted.returncode == 0, trusted.stderr
    assert os.path.realpath(policy) in trusted.stdout
    assert "widens nsbox's defaults: network, filesystem.unhide, env.keep" in trusted.stdout
    with accepting_listener() as probe:
        r = run(workspace, PROBE, "--json-status", str(status), env={**env, "NET_PROBE": probe})
    assert "started" in r.stdout and KEY in r.stdout, r.stderr
    assert "token=token-value" in r.stdout and "connected" in r.stdout
    assert policy_lines(r) == [f"nsbox: policy {policy} (trusted)"]
    assert json.loads(status.read_text())["policy_file"]["decision"] == "trusted"

    policy.write_text(WIDENING + "# edited after trust\n")
    with host_tcp_listener() as probe:
        r = run(workspace, PROBE, env={**env, "NET_PROBE": probe})
    assert_narrowed(r)
    assert policy_lines(r) == [f"nsbox: policy {policy} (untrusted: {IGNORED})"]
    listed = nsbox("trust", "--list", env=env)
    assert "(changed: untrusted)" in listed.stdout


def test_untrust_takes_trust_back(workspace, env):
    (workspace / ".nsbox").mkdir()
    (workspace / ".nsbox" / "policy.toml").write_text(WIDENING)
    assert nsbox("trust", env=env, cwd=workspace).returncode == 0
    assert str(workspace) in nsbox("trust", "--list", env=env).stdout
    untrusted = nsbox("untrust", env=env, cwd=workspace)
    assert untrusted.returncode == 0 and "untrusted" in untrusted.stdout
    r = run(workspace, PROBE, env=env)
    assert_narrowed(r)
    again = nsbox("untrust", env=env, cwd=workspace)
    assert again.returncode == 1 and "was not trusted" in again.stderr


def test_trust_usage_errors_are_short(tmp_path, env):
    for args in (["trust"], ["trust", str(tmp_path / "none.toml")], ["trust", "a", "b"],
                 ["trust", "--list", "x"]):
        r = nsbox(*args, env=env, cwd=tmp_path)
        assert r.returncode == 2, (args, r.stderr)
        assert "Traceback" not in r.stderr and r.stderr.strip()


def test_policy_show_reports_the_decision(workspace, env):
    (workspace / ".nsbox").mkdir()
    (workspace / ".nsbox" / "policy.toml").write_text(WIDENING)
    r = nsbox("policy", "show", "--workspace", str(workspace), env=env)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["policy"]["network"] == "none" and report["policy"]["env_keep"] == []
    assert report["policy_file_trust"]["decision"] == "untrusted"
    assert report["policy_file_trust"]["ignored"] == ["network", "filesystem.unhide", "env.keep"]


def test_explicit_file_outside_the_writable_roots_is_trusted(workspace, env, tmp_path):
    outside = tmp_path / "mine.toml"
    outside.write_text('[env]\nkeep = ["MY_TOKEN"]\n')
    r = run(workspace, 'echo "token=${MY_TOKEN:-absent}"', "--policy", str(outside), env=env)
    assert "token=token-value" in r.stdout, r.stderr
    assert policy_lines(r) == [f"nsbox: policy {outside} (trusted)"]


# (c) ----------------------------------------------------------------------------------

def test_files_planted_by_a_sandbox_cannot_widen_the_next_run(workspace, env, tmp_path):
    extra = tmp_path / "extra"
    extra.mkdir()
    plant = (f"mkdir -p sub/.nsbox && printf '%s' '{WIDENING}' > sub/.nsbox/policy.toml && "
             f"printf '%s' '{WIDENING}' > {extra}/evil.toml && echo planted")
    r = run(workspace, plant, "--writable", str(extra), env=env)
    assert "planted" in r.stdout, r.stderr
    assert (workspace / "sub" / ".nsbox" / "policy.toml").read_text() == WIDENING
    assert (extra / "evil.toml").read_text() == WIDENING

    with host_tcp_listener() as probe:
        probed = {**env, "NET_PROBE": probe}
        by_workspace = run(workspace / "sub", PROBE, env=probed)
        by_policy = run(workspace, PROBE, "--policy", str(workspace / "sub/.nsbox/policy.toml"),
                        env=probed)
        by_root = run(workspace, PROBE, "--writable", str(extra),
                      "--policy", str(extra / "evil.toml"), env=probed)
    for r in (by_workspace, by_policy, by_root):
        assert_narrowed(r)
        [line] = policy_lines(r)
        assert line.endswith(f"(untrusted: {IGNORED})")


# (d) ----------------------------------------------------------------------------------

def test_seccomp_profile_in_the_workspace_needs_trust(workspace, env, tmp_path):
    from nsbox.policy import profiles

    profile = workspace / "profile.json"
    shutil.copy(profiles.find("default"), profile)
    r = run(workspace, "echo started", "--seccomp", str(profile), env=env)
    assert r.returncode == 125 and "started" not in r.stdout
    assert f"seccomp profile {profile} is in writable root {workspace}" in r.stderr
    assert f"nsbox trust {profile}" in r.stderr
    trusted = nsbox("trust", str(profile), env=env)
    assert trusted.returncode == 0 and "seccomp profile" in trusted.stdout, trusted.stderr
    r = run(workspace, "echo started", "--seccomp", str(profile), env=env)
    assert r.returncode == 0 and r.stdout == "started\n", r.stderr


def test_seccomp_profile_outside_the_roots_needs_no_trust(workspace, env, tmp_path):
    from nsbox.policy import profiles

    profile = tmp_path / "profile.json"
    shutil.copy(profiles.find("default"), profile)
    r = run(workspace, "echo started", "--seccomp", str(profile), env=env)
    assert r.returncode == 0 and r.stdout == "started\n", r.stderr


# --- the integrations ----------------------------------------------------------------

@pytest.fixture
def host_env(env, monkeypatch):
    for name in ("HOME", "XDG_STATE_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.setenv(name, env[name])
    return env


def test_inspect_policy_is_narrowed_and_logged(workspace, host_env, caplog):
    pytest.importorskip("inspect_ai")
    from nsbox.integrations.inspect_sandbox import policy_for

    planted = workspace / "p.toml"
    planted.write_text(WIDENING)
    with caplog.at_level("INFO", logger="nsbox"):
        policy = policy_for(str(planted), str(workspace))
    assert policy.network == "none" and "~/.ssh" in policy.hidden and policy.env_keep == ()
    [logged] = caplog.records
    assert logged.levelname == "WARNING" and IGNORED in logged.getMessage()


def test_mini_swe_agent_policy_is_narrowed_and_logged(workspace, host_env, caplog, monkeypatch):
    monkeypatch.setenv("MSWEA_GLOBAL_CONFIG_DIR", f"/tmp/nsbox-test-mswea-{os.getuid()}")
    monkeypatch.setenv("MSWEA_SILENT_STARTUP", "1")
    pytest.importorskip("minisweagent")
    from nsbox.integrations.mini_swe_agent import _policy

    (workspace / ".nsbox").mkdir()
    (workspace / ".nsbox" / "policy.toml").write_text('hostname = "box"\n' + WIDENING)
    with caplog.at_level("INFO", logger="nsbox"):
        policy = _policy("", str(workspace), {})
    assert policy.hostname == "box" and policy.network == "none" and policy.env_keep == ()
    [logged] = caplog.records
    assert logged.levelname == "WARNING" and "workspace policy file" in logged.getMessage()
