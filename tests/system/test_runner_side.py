"""What a command can reach of the runner that embeds nsbox: its environment (the model's
API keys) and its helper processes (fork server, PID 1, a session's server) with
their sockets.

Each test starts a fresh runner, a small Python script in a subprocess whose
environment holds a unique fake key from the start (so its fork server starts
with it too), and attacks it for real from inside the sandbox. Every denial also
checks that the sandbox did start (a marker), so a test can't pass because
nsbox failed to start.
"""

import json
import os
import platform
import subprocess
import sys
import textwrap
import uuid

import pytest

import nsbox
from conftest import needs_landlock

PY = "/usr/bin/python3"  # readable by the unprivileged test user too
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(nsbox.__file__)))
ISOLATIONS = ["full", pytest.param("landlock", marks=needs_landlock(6))]
STARTED = "probe-started"

# Shared by the probes below: which processes to attack. In full isolation every one
# the command can see (they are all the sandbox's); in landlock-only isolation, where
# the host's processes are visible, the runner and everything it started, found from
# the runner's pid (argv) by walking parent links as any process could.
_TARGETS = """
import ctypes, errno, json, os, signal, stat, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.ptrace.restype = ctypes.c_long
PIDFD_OPEN, PIDFD_GETFD = 434, 438  # the same on every architecture
TGKILL = {"x86_64": 234, "aarch64": 131}[os.uname().machine]


def parent(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def visible():
    return sorted(int(p) for p in os.listdir("/proc") if p.isdigit())


def mine(pid, me):
    while pid not in (None, 0, 1):
        if pid == me:
            return True
        pid = parent(pid)
    return False


def targets(isolation, runner):
    me = os.getpid()
    found = []
    for pid in visible():
        if mine(pid, me):
            continue
        if isolation == "full" or pid == runner or mine(pid, runner):
            found.append(pid)
    return found


def threads(pid):
    try:
        return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return []


def error(call):
    try:
        result = call()
    except OSError as err:
        return errno.errorcode.get(err.errno, str(err.errno))
    if isinstance(result, int) and result < 0:
        return errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
    return "ok"


def ptrace_attach(pid):
    ctypes.set_errno(0)
    result = error(lambda: libc.ptrace(16, pid, None, None))  # PTRACE_ATTACH
    if result == "ok":
        libc.ptrace(17, pid, None, None)  # PTRACE_DETACH (best effort; exiting detaches too)
    return result


def pidfd_getfd(pid):
    ctypes.set_errno(0)
    pidfd = libc.syscall(PIDFD_OPEN, pid, 0)
    if pidfd < 0:
        return "pidfd_open " + errno.errorcode.get(ctypes.get_errno(), "?")
    try:
        results = set()
        for target_fd in range(32):
            ctypes.set_errno(0)
            got = libc.syscall(PIDFD_GETFD, pidfd, target_fd, 0)
            if got >= 0:
                os.close(got)
                return "ok"
            results.add(errno.errorcode.get(ctypes.get_errno(), "?"))
        return "EBADF" if results == {"EBADF"} else "/".join(sorted(results - {"EBADF"}))
    finally:
        os.close(pidfd)
"""

# Reads every readable regular file of every visible process and thread, their memory
# where maps and mem open, and tries ptrace and pidfd_getfd on the targets; looks for
# the runner's key everywhere. The key comes reversed and hex-encoded, so that this
# process's own argv never holds it.
ENV_PROBE = _TARGETS + f'print("{STARTED}", flush=True)\n' + """
needles = [bytes.fromhex(sys.argv[1])[::-1]]
needles.append(needles[0].split(b"-")[-1])  # the uuid alone
isolation, runner = sys.argv[2], int(sys.argv[3])
me = os.getpid()
report = {"found": [], "files_read": 0, "environ_read": [], "mem": {}, "ptrace": {},
          "pidfd_getfd": {}, "targets": targets(isolation, runner), "me": me}
UNREAD = {"mem", "pagemap", "clear_refs"}


def look(path, data):
    if any(needle in data for needle in needles):
        report["found"].append(path)


def read_files(directory):
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        path = f"{directory}/{name}"
        try:
            if name in UNREAD or not stat.S_ISREG(os.lstat(path).st_mode):
                continue
            with open(path, "rb") as f:
                data = f.read(1 << 20)
        except OSError:
            continue
        report["files_read"] += 1
        if name == "environ":
            report["environ_read"].append(directory)
        look(path, data)


def read_memory(directory):
    try:
        fd = os.open(f"{directory}/mem", os.O_RDONLY)
    except OSError as err:
        return errno.errorcode.get(err.errno, str(err.errno))
    try:
        with open(f"{directory}/maps") as f:
            regions = [line.split()[:2] for line in f]
        for span, perms in regions:
            if perms.startswith("r"):
                start, end = (int(x, 16) for x in span.split("-"))
                try:
                    look(f"{directory}/mem@{start:x}", os.pread(fd, min(end - start, 1 << 26), start))
                except OSError:
                    pass
        return "ok"
    except OSError as err:
        return "opened; maps " + errno.errorcode.get(err.errno, str(err.errno))
    finally:
        os.close(fd)


for pid in visible():
    if mine(pid, me):
        continue
    read_files(f"/proc/{pid}")
    for tid in threads(pid):
        read_files(f"/proc/{pid}/task/{tid}")
for pid in report["targets"]:
    report["mem"][pid] = read_memory(f"/proc/{pid}")
    report["ptrace"][pid] = ptrace_attach(pid)
    report["pidfd_getfd"][pid] = pidfd_getfd(pid)
print(json.dumps(report))
"""

