"""Denial events: each wall reports what it stopped, exactly once per distinct operation,
in Result.denials, --json-status and the CLI's summary line.

Every test performs the blocked operation for real, asserts the kernel's refusal
itself, checks the host afterwards, and then the event. Runs as root and as a user.
"""

import json
import os
import subprocess
import uuid

import pytest

import nsbox
from conftest import assert_denied, needs_landlock, nsbox_cmd
from nsbox.policy.model import Policy
# The allowlist's local servers and name mapping (a test module's fixtures, shared).
from test_network_allowlist import certificate, resolve_env, servers  # noqa: F401

KEYCTL = ("import ctypes, os; libc = ctypes.CDLL(None, use_errno=True); "
          "ret = libc.syscall(250, 0, 0, 0, 0, 0); "  # keyctl on x86_64
          "print('keyctl', ret, os.strerror(ctypes.get_errno()))")
pytestmark = pytest.mark.skipif(os.uname().machine != "x86_64",
                                reason="syscall numbers in these probes are x86_64's")
# Each wall's refusal: a read-only mount with namespaces, Landlock without them
# (where the caller, not a PID 1, supervises: more in test_denials_landlock.py).
ISOLATIONS = pytest.mark.parametrize("isolation", [
    "full", pytest.param("landlock", marks=needs_landlock(1))])
REFUSAL = {"full": "Read-only file system", "landlock": "Permission denied"}


def exec_with_status(workspace, var_tmp, cmd, *opts, env=None, timeout=120,
                     isolation="full"):
    """`nsbox exec` with --json-status: (CompletedProcess, the record's denials)."""
    status = var_tmp / f"status-{uuid.uuid4().hex}.json"
    argv = nsbox_cmd("exec", "--isolation", isolation, "--workspace", str(workspace),
                     "--json-status", str(status), *opts, "--", "sh", "-c", cmd)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                            cwd=str(workspace))
    record = json.loads(status.read_text())
    assert record["protections"]["isolation"] == isolation, record["protections"]
    return result, record["denials"]


@pytest.fixture
def run_cli(workspace, var_tmp):
    return lambda cmd, *opts, **kw: exec_with_status(workspace, var_tmp, cmd, *opts, **kw)


def only_event(denials: list) -> dict:
    assert len(denials) == 1, denials
    event = dict(denials[0])
    pid, command = event.pop("pid"), event.pop("command")
    if event["wall"] in ("filesystem", "seccomp"):  # seen by the supervisor, in the sandbox
        assert pid > 0 and command, (pid, command)
    return event


@ISOLATIONS
def test_a_write_outside_the_workspace_is_one_filesystem_event(run_cli, isolation):
    target = f"/etc/nsbox-denial-{uuid.uuid4().hex}"
    result, denials = run_cli(f"echo started; echo x > {target}", isolation=isolation)
    assert_denied(result, expect=REFUSAL[isolation], started_marker="started")
    assert not os.path.exists(target)
    assert only_event(denials) == {"wall": "filesystem", "operation": "write", "target": target,
                                   "rule": "outside the writable roots", "count": 1}
    assert (f"nsbox: blocked 1 operation: write {target} (outside the writable roots)\n"
            in result.stderr)
    assert "nsbox: hint: writes outside the workspace" in result.stderr


def test_a_write_to_git_hooks_is_a_protected_path_event(run_cli, workspace):
    subprocess.run(["git", "init", "-q", str(workspace)], check=True)
    hooks = workspace / ".git" / "hooks"
    result, denials = run_cli("echo started; echo 'echo pwned' > .git/hooks/pre-commit")
    assert_denied(result, expect="Read-only file system", started_marker="started")
    assert not (hooks / "pre-commit").exists()
    assert only_event(denials) == {
        "wall": "filesystem", "operation": "write", "target": str(hooks / "pre-commit"),
        "rule": f"protected path {hooks}", "count": 1}
    assert f"write {hooks}/pre-commit (protected path {hooks})" in result.stderr


@ISOLATIONS
def test_a_keyctl_call_is_one_seccomp_event_and_still_fails(run_cli, isolation):
    result, denials = run_cli(f'echo started; python3 -c "{KEYCTL}"; exit 1',
                              isolation=isolation)
    assert_denied(result, expect="keyctl -1 Operation not permitted", started_marker="started")
    assert only_event(denials) == {"wall": "seccomp", "operation": "syscall",
                                   "target": "keyctl", "rule": "seccomp profile default",
                                   "count": 1}
    assert "nsbox: blocked 1 operation: syscall keyctl (seccomp profile default)" in result.stderr


def test_a_denied_connect_through_the_allowlist_is_one_network_event(
        run_cli, servers, resolve_env):  # noqa: F811
    plain, tls = servers
    result, denials = run_cli("echo started; curl -sS https://denied.test/must-not-arrive",
                              "--allow-domain", "allowed.test", env=resolve_env)
    assert_denied(result, expect=("403", "CONNECT tunnel failed", "Proxy CONNECT aborted"),
                  started_marker="started")
    assert tls.seen == [] and plain.seen == []
    assert only_event(denials) == {"wall": "network", "operation": "connect",
                                   "target": "denied.test:443", "rule": "not in allowlist",
                                   "count": 1}
    assert "connect denied.test:443 (not in allowlist)" in result.stderr


