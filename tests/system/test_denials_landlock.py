"""Denial events under landlock-only isolation: no PID 1, so the nsbox process that
launched the command (outside its Landlock domain) supervises the reporting filter.
What both isolations share is tested in test_denials.py, for each.

Every test performs the blocked operation for real, asserts the kernel's refusal
itself, checks the host afterwards, and then the event, in Result.denials,
--json-status and the CLI's summary. Runs as root and as a user.
"""

import os
import select
import signal
import subprocess
import uuid

import pytest

import nsbox
from conftest import assert_denied, needs_landlock, nsbox_cmd
from nsbox.policy.model import Policy
from test_denials import ALLOWED_WORK, KEYCTL, exec_with_status, only_event

pytestmark = [needs_landlock(1),
              pytest.mark.skipif(os.uname().machine != "x86_64",
                                 reason="syscall numbers in these probes are x86_64's")]
LANDLOCK = ("--isolation", "landlock")


@pytest.fixture
def run_cli(workspace, var_tmp):
    return lambda cmd, *opts, **kw: exec_with_status(workspace, var_tmp, cmd, *opts,
                                                     isolation="landlock", **kw)


def test_a_write_to_git_hooks_is_no_denial_but_a_reported_change(run_cli, workspace):
    """Landlock cannot keep a path read-only inside a writable root: the write happens,
    so it is no denial event (an event must mean the call was stopped); the change
    report after the run names it instead."""
    subprocess.run(["git", "init", "-q", str(workspace)], check=True)
    hook = workspace / ".git" / "hooks" / "x"
    target = f"/etc/nsbox-denial-{uuid.uuid4().hex}"
    result, denials = run_cli(f"echo started; echo 'echo pwned' > .git/hooks/x; "
                              f"echo x > {target}")
    assert_denied(result, expect="Permission denied", started_marker="started")
    assert hook.read_text() == "echo pwned\n" and not os.path.exists(target)
    # Exactly one event, and it is the real denial: none for the hook.
    assert only_event(denials)["target"] == target
    assert "changed where code runs later outside the sandbox: .git/hooks" in result.stderr
    assert ".git/hooks/x (protected" not in result.stderr


def test_deleting_what_does_not_exist_is_no_event(run_cli, var_tmp):
    """Landlock checks a delete after the lookup: a missing file fails with ENOENT."""
    (var_tmp / "kept").write_text("host\n")
    missing = var_tmp / f"missing-{uuid.uuid4().hex}"
    result, denials = run_cli(f"echo started; rm -f {missing}; echo rc=$?; rm {var_tmp}/kept")
    assert_denied(result, expect="Permission denied", started_marker="started")
    assert "rc=0" in result.stdout and (var_tmp / "kept").read_text() == "host\n"
    assert only_event(denials) == {"wall": "filesystem", "operation": "delete",
                                   "target": str(var_tmp / "kept"),
                                   "rule": "outside the writable roots", "count": 1}


def test_allowed_work_produces_no_events(run_cli):
    result, denials = run_cli(ALLOWED_WORK.replace("/tmp/", "$TMPDIR/").replace(
        "dir='/tmp'", "dir=os.environ['TMPDIR']"), timeout=300)
    assert result.returncode == 0 and "all-done" in result.stdout, result.stderr
    assert "venv ok" in result.stdout
    assert denials == []
    assert "blocked" not in result.stderr


@needs_landlock(6)  # signal scoping
def test_the_command_cannot_reach_the_supervising_caller(run_cli):
    """The caller holds the listener and reads the command's memory: the command can
    neither signal it, nor read its memory, environment or descriptors."""
    probe = ("ls /proc/self/fd | tr '\\n' ' '; echo; "
             "kill -CONT $PPID 2>/dev/null && echo SIGNALLED; "
             "cat /proc/$PPID/mem > /dev/null 2>&1 && echo MEM-LEAK; "
             "cat /proc/$PPID/environ > /dev/null 2>&1 && echo ENV-LEAK; "
             "for f in /proc/$PPID/fd/*; do readlink $f > /dev/null 2>&1 && echo FD-LEAK; done; "
             "grep Seccomp_filters /proc/self/status")
    result, denials = run_cli(probe)
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0].split()
    assert first == ["0", "1", "2", "3"], first  # stdio and ls's own directory: no listener
    for leak in ("SIGNALLED", "MEM-LEAK", "ENV-LEAK", "FD-LEAK"):
        assert leak not in result.stdout, result.stdout
    assert "Seccomp_filters:\t1" in result.stdout  # the one (reporting) filter
    assert denials == []


PROBE = """
import os, sys, time
sys.stdout.write("waiting\\n"); sys.stdout.flush()
while not os.path.exists("go"):
    time.sleep(0.05)
try:
    os.mkdir("made")
    print("made", flush=True)
except OSError as err:
    print("errno", err.errno, flush=True)
"""


def test_a_dead_supervisor_fails_the_calls_closed(workspace):
    """The caller (and its supervisor) killed outright: the command dies with it
    (parent-death signal), and a process it left running gets ENOSYS for its notified
    calls, never success and never a hang."""
    probe = f"probe-{uuid.uuid4().hex}.py"
    (workspace / probe).write_text(PROBE)
    marker = f"{600 + uuid.uuid4().int % 1000 / 1000:.3f}"  # names the leftover sleep
    proc = subprocess.Popen(
        nsbox_cmd("exec", *LANDLOCK, "--workspace", str(workspace), "--", "sh", "-c",
                  f"python3 {probe} & sleep {marker}"),
        cwd=str(workspace), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"waiting\n", proc.stderr.read()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        (workspace / "go").write_text("")
        # The orphan's answer within a minute: a hung call would never give one.
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        answer = proc.stdout.readline() if ready else b"(no answer: the call hangs)"
    finally:
        if proc.poll() is None:
            proc.kill()
        for name in (f"sleep {marker}", probe):  # orphaned when their shell died with nsbox
            for pid in subprocess.run(["pgrep", "-f", name], capture_output=True,
                                      text=True).stdout.split():
                os.kill(int(pid), signal.SIGKILL)
    assert answer == b"errno 38\n", answer  # ENOSYS
    assert not (workspace / "made").exists()


# --- the library ----------------------------------------------------------------------

def test_library_session_reports_per_command(workspace):
    target = f"/etc/nsbox-denial-{uuid.uuid4().hex}"
    seen = []
    with nsbox.Session(Policy(workspace=str(workspace), isolation="landlock"),
                       on_denial=seen.append) as s:
        first = s.run(["sh", "-c", f"echo x > {target}"], timeout=60)
        second = s.run(["sh", "-c", f"echo ok > fine; echo x > {target}; echo x > {target}; "
                        f"python3 -c \"{KEYCTL}\""], timeout=60)
        third = s.run(["sh", "-c", "echo ok > fine2; rm fine2"], timeout=60)
    assert b"Permission denied" in first.stderr and not os.path.exists(target)
    assert (workspace / "fine").read_text() == "ok\n"
    assert [(d.target, d.count) for d in first.denials] == [(target, 1)]
    assert sorted((d.wall, d.target, d.count) for d in second.denials) == [
        ("filesystem", target, 2), ("seccomp", "keyctl", 1)]
    assert third.denials == ()
    assert len(seen) == 3
