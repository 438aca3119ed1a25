import contextlib
import functools
import hashlib
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
import uuid

import pytest

IS_ROOT = os.geteuid() == 0
SETUP_FAILED = 125  # nsbox exec's exit code when nsbox refused and the command never ran


def _landlock_abi() -> int:
    from nsbox.kernel import landlock

    return landlock.abi_version()


LANDLOCK_ABI = _landlock_abi()  # the running kernel's Landlock ABI; 0 without Landlock


def needs_landlock(abi: int = 1):
    """Skip marker for tests that need at least Landlock ABI `abi` on this kernel."""
    if abi <= 1:
        return pytest.mark.skipif(LANDLOCK_ABI < 1, reason="this kernel has no Landlock")
    return pytest.mark.skipif(LANDLOCK_ABI < abi,
                              reason=f"needs Landlock ABI {abi}, have {LANDLOCK_ABI}")


# Runs a command where user namespaces cannot be made: the state of containers and
# of hosts that forbid them, made for real with bubblewrap (tests/setup.sh installs it).
WITHOUT_USERNS = [shutil.which("bwrap") or "bwrap", "--dev-bind", "/", "/", "--unshare-user",
                  "--disable-userns", "--"]


@functools.lru_cache(maxsize=None)
def without_userns_unavailable() -> str:
    """"" when WITHOUT_USERNS really blocks user namespaces here, else why not."""
    if shutil.which("bwrap") is None:
        return "bwrap is not installed"
    r = subprocess.run(WITHOUT_USERNS + ["true"], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        return f"bwrap --disable-userns does not work here: {r.stderr.strip()}"
    r = subprocess.run(WITHOUT_USERNS + [sys.executable, "-c",
                                         "import os; os.unshare(os.CLONE_NEWUSER)"],
                       capture_output=True, text=True, timeout=30)
    if r.returncode == 0:
        return "user namespaces can still be created under bwrap --disable-userns"
    return ""


def needs_blocked_userns():
    """Skip marker for tests that run nsbox under WITHOUT_USERNS."""
    reason = without_userns_unavailable()
    return pytest.mark.skipif(bool(reason), reason=reason or "bwrap --disable-userns works")


def pytest_configure(config):
    config.addinivalue_line("markers", "policy(**fields): extra Policy fields for the "
                                       "`policy` fixture, e.g. policy(isolation='landlock')")


def nsbox_cmd(*args):
    """argv that runs this checkout's nsbox CLI with the test interpreter."""
    return [sys.executable, "-m", "nsbox", *args]


GIT = shutil.which("git")


def tree_state(root, times: bool = False, dir_times: bool = False) -> dict:
    """Every entry below `root`: mode, owner, content hash or link target, and with
    `times` its mtime (directories' too with `dir_times`), for "left unchanged" checks."""
    out = {}
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(top, name)
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                content = os.readlink(path)
            elif stat.S_ISREG(info.st_mode):
                with open(path, "rb") as f:
                    content = hashlib.sha256(f.read()).hexdigest()
            else:
                content = None
            entry = (info.st_mode, info.st_uid, info.st_gid, content)
            if times and (dir_times or not stat.S_ISDIR(info.st_mode)):
                entry += (info.st_mtime_ns,)
            out[os.path.relpath(path, root)] = entry
    return out


def git(*args, cwd, check=True, env=None):
    """Run git in `cwd` as a fixed test identity, file:// submodules allowed; its
    CompletedProcess, output as text."""
    return subprocess.run([GIT, "-c", "user.name=t", "-c", "user.email=t@e",
                           "-c", "protocol.file.allow=always", *args], cwd=cwd,
                          check=check, capture_output=True, text=True, env=env)


def nsbox_run(env, *args, check=False):
    """The nsbox CLI with `args` in environment `env`; output as text."""
    done = subprocess.run(nsbox_cmd(*args), capture_output=True, text=True, env=env)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def overlay_runs(var_tmp) -> list:
    """The overlay runs kept in the nsbox state of XDG_STATE_HOME=<var_tmp>/state."""
    try:
        return os.listdir(var_tmp / "state" / "nsbox" / "runs")
    except FileNotFoundError:
        return []


@pytest.fixture
def workspace(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    return ws


@pytest.fixture
def var_tmp():
    """A host directory outside the sandbox's private trees (/tmp is one), as a real
    home or project is; removed afterwards."""
    import pathlib
    import tempfile

    path = tempfile.mkdtemp(prefix="nsbox-test-", dir="/var/tmp")
    os.chmod(path, 0o755)
    yield pathlib.Path(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def workspaces_dir(tmp_path, monkeypatch):
    """tmp_path/work as tempfile's directory, where the integrations (the Inspect
    provider, the Agents SDK client) make their workspaces: removed by pytest even if a
    test fails, and a test can check that none is left."""
    import tempfile

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(work))
    return work


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


@pytest.fixture
def policy(workspace, request):
    """A library Policy for the workspace. A module or test adds fields with
    `@pytest.mark.policy(isolation="landlock")` (or `pytestmark = ...`)."""
    from nsbox.policy.model import Policy

    mark = request.node.get_closest_marker("policy")
    return Policy(workspace=str(workspace), **(mark.kwargs if mark else {}))


def _text(data) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def assert_denied(result, *, expect, started_marker=None):
    """Assert that a sandboxed command ran and was denied, and why.

    `result` is a subprocess.CompletedProcess (bytes or text output) of `nsbox exec`,
    an nsbox.Result, or any result with stdout, stderr and returncode (or exit_code,
    as the Ray backend's). Fails when nsbox itself refused (exit code 125 with an
    `nsbox:` message on stderr: the command never ran), when `started_marker` (which
    the command should print before its attack, e.g. `echo started; <attack>`) is
    missing from stdout, when the command succeeded, or when none of `expect` (an
    error text such as "Permission denied", or a tuple of acceptable ones) appears
    in its stdout or stderr.
    """
    code = result.returncode if hasattr(result, "returncode") else result.exit_code
    out, err = _text(result.stdout), _text(result.stderr)
    shown = f"exit code {code}\nstdout: {out!r}\nstderr: {err!r}"
    assert not (code == SETUP_FAILED and "nsbox:" in err), \
        f"nsbox refused to start, so nothing was denied:\n{shown}"
    if started_marker is not None:
        assert started_marker in out, f"the command never started ({started_marker!r}):\n{shown}"
    assert code != 0, f"the attack succeeded:\n{shown}"
    expected = (expect,) if isinstance(expect, str) else tuple(expect)
    assert any(text in out or text in err for text in expected), \
        f"no denial evidence, expected one of {expected!r}:\n{shown}"


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _live_pids(matches, source: str = "cmdline") -> list:
    """PIDs of live processes whose raw /proc/PID/<source> satisfies `matches`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/{source}", "rb") as f:
                data = f.read()
        except OSError:
            continue
        if matches(data) and alive(int(entry)):
            found.append(int(entry))
    return found


def processes_with(marker: str, *, environ: bool = False) -> list:
    """Live processes whose command line contains `marker`; with environ=True, those
    whose environment holds the entry `marker` ("NAME=value") instead."""
    if not environ:
        return _live_pids(lambda cmdline: marker.encode() in cmdline)
    return _live_pids(lambda env: marker.encode() in env.split(b"\0"), "environ")


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


class LoopbackHTTPServer:
    """An HTTP server on the host's loopback (TLS with an ssl `context`) that answers
    every GET and remembers each as (Host header, path)."""

    def __init__(self, context=None):
        import http.server
        import threading

        self.seen = []
        seen = self.seen

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                seen.append((self.headers.get("Host"), self.path))
                body = f"hello {self.path}\n".encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if context is not None:
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def paths(self) -> list:
        return [path for _, path in self.seen]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def mock_model_output(tool_call=None):
    """Inspect's mock model's next output: the tool call (name, arguments), or "done"
    when None. Given usage, the mock model counts no tokens (its tokenizer would be
    downloaded)."""
    from inspect_ai.model import ModelOutput, ModelUsage

    if tool_call is None:
        output = ModelOutput.from_content("mockllm/model", "done")
    else:
        output = ModelOutput.for_tool_call("mockllm/model", *tool_call)
    output.usage = ModelUsage(input_tokens=1, output_tokens=1, total_tokens=2)
    return output


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