def test_the_limit_that_ended_the_command_is_one_limit_event(run_cli):
    marker = f"{29 + uuid.uuid4().int % 1000 / 1000:.3f}"
    result, denials = run_cli(f"echo started; sleep {marker}; echo survived", "--limit", "wall=1")
    assert result.returncode == 124 and "started" in result.stdout
    assert "survived" not in result.stdout
    assert subprocess.run(["pgrep", "-f", f"sleep {marker}"]).returncode == 1
    event = only_event(denials)
    assert event["wall"] == "limit" and event["rule"] == "limit wall=1s", event


def test_100000_denied_writes_are_one_event_with_their_count(run_cli, workspace):
    (workspace / "hammer.sh").write_text(
        "i=0; while [ $i -lt 100000 ]; do true 2>/dev/null >/etc/nsbox-hammer; "
        "i=$((i+1)); done; echo done $i\n")
    result, denials = run_cli("sh ./hammer.sh", "--quiet-denials", timeout=600)
    assert result.returncode == 0 and "done 100000" in result.stdout, result.stderr
    assert not os.path.exists("/etc/nsbox-hammer")
    assert only_event(denials) == {"wall": "filesystem", "operation": "write",
                                   "target": "/etc/nsbox-hammer",
                                   "rule": "outside the writable roots", "count": 100000}
    assert "blocked" not in result.stderr  # --quiet-denials


ALLOWED_WORK = """
set -e
git init -q repo && cd repo
git config user.email t@example.org && git config user.name t
echo hello > a.txt && mkdir -p d/e && mv a.txt d/e/b.txt && ln -s d/e/b.txt link
chmod 600 d/e/b.txt && touch d/e/b.txt && truncate -s 10 d/e/b.txt
git add -A && git commit -qm one && git log --oneline | wc -l
cd .. && rm -rf repo/d
python3 -c "
import os, tempfile, pathlib
pathlib.Path('py.txt').write_text('x')
os.rename('py.txt', 'py2.txt'); os.unlink('py2.txt')
with tempfile.NamedTemporaryFile(dir='/tmp') as f: f.write(b'x')
open('/dev/null', 'w').write('x')
os.mkdir('made'); os.rmdir('made')
"
echo out > /dev/stdout; echo err > /dev/stderr; echo x > /tmp/t; rm /tmp/t
: > /dev/null
python3 -m venv --without-pip venv && ./venv/bin/python -c "print('venv ok')"
echo all-done
"""


def test_allowed_work_produces_no_events(run_cli, workspace):
    result, denials = run_cli(ALLOWED_WORK, timeout=300)
    assert result.returncode == 0 and "all-done" in result.stdout, result.stderr
    assert "venv ok" in result.stdout
    assert denials == []
    assert "blocked" not in result.stderr


def test_the_command_cannot_reach_the_listener_or_pid_1(run_cli):
    probe = ("ls /proc/self/fd | tr '\\n' ' '; echo; "
             "for f in /proc/1/fd/*; do readlink $f && echo LEAK; done; "
             "cat /proc/1/mem > /dev/null 2>&1 && echo MEM-LEAK; "
             "grep Seccomp_filters /proc/self/status")
    result, denials = run_cli(probe)
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0].split()
    assert first == ["0", "1", "2", "3"], first  # stdio and ls's own directory: no listener
    assert "LEAK" not in result.stdout
    assert "Seccomp_filters:\t1" in result.stdout  # the one (reporting) filter
    assert denials == []


@ISOLATIONS
def test_without_a_supervisor_notified_calls_fail_closed(workspace, isolation):
    """The kernel's answer when the listener is gone (its supervisor died): ENOSYS for
    every notified call, write-intent and denied alike; never success."""
    from nsbox.plan import prepare

    plan = prepare.prepare(["true"], Policy(workspace=str(workspace), isolation=isolation))
    assert plan.denial_watch is not None
    read_r, read_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            from nsbox.kernel import proc, seccomp

            os.close(read_r)
            proc.set_no_new_privs()
            listener = seccomp.load_filter(plan.denial_watch.program, listener=True)
            os.close(listener)
            results = []
            for attempt in (lambda: os.mkdir(str(workspace / "made")),
                            lambda: os.open(str(workspace / "new"), os.O_WRONLY | os.O_CREAT)):
                try:
                    attempt()
                    results.append("ok")
                except OSError as err:
                    results.append(str(err.errno))
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.syscall(250, 0, 0, 0, 0, 0)  # keyctl, which the profile denies
            results.append(str(ctypes.get_errno()))
            os.write(read_w, " ".join(results).encode())
        finally:
            os._exit(0)
    os.close(read_w)
    answer = os.read(read_r, 100).decode()
    os.waitpid(pid, 0)
    assert answer == "38 38 38", answer  # ENOSYS each time
    assert not (workspace / "made").exists() and not (workspace / "new").exists()


