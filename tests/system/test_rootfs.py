"""Container mode on the real kernel: an image directory as the sandbox's /, read-only or
with a private copy-on-write layer, uid 0 inside on request, images imported from OCI
layouts and `docker save` tarballs (whiteouts applied, hostile tarballs refused).

Each test runs on two images: one built from the host's own files (/bin/sh and a few
coreutils with the libraries ldd names), one from the busybox-static package (a static
binary and its applets); both with an /etc/os-release whose NAME no host has.
"""

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile

import pytest

import nsbox
from conftest import SETUP_FAILED, WITHOUT_USERNS, needs_blocked_userns, nsbox_cmd, tree_state

TOOLS = ("sh", "cat", "id", "chown", "touch", "ls", "stat", "mkdir", "rm")
IMAGE_NAME = "nsbox-rootfs-test-image"


def _copy_with_libs(binary: str, root) -> None:
    shutil.copy2(binary, root / "bin" / os.path.basename(binary))
    out = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout
    for word in out.split():
        if word.startswith("/") and os.path.exists(word):
            dest = root / word.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not dest.exists():
                shutil.copy2(os.path.realpath(word), dest)


def build_rootfs(root) -> None:
    """A minimal root: the host's shell and tools with their libraries."""
    (root / "bin").mkdir(parents=True)
    (root / "etc").mkdir()
    for tool in TOOLS:
        _copy_with_libs(shutil.which(tool), root)
    (root / "etc" / "os-release").write_text(f'NAME="{IMAGE_NAME}"\n')
    (root / "tmp").mkdir()
    os.chmod(root / "tmp", 0o1777)


BUSYBOX = "/bin/busybox"  # Debian's busybox-static (tests/setup.sh installs it)


def build_busybox_rootfs(root) -> None:
    """A root made from the busybox-static package: one static binary, its applets as
    links, and an /etc/os-release of its own."""
    (root / "bin").mkdir(parents=True)
    (root / "etc").mkdir()
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    for tool in TOOLS:
        os.symlink("busybox", root / "bin" / tool)
    (root / "etc" / "os-release").write_text(f'NAME="{IMAGE_NAME}"\n')
    (root / "tmp").mkdir()
    os.chmod(root / "tmp", 0o1777)


@pytest.fixture(params=["host tools", "busybox-static"])
def place(tmp_path, request):
    """A workspace, a rootfs (the host's tools with their libraries, or the busybox-static
    package's binary), a private state directory and a host file outside both."""
    (tmp_path / "ws").mkdir()
    if request.param == "busybox-static":
        assert os.path.exists(BUSYBOX), "install busybox-static (tests/setup.sh does)"
        build_busybox_rootfs(tmp_path / "rootfs")
    else:
        build_rootfs(tmp_path / "rootfs")
    (tmp_path / "state").mkdir(mode=0o700)
    (tmp_path / "host.txt").write_text("host\n")
    return tmp_path


def _env(place) -> dict:
    return dict(os.environ, XDG_STATE_HOME=str(place / "state"))


def run(place, script: str, *opts, timeout=60):
    argv = nsbox_cmd("exec", "--workspace", str(place / "ws"), "--rootfs", str(place / "rootfs"),
                     *opts, "--", "/bin/sh", "-c", script)
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=_env(place))


def layers_left(place) -> list:
    try:
        return os.listdir(place / "state" / "nsbox" / "rootfs")
    except FileNotFoundError:
        return []


def test_rootfs_shows_its_own_root_read_only(place):
    before = tree_state(place / "rootfs")
    host = place / "host.txt"
    r = run(place, f"""
        cat /etc/os-release
        test -e /usr/bin/python3 && echo host-usr-visible
        test -e {host} && echo host-file-visible
        echo x > /etc/planted && echo wrote-etc
        echo x > /newfile && echo wrote-root
        echo ok > /tmp/t && echo tmp=ok
        echo ok > {place / "ws"}/made && echo ws=ok
        echo pwd=$(pwd)
    """)
    assert r.returncode == 0, r.stderr
    assert f'NAME="{IMAGE_NAME}"' in r.stdout
    assert "visible" not in r.stdout
    assert "wrote-" not in r.stdout  # the denial itself
    assert r.stderr.count("Read-only file system") == 2
    assert "tmp=ok" in r.stdout and "ws=ok" in r.stdout
    assert f"pwd={place / 'ws'}" in r.stdout  # the workspace at its host path
    assert (place / "ws" / "made").read_text() == "ok\n"
    assert tree_state(place / "rootfs") == before  # nothing made in the image, not even mount points
    assert host.read_text() == "host\n"


