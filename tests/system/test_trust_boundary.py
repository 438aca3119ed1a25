"""Nothing a sandboxed command writes may widen a later sandbox or run later on the host.

Each attack is performed for real, as two runs where it takes two, and the host is
checked afterwards. A denial test also shows that the sandbox did start.
"""

import json
import os
import shutil
import subprocess
import tempfile
import uuid

import pytest

import nsbox
from conftest import GIT, IS_ROOT, git, nsbox_cmd
from nsbox.policy.model import Policy

pytestmark = pytest.mark.skipif(GIT is None, reason="git is not installed")
STARTED = "echo STARTED; "


def make_repo(path):
    os.makedirs(path, exist_ok=True)
    git("init", "-q", "-b", "main", cwd=path)
    git("commit", "-q", "--allow-empty", "-m", "first", cwd=path)


@pytest.fixture
def host_dir():
    """A host directory off the sandbox's private /tmp, outside every writable root."""
    path = tempfile.mkdtemp(prefix="nsbox-host-", dir="/var/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def started(r) -> bool:
    return r.stdout.startswith(b"STARTED\n")


def hook_ran(repo) -> bool:
    """Commit on the host, as the user would next; True if a planted hook ran."""
    marker = os.path.join(repo, "HOOK-RAN")
    subprocess.run([GIT, "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-q",
                    "--allow-empty", "-m", "host"], cwd=repo, capture_output=True)
    return os.path.exists(marker)


PLANT_HOOK = 'printf "#!/bin/sh\\ntouch \\"$PWD/HOOK-RAN\\"\\n" > {0}; chmod +x {0}'


# --- git pointers -------------------------------------------------------------------

def test_git_pointer_to_home_does_not_make_it_writable(nsbox_exec, workspace, host_dir):
    bashrc = os.path.join(host_dir, ".bashrc")
    with open(bashrc, "w") as f:
        f.write("# rc\n")
    r = nsbox_exec(STARTED + f'printf "gitdir: {host_dir}\\n" > .git')
    assert started(r) and b".git (new git pointer)" in r.stderr, r.stderr
    r = nsbox_exec(STARTED + f'echo evil >> {bashrc}')
    assert r.returncode == 125 and not started(r)
    assert b"outside the writable roots" in r.stderr and host_dir.encode() in r.stderr
    assert open(bashrc).read() == "# rc\n"
    assert sorted(os.listdir(host_dir)) == [".bashrc"]  # no hooks/, config, info/ made


@pytest.mark.parametrize("isolation", ["full", "landlock"])
def test_planted_commondir_is_removed_before_host_git_obeys_it(nsbox_exec, workspace, isolation):
    make_repo(workspace)
    attack = (STARTED + "git init -q evil && " + PLANT_HOOK.format("evil/.git/hooks/pre-commit")
              + "; echo ../evil/.git > .git/commondir; echo ../evil/.git > .git/gitdir")
    r = nsbox_exec(attack, "--isolation", isolation)
    assert started(r), r.stderr
    # full: the git dir is copy-on-write and commondir is never applied (plan/gitapply.py);
    # landlock-only: written to the real git dir, and removed after the run
    said = b"commondir (refused" if isolation == "full" else b"commondir (removed (planted))"
    assert said in r.stderr, r.stderr
    assert not (workspace / ".git" / "commondir").exists()
    assert not hook_ran(str(workspace))
    log = subprocess.run([GIT, "log", "--format=%s"], cwd=workspace, capture_output=True, text=True)
    assert log.stdout.split() == ["host", "first"]


def test_commondir_present_at_start_is_refused(nsbox_exec, workspace, host_dir):
    make_repo(workspace)
    make_repo(host_dir)
    (workspace / ".git" / "commondir").write_text(os.path.join(host_dir, ".git") + "\n")
    r = nsbox_exec(STARTED + "true")
    assert r.returncode == 125 and b"commondir" in r.stderr and not started(r)


def test_worktree_commondir_rewrite_does_not_widen(nsbox_exec, workspace, tmp_path, host_dir):
    main = tmp_path / "main"
    make_repo(main)
    os.rmdir(workspace)
    git("worktree", "add", "-q", "-b", "wt", str(workspace), cwd=main)
    gitdir = git("rev-parse", "--absolute-git-dir", cwd=workspace).stdout.strip()
    r = nsbox_exec(STARTED + f'echo {host_dir} > {gitdir}/commondir; echo $?')
    assert started(r)
    assert open(os.path.join(gitdir, "commondir")).read() == "../..\n"
    assert os.listdir(host_dir) == []


def test_husky_hooks_path_is_read_only(nsbox_exec, workspace):
    make_repo(workspace)
    (workspace / ".husky").mkdir()
    git("config", "core.hooksPath", ".husky", cwd=workspace)
    r = nsbox_exec(STARTED + PLANT_HOOK.format(".husky/pre-commit"))
    assert started(r) and b"Read-only file system" in r.stderr
    assert not (workspace / ".husky" / "pre-commit").exists()
    assert not hook_ran(str(workspace))


def test_nested_repository_is_protected_like_the_top_one(nsbox_exec, workspace):
    nested = workspace / "vendor" / "lib"
    make_repo(nested)
    config = (nested / ".git" / "config").read_text()
    r = nsbox_exec(STARTED + PLANT_HOOK.format("vendor/lib/.git/hooks/pre-commit")
                   + "; git -C vendor/lib config core.fsmonitor 'touch FSMON'; echo done")
    assert started(r) and r.stdout.endswith(b"done\n")
    assert (nested / ".git" / "config").read_text() == config
    assert not hook_ran(str(nested))


def test_new_repository_and_agent_configs_are_reported(nsbox_exec, workspace, tmp_path):
    status = tmp_path / "status.json"
    r = nsbox_exec(STARTED + "git init -q sub/new; mkdir .claude; echo {} > .claude/settings.json;"
                   " echo 'eval evil' > .envrc", "--json-status", str(status))
    assert started(r)
    line = [ln for ln in r.stderr.decode().splitlines() if "runs later" in ln]
    assert len(line) == 1
    for what in ("sub/new/.git (new repository)", ".claude (appeared)", ".envrc (appeared)"):
        assert what in line[0]
    changes = {c["path"]: c["what"] for c in json.loads(status.read_text())["changes"]}
    assert changes[str(workspace / ".envrc")] == "appeared"
    assert changes[str(workspace / "sub" / "new" / ".git")] == "new repository"


def test_quiet_when_nothing_sensitive_changed(nsbox_exec, workspace):
    make_repo(workspace)
    r = nsbox_exec("echo x > file.txt; git add file.txt; "
                   "git -c user.name=a -c user.email=a@b commit -qm x")
    assert r.returncode == 0, r.stderr
    assert b"runs later" not in r.stderr


def test_existing_editor_config_is_read_only(nsbox_exec, workspace):
    (workspace / ".vscode").mkdir()
    (workspace / ".vscode" / "tasks.json").write_text("{}\n")
    r = nsbox_exec(STARTED + 'echo \'{"runOn": "folderOpen"}\' > .vscode/tasks.json; '
                   "touch ordinary.txt")
    assert started(r) and b"Read-only file system" in r.stderr
    assert (workspace / ".vscode" / "tasks.json").read_text() == "{}\n"
    assert (workspace / "ordinary.txt").exists()
    assert not (workspace / ".mcp.json").exists()  # nothing made for missing entries


# --- git still works --------------------------------------------------------------------

def test_git_work_in_a_plain_repo(nsbox_exec, workspace):
    make_repo(workspace)
    script = ("set -e; c='git -c user.name=a -c user.email=a@b'; echo a > a; git add a; "
              "$c commit -qm a; git branch side; git checkout -q side; echo b > b; git add b; "
              "$c commit -qm b; git checkout -q main; echo c > c; git add c; $c commit -qm c; "
              "git checkout -q side; $c rebase -q main; echo d > d; git add d; git stash -q; "
              "git stash pop -q; git status --short; echo OK")
    r = nsbox_exec(script)
    assert r.returncode == 0 and r.stdout.endswith(b"OK\n"), r.stderr
    log = git("log", "--format=%s", "side", cwd=workspace).stdout.split()
    assert log == ["b", "c", "a", "first"]


def test_git_work_in_a_submodule(nsbox_exec, workspace, tmp_path):
    upstream = tmp_path / "upstream"
    make_repo(upstream)
    make_repo(workspace)
    git("submodule", "add", "-q", str(upstream), "lib", cwd=workspace)
    git("commit", "-qm", "add lib", cwd=workspace)
    r = nsbox_exec("set -e; cd lib; echo x > x; git add x; "
                   "git -c user.name=a -c user.email=a@b commit -qm inside; echo OK")
    assert r.returncode == 0 and r.stdout.endswith(b"OK\n"), r.stderr
    assert git("log", "-1", "--format=%s", cwd=workspace / "lib").stdout.strip() == "inside"
    r = nsbox_exec(STARTED + PLANT_HOOK.format(".git/modules/lib/hooks/pre-commit"))
    assert started(r) and b"Read-only file system" in r.stderr


def test_git_work_in_a_submodule_as_the_workspace(nsbox_exec, workspace, tmp_path):
    upstream, sup = tmp_path / "upstream", tmp_path / "super"
    make_repo(upstream)
    make_repo(sup)
    git("submodule", "add", "-q", str(upstream), "lib", cwd=sup)
    r = subprocess.run(nsbox_cmd("exec", "--workspace", str(sup / "lib"), "--", "sh", "-c",
                                 "git -c user.name=a -c user.email=a@b commit -q --allow-empty "
                                 "-m inside && echo OK"), capture_output=True)
    assert r.returncode == 0 and r.stdout == b"OK\n", r.stderr


# --- home -------------------------------------------------------------------------------

def test_hidden_paths_follow_the_password_home_when_home_points_elsewhere(nsbox_exec, host_dir):
    import pwd

    home = pwd.getpwuid(os.getuid()).pw_dir
    secrets = os.path.join(home, ".aws")
    made = not os.path.exists(secrets)
    os.makedirs(secrets, exist_ok=True)
    secret = os.path.join(secrets, f"nsbox-test-{uuid.uuid4().hex}")
    with open(secret, "w") as f:
        f.write("AWS-SECRET\n")
    try:
        for env in ({**os.environ, "HOME": host_dir},
                    {k: v for k, v in os.environ.items() if k != "HOME"}):
            r = nsbox_exec(STARTED + f"cat {secret}", env=env)
            assert started(r) and b"AWS-SECRET" not in r.stdout, r.stderr
    finally:
        os.unlink(secret)
        if made:
            os.rmdir(secrets)


def test_broad_workspace_is_refused_and_start_up_files_stay_read_only(host_dir):
    env = {**os.environ, "HOME": host_dir}
    with open(os.path.join(host_dir, ".bashrc"), "w") as f:
        f.write("# rc\n")
    for ws in (host_dir, "/"):
        r = subprocess.run(nsbox_cmd("exec", "--workspace", ws, "--", "sh", "-c", "echo STARTED"),
                           capture_output=True, env=env)
        assert r.returncode == 125 and b"--allow-broad-workspace" in r.stderr, r.stderr
        assert not started(r)
    r = subprocess.run(nsbox_cmd("exec", "--workspace", host_dir, "--allow-broad-workspace", "--",
                                 "sh", "-c", STARTED + "echo evil >> .bashrc; echo x > .profile; "
                                 "echo ok > notes.txt"), capture_output=True, env=env, cwd=host_dir)
    assert started(r) and b"Read-only file system" in r.stderr
    assert open(os.path.join(host_dir, ".bashrc")).read() == "# rc\n"
    assert open(os.path.join(host_dir, "notes.txt")).read() == "ok\n"
    assert b".profile (appeared)" in r.stderr


# --- nsbox's own state ------------------------------------------------------------------

def test_nsbox_state_is_hidden_and_config_read_only_inside(host_dir, workspace):
    env = {**os.environ, "HOME": host_dir}
    for key in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):
        env.pop(key, None)
    config = os.path.join(host_dir, ".config", "nsbox")
    os.makedirs(config)
    with open(os.path.join(config, "config.toml"), "w") as f:
        f.write('hostname = "mine"\n')
    state = os.path.join(host_dir, ".local", "state", "nsbox")
    r = subprocess.run(nsbox_cmd("exec", "--workspace", str(workspace), "--writable",
                                 os.path.join(host_dir, ".config"), "--writable",
                                 os.path.join(host_dir, ".local"), "--", "sh", "-c",
                                 STARTED + f"ls -A {state}; echo '---'; "
                                 f"echo 'network = \"host\"' > {config}/config.toml; "
                                 f"touch {state}/x; echo ok > {host_dir}/.config/other"),
                       capture_output=True, env=env)
    assert started(r), r.stderr
    assert r.stdout.split(b"---")[0] == b"STARTED\n"  # the state directory looks empty
    assert open(os.path.join(config, "config.toml")).read() == 'hostname = "mine"\n'
    assert os.path.isdir(state) and "x" not in os.listdir(state)
    assert open(os.path.join(host_dir, ".config", "other")).read() == "ok\n"


# --- the library ------------------------------------------------------------------------

def test_library_result_and_session_report_changes(workspace):
    policy = Policy(workspace=str(workspace))
    r = nsbox.run(["sh", "-c", "echo {} > .mcp.json"], policy=policy)
    assert [(c.path, c.what) for c in r.changes] == [(str(workspace / ".mcp.json"), "appeared")]
    assert nsbox.run(["true"], policy=policy).changes == ()
    with nsbox.Session(policy) as s:
        assert s.run(["true"]).changes == ()
        r = s.run(["sh", "-c", "mkdir .devcontainer"])
        assert [c.what for c in r.changes] == ["appeared"]
        assert s.run(["true"]).changes == ()


@pytest.mark.skipif(not IS_ROOT, reason="only root can make a workspace of /")
def test_root_workspace_is_refused_in_the_library():
    with pytest.raises(nsbox.PolicyError, match="allow-broad-workspace"):
        nsbox.run(["true"], policy=Policy(workspace="/"))
