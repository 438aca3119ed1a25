"""Git inside a direct workspace works as on the host, and its changes persist, except
what would run commands on the user's next git command (plan/gitsync.py, gitapply.py,
policy/git_config.py). Each attack is made for real and the host checked afterwards:
its config, and a host `git status` / `git commit` that must run nothing planted."""

import json
import os
import shutil
import subprocess
import tempfile

import pytest

import nsbox
from conftest import GIT, git, nsbox_cmd
from nsbox.policy.model import Policy

pytestmark = pytest.mark.skipif(GIT is None, reason="git is not installed")
ID = "-c user.name=t -c user.email=t@e"


def config(repo, *args) -> str:
    """The repository's own value (`--local`: not the -c of git() above)."""
    return subprocess.run([GIT, "config", "--local", *args], cwd=repo, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture
def host_dir():
    """A host directory the sandbox reads (off its private /tmp), outside every root."""
    path = tempfile.mkdtemp(prefix="nsbox-git-", dir="/var/tmp")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def repo(workspace):
    git("init", "-q", "-b", "main", cwd=workspace)
    git("commit", "-q", "--allow-empty", "-m", "first", cwd=workspace)
    return workspace


@pytest.fixture
def upstream(host_dir):
    path = os.path.join(host_dir, "upstream")
    os.mkdir(path)
    git("init", "-q", "-b", "main", cwd=path)
    with open(os.path.join(path, "README"), "w") as f:
        f.write("upstream\n")
    git("add", "README", cwd=path)
    git("commit", "-q", "-m", "upstream first", cwd=path)
    return path


def run(nsbox_exec, script, *opts):
    r = nsbox_exec("echo STARTED; set -e; " + script, *opts)
    assert r.stdout.startswith(b"STARTED\n"), r.stderr
    return r


@pytest.fixture
def own_state(tmp_path, monkeypatch):
    """nsbox's state directory for this test alone (beside the workspace, never in it),
    so that its git layers can be counted while other runs come and go."""
    path = tmp_path / "state"
    path.mkdir()
    monkeypatch.setenv("XDG_STATE_HOME", str(path))
    return path


def layers_left(state) -> list:
    found = os.path.join(state, "nsbox", "git")
    return os.listdir(found) if os.path.isdir(found) else []


def test_remote_upstream_identity_and_commit_persist(nsbox_exec, repo, upstream, own_state):
    r = run(nsbox_exec, f"git remote add up {upstream}; git fetch -q up; "
                        "git branch --set-upstream-to=up/main; git config user.name Sandboxed; "
                        f"echo x > f; git add f; git {ID} commit -q -m inside; echo DONE")
    assert r.returncode == 0 and b"DONE" in r.stdout, r.stderr
    assert config(repo, "remote.up.url") == upstream
    assert config(repo, "branch.main.remote") == "up"
    assert config(repo, "branch.main.merge") == "refs/heads/main"
    assert config(repo, "user.name") == "Sandboxed"
    assert git("log", "-1", "--format=%s", cwd=repo).stdout.strip() == "inside"
    assert git("rev-parse", "up/main", cwd=repo).stdout.strip() == \
        git("rev-parse", "HEAD", cwd=upstream).stdout.strip()
    assert git("status", "--porcelain", cwd=repo).stdout == ""  # index applied too
    git("fsck", "--strict", cwd=repo)
    assert b"refused" not in r.stderr, r.stderr
    assert (own_state / "nsbox" / "git").is_dir()  # the run had a layer...
    assert layers_left(own_state) == []  # ...gone once applied


def test_submodule_add_persists(nsbox_exec, repo, upstream):
    r = run(nsbox_exec, f"git -c protocol.file.allow=always submodule add -q {upstream} lib; "
                        f"git {ID} commit -q -m 'add lib'; echo DONE")
    assert r.returncode == 0 and b"DONE" in r.stdout, r.stderr
    assert config(repo, "submodule.lib.url") == upstream
    assert (repo / "lib" / "README").read_text() == "upstream\n"
    # The submodule's own git dir arrived whole: the host's git reads it through lib/.git.
    assert git("log", "-1", "--format=%s", cwd=repo / "lib").stdout.strip() == "upstream first"
    status = git("submodule", "status", cwd=repo).stdout
    assert " lib " in status and not status.startswith(("-", "+", "U")), status
    # The clone's template hooks (*.sample) are left out without a word; nothing refused.
    assert b"refused" not in r.stderr, r.stderr
    assert not (repo / ".git" / "modules" / "lib" / "hooks").exists()


@pytest.mark.parametrize("attack", [
    "git config core.fsmonitor 'touch {marker}'",
    "git config alias.st '!touch {marker}' && git config status.short true",
    "printf '[core]\\n\\tfsmonitor = touch {marker}\\n' > {inc} && git config include.path {inc}",
    "git config core.pager 'touch {marker}; cat' && git config pager.status true",
    "git config filter.x.clean 'touch {marker}' && echo '* filter=x' >> .git/info/attributes",
], ids=["fsmonitor", "alias", "include", "pager", "filter"])
def test_executing_keys_never_reach_the_host(nsbox_exec, repo, host_dir, tmp_path, attack):
    marker = os.path.join(host_dir, "PWNED")
    inc = os.path.join(repo, "inc.cfg")
    config_before = (repo / ".git" / "config").read_bytes()
    status = tmp_path / "status.json"
    r = run(nsbox_exec, attack.format(marker=marker, inc=inc) + "; echo DONE",
            "--json-status", str(status))
    assert b"DONE" in r.stdout, r.stderr  # git itself succeeded inside
    host_config = (repo / ".git" / "config").read_text()
    assert all(word not in host_config for word in ("fsmonitor", "alias", "include", "pager",
                                                    "filter", "PWNED")), host_config
    assert host_config.startswith(config_before.decode())
    assert not (repo / ".git" / "info" / "attributes").exists()
    assert b"refused" in r.stderr, r.stderr
    record = json.loads(status.read_text())
    assert any("refused" in c["what"] for c in record["changes"]), record["changes"]
    # What the user's shell prompt or next command would run, on the host:
    git("status", cwd=repo)
    git("st", cwd=repo, check=False)
    (repo / "f").write_text("x\n")
    git("add", "f", cwd=repo)
    assert not os.path.exists(marker)


def test_allowed_changes_apply_beside_refused_ones(nsbox_exec, repo, host_dir):
    marker = os.path.join(host_dir, "PWNED")
    r = run(nsbox_exec, f"git config core.fsmonitor 'touch {marker}'; git remote add up /x; "
                        "git config alias.lg 'log --oneline'; echo DONE")
    assert b"DONE" in r.stdout, r.stderr
    assert config(repo, "remote.up.url") == "/x"
    assert config(repo, "alias.lg") == "log --oneline"
    assert config(repo, "core.fsmonitor") == ""
    assert b"core.fsmonitor" in r.stderr and b"remote.up" not in r.stderr, r.stderr
    git("status", cwd=repo)
    assert not os.path.exists(marker)


def test_planted_hooks_and_redirects_are_not_applied(nsbox_exec, repo, host_dir):
    evil = os.path.join(host_dir, "evil")
    git("init", "-q", evil, cwd=host_dir)
    script = ("printf '#!/bin/sh\\ntouch \"$PWD/HOOK-RAN\"\\n' > .git/hooks/pre-commit "
              "&& echo HOOK-WRITTEN; "
              f"echo {evil}/.git > .git/commondir || true; "
              f"mkdir -p .git/objects/info && echo {evil}/.git/objects > "
              ".git/objects/info/alternates || true; echo DONE")
    r = nsbox_exec("echo STARTED; " + script)
    assert r.stdout.startswith(b"STARTED\n") and b"DONE" in r.stdout, r.stderr
    assert b"HOOK-WRITTEN" not in r.stdout  # hooks stay read-only inside
    assert not (repo / ".git" / "hooks" / "pre-commit").exists()
    assert not (repo / ".git" / "commondir").exists()
    assert not (repo / ".git" / "objects" / "info" / "alternates").exists()
    git("commit", "-q", "--allow-empty", "-m", "host", cwd=repo)
    assert not (repo / "HOOK-RAN").exists()


def test_library_run_applies_and_reports(repo, host_dir):
    marker = os.path.join(host_dir, "PWNED")
    result = nsbox.run(["sh", "-c", f"git remote add up /x && git config core.fsmonitor "
                                    f"'touch {marker}' && git {ID} commit -q --allow-empty -m lib"],
                       policy=Policy(workspace=str(repo)), cwd=str(repo), capture_output=True)
    assert result.returncode == 0, result.stderr
    assert config(repo, "remote.up.url") == "/x"
    assert config(repo, "core.fsmonitor") == ""
    assert git("log", "-1", "--format=%s", cwd=repo).stdout.strip() == "lib"
    refused = [c for c in result.changes if c.what.startswith("refused")]
    assert any("core.fsmonitor" in c.what for c in refused), result.changes
    git("status", cwd=repo)
    assert not os.path.exists(marker)


def test_landlock_only_undoes_executing_keys_after_the_run(nsbox_exec, repo, host_dir):
    # No mount namespace, so no copy: the command writes the real config (Landlock cannot
    # make one file of a writable root read-only); after the run the refused keys go.
    marker = os.path.join(host_dir, "PWNED")
    r = nsbox_exec(f"echo STARTED; git remote add up /x && git config core.fsmonitor "
                   f"'touch {marker}' && git config alias.x '!touch {marker}'; echo rc=$?",
                   "--isolation", "landlock")
    if not r.stdout.startswith(b"STARTED"):
        pytest.skip(f"landlock-only isolation is not available here: {r.stderr[-200:]}")
    assert b"rc=0" in r.stdout, r.stderr
    assert config(repo, "remote.up.url") == "/x"
    assert config(repo, "core.fsmonitor") == "" and config(repo, "alias.x") == ""
    assert b"refused (undone): core.fsmonitor" in r.stderr, r.stderr
    git("status", cwd=repo)
    assert not os.path.exists(marker)


def test_cli_reaches_no_host_git_when_state_dir_inside_workspace(repo, tmp_path):
    # nsbox's state inside the workspace: no layer could be hidden, so none is made and
    # config stays read-only as before.
    env = dict(os.environ, XDG_STATE_HOME=str(repo / "state"))
    r = subprocess.run(nsbox_cmd("exec", "--workspace", str(repo), "--", "sh", "-c",
                                 "echo STARTED; git remote add up /x; echo rc=$?"),
                       capture_output=True, env=env, cwd=str(repo), timeout=60)
    assert r.stdout.startswith(b"STARTED\n"), r.stderr
    assert b"rc=0" not in r.stdout
    assert config(repo, "remote.up.url") == ""


def test_session_applies_after_each_command_and_keeps_host_changes(repo, host_dir, own_state):
    marker = os.path.join(host_dir, "PWNED")
    with nsbox.Session(Policy(workspace=str(repo))) as session:
        first = session.run(["sh", "-c", f"git remote add up /x && git config core.fsmonitor "
                                          f"'touch {marker}' && git {ID} commit -q "
                                          "--allow-empty -m s1"], capture_output=True)
        assert first.returncode == 0, first.stderr
        assert any("core.fsmonitor" in c.what for c in first.changes), first.changes
        assert config(repo, "remote.up.url") == "/x"  # applied before the session ends
        assert git("log", "-1", "--format=%s", cwd=repo).stdout.strip() == "s1"
        git("status", cwd=repo)
        assert not os.path.exists(marker)
        git("commit", "-q", "--allow-empty", "-m", "host", cwd=repo)
        # A command that leaves git alone does not carry the session's older copy back.
        second = session.run(["sh", "-c", "git config user.name Q"], capture_output=True)
        assert second.returncode == 0 and second.changes == (), second
        assert git("log", "-1", "--format=%s", cwd=repo).stdout.strip() == "host"
        assert config(repo, "user.name") == "Q"
    assert config(repo, "core.fsmonitor") == ""
    assert (own_state / "nsbox" / "git").is_dir() and layers_left(own_state) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give the git dir another owner")
def test_git_dir_of_another_owner_stays_protected_as_before(nsbox_exec, repo):
    # overlayfs copies a file up with its owner, which the sandbox's user namespace must
    # map: a git dir with entries of another owner (a group-shared repository) gets no
    # layer, and its config stays read-only, with git's own clear error.
    os.chown(repo / ".git" / "objects", 65534, 65534)
    r = nsbox_exec("echo STARTED; git config user.name X; echo rc=$?")
    assert r.stdout.startswith(b"STARTED\n"), r.stderr
    assert b"rc=0" not in r.stdout and b"Device or resource busy" in r.stderr, r.stderr
    assert config(repo, "user.name") == ""


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can make another user's directory")
def test_repository_in_another_users_private_directory_is_out_of_reach(nsbox_exec, workspace):
    # Root's sandbox may not enter another user's 0700 directory (its user namespace
    # maps root only), so neither may the command: nothing to protect there, and the
    # run neither fails on it nor reports its files as changed.
    private = workspace / "theirs"
    private.mkdir()
    git("init", "-q", str(private / "repo"), cwd=workspace)
    for path in (private, *private.rglob("*")):
        os.lchown(path, 65534, 65534)
    private.chmod(0o700)
    r = nsbox_exec("echo STARTED; ls theirs; echo rc=$?")
    assert r.returncode == 0 and r.stdout.startswith(b"STARTED\n"), r.stderr
    assert b"Permission denied" in r.stderr and b"changed where code runs" not in r.stderr


def test_landlock_only_config_replaced_by_a_link_is_put_back(nsbox_exec, repo, host_dir):
    marker = os.path.join(host_dir, "PWNED")
    before = (repo / ".git" / "config").read_bytes()
    evil = os.path.join(repo, "evil.cfg")
    r = nsbox_exec(f"echo STARTED; printf '[core]\\n\\tfsmonitor = touch {marker}\\n' > {evil}"
                   f" && ln -sf {evil} .git/config; echo rc=$?", "--isolation", "landlock")
    if not r.stdout.startswith(b"STARTED"):
        pytest.skip(f"landlock-only isolation is not available here: {r.stderr[-200:]}")
    assert b"rc=0" in r.stdout, r.stderr
    assert not (repo / ".git" / "config").is_symlink()
    assert (repo / ".git" / "config").read_bytes() == before
    git("status", cwd=repo)
    assert not os.path.exists(marker)