@pytest.mark.parametrize("layer", ["memory", "disk"])
def test_writable_root_copy_on_write_20_concurrent(place, layer):
    before = tree_state(place / "rootfs")
    procs = []
    for i in range(20):
        script = f"echo {i} > /etc/mine-{i} && mkdir -p /opt/{i} && ls /etc"
        argv = nsbox_cmd("exec", "--workspace", str(place / "ws"), "--rootfs",
                         str(place / "rootfs"), "--rootfs-writable", "--rootfs-layer", layer,
                         "--", "/bin/sh", "-c", script)
        procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, env=_env(place)))
    for i, proc in enumerate(procs):
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        assert sorted(out.split()) == sorted(["os-release", f"mine-{i}"])
    assert tree_state(place / "rootfs") == before
    assert layers_left(place) == []  # each run's layer is removed at its end


def test_root_inside_chowns_in_its_overlay_only(place):
    image_file = place / "rootfs" / "etc" / "os-release"
    before = tree_state(place / "rootfs")
    ws_file = place / "ws" / "mine"
    ws_file.write_text("x\n")
    owner = os.stat(ws_file)
    r = run(place, f"""
        echo uid=$(id -u) gid=$(id -g)
        while read k v; do [ "$k" = CapEff: ] && echo capeff=$v; done < /proc/self/status
        touch /made && chown 0:0 /made && echo chown_new=ok
        chown 0:0 /etc/os-release && echo chown_image_copy=ok
        chown 1:1 /made && echo chown_other_id=ok
        chown 0:0 {ws_file} && echo chown_ws_self=ok
        echo stat=$(stat -c %u /made)
    """, "--rootfs-writable", "--root-inside")
    assert r.returncode == 0, r.stderr
    values = dict(w.split("=", 1) for w in r.stdout.split() if "=" in w)
    assert values["uid"] == "0" and values["gid"] == "0"
    assert int(values["capeff"], 16) == 0  # root inside, without capabilities
    assert values["chown_new"] == "ok" and values["stat"] == "0"
    assert "chown_other_id" not in values  # only the caller's own id is mapped
    assert "Invalid argument" in r.stderr
    assert tree_state(place / "rootfs") == before  # the chown hit the copy, not the image
    after = os.stat(ws_file)
    assert (after.st_uid, after.st_gid) == (owner.st_uid, owner.st_gid)  # 0 inside is the caller
    assert os.stat(image_file).st_uid == before["etc/os-release"][1]


def test_root_inside_read_only_root_refuses_chown(place):
    before = tree_state(place / "rootfs")
    r = run(place, "id -u; chown 0:0 /etc/os-release && echo chowned; true", "--root-inside")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == "0"
    assert "chowned" not in r.stdout
    assert "Read-only file system" in r.stderr
    assert tree_state(place / "rootfs") == before


@pytest.mark.parametrize("what, expect", [
    ("missing", "does not exist"), ("file", "is not a directory"), ("host", "host's own root"),
])
def test_bad_rootfs_is_refused(place, what, expect):
    target = {"missing": place / "nope", "file": place / "host.txt", "host": "/"}[what]
    argv = nsbox_cmd("exec", "--workspace", str(place / "ws"), "--rootfs", str(target), "--",
                     "/bin/sh", "-c", f"touch {place / 'ws'}/ran")
    r = subprocess.run(argv, capture_output=True, text=True, env=_env(place), timeout=60)
    assert r.returncode == SETUP_FAILED
    assert expect in r.stderr
    assert not (place / "ws" / "ran").exists()


def test_mount_point_through_an_image_symlink_is_refused(place):
    os.symlink("/", place / "rootfs" / "run")  # the sandbox mounts a tmpfs on /run
    r = run(place, f"touch {place / 'ws'}/ran")
    assert r.returncode == SETUP_FAILED
    assert "the rootfs's /run is a symlink" in r.stderr
    assert not (place / "ws" / "ran").exists()


@needs_blocked_userns()
def test_landlock_only_cannot_change_the_root(place):
    argv = WITHOUT_USERNS + nsbox_cmd(
        "exec", "--isolation", "auto", "--workspace", str(place / "ws"), "--rootfs",
        str(place / "rootfs"), "--", "/bin/sh", "-c", f"touch {place / 'ws'}/ran")
    r = subprocess.run(argv, capture_output=True, text=True, env=_env(place), timeout=60)
    assert r.returncode == SETUP_FAILED
    assert "container mode" in r.stderr and "Landlock-only isolation" in r.stderr
    assert not (place / "ws" / "ran").exists()


