"""Pre-warmed sandboxes behind nsbox.run: used on repeated runs, never shared, never stale."""

import os
import shutil
import subprocess
import sys
import textwrap
import threading

import pytest

import nsbox
from nsbox import api
from nsbox.plan import prepare
from nsbox.service import spares
from nsbox.policy.limits import Limits
from nsbox.policy.model import Policy
from conftest import marker, pids_running, wait_until


@pytest.fixture(autouse=True)
def prewarm_on(monkeypatch):
    """Every test starts with pre-warming on, whatever the environment says."""
    monkeypatch.delenv("NSBOX_PREWARM", raising=False)
    nsbox.set_prewarm(True)


def used() -> int:
    return api.prewarm_stats()["used"]


def test_repeated_runs_use_a_spare(policy):
    nsbox.run(["true"], policy=policy)
    before = used()
    for _ in range(3):
        assert nsbox.run(["true"], policy=policy).returncode == 0
    assert used() == before + 3
    assert api.prewarm_stats()["spares"] >= 1


def test_each_run_gets_a_fresh_tmp_and_pid_namespace(policy):
    first = nsbox.run(["sh", "-c", "echo secret > /tmp/left-behind; echo $$"], policy=policy)
    before = used()
    second = nsbox.run(["sh", "-c", "cat /tmp/left-behind; ls -A /tmp; echo $$"], policy=policy)
    assert used() == before + 1
    assert b"secret" not in second.stdout and b"left-behind" not in second.stdout
    assert first.stdout.split()[-1] == second.stdout.split()[-1]  # the same PID: a new namespace


def test_background_process_is_gone_when_run_returns(policy):
    nsbox.run(["true"], policy=policy)
    before = used()
    tag = marker()
    r = nsbox.run(["sh", "-c", f"sleep {tag} & echo started"], policy=policy)
    assert used() == before + 1
    assert r.stdout == b"started\n"
    assert not pids_running("sleep", tag)


def test_per_call_cwd_env_input_and_exec_failures(policy, workspace):
    (workspace / "sub").mkdir()
    nsbox.run(["true"], policy=policy)
    before = used()
    r = nsbox.run(["sh", "-c", "pwd; echo $ONLY_HERE; cat"], policy=policy,
                  cwd=str(workspace / "sub"), input=b"fed",
                  env={**os.environ, "ONLY_HERE": "yes"})
    assert r.stdout == f"{workspace / 'sub'}\nyes\nfed".encode()
    r = nsbox.run(["sh", "-c", "cat; echo ${ONLY_HERE:-unset}"], policy=policy)
    assert r.stdout == b"unset\n"  # stdin empty, no environment from the previous call
    r = nsbox.run(["no-such-command-xyz"], policy=policy)
    assert r.returncode == 127 and b"not found" in r.stderr
    r = nsbox.run(["sh", "-c", "kill -TERM $$"], policy=policy)
    assert (r.returncode, r.signal) == (143, 15)
    assert used() >= before + 3


def test_timeout_with_a_spare_kills_everything(policy):
    nsbox.run(["true"], policy=policy)
    before = used()
    tag = marker()
    r = nsbox.run(["sh", "-c", f"echo before; sleep {tag} & sleep {tag}"], policy=policy,
                  timeout=0.5)
    assert used() == before + 1
    assert r.timed_out and r.stdout == b"before\n"
    assert not pids_running("sleep", tag)


def test_recreated_workspace_is_not_served_stale(policy, workspace):
    nsbox.run(["true"], policy=policy)
    assert spares.pool().wait_ready()  # a spare holding this workspace
    shutil.rmtree(workspace)
    workspace.mkdir()
    (workspace / "new-file").write_text("new\n")
    r = nsbox.run(["sh", "-c", "cat new-file && touch from-sandbox"], policy=policy)
    assert (r.returncode, r.stdout) == (0, b"new\n")
    assert (workspace / "from-sandbox").exists()


def test_secret_created_after_the_spare_stays_hidden(workspace):
    home = workspace / "home"
    home.mkdir()
    env = {"HOME": str(home), "PATH": os.environ["PATH"]}
    policy = Policy(workspace=str(workspace), allow_broad_workspace=True)
    nsbox.run(["true"], policy=policy, env=env)
    assert spares.pool().wait_ready()  # a spare built without ~/.ssh
    (home / ".ssh").mkdir()
    (home / ".ssh" / "id_rsa").write_text("secret-key\n")
    r = nsbox.run(["sh", "-c", "cat $HOME/.ssh/id_rsa; ls -A $HOME/.ssh"], policy=policy, env=env)
    assert b"secret-key" not in r.stdout and b"id_rsa" not in r.stdout
    assert (home / ".ssh" / "id_rsa").read_text() == "secret-key\n"


def test_threads_never_share_a_spare(policy):
    nsbox.run(["true"], policy=policy)
    outputs, errors = [], []

    def worker():
        try:
            for _ in range(5):
                r = nsbox.run(["sh", "-c", "ls -A /tmp; touch /tmp/mine"], policy=policy)
                outputs.append(r.stdout)
        except Exception as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(outputs) == 20
    assert not any(b"mine" in out for out in outputs)  # no command saw another's /tmp


def test_prewarm_can_be_turned_off(policy, monkeypatch):
    nsbox.run(["true"], policy=policy)
    monkeypatch.setenv("NSBOX_PREWARM", "0")
    stats = api.prewarm_stats()
    nsbox.run(["true"], policy=policy)
    nsbox.run(["true"], policy=policy)
    after = api.prewarm_stats()
    assert (after["built"], after["used"]) == (stats["built"], stats["used"])
    monkeypatch.delenv("NSBOX_PREWARM")
    nsbox.set_prewarm(False)
    try:
        assert api.prewarm_stats()["spares"] == 0
        nsbox.run(["true"], policy=policy)
        assert api.prewarm_stats()["spares"] == 0
    finally:
        nsbox.set_prewarm(True)