@ISOLATIONS
def test_no_denial_events_runs_without_the_supervisor(run_cli, isolation):
    target = f"/etc/nsbox-denial-{uuid.uuid4().hex}"
    result, denials = run_cli(f"echo started; echo x > {target}; "
                              "grep Seccomp_filters /proc/self/status", "--no-denial-events",
                              isolation=isolation)
    assert REFUSAL[isolation] in result.stderr and not os.path.exists(target)
    assert denials == [] and "blocked" not in result.stderr


# --- the library ----------------------------------------------------------------------

@ISOLATIONS
def test_library_one_shot_reports_live_and_in_the_result(workspace, isolation):
    target = f"/etc/nsbox-denial-{uuid.uuid4().hex}"
    live = []
    r = nsbox.run(["sh", "-c", f"echo x > {target}; echo x > {target}; python3 -c \"{KEYCTL}\""],
                  policy=Policy(workspace=str(workspace), isolation=isolation),
                  on_denial=live.append, timeout=120)
    assert REFUSAL[isolation].encode() in r.stderr and b"Operation not permitted" in r.stdout
    assert not os.path.exists(target)
    got = [(d.wall, d.operation, d.target, d.rule, d.count) for d in r.denials]
    assert got == [("filesystem", "write", target, "outside the writable roots", 2),
                   ("seccomp", "syscall", "keyctl", "seccomp profile default", 1)]
    assert [(d.wall, d.target, d.count) for d in live] == [("filesystem", target, 1),
                                                          ("seccomp", "keyctl", 1)]


def test_library_session_reports_per_command(workspace):
    target = f"/etc/nsbox-denial-{uuid.uuid4().hex}"
    subprocess.run(["git", "init", "-q", str(workspace)], check=True)
    seen = []
    with nsbox.Session(Policy(workspace=str(workspace)), on_denial=seen.append) as s:
        first = s.run(["sh", "-c", f"echo x > {target}"], timeout=60)
        second = s.run(["sh", "-c", f"echo ok > fine; echo x > {target}; echo x > {target}; "
                        "echo x > .git/hooks/post-checkout"], timeout=60)
        third = s.run(["sh", "-c", "echo ok > fine2"], timeout=60)
    assert b"Read-only file system" in first.stderr and not os.path.exists(target)
    assert not (workspace / ".git/hooks/post-checkout").exists()
    assert [(d.target, d.count) for d in first.denials] == [(target, 1)]
    assert sorted((d.target, d.rule, d.count) for d in second.denials) == sorted([
        (target, "outside the writable roots", 2),
        (str(workspace / ".git/hooks/post-checkout"),
         f"protected path {workspace / '.git/hooks'}", 1)])
    assert third.denials == ()
    assert len(seen) == 3


def test_library_limit_and_network_events(workspace, servers, resolve_env):  # noqa: F811
    plain, tls = servers
    r = nsbox.run(["sh", "-c", "curl -sS -o /dev/null -w '%{http_code}' http://denied.test/x"],
                  policy=Policy(workspace=str(workspace), network_allow=("allowed.test",)),
                  env=resolve_env, timeout=60)
    assert r.stdout == b"403" and plain.seen == []
    assert [(d.wall, d.operation, d.target, d.rule) for d in r.denials] == [
        ("network", "GET", "denied.test:80", "not in allowlist")]
    r = nsbox.run(["sleep", "30"], policy=Policy(workspace=str(workspace), limits={"wall": 1}),
                  timeout=60)
    assert r.returncode == 124
    assert [(d.wall, d.rule) for d in r.denials] == [("limit", "limit wall=1s")]



def test_nsbox_installed_where_the_sandbox_cannot_see_it(tmp_path, workspace):
    """nsbox's own files under /tmp (private in the sandbox): PID 1 reads the
    supervisor's code before pivot_root, so writes work and denials are still reported."""
    import shutil
    import site
    import sys

    shutil.copytree(os.path.dirname(nsbox.__file__), tmp_path / "nsbox",
                    ignore=shutil.ignore_patterns("__pycache__"))
    # -S: no .pth files, so no editable install's finder; the copy comes first.
    env = dict(os.environ, PYTHONPATH=":".join([str(tmp_path)] + site.getsitepackages()))
    python = [sys.executable, "-S"]
    assert subprocess.run(python + ["-c", "import nsbox; print(nsbox.__file__)"], env=env,
                          cwd=str(workspace), capture_output=True,
                          text=True).stdout.startswith(f"{tmp_path}/")
    target = f"/etc/nsbox-denial-{uuid.uuid4().hex}"
    result = subprocess.run(
        python + ["-m", "nsbox", "exec", "--workspace", str(workspace), "--",
                  "sh", "-c", f"echo ok > made && echo x > {target}; cat made"],
        capture_output=True, text=True, timeout=120, cwd=str(workspace), env=env)
    assert result.stdout == "ok\n", result.stderr
    assert "Read-only file system" in result.stderr and not os.path.exists(target)
    assert f"nsbox: blocked 1 operation: write {target}" in result.stderr
    assert (workspace / "made").read_text() == "ok\n"
