"""nsbox as the backend of Ray's sandbox API, on a real two-node Ray cluster on 127.0.0.1.

Each test runs twice: on a cluster whose workers can create user namespaces (full
isolation), and on one run under `bwrap --unshare-user --disable-userns`, where
isolation "auto" falls back to landlock-only. Skipped when ray is not installed.
"""

import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import alive, assert_denied, marker, processes_with, wait_until

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
from ray_cluster import LOOPBACK_ENV, LocalCluster  # noqa: E402

os.environ.update(LOOPBACK_ENV)  # read when ray is imported: every address is 127.0.0.1

try:
    import ray
    from ray.experimental import sandbox as ray_sandbox
except ImportError:  # pragma: no cover - CI installs nsbox[ray]
    ray = None

NO_RAY = "ray is not installed (pip install 'nsbox[ray]')"
needs_ray = pytest.mark.skipif(ray is None, reason=NO_RAY)
NODES = ("node_a", "node_b")
WAIT = 60  # seconds: the bound of every ray.get


@pytest.fixture(scope="module", params=["namespaces", "landlock-only"])
def cluster(request):
    if ray is None:
        pytest.skip(NO_RAY)
    blocked = request.param == "landlock-only"
    if blocked and not shutil.which("bwrap"):
        pytest.skip("bubblewrap is needed to block user namespaces")
    # Short and private to this run and user: Ray's unix socket paths must fit 107 bytes.
    temp = tempfile.mkdtemp(prefix="nsray-", dir="/tmp")
    tmpdir = os.path.join(temp, "tmp")  # the workers' TMPDIR: where workspaces go
    os.mkdir(tmpdir)
    nodes = [{"num_cpus": 8, "resources": {name: 100}} for name in NODES]
    local = LocalCluster(temp, nodes, block_userns=blocked, env={"TMPDIR": tmpdir})
    try:
        ray.init(address=local.address, logging_level="ERROR", log_to_driver=False)
        yield {"blocked": blocked, "tmpdir": tmpdir, "node_ids": local.node_ids,
               "isolation": "landlock" if blocked else host_isolation()}
    finally:
        ray.shutdown()
        local.stop()
        left = processes_with(temp)  # raylet, GCS and the rest name their session dir
        shutil.rmtree(temp, ignore_errors=True)
        assert left == [], "Ray processes outlived the cluster"


def host_isolation() -> str:
    """What isolation "auto" gets outside bwrap: full wherever user namespaces work."""
    import nsbox

    workspace = tempfile.mkdtemp()
    try:
        policy = nsbox.Policy(workspace=workspace, isolation="auto")
        return nsbox.run(["true"], policy=policy, prewarm=False).isolation
    finally:
        os.rmdir(workspace)


def create(node, **kwargs):
    from nsbox.integrations.ray import create as nsbox_create

    return nsbox_create("host", resources={node: 1}, **kwargs)


def get(ref):
    return ray.get(ref, timeout=WAIT)


def workspaces_left(cluster) -> list:
    base = os.path.join(cluster["tmpdir"], f"nsbox-ray-{os.getuid()}")
    if not os.path.isdir(base):
        return []
    return [os.path.join(d, f) for d, dirs, files in os.walk(base) for f in dirs + files]