# Left running in the background by one command: for a while, tries to stop, kill,
# trace, take the fds of and write into every target (threads included), while the
# runner runs more commands. Writes its tally to the log given in argv.
ATTACKER = _TARGETS + """
isolation, runner, log, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
tally = {}
seen = set()


def record(kind, pid, result):
    tally.setdefault(kind, {}).setdefault(result, 0)
    tally[kind][result] += 1
    if result == "ok":
        tally.setdefault("succeeded", []).append([kind, pid])


def write_into(pid):
    results = set()
    for fd in range(32):
        try:
            out = os.open(f"/proc/{pid}/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK)
        except OSError as err:
            results.add(errno.errorcode.get(err.errno, "?"))
            continue
        try:
            os.write(out, b"forged\\n")
            return "ok"
        except OSError:
            results.add("opened")
        finally:
            os.close(out)
    return "ENOENT" if results == {"ENOENT"} else "/".join(sorted(results - {"ENOENT"}))


def attack_once():
    for pid in targets(isolation, runner):
        seen.add(pid)
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            record("kill", pid, error(lambda: os.kill(pid, sig)))
        for tid in threads(pid):
            ctypes.set_errno(0)
            record("tgkill", tid, error(lambda: libc.syscall(TGKILL, pid, tid, signal.SIGSTOP)))
        record("ptrace", pid, ptrace_attach(pid))
        record("pidfd_getfd", pid, pidfd_getfd(pid))
        record("write_fd", pid, write_into(pid))


with open(log, "w") as f:
    attack_once()
    f.write("ready\\n")
    f.flush()
    end = time.monotonic() + seconds
    rounds = 1
    while time.monotonic() < end:
        attack_once()
        rounds += 1
        time.sleep(0.002)
    f.write(json.dumps({"rounds": rounds, "tally": tally, "seen": sorted(seen)}) + "\\n")
"""


def runner(tmp_path, body: str, *args, secret: str, timeout: float = 120):
    """Run `body` in a fresh Python process whose environment holds the fake keys;
    it prints one JSON document."""
    script = tmp_path / "runner.py"
    script.write_text(textwrap.dedent(body))
    env = dict(os.environ, OPENAI_API_KEY=secret, AWS_SECRET_ACCESS_KEY=secret + "-aws",
               PYTHONPATH=os.pathsep.join(filter(None, (ROOT, os.environ.get("PYTHONPATH")))))
    out = subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True,
                         text=True, timeout=timeout, env=env, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def new_secret() -> str:
    return f"sk-test-{uuid.uuid4().hex}"


@pytest.fixture(params=["default", "allow-all"])
def seccomp(request, tmp_path) -> str:
    """The default profile, and one that denies nothing: what it denies (pidfd_getfd,
    process_vm_*) must be denied without it too."""
    if request.param == "default":
        return "default"
    profile = tmp_path / "allow-all.json"  # outside the workspace: no trust needed
    profile.write_text('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": []}')
    return str(profile)


def probe_argv(workspace, secret: str, isolation: str, runner_pid: str) -> list:
    probe = workspace / "probe.py"
    probe.write_text(ENV_PROBE)
    return [PY, str(probe), secret.encode()[::-1].hex(), isolation, runner_pid]


