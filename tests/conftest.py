import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid

import pytest

IS_ROOT = os.geteuid() == 0


def nsbox_cmd(*args):
    """argv that runs this checkout's nsbox CLI with the test interpreter."""
    return [sys.executable, "-m", "nsbox", *args]


@pytest.fixture
def workspace(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    return ws


@pytest.fixture
def nsbox_exec(workspace):
    """Run `nsbox exec --workspace <ws> [opts] -- CMD...`; returns CompletedProcess."""

    def run(cmd, *opts, timeout=60, input=None, check=False, **kw):
        if isinstance(cmd, str):
            cmd = ["sh", "-c", cmd]
        argv = nsbox_cmd("exec", "--workspace", str(workspace), *opts, "--", *cmd)
        return subprocess.run(argv, capture_output=True, timeout=timeout, input=input,
                              check=check, **kw)

    return run


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _live_pids(matches) -> list:
    """PIDs of live processes whose raw /proc cmdline satisfies `matches`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if matches(cmdline) and alive(int(entry)):
            found.append(int(entry))
    return found


def processes_with(marker: str) -> list:
    """Live processes whose command line contains `marker`."""
    return _live_pids(lambda cmdline: marker.encode() in cmdline)


def pids_running(*argv: str) -> list:
    """Live processes whose argv is exactly `argv`."""
    wanted = "\0".join(argv).encode() + b"\0"
    return _live_pids(lambda cmdline: cmdline == wanted)


def marker() -> str:
    """A sleep duration no other process uses, to find our sleeps in /proc."""
    return f"{1000 + uuid.uuid4().int % 1000}.{uuid.uuid4().int % 10**6:06d}"


def wait_until(condition, seconds: float = 10.0) -> bool:
    """Poll `condition` until it holds or `seconds` pass; its last answer."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@contextlib.contextmanager
def host_tcp_listener():
    """A listener on the host's loopback. Yields Python code that connects to it and
    prints 'connected'; afterwards asserts that no connection reached it."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    try:
        yield (f"import socket; s = socket.socket(); s.settimeout(3); "
               f"s.connect(('127.0.0.1', {port})); print('connected')")
        # The probe has exited: a connection that got through would be queued by now.
        srv.setblocking(False)
        try:
            srv.accept()
        except BlockingIOError:
            pass
        else:
            raise AssertionError("the host listener accepted a connection from the sandbox")
    finally:
        srv.close()


def literal_host(**changes):
    """A HostFacts for plan tests: a recent kernel where everything works, unless changed."""
    from nsbox.plan.host import HostFacts

    facts = dict(landlock_abi=7, landlock_unavailable="", mount_api=True, last_cap=40,
                 user_counters_writable=True,
                 user_counters={"max_inotify_watches": 65536, "max_fanotify_groups": 128,
                                "max_fanotify_marks": 65536},
                 shared_rlimits={"RLIMIT_SIGPENDING": 63432, "RLIMIT_MSGQUEUE": 819200},
                 userns_blocker="", cgroup_places={})
    facts.update(changes)
    return HostFacts(**facts)