@needs_ray
def test_sandboxes_on_both_nodes_run_commands_and_files(cluster, tmp_path):
    boxes = [create(node, env={"GREETING": "hello"}) for node in NODES]
    try:
        metas = [get(sb.get_metadata.remote()) for sb in boxes]
        assert [m["node_id"] for m in metas] == cluster["node_ids"]
        for sb, meta in zip(boxes, metas):
            assert meta["isolation"] == cluster["isolation"], meta
            assert meta["image"] == "host" and meta["network"] == "none"
            assert get(sb.get_status.remote()) == ray_sandbox.SandboxStatus.RUNNING

            r = get(sb.exec.remote('echo "$GREETING from $(pwd)"; echo oops >&2; exit 3'))
            assert (r.exit_code, r.stdout, r.stderr) == (
                3, f"hello from {meta['workspace']}\n", "oops\n")
            r = get(sb.exec.remote(["sh", "-c", 'echo "$A$B"'], env={"A": "x", "B": "y"}))
            assert (r.exit_code, r.stdout) == (0, "xy\n")
            get(sb.exec.remote("mkdir -p sub"))
            assert get(sb.exec.remote(["pwd"], cwd="sub")).stdout == meta["workspace"] + "/sub\n"

            get(sb.write_file.remote("notes/a.txt", "text"))
            # The sandbox's private temp dir: /tmp, or its own TMPDIR with landlock only.
            assert meta["tmpdir"] == ("/tmp" if meta["isolation"] == "full" else meta["tmpdir"])
            scratch = meta["tmpdir"] + "/b.bin"
            get(sb.write_file.remote(scratch, b"\x00\xff"))
            assert get(sb.read_file.remote("notes/a.txt")) == b"text"
            assert get(sb.read_file.remote(scratch)) == b"\x00\xff"
            assert get(sb.exec.remote('cat notes/a.txt "$TMPDIR/b.bin" | wc -c')).stdout == "6\n"
            local = tmp_path / "up.txt"
            local.write_text("uploaded")
            get(sb.upload_file.remote(str(local), "up.txt"))
            get(sb.download_file.remote("up.txt", str(tmp_path / "down.txt")))
            assert (tmp_path / "down.txt").read_text() == "uploaded"
            with pytest.raises(ray_sandbox.SandboxError, match="missing.txt"):
                get(sb.read_file.remote("missing.txt"))
            # The host outside the workspace is read-only (/tmp would be the sandbox's own).
            outside = pathlib.Path.home() / f".nsbox-ray-test-{marker()}"
            try:
                with pytest.raises(ray_sandbox.SandboxError, match="Read-only|Permission"):
                    get(sb.write_file.remote(str(outside), "x"))
                assert not outside.exists()
            finally:
                if outside.exists():
                    outside.unlink()
        # One sandbox cannot write into another's workspace or temp dir (with full
        # isolation it cannot even see them; landlock-only leaves them readable).
        assert metas[0]["workspace"] != metas[1]["workspace"]
        get(boxes[0].exec.remote('touch "$TMPDIR/only-a"'))
        theirs = [metas[0]["workspace"]] + ([metas[0]["tmpdir"]] if cluster["blocked"] else [])
        # (with full isolation "/tmp" is B's own /tmp)
        hidden = "Permission denied" if cluster["blocked"] else "No such file or directory"
        for path in theirs:
            r = get(boxes[1].exec.remote(f"echo started; touch {path}/from-b"))
            assert_denied(r, expect=hidden, started_marker="started")
        seen = get(boxes[1].exec.remote(f"test -e {metas[0]['tmpdir']}/only-a")).exit_code == 0
        assert seen == cluster["blocked"]
    finally:
        ray.get([sb.delete.remote() for sb in boxes], timeout=WAIT)


@needs_ray
def test_timeout_kills_the_command_tree(cluster):
    sb = create("node_b")
    try:
        tag, escaped = marker(), marker()
        started = time.monotonic()
        with pytest.raises(ray_sandbox.SandboxTimeoutError):
            get(sb.exec.remote(f"sleep {tag} & setsid sleep {escaped} & sleep 300", timeout=1))
        assert time.monotonic() - started < 20
        assert wait_until(lambda: not processes_with(tag) and not processes_with(escaped))
        assert get(sb.exec.remote("echo still usable")).stdout == "still usable\n"
    finally:
        get(sb.delete.remote())


@needs_ray
def test_delete_leaves_no_process_and_no_directory(cluster):
    tag = marker()
    sb = create("node_a")
    meta = get(sb.get_metadata.remote())
    get(sb.exec.remote(f"nohup sleep {tag} >/dev/null 2>&1 &"))
    assert wait_until(lambda: processes_with(tag)), "the background process did not start"
    assert os.path.isdir(meta["workspace"])
    get(sb.delete.remote())
    assert get(sb.get_status.remote()) == ray_sandbox.SandboxStatus.TERMINATED
    assert wait_until(lambda: not processes_with(tag))
    assert not os.path.exists(meta["workspace"])
    assert workspaces_left(cluster) == []
    with pytest.raises(ray_sandbox.SandboxNotFoundError):
        get(sb.exec.remote("true"))


@needs_ray
def test_a_dying_worker_takes_its_sandbox_with_it(cluster):
    tag = marker()
    sb = create("node_b")
    meta = get(sb.get_metadata.remote())
    get(sb.exec.remote(f"nohup sleep {tag} >/dev/null 2>&1 &"))
    assert wait_until(lambda: processes_with(tag))
    ray.kill(sb)  # SIGKILL: no delete, no __del__
    assert wait_until(lambda: not alive(meta["pid"]), 30)
    assert wait_until(lambda: not processes_with(tag), 30), "the sandbox outlived its worker"
    # Its workspace goes when the next sandbox starts on that node.
    other = create("node_b")
    try:
        get(other.get_status.remote())
        assert not os.path.exists(meta["workspace"])
    finally:
        get(other.delete.remote())
    assert workspaces_left(cluster) == []


@needs_ray
def test_ttl_deletes_the_sandbox(cluster):
    sb = create("node_a", ttl_seconds=1)
    try:
        workspace = get(sb.get_metadata.remote())["workspace"]
        assert wait_until(lambda: get(sb.get_status.remote())
                          == ray_sandbox.SandboxStatus.TERMINATED, 20)
        assert not os.path.exists(workspace)
    finally:
        ray.kill(sb)