def check_probe(result, isolation: str) -> dict:
    """The probe ran, read plenty, and found the key nowhere; nothing let it in."""
    returncode, stdout, stderr = result
    assert returncode == 0, stderr
    lines = stdout.splitlines()
    assert lines[0] == STARTED, stdout
    report = json.loads(lines[-1])
    assert report["found"] == []
    assert report["files_read"] > 20
    assert report["targets"], "nothing to attack: the probe saw no helper process"
    for pid in report["targets"]:
        assert report["mem"][str(pid)] in ("EACCES", "EPERM"), (pid, report["mem"])
        assert report["ptrace"][str(pid)] in ("EACCES", "EPERM"), (pid, report["ptrace"])
        assert report["pidfd_getfd"][str(pid)] == "EPERM", (pid, report["pidfd_getfd"])
    if isolation == "full":
        assert 1 in report["targets"]  # the sandbox's PID 1, at least
    return report


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_a_session_command_cannot_read_the_runners_environment(tmp_path, workspace, isolation,
                                                               seccomp):
    secret = new_secret()
    out = runner(tmp_path, """
        import json, os, sys
        import nsbox

        workspace, isolation, seccomp, argv = sys.argv[1:4] + [json.loads(sys.argv[4])]
        argv = [a.replace("RUNNER", str(os.getpid())) for a in argv]
        policy = nsbox.Policy(workspace=workspace, isolation=isolation, seccomp=seccomp)
        with nsbox.Session(policy) as s:
            s.run(["true"])  # a command before: its server has served one already
            r = s.run(argv, timeout=100)
        print(json.dumps([r.returncode, r.stdout.decode(), r.stderr.decode()]))
    """, workspace, isolation, seccomp,
        json.dumps(probe_argv(workspace, secret, isolation, "RUNNER")), secret=secret)
    report = check_probe(out, isolation)
    if isolation == "full":
        assert 2 in report["targets"]  # the session's server


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_a_one_shot_command_cannot_read_the_runners_environment(tmp_path, workspace,
                                                                isolation):
    secret = new_secret()
    out = runner(tmp_path, """
        import json, os, sys
        import nsbox, nsbox.api
        from nsbox.service import spares

        workspace, isolation, argv = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
        argv = [a.replace("RUNNER", str(os.getpid())) for a in argv]
        policy = nsbox.Policy(workspace=workspace, isolation=isolation)
        results = {}
        r = nsbox.run(argv, policy=policy, prewarm=False, timeout=100)
        results["fresh"] = [r.returncode, r.stdout.decode(), r.stderr.decode()]
        if isolation == "full":
            nsbox.run(["true"], policy=policy)  # leaves a spare for the same policy
            spares.pool().wait_ready()
            used = nsbox.api.prewarm_stats()["used"]
            r = nsbox.run(argv, policy=policy, timeout=100)
            assert nsbox.api.prewarm_stats()["used"] == used + 1
            results["prewarmed"] = [r.returncode, r.stdout.decode(), r.stderr.decode()]
        print(json.dumps(results))
    """, workspace, isolation, json.dumps(probe_argv(workspace, secret, isolation, "RUNNER")),
        secret=secret)
    assert set(out) == ({"fresh", "prewarmed"} if isolation == "full" else {"fresh"})
    for result in out.values():
        check_probe(result, isolation)


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_a_background_process_cannot_stop_or_impersonate_the_session_server(
        tmp_path, workspace, isolation, seccomp):
    secret = new_secret()
    (workspace / "attacker.py").write_text(ATTACKER)
    log = workspace / "attack.log"
    out = runner(tmp_path, """
        import json, os, sys, time
        import nsbox

        workspace, isolation, log, seccomp = sys.argv[1:5]
        attacker = [sys.argv[5], os.path.join(workspace, "attacker.py"), isolation,
                    str(os.getpid()), log, "4"]
        results = {}
        policy = nsbox.Policy(workspace=workspace, isolation=isolation, seccomp=seccomp)
        with nsbox.Session(policy) as s:
            r = s.run(["sh", "-c", '"$@" </dev/null >/dev/null 2>&1 & echo started', "sh",
                       *attacker])
            results["first"] = [r.returncode, r.stdout.decode()]
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not (
                    os.path.exists(log) and open(log).read().startswith("ready")):
                time.sleep(0.02)
            results["commands"] = []
            for i in range(20):  # while the attacker runs
                r = s.run(["sh", "-c", f"echo marker-{i}; exit {i + 3}"], timeout=30)
                results["commands"].append([r.returncode, r.stdout.decode(), r.stderr.decode()])
            # A command that attacks too (after its own start), then says what it is.
            r = s.run([sys.argv[5], "-c", open(os.path.join(workspace, "attacker.py")).read(),
                       isolation, str(os.getpid()), log + ".own", "0.2"], timeout=60)
            results["attacking"] = [r.returncode, r.stdout.decode(), r.stderr.decode()]
            while time.monotonic() < deadline and len(open(log).read().splitlines()) < 2:
                time.sleep(0.05)
            r = s.run(["echo", "still-serving"], timeout=30)
            results["last"] = [r.returncode, r.stdout.decode()]
        print(json.dumps(results))
    """, workspace, isolation, log, seccomp, PY, secret=secret)
    assert out["first"] == [0, "started\n"]
    assert out["commands"] == [[i + 3, f"marker-{i}\n", ""] for i in range(20)]
    assert out["attacking"][0] == 0, out["attacking"]
    assert out["last"] == [0, "still-serving\n"]
    for name in ("attack.log", "attack.log.own"):
        lines = (workspace / name).read_text().splitlines()
        assert lines[0] == "ready"
        report = json.loads(lines[-1])
        assert report["tally"].get("succeeded") is None, report["tally"]
        for kind in ("kill", "tgkill", "ptrace", "pidfd_getfd", "write_fd"):
            assert sum(report["tally"][kind].values()) > 0, kind
        if isolation == "full":
            assert {1, 2} <= set(report["seen"])  # PID 1 and the session's server
        assert report["rounds"] >= 1
    assert json.loads((workspace / "attack.log").read_text().splitlines()[-1])["rounds"] > 5


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_a_stopped_session_server_is_resumed(tmp_path, workspace, isolation):
    """What a command that won the race against its own start could do at most: stop
    the server. Its parent continues it, so the session goes on."""
    out = runner(tmp_path, """
        import json, os, signal, sys, time
        import nsbox
        from nsbox.service import forkserver

        workspace, isolation = sys.argv[1:3]

        def children(pid):
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                return [int(p) for p in f.read().split()]

        def state(pid):
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0]

        with nsbox.Session(nsbox.Policy(workspace=workspace, isolation=isolation)) as s:
            assert s.run(["true"]).returncode == 0
            server, = children(forkserver.client().pid)  # the session's launcher
            server, = children(server)
            if isolation == "full":
                server, = children(server)  # PID 1's one child
            os.kill(server, signal.SIGSTOP)
            time.sleep(0.5)  # it would stay stopped for good by now, unless resumed
            deadline = time.monotonic() + 10
            while state(server) == "T" and time.monotonic() < deadline:
                time.sleep(0.01)
            resumed = state(server) != "T"
            r = s.run(["echo", "served"], timeout=20)
        print(json.dumps([resumed, r.returncode, r.stdout.decode()]))
    """, workspace, isolation, secret=new_secret())
    assert out == [True, 0, "served\n"]