@pytest.mark.parametrize("layer", ["memory", "disk"])
def test_library_and_session_take_the_same_options(place, layer):
    policy = nsbox.Policy(workspace=str(place / "ws"), rootfs=str(place / "rootfs"),
                          rootfs_writable=True, root_inside=True, rootfs_layer=layer)
    env = {"XDG_STATE_HOME": str(place / "state")}
    old = os.environ.get("XDG_STATE_HOME")
    os.environ.update(env)
    try:
        r = nsbox.run(["/bin/sh", "-c", "cat /etc/os-release; id -u; echo x > /etc/one"],
                      policy=policy, capture_output=True)
        assert r.returncode == 0, r.stderr
        assert IMAGE_NAME in r.stdout.decode() and r.stdout.decode().split()[-1] == "0"
        with nsbox.Session(policy) as session:
            assert session.run(["/bin/sh", "-c", "echo kept > /etc/two"]).returncode == 0
            seen = session.run(["/bin/sh", "-c", "ls /etc"], capture_output=True)
            assert seen.stdout.decode().split() == ["os-release", "two"]  # not `one`
            # Kept for the session's lifetime: on disk, or in the sandbox's own tmpfs.
            assert len(layers_left(place)) == (1 if layer == "disk" else 0)
        assert layers_left(place) == []
    finally:
        if old is None:
            os.environ.pop("XDG_STATE_HOME", None)
        else:
            os.environ["XDG_STATE_HOME"] = old
    assert sorted(os.listdir(place / "rootfs" / "etc")) == ["os-release"]


def test_denials_are_reported_in_an_image(place):
    """The supervisor's code is not in the image: PID 1 loads it before pivot_root."""
    before = tree_state(place / "rootfs")
    status = place / "status.json"
    script = "echo x > /etc/planted; mkdir /opt2; echo ok > /tmp/t && echo ok > made"
    r = run(place, script, "--json-status", str(status))
    assert r.stderr.count("Read-only file system") == 2, r.stderr
    assert (place / "ws" / "made").read_text() == "ok\n"
    events = [(d["wall"], d["operation"], d["target"], d["rule"], d["count"])
              for d in json.loads(status.read_text())["denials"]]
    assert events == [("filesystem", "write", "/etc/planted", "outside the writable roots", 1),
                      ("filesystem", "create", "/opt2", "outside the writable roots", 1)]
    assert "nsbox: blocked 2 operations: write /etc/planted" in r.stderr
    # A writable root: the same writes land in the layer, and nothing is reported.
    r = run(place, script + "; cat /etc/planted", "--rootfs-writable", "--json-status",
            str(status))
    assert r.returncode == 0 and r.stdout == "x\n", r.stderr
    assert json.loads(status.read_text())["denials"] == [] and "blocked" not in r.stderr
    assert tree_state(place / "rootfs") == before
    policy = nsbox.Policy(workspace=str(place / "ws"), rootfs=str(place / "rootfs"))
    with nsbox.Session(policy) as session:
        result = session.run(["/bin/sh", "-c", "echo x > /etc/again"], capture_output=True)
    assert result.returncode != 0 and b"Read-only file system" in result.stderr
    assert [(d.target, d.rule) for d in result.denials] == [
        ("/etc/again", "outside the writable roots")]
    assert tree_state(place / "rootfs") == before


# --- images ------------------------------------------------------------------------------