@needs_ray
def test_workdir_is_the_writable_workspace(cluster, tmp_path):
    existing = tmp_path / "project"
    existing.mkdir()
    os.chmod(tmp_path, 0o755)
    created = tmp_path / "made" / "here"
    boxes = [create("node_a", workdir=str(existing)), create("node_b", workdir=str(created))]
    try:
        for sb, path in zip(boxes, (existing, created)):
            assert get(sb.exec.remote("pwd; echo hi > f.txt")).stdout == f"{path}\n"
            assert (path / "f.txt").read_text() == "hi\n"
    finally:
        ray.get([sb.delete.remote() for sb in boxes], timeout=WAIT)
    assert (existing / "f.txt").exists()  # the user's directory stays
    assert not (tmp_path / "made").exists()  # the one the backend made goes


@needs_ray
def test_network_modes(cluster):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    probe = ("print('started', flush=True); import socket; s = socket.socket(); "
             f"s.settimeout(5); s.connect(('127.0.0.1', {server.getsockname()[1]})); "
             "print('connected')")
    boxes = [create("node_a"), create("node_b", network="host")]
    try:
        none, host = [get(sb.exec.remote(["python3", "-c", probe])) for sb in boxes]
        # full isolation: the sandbox's own loopback, where nothing listens; landlock
        # only: seccomp refuses inet sockets (EPERM), or Landlock the connect (EACCES)
        refused = (("Operation not permitted", "Permission denied") if cluster["blocked"]
                   else "Connection refused")
        assert_denied(none, expect=refused, started_marker="started")
        assert "connected" not in none.stdout
        assert (host.exit_code, host.stdout) == (0, "started\nconnected\n"), host.stderr
    finally:
        server.close()
        ray.get([sb.delete.remote() for sb in boxes], timeout=WAIT)


@needs_ray
def test_config_mapping_in_a_runtime(cluster):
    """Many configurations through SandboxRuntime in one task: cheaper than an actor each."""

    @ray.remote(resources={"node_a": 1}, num_cpus=0)
    def try_configs():
        from nsbox.integrations.ray import SandboxRuntime

        rt = SandboxRuntime()
        out = {}
        for name, kwargs in {
            "image": {"image": "python:3.12"},
            "tar": {"image": "/tmp/image.tar"},
            "public": {"network": "public"},
            "sandbox": {"network": "sandbox", "rootless": False},
            "bogus": {"network": "bogus"},
            "writable root": {"readonly": False},
            "caps": {"capabilities": ["CAP_CHOWN"]},
            "dns": {"network": "host", "dns": ["127.0.0.1"]},
            "relative workdir": {"workdir": "rel"},
            "memory": {"memory": "256Mi"},
            "cpu": {"cpu": 0.5},
            "default": {"image": None},
        }.items():
            try:
                sid = rt.create(**kwargs)
            except Exception as err:
                out[name] = (type(err).__name__, str(err))
                continue
            meta = rt.get_metadata(sid)
            r = rt.exec(sid, "id -u")
            other_user = "accepted"
            try:
                rt.exec(sid, "id -u", user="nobody")
            except Exception as err:
                other_user = type(err).__name__
            rt.delete(sid)
            out[name] = ("ok", meta["limits"], r.stdout, other_user)
        return out

    out = get(try_configs.remote())
    for name in ("image", "tar"):
        assert out[name][0] == "SandboxCreationError"
        assert "container images are not supported" in out[name][1]
    for name in ("public", "sandbox", "writable root", "caps", "dns", "relative workdir"):
        assert out[name][0] == "SandboxCreationError", (name, out[name])
    assert out["bogus"][0] == "ValueError"  # Ray's own check
    assert out["default"][0] == "ok" and out["default"][2] == f"{os.getuid()}\n"
    assert out["default"][3] == "SandboxExecError"
    # Limits are enforced or refused with nsbox's reason, never silently dropped.
    for name, key, value in (("memory", "memory", 256 << 20), ("cpu", "cpu", 0.5)):
        if out[name][0] == "ok":
            assert out[name][1][key] == value
        else:
            assert out[name][0] == "SandboxCreationError" and "nsbox:" in out[name][1]


def test_importing_nsbox_does_not_import_ray():
    for argv in (["-c", "import nsbox"], ["-m", "nsbox", "exec", "--", "true"]):
        r = subprocess.run([sys.executable, "-X", "importtime", *argv], capture_output=True,
                           text=True, timeout=60, cwd=tempfile.gettempdir())
        modules = [line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines()
                   if line.startswith("import time:")]
        assert modules and "nsbox" in modules, r.stderr[-2000:]
        assert not [m for m in modules if m == "ray" or m.startswith("ray.")], argv
