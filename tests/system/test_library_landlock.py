"""The library under Landlock-only isolation: nsbox.run / Popen / run_async without namespaces.

Each escape is tried for real from inside the sandbox; each test checks both the
denial and that nothing changed on the host.
"""

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid

import pytest

import nsbox
import nsbox.api
from nsbox.errors import SandboxError, UnsupportedKernel
from nsbox.policy.model import Policy
from conftest import (alive, assert_denied, host_tcp_listener, marker, needs_landlock,
                      pids_running, wait_until)

PY = sys.executable
# Network "none" needs Landlock's TCP rules (ABI 4) and scoping needs ABI 6 without best effort.
pytestmark = [needs_landlock(6), pytest.mark.policy(isolation="landlock")]
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(nsbox.__file__)))


def test_run_reports_landlock_and_writes_reach_the_workspace(policy, workspace):
    r = nsbox.run(["sh", "-c", "echo ok > inside; echo out; echo err >&2; exit 3"],
                  policy=policy)
    assert (r.returncode, r.stdout, r.stderr) == (3, b"out\n", b"err\n")
    assert (r.isolation, r.isolation_fallback, r.isolation_missing) == ("landlock", "", ())
    assert (workspace / "inside").read_text() == "ok\n"


def test_write_to_home_fails_and_home_is_unchanged(policy):
    home = os.path.expanduser("~")
    victim = os.path.join(home, f"nsbox-escape-{uuid.uuid4().hex}")
    try:  # control: this process may write there, so only the sandbox stands in the way
        open(victim, "x").close()
        os.unlink(victim)
    except OSError as err:
        pytest.skip(f"$HOME {home} is not writable here: {err}")
    before = sorted(os.listdir(home))
    r = nsbox.run(["sh", "-c", f"echo started; echo pwned > {victim}"], policy=policy)
    assert_denied(r, expect="Permission denied", started_marker="started")
    assert not os.path.lexists(victim)
    assert sorted(os.listdir(home)) == before


def test_tmpdir_is_private_and_removed_afterwards(policy):
    r = nsbox.run(["sh", "-c", 'echo "$TMPDIR"; stat -c %a "$TMPDIR"; echo x > "$TMPDIR/f"; '
                   'mkdir "$TMPDIR/locked"; touch "$TMPDIR/locked/f"; chmod 0 "$TMPDIR/locked"'],
                  policy=policy)
    assert r.returncode == 0, r.stderr
    tmpdir, mode = r.stdout.decode().split()
    assert os.path.isabs(tmpdir) and os.path.basename(tmpdir).startswith("nsbox-")
    assert mode == "700"
    assert not os.path.lexists(tmpdir)
    # Each run has its own.
    again = nsbox.run(["sh", "-c", 'echo "$TMPDIR"'], policy=policy)
    assert again.stdout.decode().strip() != tmpdir


def test_tcp_connect_to_a_host_listener_fails(policy):
    with host_tcp_listener() as probe:
        r = nsbox.run([PY, "-c", f"print('started', flush=True); {probe}"], policy=policy)
        # EPERM: seccomp refuses inet sockets; EACCES: Landlock refuses the connect
        assert_denied(r, expect=("Operation not permitted", "Permission denied"),
                      started_marker="started")
        assert b"connected" not in r.stdout


def test_background_processes_are_gone_when_run_returns(policy):
    tag = marker()
    # A plain background child and an orphan whose parent shell exits first.
    r = nsbox.run(["sh", "-c", f"sleep {tag} & sh -c 'sleep {tag} &'; echo started"],
                  policy=policy, timeout=30)
    assert r.returncode == 0 and r.stdout == b"started\n", r.stderr
    assert not r.timed_out
    assert not pids_running("sleep", tag)


def test_timeout_leaves_no_process(policy):
    tag = marker()
    r = nsbox.run(["sh", "-c", f"echo before; sleep {tag} & sleep {tag}"], policy=policy,
                  timeout=1)
    assert r.timed_out and r.signal == signal.SIGKILL
    assert r.stdout == b"before\n"
    assert not pids_running("sleep", tag)


