"""Session snapshots of a writable image root on the real kernel: the root's disk layer
is snapshotted and restored while the sandbox runs (the image has no Python: nsbox's
own restorer runs in the session's server), two sessions on one image share nothing,
nothing is left after close, and the image on the host never changes.

The workspace lies under /var/tmp, a path the image lacks: the directories leading to
it exist only in the sandbox, and a restore must neither remove them nor reach through
them into the workspace's mount.
"""

import os
import shutil

import pytest

import nsbox
from nsbox.errors import SandboxError
from conftest import tree_state
from test_rootfs import _copy_with_libs, build_rootfs

EXTRA_TOOLS = ("find", "sha256sum", "chmod", "ln", "mkfifo")
# Every entry of the root's own filesystem as the sandbox sees it: path (with a link's
# target), type, mode and size, a file's mtime; then every file's content hash.
DUMP = ("find / -xdev -exec stat -c '%N|%F|%a|%s' {} +;"
        "find / -xdev -type f -exec stat -c '%n|%y' {} +;"
        "find / -xdev -type f -exec sha256sum {} +")


@pytest.fixture
def place(var_tmp, monkeypatch):
    """An image with files in /etc and /opt, a workspace, a state directory of its own."""
    monkeypatch.setenv("XDG_STATE_HOME", str(var_tmp / "state"))
    (var_tmp / "state").mkdir(mode=0o700)
    root = var_tmp / "rootfs"
    build_rootfs(root)
    for tool in EXTRA_TOOLS:
        if shutil.which(tool):
            _copy_with_libs(shutil.which(tool), root)
    (root / "etc" / "keep.conf").write_text("keep\n")
    (root / "etc" / "delete-me").write_text("delete me\n")
    (root / "etc" / "replace-me").write_text("image version\n")
    (root / "opt" / "app" / "data").mkdir(parents=True)
    (root / "opt" / "app" / "config").write_text("image config\n")
    (root / "opt" / "app" / "data" / "x").write_bytes(os.urandom(3000))
    (var_tmp / "ws").mkdir()
    (var_tmp / "ws" / "real.txt").write_text("real\n")
    return var_tmp


def policy(place, layer="disk", **extra):
    return nsbox.Policy(workspace=str(place / "ws"), rootfs=str(place / "rootfs"),
                        rootfs_writable=True, rootfs_layer=layer, **extra)


def sh(session, script: str) -> str:
    r = session.run(["/bin/sh", "-c", script], capture_output=True)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode()


def dump(session) -> list:
    return sorted(sh(session, DUMP).splitlines())


def layers_left(place) -> list:
    try:
        return os.listdir(place / "state" / "nsbox" / "rootfs")
    except FileNotFoundError:
        return []


def test_snapshot_and_restore_the_image_root(place):
    image_before = tree_state(place / "rootfs")
    ws_before = tree_state(place / "ws")
    with nsbox.Session(policy(place)) as s:
        at_start = dump(s)
        assert any(line.startswith("'/etc/delete-me'") for line in at_start)
        sh(s, """
            echo new > /etc/new.conf
            rm /etc/delete-me
            echo session version > /etc/replace-me
            chmod 600 /etc/keep.conf
            mkdir -p /opt/app/extra && echo extra > /opt/app/extra/f
            ln -s /etc/keep.conf /opt/link
            rm -r /opt/app/data && mkdir /opt/app/data && echo only > /opt/app/data/only
        """)
        at_snapshot = dump(s)
        snapshot_id = s.snapshot()
        sh(s, f"""
            rm /etc/os-release /etc/new.conf /opt/link
            rm -r /opt/app
            echo later > /etc/replace-me
            mkdir -p /srv/a/b/c && echo deep > /srv/a/b/c/file && echo top > /top
            echo planted > {place}/planted
            chmod 700 /etc
        """)
        changed = dump(s)
        assert changed != at_snapshot and "'/srv/a/b/c/file'|regular file|644|5" in changed
        assert not any(line.startswith(("'/etc/os-release'", "'/opt/app")) for line in changed)
        s.restore(snapshot_id)
        assert dump(s) == at_snapshot  # every entry, mode, byte and file mtime
        assert sh(s, "cat /etc/replace-me /opt/app/extra/f") == "session version\nextra\n"
        assert sh(s, "ls /opt/app/data") == "only\n"  # an opaque directory, as it was
        # The directories leading to the workspace stay, and so does what it holds.
        assert sh(s, "cat real.txt; pwd") == f"real\n{place / 'ws'}\n"
        # Again after more changes, and back to the image itself.
        sh(s, "echo again > /etc/keep.conf && rm -r /opt")
        s.restore(snapshot_id)
        assert dump(s) == at_snapshot
        s.discard()
        assert dump(s) == at_start
        s.restore(snapshot_id)
        assert dump(s) == at_snapshot
        assert len(layers_left(place)) == 1
    assert layers_left(place) == []  # the layer and its snapshots went with the session
    assert tree_state(place / "rootfs") == image_before  # the image, byte for byte
    assert tree_state(place / "ws") == ws_before  # the workspace was never rewritten


