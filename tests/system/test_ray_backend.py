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
        # One sandbox cannot write into another's workspace or temp dir (nor read its
        # workspace: test_a_sandbox_cannot_read_another_sandboxs_workspace).
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


@needs_ray
def test_back_to_back_sandboxes_share_a_plan_and_nothing_else(cluster):
    """Sandboxes created back to back start on one compiled plan (full isolation): each
    still hides what the policy hides, has its own workspace and /tmp, and a hidden file
    replaced on the host makes the next sandbox compile its plan afresh."""
    where = tempfile.mkdtemp(prefix="nsbox-ray-secret-", dir="/var/tmp")
    secret = os.path.join(where, "secret.txt")
    with open(secret, "w") as f:
        f.write("token-before")
    os.chmod(where, 0o755)

    @ray.remote(resources={"node_a": 1}, num_cpus=0)
    def back_to_back(secret):
        import nsbox
        from nsbox.integrations.ray import SandboxRuntime

        rt = SandboxRuntime()
        policy = nsbox.Policy(clearenv=True, hidden=(secret,))
        ids = [rt.create(policy=policy) for _ in range(3)]
        seen = []
        for i, sid in enumerate(ids):
            meta = rt.get_metadata(sid)
            read = rt.exec(sid, ["sh", "-c", f"echo started; cat {secret}"])
            mine = rt.exec(sid, ["sh", "-c", f'echo {i} > mine && echo {i} > "$TMPDIR/mine-{i}" '
                                             '&& ls "$TMPDIR" && pwd'])
            seen.append((meta, read, mine))
        others = [rt.exec(ids[0], ["ls", "-a", seen[i][0]["workspace"]]) for i in (1, 2)]
        replacement = secret + ".new"
        with open(replacement, "w") as f:
            f.write("token-after")
        os.replace(replacement, secret)
        later = rt.create(policy=policy)
        after = (rt.get_metadata(later),
                 rt.exec(later, ["sh", "-c", f"echo started; cat {secret}"]))
        rt.close()
        return seen, others, after

    try:
        seen, others, after = get(back_to_back.remote(secret))
        reused = [meta["plan_reused"] for meta, _, _ in seen]
        if cluster["isolation"] == "full":
            assert not reused[0] and any(reused[1:]), reused
        else:  # landlock-only: a private TMPDIR each, so never a shared plan
            assert not any(reused), reused
        for meta, read, _ in seen + [after + (None,)]:
            assert_denied(read, expect=("Permission denied", "No such file"),
                          started_marker="started")
            assert "token" not in read.stdout
        workspaces = {meta["workspace"] for meta, _, _ in seen}
        assert len(workspaces) == 3
        for i, (meta, _, mine) in enumerate(seen):
            assert mine.exit_code == 0, mine
            assert mine.stdout.split()[-1] == meta["workspace"]
            # its own temp dir (/tmp, or a private TMPDIR landlock-only): only its file there
            assert f"mine-{i}" in mine.stdout.split()
            assert not [n for n in mine.stdout.split() if n.startswith("mine-") and
                        n != f"mine-{i}"], mine.stdout
        if cluster["isolation"] == "full":  # another sandbox's workspace is not there
            for listing in others:
                assert listing.exit_code != 0 or "mine" not in listing.stdout.split(), listing
        assert after[0]["plan_reused"] is False
        with open(secret) as f:
            assert f.read() == "token-after"
        assert workspaces_left(cluster) == []
    finally:
        shutil.rmtree(where, ignore_errors=True)