def test_run_async_timeout_leaves_no_process(policy):
    tag = marker()
    r = asyncio.run(nsbox.run_async(["sh", "-c", f"echo started; sleep {tag} & sleep {tag}"],
                                    policy=policy, timeout=0.5))
    assert r.timed_out and r.stdout == b"started\n"
    assert r.isolation == "landlock"
    assert not pids_running("sleep", tag)


def test_input_signal_and_exec_failures(policy, workspace):
    assert nsbox.run(["tr", "a-z", "A-Z"], policy=policy, input=b"abc").stdout == b"ABC"
    r = nsbox.run(["sh", "-c", "kill -TERM $$"], policy=policy)
    assert (r.returncode, r.signal) == (128 + signal.SIGTERM, signal.SIGTERM)
    r = nsbox.run(["no-such-command-xyz"], policy=policy)
    assert r.returncode == 127 and b"not found" in r.stderr
    script = workspace / "script.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)
    assert nsbox.run([str(script)], policy=policy).returncode == 126


def test_popen_signal_and_kill_end_everything(policy):
    tag = marker()
    with nsbox.Popen(["sh", "-c", f"trap 'echo got-term; exit 7' TERM; sleep {tag} & "
                      "echo ready; while :; do sleep 0.05; done"], policy=policy,
                     stdout=nsbox.PIPE) as p:
        assert p.isolation == "landlock"
        assert p.stdout.readline() == b"ready\n"
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=20) == 7
    assert not pids_running("sleep", tag)
    p = nsbox.Popen(["sleep", tag], policy=policy, stdin=nsbox.DEVNULL)
    p.kill()
    assert p.wait(timeout=20) == 128 + signal.SIGKILL
    assert not pids_running("sleep", tag)


def test_allowlist_network_is_refused(policy):
    allowlist = Policy(workspace=policy.workspace, isolation="landlock", network="allowlist",
                       network_allow=("example.com",))
    with pytest.raises(UnsupportedKernel, match="network namespace"):
        nsbox.run(["true"], policy=allowlist)
    with pytest.raises(UnsupportedKernel, match="network namespace"):
        nsbox.Session(allowlist)


def test_session_commands_share_a_private_tmpdir(policy, workspace):
    with nsbox.Session(policy) as one, nsbox.Session(policy) as two:
        r = one.run(["sh", "-c", 'echo secret > "$TMPDIR/f"; echo ws > inside; echo "$TMPDIR"'])
        assert (r.returncode, r.isolation) == (0, "landlock"), r.stderr
        tmpdir = r.stdout.decode().strip()
        assert os.path.basename(tmpdir).startswith("nsbox-")
        assert one.run(["sh", "-c", 'cat "$TMPDIR/f"']).stdout == b"secret\n"
        assert one.run(["cat", "inside"]).stdout == b"ws\n"
        # The other session has a TMPDIR of its own, and may not write into this one.
        r = two.run(["sh", "-c", 'echo started; echo "$TMPDIR"; cat "$TMPDIR/f"'])
        assert_denied(r, expect="No such file or directory", started_marker="started")
        started, other = r.stdout.decode().split()
        assert other != tmpdir
        r = two.run(["sh", "-c", f"echo started; echo pwned > {tmpdir}/f"])
        assert_denied(r, expect="Permission denied", started_marker="started")
        assert one.run(["sh", "-c", 'cat "$TMPDIR/f"']).stdout == b"secret\n"
        assert os.path.isdir(tmpdir)
    assert not os.path.lexists(tmpdir)
    assert (workspace / "inside").read_text() == "ws\n"