@pytest.mark.skipif(platform.machine() != "x86_64", reason="syscall numbers are x86_64's")
def test_default_profile_denies_another_process_memory_and_fds_even_where_ptrace_may(
        workspace):
    code = textwrap.dedent("""
        import ctypes, errno, os, time
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        child = os.fork()
        if child == 0:
            time.sleep(30)
            os._exit(0)
        buf = ctypes.create_string_buffer(8)
        iov = (ctypes.c_void_p * 2)(ctypes.cast(buf, ctypes.c_void_p), 8)
        results = {}
        for name, call in (
                ("pidfd_getfd", lambda: libc.syscall(438, libc.syscall(434, child, 0), 1, 0)),
                ("process_vm_readv", lambda: libc.syscall(310, child, iov, 1, iov, 1, 0)),
                ("process_vm_writev", lambda: libc.syscall(311, child, iov, 1, iov, 1, 0)),
                ("ptrace_attach", lambda: libc.ptrace(16, child, None, None))):
            ctypes.set_errno(0)
            results[name] = "ok" if call() >= 0 else errno.errorcode[ctypes.get_errno()]
        os.kill(child, 9)
        print("started", results)
    """)
    r = nsbox.run([PY, "-c", code], policy=nsbox.Policy(workspace=str(workspace)))
    assert r.returncode == 0, r.stderr
    # ptrace of its own child is allowed: the filter, not ptrace's checks, denies the rest.
    assert r.stdout.decode().strip() == ("started {'pidfd_getfd': 'EPERM', 'process_vm_readv': "
                                         "'EPERM', 'process_vm_writev': 'EPERM', "
                                         "'ptrace_attach': 'ok'}")