@needs_ray
@pytest.mark.parametrize("tmpdir_place", ["cluster-tmpdir", "var-tmp"])
def test_a_sandbox_cannot_read_another_sandboxs_workspace(cluster, tmpdir_place):
    """Sandboxes of one runtime keep their workspaces in one directory of $TMPDIR: each
    sees its own and none of the others', with $TMPDIR under /tmp or elsewhere
    (/var/tmp), in full and landlock-only isolation, on fresh and reused plans."""
    tmpdir = cluster["tmpdir"] if tmpdir_place == "cluster-tmpdir" else tempfile.mkdtemp(
        prefix="nsray-", dir="/var/tmp")
    secret = f"secret-{marker()}"

    @ray.remote(resources={"node_a": 1}, num_cpus=0)
    def two_sandboxes(tmpdir, secret):
        import os
        import tempfile

        from nsbox.integrations.ray import SandboxRuntime

        before, tempfile.tempdir = tempfile.tempdir, tmpdir  # this task's $TMPDIR
        rt = SandboxRuntime()
        try:
            ids = [rt.create() for _ in range(3)]  # back to back: later ones reuse a plan
            metas = [rt.get_metadata(sid) for sid in ids]
            a_ws = metas[0]["workspace"]
            wrote = rt.exec(ids[0], ["sh", "-c", f"echo {secret} > secret.txt && cat secret.txt"])
            attacks = {}
            for i in (1, 2):
                attacks[i] = [rt.exec(ids[i], ["sh", "-c", f"echo started; {cmd}"]) for cmd in (
                    f"ls -a {a_ws}", f"cat {a_ws}/secret.txt", f"touch {a_ws}/from-b",
                    f"ls -a {os.path.dirname(a_ws)}", f"ls -a {os.path.dirname(os.path.dirname(a_ws))}")]
            own = [rt.exec(sid, ["sh", "-c", "echo mine > own.txt && cat own.txt && pwd"])
                   for sid in ids[1:]]
            return metas, wrote, attacks, own, os.listdir(a_ws)
        finally:
            rt.close()
            tempfile.tempdir = before

    try:
        metas, wrote, attacks, own, a_files = get(two_sandboxes.remote(tmpdir, secret))
        assert wrote.exit_code == 0 and wrote.stdout == secret + "\n", wrote
        base = os.path.join(os.path.realpath(tmpdir), f"nsbox-ray-{os.getuid()}")
        for meta in metas:
            assert meta["isolation"] == cluster["isolation"], meta
            assert meta["workspace"].startswith(base + "/"), meta
        if cluster["isolation"] == "full":
            assert any(meta["plan_reused"] for meta in metas[1:]), metas
        # Full isolation shows an empty base (A's path is not there); landlock-only denies it.
        denied = ("No such file or directory", "Permission denied")
        for i, results in attacks.items():
            listing, reading, writing, per_process, top = results
            for attack in (listing, reading, writing):
                assert_denied(attack, expect=denied, started_marker="started")
                assert secret not in attack.stdout and "secret.txt" not in attack.stdout
            # Above A's workspace: nothing but B's own path shows (or nothing at all).
            for attack in (per_process, top):
                names = set(attack.stdout.split()) - {"started", ".", ".."}
                mine = os.path.relpath(metas[i]["workspace"], base).split("/")
                assert names <= set(mine), (attack, mine)
                assert os.path.basename(metas[0]["workspace"]) not in attack.stdout
        for result, meta in zip(own, metas[1:]):
            assert result.exit_code == 0, result
            assert result.stdout.split() == ["mine", meta["workspace"]]
        assert a_files == ["secret.txt"]  # B wrote nothing there
    finally:
        if tmpdir_place == "var-tmp":
            shutil.rmtree(tmpdir, ignore_errors=True)


@needs_ray
def test_warm_pool_hands_out_started_sandboxes_and_close_leaves_nothing(cluster):
    @ray.remote(resources={"node_a": 1}, num_cpus=0)
    def warm_run():
        from nsbox.integrations.ray import SandboxRuntime

        rt = SandboxRuntime(warm=2)
        first = rt.create("host")  # names the configuration to keep warm
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(rt.backend._pool._ready) < 2:
            time.sleep(0.05)
        time.sleep(0.2)
        second = rt.create("host")
        metas = [rt.get_metadata(sid) for sid in (first, second)]
        rt.write_file(second, "note.txt", "warm")
        out = (rt.exec(second, ["sh", "-c", "cat note.txt; echo; pwd"]),
               rt.read_file(second, "note.txt"))
        rt.close()
        return metas, out

    metas, (listing, content) = get(warm_run.remote())
    assert metas[0]["warm_for_s"] < metas[1]["warm_for_s"], metas
    assert metas[0]["workspace"] != metas[1]["workspace"]
    assert listing.exit_code == 0 and listing.stdout.split() == ["warm", metas[1]["workspace"]]
    assert content == b"warm"
    assert workspaces_left(cluster) == []
