"""Sessions with a copy-on-write workspace on the real kernel: snapshot and restore
while the sandbox runs, apply of some paths, discard, what close() keeps; the real
tree unchanged until apply."""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

import nsbox
from conftest import overlay_runs, tree_state
from nsbox.errors import SandboxError

PYTHON = os.path.realpath(sys.executable)
# Every entry below the working directory as the sandbox sees it: type, mode, content
# hash or link target, and a file's mtime.
DUMP = r"""
import hashlib, json, os, stat
out = {}
for top, dirs, files in os.walk("."):
    for name in dirs + files:
        path = os.path.join(top, name)
        info = os.lstat(path)
        if stat.S_ISLNK(info.st_mode):
            what = ["link", os.readlink(path)]
        elif stat.S_ISDIR(info.st_mode):
            what = ["dir", stat.S_IMODE(info.st_mode)]
        else:
            with open(path, "rb") as f:
                what = ["file", stat.S_IMODE(info.st_mode), hashlib.sha256(f.read()).hexdigest(),
                        info.st_mtime_ns]
        out[os.path.relpath(path)] = what
print(json.dumps(out))
"""


@pytest.fixture
def ws(var_tmp, monkeypatch):
    """A workspace with a few real files, and this test's own nsbox state directory."""
    monkeypatch.setenv("XDG_STATE_HOME", str(var_tmp / "state"))
    path = var_tmp / "ws"
    (path / "sub" / "deeper").mkdir(parents=True)
    (path / "sub" / "deeper" / "leaf").write_text("leaf\n")
    (path / "keep").write_text("real\n")
    (path / "gone").write_text("bye\n")
    os.symlink("keep", path / "link")
    return path


def seen(session) -> dict:
    done = session.run([PYTHON, "-I", "-c", DUMP])
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def session_for(ws):
    return nsbox.Session(nsbox.Policy(workspace=str(ws), workspace_mode="overlay"))


MAKE_1000 = """
set -e
mkdir many
i=0
while [ $i -lt 1000 ]; do echo "file $i" > many/f$i; i=$((i+1)); done
echo more >> keep
chmod 600 many/f7
ln -s many/f1 newlink
rm gone
mkdir locked && echo l > locked/l && chmod 500 locked
chmod 500 sub/deeper
"""
CHANGE_SOME = """
set -e
chmod 700 locked && echo changed > locked/l && rm -f locked/m && chmod 500 locked
rm many/f1 many/f2 many/f3
i=100
while [ $i -lt 150 ]; do echo "changed $i" > many/f$i; i=$((i+1)); done
chmod 700 sub/deeper && rm -rf sub
echo new > keep
chmod 755 many/f8
rm many/f9 && mkdir many/f9 && echo inside > many/f9/x
echo back > gone
ln -sfn sub link
mkdir -p extra/dir && echo e > extra/dir/e
"""


def test_snapshot_and_restore_round_trip_a_tree_of_1000_files(ws, var_tmp):
    real = tree_state(ws, times=True, dir_times=True)
    with session_for(ws) as s:
        done = s.run(["sh", "-c", MAKE_1000])
        assert done.returncode == 0, done.stderr
        at_snapshot = seen(s)
        assert len(at_snapshot) > 1000
        snapshot_id = s.snapshot()
        done = s.run(["sh", "-c", CHANGE_SOME])
        assert done.returncode == 0, done.stderr
        changed = seen(s)
        assert changed != at_snapshot and "extra/dir/e" in changed and "sub" not in changed
        s.restore(snapshot_id)
        assert seen(s) == at_snapshot  # every entry, mode, byte and file mtime
        # The sandbox kept running: its /tmp is the same, and it can branch again.
        s.run(["sh", "-c", "echo kept > /tmp/mark; rm -rf many"])
        s.restore(snapshot_id)
        assert seen(s) == at_snapshot
        assert s.run(["cat", "/tmp/mark"]).stdout == b"kept\n"
        # Back to the real tree, and forward to the snapshot again.
        s.discard()
        assert s.changes() == ()
        assert seen(s).keys() == {"sub", "sub/deeper", "sub/deeper/leaf", "keep", "gone", "link"}
        s.restore(snapshot_id)
        assert seen(s) == at_snapshot
        assert tree_state(ws, times=True, dir_times=True) == real  # the real tree never changed
    assert s.run_id is not None  # what it changed is kept, as a one-shot run's
    assert overlay_runs(var_tmp) == [s.run_id]
    assert not os.path.exists(var_tmp / "state" / "nsbox" / "runs" / s.run_id / "snapshots")