def test_two_sessions_on_one_image_share_nothing(place):
    image_before = tree_state(place / "rootfs")
    with nsbox.Session(policy(place)) as one, nsbox.Session(policy(place)) as two:
        sh(one, "echo one > /etc/one && rm /etc/keep.conf")
        first = one.snapshot()
        sh(two, "echo two > /etc/two")
        assert sh(one, "ls /etc").split() == ["delete-me", "one", "os-release", "replace-me"]
        assert "one" not in sh(two, "ls /etc").split()
        assert "keep.conf" in sh(two, "ls /etc").split()
        sh(one, "rm /etc/one")
        one.restore(first)
        assert sh(one, "cat /etc/one") == "one\n"
        assert sh(two, "ls /etc").split() == ["delete-me", "keep.conf", "os-release",
                                              "replace-me", "two"]
        with pytest.raises(SandboxError, match="no snapshot"):
            two.restore(first)  # another session's id
        assert len(layers_left(place)) == 2
    assert layers_left(place) == []
    assert tree_state(place / "rootfs") == image_before


def test_one_snapshot_covers_the_overlay_workspace_and_the_root(place):
    with nsbox.Session(policy(place, workspace_mode="overlay")) as s:
        sh(s, "echo ws > made.txt && echo root > /etc/made.conf")
        snapshot_id = s.snapshot()
        sh(s, "rm made.txt real.txt /etc/made.conf /etc/keep.conf")
        s.restore(snapshot_id)
        assert sh(s, "cat made.txt real.txt /etc/made.conf /etc/keep.conf") == \
            "ws\nreal\nroot\nkeep\n"
        s.close(keep_changes=False)
    assert (place / "ws" / "real.txt").read_text() == "real\n"
    assert not (place / "ws" / "made.txt").exists()
    assert layers_left(place) == []


def test_snapshots_copy_planted_links_and_fifos_as_such(place):
    """The host copies the root's layer: a link to a host file is kept as a link (never
    read through), a FIFO is not opened (no hang)."""
    secret = place / "host-secret"
    secret.write_text("host secret bytes\n")
    os.chmod(secret, 0o644)
    with nsbox.Session(policy(place)) as s:
        sh(s, f"ln -s {secret} /etc/link && ln -s ../../{secret} /opt/rel && "
              "mkfifo /etc/fifo && chmod 640 /etc/fifo")
        snapshot_id = s.snapshot()
        sh(s, "rm /etc/link /opt/rel /etc/fifo")
        s.restore(snapshot_id)
        assert sh(s, "stat -c '%N %F %a' /etc/link /opt/rel /etc/fifo").splitlines() == [
            f"'/etc/link' -> '{secret}' symbolic link 777",
            f"'/opt/rel' -> '../../{secret}' symbolic link 777",
            "'/etc/fifo' fifo 640"]
        kept = []
        for top, _, files in os.walk(place / "state"):
            for name in files:
                path = os.path.join(top, name)
                if os.path.isfile(path) and not os.path.islink(path):
                    with open(path, "rb") as f:
                        kept.append(f.read())
        assert kept and not any(b"host secret bytes" in data for data in kept)
    assert secret.read_text() == "host secret bytes\n"
    assert layers_left(place) == []


def test_memory_layer_refuses_snapshots_naming_the_fix(place):
    with nsbox.Session(policy(place, layer="memory")) as s:
        sh(s, "echo x > /etc/x")
        with pytest.raises(SandboxError, match='rootfs_layer="disk"'):
            s.snapshot()
        with pytest.raises(SandboxError, match='rootfs_layer="disk"'):
            s.restore("000000-000000")
        assert sh(s, "cat /etc/x") == "x\n"  # the session goes on


def test_read_only_image_has_no_snapshots(place):
    p = nsbox.Policy(workspace=str(place / "ws"), rootfs=str(place / "rootfs"))
    with nsbox.Session(p) as s:
        with pytest.raises(SandboxError, match="workspace_mode"):
            s.snapshot()
