"""nsbox as a library: run / Popen / run_async / Session from a threaded, asyncio runner."""

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pytest

import nsbox
from conftest import alive, assert_denied, marker, pids_running, wait_until


def test_run_returns_output_and_status(policy):
    r = nsbox.run(["sh", "-c", "echo out; echo err >&2; exit 3"], policy=policy)
    assert (r.returncode, r.stdout, r.stderr) == (3, b"out\n", b"err\n")
    assert r.signal is None and not r.timed_out and r.duration_s > 0


def test_run_input_and_signal(policy):
    assert nsbox.run(["tr", "a-z", "A-Z"], policy=policy, input=b"abc").stdout == b"ABC"
    r = nsbox.run(["sh", "-c", "kill -TERM $$"], policy=policy)
    assert (r.returncode, r.signal) == (128 + signal.SIGTERM, signal.SIGTERM)


def test_exec_failures_map_to_127_and_126(policy, workspace):
    r = nsbox.run(["no-such-command-xyz"], policy=policy)
    assert r.returncode == 127 and b"not found" in r.stderr
    script = workspace / "script.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)
    assert nsbox.run([str(script)], policy=policy).returncode == 126


def test_twenty_threads_at_once(policy):
    results = {}

    def one(i):
        try:
            r = nsbox.run(["sh", "-c", 'echo "$0"; sleep 0.2', str(i)], policy=policy)
            results[i] = (r.returncode, r.stdout)
        except Exception as err:  # shown in the assertion below
            results[i] = err

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {
        i: (0, f"{i}\n".encode()) for i in range(20)}


def test_fifty_run_async_gathered(policy):
    async def main():
        return await asyncio.gather(*(nsbox.run_async(["echo", str(i)], policy=policy)
                                      for i in range(50)))

    results = asyncio.run(main())
    assert [r.stdout for r in results] == [f"{i}\n".encode() for i in range(50)]


def test_run_async_timeout(policy):
    tag = marker()
    r = asyncio.run(nsbox.run_async(["sh", "-c", f"echo started; sleep {tag}"],
                                    policy=policy, timeout=0.5))
    assert r.timed_out and r.stdout == b"started\n"
    assert wait_until(lambda: not pids_running("sleep", tag))


def test_timeout_kills_whole_sandbox(policy):
    tag = marker()
    start = time.monotonic()
    r = nsbox.run(["sh", "-c", f"echo before; sleep {tag} & sleep {tag}"], policy=policy,
                  timeout=1)
    assert time.monotonic() - start < 1 + 1
    assert r.timed_out and r.signal == signal.SIGKILL
    assert r.stdout == b"before\n"
    assert wait_until(lambda: not pids_running("sleep", tag))


def test_large_output_on_both_streams(policy):
    size = 100 * 1000 * 1000
    r = nsbox.run(["sh", "-c", f"head -c {size} /dev/zero & head -c {size} /dev/zero >&2; wait"],
                  policy=policy)
    assert r.returncode == 0
    assert len(r.stdout) == size and len(r.stderr) == size


def test_binary_output_unchanged(policy, workspace):
    data = bytes(range(256)) * 64 + b"\r\n\0\xff"
    (workspace / "blob").write_bytes(data)
    assert nsbox.run(["cat", "blob"], policy=policy).stdout == data
    assert nsbox.run(["cat"], policy=policy, input=data).stdout == data


def test_popen_streams_and_signals(policy):
    with nsbox.Popen(["sh", "-c", "trap 'echo got-term; exit 7' TERM; echo ready; "
                      "while :; do sleep 0.05; done"], policy=policy,
                     stdout=nsbox.PIPE) as p:
        assert p.stdout.readline() == b"ready\n"
        assert p.poll() is None
        with pytest.raises(subprocess.TimeoutExpired):
            p.wait(timeout=0.1)
        p.send_signal(signal.SIGTERM)
        assert p.stdout.read() == b"got-term\n"
        assert p.wait(timeout=20) == 7


def test_popen_kill_and_communicate(policy):
    p = nsbox.Popen(["cat"], policy=policy, stdin=nsbox.PIPE, stdout=nsbox.PIPE,
                    stderr=nsbox.STDOUT)
    assert p.communicate(b"x" * 300000) == (b"x" * 300000, None)
    assert p.returncode == 0
    p = nsbox.Popen(["sleep", "60"], policy=policy, stdin=nsbox.DEVNULL)
    p.kill()
    assert p.wait(timeout=20) == 128 + signal.SIGKILL