def test_session_write_outside_the_workspace_fails_and_host_is_unchanged(policy, tmp_path):
    host_dir = tmp_path / "host"
    host_dir.mkdir()
    victim = host_dir / "victim"
    victim.write_text("original\n")
    before = sorted(os.listdir(host_dir))
    with nsbox.Session(policy) as s:
        r = s.run(["sh", "-c", f"echo started; echo pwned > {victim}"])
        assert_denied(r, expect="Permission denied", started_marker="started")
        r = s.run(["sh", "-c", f"echo started; echo new > {host_dir}/new"])
        assert_denied(r, expect="Permission denied", started_marker="started")
    assert victim.read_text() == "original\n"
    assert sorted(os.listdir(host_dir)) == before


def test_session_close_kills_lingering_processes_and_removes_tmpdir(policy):
    tag = marker()
    s = nsbox.Session(policy)
    # A plain background child and an orphan whose parent shell exits first.
    r = s.run(["sh", "-c", f'sleep {tag} & sh -c "sleep {tag} &"; echo "$TMPDIR"'])
    assert r.returncode == 0, r.stderr
    tmpdir = r.stdout.decode().strip()
    assert wait_until(lambda: len(pids_running("sleep", tag)) == 2)
    assert os.path.isdir(tmpdir)
    s.close()
    assert not pids_running("sleep", tag)
    assert not os.path.lexists(tmpdir)
    with pytest.raises(nsbox.SandboxError):
        s.run(["true"])


def test_session_timeout_kills_the_command_only(policy):
    tag = marker()
    with nsbox.Session(policy) as s:
        r = s.run(["sh", "-c", f"echo before; sleep {tag} & sleep {tag}"], timeout=0.5)
        assert r.timed_out and r.stdout == b"before\n"
        assert r.isolation == "landlock"
        assert wait_until(lambda: not pids_running("sleep", tag))
        assert s.run(["echo", "still here"]).stdout == b"still here\n"


def test_session_runner_death_leaves_nothing_behind(workspace):
    tag = marker()
    code = """
        import sys, time
        import nsbox
        from nsbox.service import forkserver
        s = nsbox.Session(nsbox.Policy(workspace=sys.argv[1], isolation="landlock"))
        print(s.run(["sh", "-c", "sleep " + sys.argv[2] + " & echo $TMPDIR"]).stdout.decode(),
              end="")
        print(forkserver.client().pid, flush=True)
        time.sleep(120)
    """
    argv, env = _runner(code, str(workspace), tag)
    runner = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE)
    try:
        tmpdir = runner.stdout.readline().decode().strip()
        server_pid = int(runner.stdout.readline())
        assert wait_until(lambda: len(pids_running("sleep", tag)) == 1)
    finally:
        runner.kill()
        runner.wait()
    assert wait_until(lambda: not alive(server_pid))
    assert wait_until(lambda: not pids_running("sleep", tag))
    assert wait_until(lambda: not os.path.lexists(tmpdir))


def test_landlock_runs_leave_no_spare(policy):
    before = nsbox.api.prewarm_stats()
    for _ in range(2):
        assert nsbox.run(["true"], policy=policy).returncode == 0
    after = nsbox.api.prewarm_stats()
    assert (after["built"], after["used"]) == (before["built"], before["used"])


def _runner(code: str, *args):
    env = dict(os.environ, PYTHONPATH=PACKAGE_ROOT)
    return [PY, "-c", textwrap.dedent(code), *args], env


def test_runner_death_leaves_nothing_behind(workspace):
    tag = marker()
    code = """
        import sys, time
        import nsbox
        from nsbox.service import forkserver
        policy = nsbox.Policy(workspace=sys.argv[1], isolation="landlock")
        p = nsbox.Popen(["sh", "-c", "sleep " + sys.argv[2] + " & sleep " + sys.argv[2]],
                        policy=policy, stdin=nsbox.DEVNULL)
        print(forkserver.client().pid, flush=True)
        time.sleep(120)
    """
    argv, env = _runner(code, str(workspace), tag)
    runner = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE)
    try:
        server_pid = int(runner.stdout.readline())
        assert wait_until(lambda: len(pids_running("sleep", tag)) == 2)
    finally:
        runner.kill()
        runner.wait()
    assert wait_until(lambda: not alive(server_pid))
    assert wait_until(lambda: not pids_running("sleep", tag))