def test_prewarm_false_builds_from_scratch_and_leaves_the_spare(policy):
    nsbox.run(["true"], policy=policy)
    spares.pool().wait_ready()
    stats = api.prewarm_stats()
    assert nsbox.run(["echo", "fresh"], policy=policy, prewarm=False).stdout == b"fresh\n"
    after = api.prewarm_stats()
    assert (after["built"], after["used"]) == (stats["built"], stats["used"])
    nsbox.run(["true"], policy=policy)
    assert api.prewarm_stats()["used"] == stats["used"] + 1


def test_plans_that_a_spare_would_change_get_none(workspace):
    plain = prepare.prepare(["true"], Policy(workspace=str(workspace)))
    assert spares.key_of(plain) is not None
    walled = prepare.prepare(["true"], Policy(workspace=str(workspace), limits=Limits(wall=5)))
    assert spares.key_of(walled) is None
    other = prepare.prepare(["true"], Policy(workspace=str(workspace), hostname="other"))
    assert spares.key_of(other) != spares.key_of(plain)
    # argv, cwd and env come with each command.
    other_command = prepare.prepare(["ls", "-l"], Policy(workspace=str(workspace)), cwd="/")
    assert spares.key_of(other_command) == spares.key_of(plain)


def test_forked_runner_does_not_use_its_parents_spares(workspace):
    code = """
        import os, sys
        import nsbox
        from nsbox import api
        policy = nsbox.Policy(workspace=sys.argv[1])
        nsbox.run(["true"], policy=policy)
        assert api.prewarm_stats()["spares"] == 1
        pid = os.fork()
        if pid == 0:
            ok = api.prewarm_stats()["spares"] == 0
            r = nsbox.run(["true"], policy=policy)
            os._exit(0 if ok and r.returncode == 0 and api.prewarm_stats()["used"] == 0 else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "child saw the parent's spares"
        before = api.prewarm_stats()["used"]
        assert nsbox.run(["true"], policy=policy).returncode == 0
        assert api.prewarm_stats()["used"] == before + 1
        print("ok")
    """
    env = {k: v for k, v in os.environ.items() if k != "NSBOX_PREWARM"}
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code), str(workspace)],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0 and r.stdout == "ok\n", r.stderr


def test_a_spare_is_replaced_while_its_command_runs(policy):
    """Back-to-back runs find a spare: the one taken is replaced at once, not after the
    command ends (which made back-to-back runs slower than fresh ones)."""
    nsbox.run(["true"], policy=policy)
    spares.pool().wait_ready()
    before = api.prewarm_stats()
    running = threading.Thread(target=nsbox.run, args=(["sleep", "2"],),
                               kwargs={"policy": policy})
    running.start()
    try:
        assert wait_until(lambda: api.prewarm_stats()["used"] == before["used"] + 1)
        during = api.prewarm_stats()  # the command is still running
        assert running.is_alive()
        assert during["built"] > before["built"] and during["spares"] >= 1
    finally:
        running.join()


def test_rotating_over_eight_policies_keeps_a_spare_for_each(tmp_path):
    policies = []
    for i in range(8):
        (tmp_path / f"ws{i}").mkdir()
        policies.append(Policy(workspace=str(tmp_path / f"ws{i}")))
    for policy in policies:
        nsbox.run(["true"], policy=policy)
    spares.pool().wait_ready()
    before = api.prewarm_stats()
    for _ in range(2):
        for policy in policies:
            assert nsbox.run(["true"], policy=policy).returncode == 0
    after = api.prewarm_stats()
    assert after["used"] - before["used"] == 16 and after["dropped"] == before["dropped"]


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_workspace_runs_use_spares_each_with_its_own_git_layer(workspace):
    """A git workspace's runs take spares too; each spare mounts a layer of its own,
    and the run that takes it applies what its command wrote: every commit lands, on
    top of the one before, and no layer is left once the spares are gone."""
    ident = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
             "GIT_COMMITTER_EMAIL": "t@e"}
    subprocess.run(["git", "init", "-q", str(workspace)], check=True)
    policy = Policy(workspace=str(workspace))
    env = dict(os.environ, **ident)
    state = os.path.join(os.environ.get("XDG_STATE_HOME")
                         or os.path.expanduser("~/.local/state"), "nsbox", "git")
    layers_before = set(os.listdir(state)) if os.path.isdir(state) else set()
    before = used()
    for i in range(4):
        result = nsbox.run(["sh", "-c", f"echo {i} > f{i} && git add f{i} && "
                            f"git commit -q -m c{i} && git remote add r{i} /nowhere"],
                           policy=policy, env=env, cwd=str(workspace))
        assert result.returncode == 0, result.stderr
        spares.pool().wait_ready()
    assert used() >= before + 3
    log = subprocess.run(["git", "log", "--format=%s"], cwd=workspace, capture_output=True,
                         text=True, check=True).stdout.split()
    assert log == ["c3", "c2", "c1", "c0"]
    remotes = subprocess.run(["git", "remote"], cwd=workspace, capture_output=True,
                             text=True, check=True).stdout.split()
    assert remotes == ["r0", "r1", "r2", "r3"]
    assert subprocess.run(["git", "fsck", "--strict"], cwd=workspace).returncode == 0
    nsbox.set_prewarm(False)  # drops the spares, and with them their layers
    assert set(os.listdir(state)) - layers_before == set()
