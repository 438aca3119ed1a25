"""The policy's filesystem, environment and config-file rules, against the real kernel.

Each escape test tries the escape for real and checks both the denial and that
nothing changed on the host.
"""

import json
import os
import shutil
import subprocess
import tempfile

import pytest

from conftest import nsbox_cmd

GIT = shutil.which("git")
needs_git = pytest.mark.skipif(GIT is None, reason="git is not installed")


@pytest.fixture
def fake_home():
    """A HOME with secrets, outside /tmp (the sandbox's /tmp is private, so it would hide anything)."""
    home = tempfile.mkdtemp(prefix="nsbox-home-", dir="/var/tmp")
    os.makedirs(f"{home}/.ssh")
    with open(f"{home}/.ssh/id_ed25519", "w") as f:
        f.write("PRIVATE-KEY-MATERIAL\n")
    os.makedirs(f"{home}/.config/gcloud")
    with open(f"{home}/.config/gcloud/credentials.db", "w") as f:
        f.write("GCLOUD-SECRET\n")
    with open(f"{home}/.netrc", "w") as f:
        f.write("machine x login y password NETRC-SECRET\n")
    with open(f"{home}/notes.txt", "w") as f:
        f.write("ordinary\n")
    yield home
    shutil.rmtree(home, ignore_errors=True)


def env_with(**extra):
    env = dict(os.environ)
    env.update(extra)
    return env


# --- hidden paths ---------------------------------------------------------------------

def test_secrets_under_home_are_unreadable_and_not_listed(nsbox_exec, fake_home):
    r = nsbox_exec('ls -A "$HOME/.ssh"; echo ---; cat "$HOME/.ssh/id_ed25519"; '
                   'cat "$HOME/.netrc"; cat "$HOME/.config/gcloud/credentials.db"; '
                   'echo ---; cat "$HOME/notes.txt"', env=env_with(HOME=fake_home))
    out = r.stdout.decode()
    listing, _, rest = out.partition("---\n")
    assert listing == ""
    for secret in ("PRIVATE-KEY-MATERIAL", "NETRC-SECRET", "GCLOUD-SECRET", "id_ed25519"):
        assert secret not in out
    assert "ordinary" in rest  # the rest of HOME is readable


def test_unhide_and_hide_flags(nsbox_exec, fake_home):
    r = nsbox_exec('cat "$HOME/.ssh/id_ed25519"; cat "$HOME/notes.txt"',
                   "--unhide", "~/.ssh", "--hide", "~/notes.txt", env=env_with(HOME=fake_home))
    assert b"PRIVATE-KEY-MATERIAL" in r.stdout
    assert b"ordinary" not in r.stdout


def test_hidden_path_inside_a_writable_root_stays_hidden(nsbox_exec, fake_home):
    r = nsbox_exec('cat "$HOME/.ssh/id_ed25519"; rm -rf "$HOME/.ssh"; mv "$HOME/.ssh" "$HOME/x"; '
                   'echo new > "$HOME/.ssh/planted"; echo ok > "$HOME/notes.txt"',
                   "--writable", fake_home, "--allow-broad-workspace", env=env_with(HOME=fake_home))
    assert b"PRIVATE-KEY-MATERIAL" not in r.stdout
    assert open(f"{fake_home}/.ssh/id_ed25519").read() == "PRIVATE-KEY-MATERIAL\n"
    assert os.listdir(f"{fake_home}/.ssh") == ["id_ed25519"]
    assert open(f"{fake_home}/notes.txt").read() == "ok\n"  # the root itself is writable


# --- git: commits work, what runs later outside does not change -------------------------

def git(*args, cwd):
    subprocess.run([GIT, "-c", "user.name=t", "-c", "user.email=t@e", *args], cwd=cwd,
                   check=True, capture_output=True)


COMMIT = 'git -c user.name=a -c user.email=a@b commit -q --allow-empty -m inside && echo COMMITTED'


@needs_git
def test_git_commit_works_but_hooks_and_config_are_read_only(nsbox_exec, workspace):
    git("init", "-q", cwd=workspace)
    git("commit", "-q", "--allow-empty", "-m", "first", cwd=workspace)
    shutil.rmtree(workspace / ".git" / "hooks")  # a protected dir that does not exist yet
    config_before = (workspace / ".git" / "config").read_text()
    r = nsbox_exec(COMMIT + '; echo "#!/bin/sh" > .git/hooks/pre-commit; '
                   'printf "[core]\\nhooksPath=/x\\n" >> .git/config; '
                   'echo x > cfg && mv cfg .git/config; '
                   'mv .git .git-away; rmdir .git; mkdir -p .git/info; echo x > .git/info/attributes')
    assert b"COMMITTED" in r.stdout, r.stderr
    log = subprocess.run([GIT, "log", "--format=%s"], cwd=workspace, capture_output=True, text=True)
    assert log.stdout.split() == ["inside", "first"]
    assert os.listdir(workspace / ".git" / "hooks") == []
    assert (workspace / ".git" / "config").read_text() == config_before
    assert not (workspace / ".git-away").exists()
    assert not (workspace / ".git" / "info" / "attributes").exists()