def test_fork_server_death_still_cleans_up(workspace):
    tag = marker()
    code = """
        import os, signal, sys
        import nsbox
        from nsbox.service import forkserver
        policy = nsbox.Policy(workspace=sys.argv[1], isolation="landlock")
        p = nsbox.Popen(["sh", "-c", "echo $TMPDIR; sleep " + sys.argv[2] + " & sleep "
                         + sys.argv[2]], policy=policy, stdin=nsbox.DEVNULL, stdout=nsbox.PIPE)
        tmpdir = p.stdout.readline().decode().strip()
        os.kill(forkserver.client().pid, signal.SIGKILL)
        print(tmpdir, p.wait(timeout=30), flush=True)
    """
    argv, env = _runner(code, str(workspace), tag)
    r = subprocess.run(argv, env=env, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    tmpdir, code = r.stdout.decode().split()
    assert int(code) == 128 + signal.SIGKILL
    assert not pids_running("sleep", tag)
    assert not os.path.lexists(tmpdir)


BLOCK_USERNS = "echo 0 > /proc/sys/user/max_user_namespaces && exec \"$@\""

AUTO_RUN = """
    import json, sys
    import nsbox
    r = nsbox.run(["sh", "-c", "echo ok > inside; echo started; echo pwned > " + sys.argv[2]],
                  policy=nsbox.Policy(workspace=sys.argv[1], isolation="auto"))
    print(json.dumps([r.isolation, r.isolation_fallback, r.returncode, r.stdout.decode(),
                      r.stderr.decode()]))
"""


def test_auto_falls_back_to_landlock_where_user_namespaces_are_blocked(workspace, tmp_path):
    host_dir = tmp_path / "host"
    host_dir.mkdir()
    victim = host_dir / "victim"
    victim.write_text("original\n")
    # Inside a fresh user namespace we own its limit: 0 blocks nested ones for real.
    argv, env = _runner(AUTO_RUN, str(workspace), str(victim))
    r = subprocess.run(["unshare", "--user", "--map-root-user", "sh", "-c", BLOCK_USERNS,
                        "sh", *argv], env=env, capture_output=True, timeout=60)
    if r.returncode != 0 and b"max_user_namespaces" in r.stderr and b"nsbox" not in r.stderr:
        pytest.skip(f"cannot block user namespaces here: {r.stderr!r}")
    assert r.returncode == 0, r.stderr
    isolation, reason, code, out, err = json.loads(r.stdout)
    assert isolation == "landlock"
    assert "max_user_namespaces" in reason
    # the write outside the workspace failed
    assert_denied(subprocess.CompletedProcess(argv, code, out, err),
                  expect="Permission denied", started_marker="started")
    assert (workspace / "inside").read_text() == "ok\n"
    assert victim.read_text() == "original\n"


def test_auto_is_full_where_user_namespaces_work(workspace):
    r = nsbox.run(["hostname"], policy=Policy(workspace=str(workspace), isolation="auto"))
    assert r.returncode == 0, r.stderr
    assert (r.isolation, r.stdout) == ("full", b"nsbox\n")


def test_setup_failure_raises_before_the_command_runs(policy, workspace, monkeypatch):
    # A TMPDIR base that is a file: the launcher cannot create the private TMPDIR.
    base = workspace / "not-a-dir"
    base.write_text("")
    from nsbox.plan import isolation

    monkeypatch.setattr(isolation, "private_tmp_path", lambda: str(base / "nsbox-x"))
    with pytest.raises(SandboxError, match="TMPDIR"):
        nsbox.run(["sh", "-c", "echo ran > ran"], policy=policy)
    assert not (workspace / "ran").exists()