def test_apply_of_some_paths_then_discard_leaves_nothing(ws, var_tmp):
    real = tree_state(ws, times=True, dir_times=True)
    with session_for(ws) as s:
        done = s.run(["sh", "-c", "echo new > made; echo more >> keep; mkdir -p d/e; "
                                  "echo x > d/e/x; rm gone"])
        assert done.returncode == 0, done.stderr
        assert tree_state(ws, times=True, dir_times=True) == real
        listed = {os.path.relpath(c.path, ws): c.what for c in s.changes()}
        assert listed == {"made": "created", "keep": "modified", "d": "created",
                          "d/e": "created", "d/e/x": "created", "gone": "deleted"}
        assert "+more\n" in s.diff("keep") and "made" not in s.diff("keep")
        outcome = s.apply(["d/e/x", str(ws / "made")])
        assert {e.path for e in outcome.applied} == {"d", "d/e", "d/e/x", "made"}
        assert (ws / "d" / "e" / "x").read_text() == "x\n" and (ws / "made").read_text() == "new\n"
        assert (ws / "keep").read_text() == "real\n" and (ws / "gone").exists()
        assert {os.path.relpath(c.path, ws) for c in s.changes()} == {"keep", "gone"}
        # What was applied can change again and be applied again: no conflict with itself.
        s.run(["sh", "-c", "echo newer > made"])
        s.apply(["made"])
        assert (ws / "made").read_text() == "newer\n"
        s.discard()
        assert s.changes() == ()
        assert s.run(["cat", "keep", "gone"]).stdout == b"real\nbye\n"
    assert s.run_id is None
    assert overlay_runs(var_tmp) == []


def test_apply_refuses_a_path_changed_on_the_host(ws):
    with session_for(ws) as s:
        s.run(["sh", "-c", "echo sandbox > keep"])
        time.sleep(0.01)
        (ws / "keep").write_text("host edit\n")
        with pytest.raises(SandboxError, match="keep: it changed since"):
            s.apply()
        assert (ws / "keep").read_text() == "host edit\n"
        s.discard()


def test_protected_paths_need_naming(ws):
    with session_for(ws) as s:
        done = s.run(["sh", "-c", "echo 'eval evil' > .envrc; echo ok > plain"])
        assert done.returncode == 0, done.stderr
        outcome = s.apply()
        assert outcome.skipped_protected == (".envrc",)
        assert not (ws / ".envrc").exists() and (ws / "plain").read_text() == "ok\n"
        s.apply(include_protected=[".envrc"])
        assert (ws / ".envrc").read_text() == "eval evil\n"


def test_restore_waits_for_no_process(ws):
    with session_for(ws) as s:
        snapshot_id = s.snapshot()
        running = s.popen(["sleep", "30"])
        with pytest.raises(SandboxError, match="while a command of this session runs"):
            s.restore(snapshot_id)
        running.kill()
        running.wait()
        # A background process left by a finished command blocks it too.
        s.run(["sh", "-c", "sleep 2 >/dev/null 2>&1 &"])
        with pytest.raises(SandboxError, match=r"processes still run.*sleep"):
            s.snapshot()
        deadline = time.monotonic() + 20
        while True:
            try:
                s.restore(snapshot_id)
                break
            except SandboxError:
                assert time.monotonic() < deadline
                time.sleep(0.2)


def test_a_session_without_overlay_has_no_snapshots(ws):
    with nsbox.Session(nsbox.Policy(workspace=str(ws))) as s:
        with pytest.raises(SandboxError, match="workspace_mode"):
            s.snapshot()


@pytest.mark.skipif(not shutil.which("git"), reason="git is not installed")
def test_git_commits_roll_back_with_the_workspace(ws):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "base"]):
        subprocess.run(git + args, cwd=ws, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ws, capture_output=True,
                          text=True, check=True).stdout
    with session_for(ws) as s:
        git_in = " ".join(git)
        done = s.run(["sh", "-c", f"echo one > one && {git_in} add one && "
                                  f"{git_in} commit -qm one && git rev-parse HEAD"])
        assert done.returncode == 0, done.stderr
        first = done.stdout.decode()
        snapshot_id = s.snapshot()
        done = s.run(["sh", "-c", f"echo two > two && {git_in} add two && "
                                  f"{git_in} commit -qm two && git gc -q"])
        assert done.returncode == 0, done.stderr
        s.restore(snapshot_id)
        assert s.run(["git", "rev-parse", "HEAD"]).stdout.decode() == first
        assert s.run(["git", "status", "--porcelain"]).stdout == b""
        assert s.run(["git", "fsck", "--no-progress"]).returncode == 0
    assert subprocess.run(["git", "rev-parse", "HEAD"], cwd=ws, capture_output=True,
                          text=True).stdout == head  # the real repository never moved