@needs_git
def test_git_worktree_commits_and_protects_the_shared_git_dir(nsbox_exec, workspace, tmp_path):
    main = tmp_path / "main"
    main.mkdir()
    git("init", "-q", cwd=main)
    git("commit", "-q", "--allow-empty", "-m", "first", cwd=main)
    os.rmdir(workspace)
    git("worktree", "add", "-q", "-b", "wt", str(workspace), cwd=main)
    pointer = (workspace / ".git").read_text()
    r = nsbox_exec(COMMIT + '; echo "#!/bin/sh" > "$(git rev-parse --git-common-dir)/hooks/pre-commit"; '
                   'echo "gitdir: /elsewhere" > .git; mv .git .git-away; '
                   'echo x >> "$(git rev-parse --git-common-dir)/config"')
    assert b"COMMITTED" in r.stdout, r.stderr
    log = subprocess.run([GIT, "log", "--format=%s", "wt"], cwd=main, capture_output=True, text=True)
    assert log.stdout.split() == ["inside", "first"]
    assert not (main / ".git" / "hooks" / "pre-commit").exists()
    assert (workspace / ".git").read_text() == pointer
    assert not (workspace / ".git-away").exists()
    assert b"x" not in (main / ".git" / "config").read_bytes().splitlines()[-1]


# --- the policy file ------------------------------------------------------------------

def test_workspace_policy_file_applies_and_cannot_be_edited_inside(nsbox_exec, workspace):
    (workspace / ".nsbox").mkdir()
    policy = workspace / ".nsbox" / "policy.toml"
    policy.write_text('[env]\nset = { FROM_FILE = "yes", BOTH = "file" }\n')
    r = nsbox_exec('echo "$FROM_FILE $BOTH"; echo \'preset = "full-access"\' > .nsbox/policy.toml; '
                   'rm -f .nsbox/policy.toml; mv .nsbox gone; echo > x && mv x .nsbox/policy.toml',
                   "--setenv", "BOTH=flag")
    assert r.stdout.splitlines()[0] == b"yes flag"
    assert policy.read_text() == '[env]\nset = { FROM_FILE = "yes", BOTH = "file" }\n'
    assert not (workspace / "gone").exists()


def test_planted_nsbox_policy_is_reported_and_cannot_widen_the_next_run(nsbox_exec, workspace):
    # Outside the workspace and off the sandbox's private /tmp: writable on the host only.
    outside = os.path.join(tempfile.mkdtemp(dir="/var/tmp"), "outside.txt")
    plant = 'mkdir -p .nsbox; echo \'preset = "full-access"\' > .nsbox/policy.toml; echo PLANTED'
    r = nsbox_exec(plant)
    assert r.returncode == 0 and r.stdout == b"PLANTED\n", r.stderr
    assert b".nsbox (appeared)" in r.stderr  # nothing was created for it beforehand
    r = nsbox_exec(f'echo started; echo x > {outside}')
    assert r.stdout == b"started\n" and b"Read-only file system" in r.stderr, r.stderr
    assert b"untrusted" in r.stderr and b"preset" in r.stderr
    assert not os.path.exists(outside)
    os.rmdir(os.path.dirname(outside))


def test_bad_toml_names_file_and_line(nsbox_exec, workspace, tmp_path):
    bad = tmp_path / "p.toml"
    bad.write_text('preset = "read-only"\nnetwork = \n')
    r = nsbox_exec(["true"], "--policy", str(bad))
    assert r.returncode == 125
    assert str(bad).encode() in r.stderr and b"line 2" in r.stderr
    bad.write_text('\n[filesystem]\nhidee = ["x"]\n')
    r = nsbox_exec(["true"], "--policy", str(bad))
    assert r.returncode == 125 and b"line 3" in r.stderr and b"hidee" in r.stderr


def test_missing_policy_file_is_125(nsbox_exec, tmp_path):
    r = nsbox_exec(["true"], "--policy", str(tmp_path / "none.toml"))
    assert r.returncode == 125 and b"none.toml" in r.stderr


# --- environment ----------------------------------------------------------------------