def test_session_shares_tmp_and_other_sessions_do_not(policy):
    name = f"/tmp/nsbox-lib-{uuid.uuid4().hex}"
    with nsbox.Session(policy) as one, nsbox.Session(policy) as two:
        assert one.run(["sh", "-c", f"echo secret > {name}"]).returncode == 0
        assert one.run(["cat", name]).stdout == b"secret\n"
        r = two.run(["sh", "-c", f"echo started; cat {name}"])
        assert_denied(r, expect="No such file or directory", started_marker="started")
        assert r.stdout == b"started\n"
    assert not os.path.exists(name)


def test_session_workspace_writes_reach_host(policy, workspace):
    with nsbox.Session(policy) as s:
        assert s.run(["sh", "-c", "echo hi > out.txt"]).returncode == 0
        assert s.run(["cat", "out.txt"], cwd=".").stdout == b"hi\n"
    assert (workspace / "out.txt").read_text() == "hi\n"


def test_session_close_kills_lingering_processes(policy):
    tag = marker()
    s = nsbox.Session(policy)
    r = s.run(["sh", "-c", f"sleep {tag} &"])
    assert r.returncode == 0
    assert wait_until(lambda: pids_running("sleep", tag))
    s.close()
    assert wait_until(lambda: not pids_running("sleep", tag))
    with pytest.raises(nsbox.SandboxError):
        s.run(["true"])


def test_session_timeout_kills_the_command_only(policy):
    tag = marker()
    with nsbox.Session(policy) as s:
        r = s.run(["sh", "-c", f"echo before; sleep {tag} & sleep {tag}"], timeout=0.5)
        assert r.timed_out and r.stdout == b"before\n"
        assert wait_until(lambda: not pids_running("sleep", tag))
        assert s.run(["echo", "still here"]).stdout == b"still here\n"


def test_session_threads_and_async(policy):
    with nsbox.Session(policy) as s:
        results = {}

        def one(i):
            results[i] = s.run(["echo", str(i)]).stdout

        threads = [threading.Thread(target=one, args=(i,)) for i in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == {i: f"{i}\n".encode() for i in range(10)}

        async def gathered():
            return await asyncio.gather(*(s.run_async(["echo", str(i)]) for i in range(20)))

        assert [r.stdout for r in asyncio.run(gathered())] == [
            f"{i}\n".encode() for i in range(20)]


def test_session_exec_and_setup_failures(policy):
    with nsbox.Session(policy) as s:
        assert s.run(["no-such-command-xyz"]).returncode == 127
        with pytest.raises(nsbox.SetupFailed, match="chdir"):
            s.run(["true"], cwd="/no/such/dir")
        assert s.run(["true"]).returncode == 0


def test_session_keeps_restrictions(policy):
    with nsbox.Session(policy) as s:
        r = s.run(["sh", "-c", "grep -E '^(NoNewPrivs|CapEff)' /proc/self/status"])
    assert b"NoNewPrivs:\t1" in r.stdout
    assert b"CapEff:\t0000000000000000" in r.stdout


def _runner(code: str, *args):
    return [sys.executable, "-c", textwrap.dedent(code), *args]


def test_bad_policy_raises_before_anything_starts(tmp_path):
    missing = str(tmp_path / "missing")
    code = """
        import sys
        import nsbox
        from nsbox.service import forkserver
        for call in (lambda: nsbox.run(["true"], policy=nsbox.Policy(workspace=sys.argv[1])),
                     lambda: nsbox.Session(nsbox.Policy(workspace=sys.argv[1])),
                     lambda: nsbox.Policy(preset="bogus")):
            try:
                call()
            except nsbox.PolicyError as err:
                assert isinstance(err, nsbox.SandboxError)
                print("PolicyError:", err)
        print("fork server started:", forkserver._client is not None)
    """
    r = subprocess.run(_runner(code, missing), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("PolicyError:") == 3
    assert "does not exist" in r.stdout and "preset" in r.stdout
    assert "fork server started: False" in r.stdout


def test_runner_death_leaves_nothing_behind(workspace):
    tag = marker()
    code = """
        import sys, time
        import nsbox
        from nsbox.service import forkserver
        policy = nsbox.Policy(workspace=sys.argv[1])
        s = nsbox.Session(policy)
        s.run(["sh", "-c", "sleep " + sys.argv[2] + " &"])
        p = nsbox.Popen(["sleep", sys.argv[2]], policy=policy, stdin=nsbox.DEVNULL)
        print(forkserver.client().pid, flush=True)
        time.sleep(120)
    """
    runner = subprocess.Popen(_runner(code, str(workspace), tag), stdout=subprocess.PIPE)
    try:
        server_pid = int(runner.stdout.readline())
        assert wait_until(lambda: len(pids_running("sleep", tag)) == 2)
        assert alive(server_pid)
    finally:
        runner.kill()
        runner.wait()
    assert wait_until(lambda: not alive(server_pid))
    assert wait_until(lambda: not pids_running("sleep", tag))