def tar_layer(entries, root=None) -> bytes:
    """A gzip layer from (name, kind, data-or-target) entries, after `root`'s files."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        if root is not None:
            tar.add(root, arcname=".")
        for name, kind, value in entries:
            info = tarfile.TarInfo(name)
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, value
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, value
            elif kind == "device":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            else:
                info.size, info.mode = len(value), 0o644
            tar.addfile(info, io.BytesIO(value) if kind == "file" else None)
    return buf.getvalue()


def oci_layout(path, layers, config) -> None:
    (path / "blobs" / "sha256").mkdir(parents=True)

    def blob(data: bytes, media: str) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        (path / "blobs" / "sha256" / digest).write_bytes(data)
        return {"mediaType": media, "digest": f"sha256:{digest}", "size": len(data)}

    manifest = {"schemaVersion": 2,
                "config": blob(json.dumps(config).encode(),
                               "application/vnd.oci.image.config.v1+json"),
                "layers": [blob(layer, "application/vnd.oci.image.layer.v1.tar+gzip")
                           for layer in layers]}
    index = {"schemaVersion": 2, "manifests": [
        blob(json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json")]}
    (path / "index.json").write_text(json.dumps(index))
    (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')


def docker_save(path, layers, config) -> None:
    """A `docker save` tarball (the classic layout: <id>/layer.tar, <id>.json)."""
    with tarfile.open(path, "w") as tar:
        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        names = []
        for i, layer in enumerate(layers):
            names.append(f"layer{i}/layer.tar")
            add(names[-1], layer)
        add("config.json", json.dumps(config).encode())
        add("manifest.json", json.dumps([{"Config": "config.json", "RepoTags": ["t:1"],
                                          "Layers": names}]).encode())


def image(place, *args):
    return subprocess.run(nsbox_cmd("image", *args), capture_output=True, text=True,
                          env=_env(place), timeout=120)


CONFIG = {"config": {"Env": ["PATH=/bin", "FROM_IMAGE=yes"], "WorkingDir": "/srv/app",
                     "Cmd": ["/bin/sh", "-c", "echo cmd; pwd; id -u; echo $FROM_IMAGE; ls /etc"]}}
BASE = [("etc/gone", "file", b"x"), ("etc/opq", "dir", None), ("etc/opq/old", "file", b"o")]
TOP = [("etc/.wh.gone", "file", b""), ("etc/opq/.wh..wh..opq", "file", b""),
       ("etc/opq/new", "file", b"n"), ("etc/os-release", "file", b'NAME="top"\n'),
       ("etc/same", "hardlink", "etc/os-release")]


@pytest.mark.parametrize("form", ["oci", "docker"])
def test_image_import_applies_whiteouts_and_runs(place, form):
    layers = [tar_layer(BASE, root=place / "rootfs"), tar_layer(TOP)]
    source = place / "src"
    if form == "oci":
        oci_layout(source, layers, CONFIG)
    else:
        docker_save(source, layers, CONFIG)
    r = image(place, "import", str(source), "test:1")
    assert r.returncode == 0, r.stderr
    root = r.stdout.split("\t")[1].strip()
    assert sorted(os.listdir(os.path.join(root, "etc"))) == ["opq", "os-release", "same"]
    assert os.listdir(os.path.join(root, "etc", "opq")) == ["new"]  # opaque: `old` is gone
    assert "test:1" in image(place, "list").stdout
    argv = nsbox_cmd("exec", "--workspace", str(place / "ws"), "--image", "test:1")
    run_r = subprocess.run(argv, capture_output=True, text=True, env=_env(place), timeout=60)
    assert run_r.returncode == 0, run_r.stderr
    # Cmd, WorkingDir (made: the image lacks it), User "" = root, Env.
    assert run_r.stdout.split() == ["cmd", "/srv/app", "0", "yes", "opq", "os-release", "same"]
    # A second name for the same layers shares the root; rm keeps it while one uses it.
    again = image(place, "import", str(source), "test:2")
    assert again.stdout.split("\t")[1].strip() == root
    assert image(place, "rm", "test:1").returncode == 0
    assert os.path.isdir(root)
    assert image(place, "rm", "test:2").returncode == 0
    assert not os.path.exists(root)
    assert os.listdir(place / "state" / "nsbox" / "images" / "layers") == []


HOSTILE = {
    "absolute": ([("/etc/evil", "file", b"x")], "is an absolute path"),
    "dotdot": ([("../../evil", "file", b"x")], "climbs out of the image"),
    "device": ([("dev/null", "device", None)], "is a device node"),
    "fifo": ([("pipe", "fifo", None)], "is a special file"),
    "symlink": ([("out", "symlink", "OUTSIDE"), ("out/evil", "file", b"x")],
                "which is a symlink or a file in the layer"),
    "hardlink-across": ([("grab", "hardlink", "etc/os-release")],
                        "links across layers"),
    "hardlink-out": ([("grab", "hardlink", "../../OUTSIDE/x")], "outside the layer"),
    "huge": ([("big", "file", b"x" * (2 << 20))], "exceed"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_tarball_is_refused(place, case):
    entries, expect = HOSTILE[case]
    outside = place / "outside"
    outside.mkdir()
    (outside / "x").write_text("host\n")
    entries = [(n, k, str(outside) if v == "OUTSIDE" else v) for n, k, v in entries]
    base = tar_layer([("etc/os-release", "file", b"NAME=base\n")])
    layers = [base, tar_layer(entries)] if case == "hardlink-across" else [tar_layer(entries)]
    oci_layout(place / "src", layers, {"config": {}})
    r = image(place, "import", "--max-size", "1M", str(place / "src"), "evil")
    assert r.returncode == SETUP_FAILED
    assert expect in r.stderr
    assert "refus" in r.stderr
    assert sorted(os.listdir(outside)) == ["x"] and (outside / "x").read_text() == "host\n"
    assert not os.path.exists("/etc/evil") or case != "absolute"
    assert "evil" not in image(place, "list").stdout
    store = place / "state" / "nsbox" / "images"
    assert not [n for kind in ("layers", "roots") if (store / kind).exists()
                for n in os.listdir(store / kind) if n.startswith(".tmp")]


def test_reports_after_the_run_still_work(place):
    """nsbox reads its own files after the run (a limit's report here): the image root
    is PID 1's alone, never the view of the process that waits for it."""
    r = run(place, "while :; do :; done", "--rootfs-writable", "--rootfs-layer", "disk",
            "--limit", "wall=1")
    assert r.returncode == 124, r.stderr
    assert "wall limit 1s reached" in r.stderr and "Traceback" not in r.stderr
    assert layers_left(place) == []


def test_hidden_paths_in_bound_trees_and_in_the_image(place):
    """A host file hidden in the workspace stays hidden; the image's own copy of a secret
    store is hidden too; an extra writable root is bound at its host path."""
    (place / "ws" / "secret.txt").write_text("host secret\n")
    extra = place / "extra"
    extra.mkdir()
    (place / "rootfs" / "srv").mkdir()
    (place / "rootfs" / "srv" / "token").write_text("image token\n")
    r = run(place, f"""
        cat {place / "ws"}/secret.txt; echo ws_secret_rc=$?
        cat /srv/token; echo image_secret_rc=$?
        echo hi > {extra}/x && echo extra=ok
    """, "--hide", str(place / "ws" / "secret.txt"), "--hide", "/srv/token",
        "--writable", str(extra))
    assert r.returncode == 0, r.stderr
    assert "host secret" not in r.stdout and "image token" not in r.stdout
    # As on the host root: masked in a writable root (reads as empty), denied elsewhere.
    assert "ws_secret_rc=0" in r.stdout and "image_secret_rc=1" in r.stdout
    assert "/srv/token" in r.stderr and "Permission denied" in r.stderr  # coreutils, busybox
    assert "extra=ok" in r.stdout and (extra / "x").read_text() == "hi\n"
    assert (place / "rootfs" / "srv" / "token").read_text() == "image token\n"


def test_library_runs_an_imported_image(place, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(place / "state"))
    oci_layout(place / "src", [tar_layer([], root=place / "rootfs")], CONFIG)
    assert image(place, "import", str(place / "src"), "lib:1").returncode == 0
    policy, argv, cwd = nsbox.image("lib:1", policy=nsbox.Policy(workspace=str(place / "ws")))
    r = nsbox.run(argv, policy=policy, cwd=cwd, capture_output=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().split() == ["cmd", "/srv/app", "0", "yes", "os-release"]
    with pytest.raises(nsbox.PolicyError, match="no image named"):
        nsbox.image("nope")


def test_read_only_preset_shows_the_workspace_read_only(place, var_tmp):
    # Outside /tmp: a read-only workspace there is refused, as on the host root.
    (var_tmp / "data").write_text("data\n")
    argv = nsbox_cmd("exec", "--workspace", str(var_tmp), "--rootfs", str(place / "rootfs"),
                     "--preset", "read-only", "--", "/bin/sh", "-c",
                     f"cat data; pwd; echo x > {var_tmp}/new && echo wrote; true")
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=_env(place))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["data", str(var_tmp)]
    assert "Read-only file system" in r.stderr and not (var_tmp / "new").exists()


def test_memory_layer_is_bounded_by_the_tmp_limit(place):
    line = "x" * 1023
    r = run(place, f"""
        i=0; while [ $i -lt 3000 ]; do echo {line} >> /big || exit 7; i=$((i+1)); done
        echo wrote-all
    """, "--rootfs-writable", "--limit", "tmp=1M")
    assert r.returncode == 7, r.stderr
    # dash words a failed write of its echo builtin as "I/O error" (ENOSPC here).
    assert "wrote-all" not in r.stdout
    assert "No space left on device" in r.stderr or "I/O error" in r.stderr