def test_secret_looking_variables_are_dropped_unless_kept(nsbox_exec):
    env = env_with(MY_API_KEY="k1", Github_Token="t1", PLAIN_VAR="p1")
    r = nsbox_exec("env", env=env)
    assert b"PLAIN_VAR=p1" in r.stdout
    assert b"k1" not in r.stdout and b"t1" not in r.stdout
    r = nsbox_exec("env", "--env-keep", "MY_API_KEY", env=env)
    assert b"MY_API_KEY=k1" in r.stdout and b"t1" not in r.stdout


def test_clearenv_and_setenv(nsbox_exec):
    r = nsbox_exec("env", "--clearenv", "--setenv", "A=1", env=env_with(PLAIN_VAR="p"))
    names = {line.split(b"=")[0] for line in r.stdout.splitlines()}
    assert b"PLAIN_VAR" not in names and b"PATH" in names and b"A" in names


# --- writable roots -------------------------------------------------------------------

def test_extra_writable_root_and_missing_one(nsbox_exec, tmp_path):
    extra = tmp_path / "extra"
    extra.mkdir()
    r = nsbox_exec(f"echo hi > {extra}/f", "--writable", str(extra))
    assert r.returncode == 0, r.stderr
    assert (extra / "f").read_text() == "hi\n"
    missing = tmp_path / "missing"
    r = nsbox_exec(["true"], "--writable", str(missing))
    assert r.returncode == 125 and str(missing).encode() in r.stderr


# --- reporting ------------------------------------------------------------------------

def test_check_json_reports_every_field():
    r = subprocess.run(nsbox_cmd("check", "--json"), capture_output=True, text=True)
    data = json.loads(r.stdout)
    assert data["kernel"]["release"] == os.uname().release
    assert isinstance(data["user_namespaces"]["works"], bool)
    assert isinstance(data["landlock"]["abi"], int)
    assert isinstance(data["seccomp"]["available"], bool)
    assert "v2" in data["cgroup_v2"]
    mechanisms = data["limits"]["mechanisms"]
    assert set(mechanisms) >= {"pids", "memory", "cpu", "wall", "tmp", "nofile"}
    assert mechanisms["memory"] in ("cgroup1", "cgroup2", "rlimit")
    assert isinstance(data["container"]["nested"], bool)
    assert data["verdict"]["level"] in ("full", "landlock", "degraded", "unsupported")
    assert r.returncode == (0 if data["verdict"]["level"] in ("full", "landlock") else 1)


def test_policy_show_matches_what_exec_records(workspace, tmp_path):
    (workspace / ".nsbox").mkdir()
    (workspace / ".nsbox" / "policy.toml").write_text('network = "host"\n')
    env = env_with(XDG_STATE_HOME=str(tmp_path / "state"))
    trust = subprocess.run(nsbox_cmd("trust", str(workspace / ".nsbox" / "policy.toml")),
                           env=env, capture_output=True)
    assert trust.returncode == 0, trust.stderr
    opts = ["--workspace", str(workspace), "--hide", "/etc/hostname", "--setenv", "X=1"]
    show = subprocess.run(nsbox_cmd("policy", "show", *opts), capture_output=True, text=True,
                          env=env)
    assert show.returncode == 0, show.stderr
    report = json.loads(show.stdout)
    assert report["policy"]["network"] == "host"
    assert report["policy_file"] == str(workspace / ".nsbox" / "policy.toml")
    assert "/etc/hostname" in report["resolved"]["hidden"]
    status = tmp_path / "status.json"
    r = subprocess.run(nsbox_cmd("exec", *opts, "--json-status", str(status), "--", "sh", "-c",
                                 "kill -TERM $$"), capture_output=True, env=env)
    record = json.loads(status.read_text())
    assert record["policy_digest"] == report["digest"]
    assert record["exit_code"] == r.returncode == 143 and record["signal"] == "SIGTERM"
    assert record["start"] <= record["end"]
    prot = record["protections"]
    assert "pid" in prot["namespaces"] and "net" not in prot["namespaces"]
    assert "/etc/hostname" in prot["hidden"]
    assert {"landlock_abi", "seccomp_profile", "isolation"} <= set(prot)


def test_json_status_records_setup_failure(workspace, tmp_path):
    status = tmp_path / "status.json"
    r = subprocess.run(nsbox_cmd("exec", "--workspace", str(tmp_path / "nope"), "--json-status",
                                 str(status), "--", "true"), capture_output=True)
    record = json.loads(status.read_text())
    assert r.returncode == record["exit_code"] == 125
    assert "does not exist" in record["setup_error"]
