"""Session snapshots of a writable image root: which layers a session's snapshots cover,
what of the root's upper layer is the root's own, and the session server's request for
nsbox's own Python code."""

import os
import types

import pytest

from nsbox.plan import container, session_overlay
from nsbox.policy.plan import MountStep
from nsbox.service import wire

WS = "/var/tmp/x/ws"


def plan(tmp_path, layer="disk", overlay=None):
    root_layer = container.plan_layer(str(tmp_path / "state")) if layer == "disk" else None
    root = MountStep("overlay", "/", str(tmp_path / "image"),
                     upper=root_layer.upper if root_layer else "",
                     dirs=(("var", 0o755), ("var/tmp", 0o755), ("var/tmp/x", 0o755),
                           ("var/tmp/x/ws", 0o755), ("home/me/work", 0o755)))
    mounts = (root, MountStep("tmpfs", "/tmp"), MountStep("dev", "/dev", source="/tmp"),
              MountStep("bind_rw", WS, WS), MountStep("mask_file", "/etc/secret"),
              MountStep("proc", "/proc"))
    return types.SimpleNamespace(mounts=mounts, rootfs_layer=root_layer, overlay=overlay)


def test_the_disk_layer_is_a_run_of_the_image_seen_at_the_root(tmp_path):
    p = plan(tmp_path)
    (root,) = session_overlay.layers(p)
    assert isinstance(root, session_overlay.RootLayer)
    assert root.upper == p.rootfs_layer.upper and root.workspace == str(tmp_path / "image")
    assert session_overlay.mount_of(root) == "/"
    assert session_overlay.snapshots_dir(root).startswith(p.rootfs_layer.dir + "/")
    assert root.skip == ("dev", "etc/secret", "proc", "tmp", "var/tmp/x/ws")
    assert root.keep == ("etc", "home/me/work", "var", "var/tmp", "var/tmp/x", "var/tmp/x/ws")


def test_the_memory_layer_refuses_naming_the_fix(tmp_path):
    with pytest.raises(ValueError, match='rootfs_layer="disk"'):
        session_overlay.layers(plan(tmp_path, layer="memory"))


def test_no_layer_no_runs(tmp_path):
    p = plan(tmp_path)
    p.mounts = (MountStep("root_image", "/", str(tmp_path / "image")),) + p.mounts[1:]
    p.rootfs_layer = None
    assert session_overlay.layers(p) == ()


def test_the_root_manifest_leaves_other_mounts_and_their_parents_out(tmp_path):
    p = plan(tmp_path)
    image = tmp_path / "image"
    (image / "etc").mkdir(parents=True)
    (image / "etc" / "secret").write_text("s\n")
    (image / "etc" / "gone").write_text("g\n")
    os.makedirs(p.rootfs_layer.dir)
    container.make_upper_work(p.rootfs_layer, str(image))
    upper = tmp_path / "state" / "rootfs" / p.rootfs_layer.id / "upper"
    for d in ("etc", "var/tmp/x/ws", "proc", "dev", "tmp/t"):
        (upper / d).mkdir(parents=True)
    (upper / "etc" / "new").write_text("n\n")
    (upper / "etc" / "secret").write_text("changed under a mask\n")
    expected = {"etc/gone": "deleted", "etc/new": "created", "var/tmp/x/planted": "created"}
    try:
        os.mknod(upper / "etc" / "gone", 0o600 | 0o020000, 0)  # a whiteout: 0:0
    except PermissionError:  # unprivileged: the userxattr form, where the filesystem has it
        (upper / "etc" / "gone").write_bytes(b"")
        try:
            os.setxattr(upper / "etc" / "gone", "user.overlay.whiteout", b"y")
        except OSError:
            os.unlink(upper / "etc" / "gone")
            del expected["etc/gone"]
    (upper / "var" / "tmp" / "x" / "planted").write_text("p\n")
    (upper / "var" / "tmp" / "x" / "ws" / "inside").write_text("i\n")
    (root,) = session_overlay.layers(p)
    found = {e.path: e.what for e in session_overlay.manifest(root)}
    assert found == expected


def test_a_python_request_is_told_apart_from_any_command():
    record = wire.encode_command(["print(1)", "check"], "/ws", None, python=True)
    assert record[:1] == wire.PYTHON
    assert wire.decode_command(record[1:]) == (["print(1)", "check"], "/ws", None)
    plain = wire.encode_command(["\x01x"], "/ws", {"A": "b"})
    assert plain[:1] != wire.PYTHON  # a command's record starts with its absolute cwd


def test_the_image_is_sent_without_what_the_sandbox_may_not_see(tmp_path):
    import io

    p = plan(tmp_path)
    (tmp_path / "image" / "etc").mkdir(parents=True)
    (tmp_path / "image" / "etc" / "secret").write_text("API_KEY=secret\n")
    (tmp_path / "image" / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    (root,) = session_overlay.layers(p)
    out = io.BytesIO()
    session_overlay.write_stream(root, [("rm", "etc"), ("real", "etc")],
                                 session_overlay.empty(), out, hidden=("/etc/secret",))
    data = out.getvalue()
    assert b"etc/hosts" in data and b"localhost" in data
    assert b"secret" not in data


def test_below_an_opaque_directory_no_lower_entry_shows(tmp_path):
    """rm -r a && mkdir -p a/b: a is opaque, a/b a plain new directory over nothing
    visible; the lower a/b's files are deleted in the view, and the manifest says so."""
    from nsbox.plan import overlay

    lower, upper = tmp_path / "lower", tmp_path / "upper"
    (lower / "a" / "b").mkdir(parents=True)
    (lower / "a" / "b" / "f").write_text("f\n")
    (lower / "a" / "g").write_text("g\n")
    (upper / "a" / "b").mkdir(parents=True)
    (upper / "a" / "b" / "new").write_text("n\n")
    try:
        os.setxattr(upper / "a", overlay.OPAQUE_XATTR, b"y")
    except OSError:
        pytest.skip("no user xattrs on this filesystem")
    up, low = os.open(upper, os.O_RDONLY), os.open(lower, os.O_RDONLY)
    try:
        found = {e.path: e.what for e in overlay.changes(up, low)}
    finally:
        os.close(up)
        os.close(low)
    assert found == {"a/b/f": "deleted", "a/b/new": "created", "a/g": "deleted"}
