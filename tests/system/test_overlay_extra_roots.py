"""Overlay mode's extra writable roots on the real kernel: each is copy-on-write like
the workspace, so the real directory is unchanged after the run, its changes are in
the manifest under absolute paths, `nsbox apply` writes them and `discard` drops them."""

import json
import os
import shutil
import time

import pytest

import nsbox
from conftest import nsbox_run, overlay_runs, tree_state
from nsbox.policy.model import Policy

# A write, a new file in a new directory, a deletion and a whole tree's removal.
IN_EXTRA = """
set -e
echo new > {extra}/f
mkdir -p {extra}/made && echo x > {extra}/made/x
rm {extra}/gone
rm -rf {extra}/tree
"""
SCRIPT = IN_EXTRA + "echo ws > {ws}/w\n"


def fill(extra):
    (extra / "f").write_text("old\n")
    (extra / "gone").write_text("bye\n")
    (extra / "tree" / "a").mkdir(parents=True)
    (extra / "tree" / "a" / "leaf").write_text("leaf\n")


@pytest.fixture
def env(var_tmp):
    return {**os.environ, "XDG_STATE_HOME": str(var_tmp / "state")}


@pytest.fixture
def dirs(var_tmp):
    ws, extra = var_tmp / "ws", var_tmp / "extra"
    ws.mkdir()
    extra.mkdir()
    fill(extra)
    return ws, extra


def overlay_exec(env, ws, extra, script, *more):
    status = ws.parent / "status.json"
    status.unlink(missing_ok=True)
    done = nsbox_run(env, "exec", "--workspace", str(ws), "--workspace-mode", "overlay",
                     "--writable", str(extra), "--json-status", str(status), *more, "--",
                     "sh", "-c", script.format(ws=ws, extra=extra))
    return done, json.loads(status.read_text())


def expected(ws, extra):
    return {"w": "created", f"{extra}/f": "modified", f"{extra}/made": "created",
            f"{extra}/made/x": "created", f"{extra}/gone": "deleted",
            f"{extra}/tree": "deleted"}


def test_an_extra_root_is_unchanged_and_its_changes_are_in_the_manifest(env, dirs, var_tmp):
    ws, extra = dirs
    before = tree_state(extra, times=True)
    done, record = overlay_exec(env, ws, extra, SCRIPT + "cat {extra}/f; ls {extra}")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "new\nf\nmade\n"  # the command saw its own writes
    assert tree_state(extra, times=True) == before and os.listdir(ws) == []
    assert sorted(record["protections"]["copy_on_write"]) == sorted([str(ws), str(extra)])
    assert record["changes"] == []  # the real trees did not change
    found = {c["path"]: c["what"] for c in record["workspace_changes"]}
    assert found == {os.path.join(ws, p): w for p, w in expected(ws, extra).items()}
    run_id = record["run_id"]
    shown = json.loads(nsbox_run(env, "changes", run_id, "--json", check=True).stdout)
    # The workspace's entries stay relative to it; an extra root's are absolute.
    assert {c["path"]: c["what"] for c in shown["changes"]} == expected(ws, extra)
    diff = nsbox_run(env, "diff", run_id, f"{extra}/f", check=True).stdout
    assert f"--- a{extra}/f\n+++ b{extra}/f\n" in diff and "-old\n+new\n" in diff
    assert "w" not in nsbox_run(env, "diff", run_id, str(extra), check=True).stdout.split()


def test_apply_writes_the_extra_root_and_discard_leaves_nothing(env, dirs, var_tmp):
    ws, extra = dirs
    direct = var_tmp / "direct"
    shutil.copytree(extra, direct)
    done = nsbox_run(env, "exec", "--workspace", str(ws), "--writable", str(direct), "--",
                     "sh", "-c", IN_EXTRA.format(extra=direct))
    assert done.returncode == 0, done.stderr
    run_id = overlay_exec(env, ws, extra, SCRIPT)[1]["run_id"]
    nsbox_run(env, "apply", run_id, f"{extra}/f", check=True)  # one path of the root
    assert (extra / "f").read_text() == "new\n" and (extra / "gone").exists()
    applied = nsbox_run(env, "apply", run_id, check=True)
    assert "applied 3 created, 0 modified, 2 deleted" in applied.stdout
    assert tree_state(extra) == tree_state(direct)
    assert (ws / "w").read_text() == "ws\n"
    assert overlay_runs(var_tmp) == []

    before = tree_state(extra, times=True)
    run_id = overlay_exec(env, ws, extra, "echo again > {extra}/f; rm -rf {extra}/made")[1][
        "run_id"]
    nsbox_run(env, "discard", run_id, check=True)
    assert tree_state(extra, times=True) == before
    assert overlay_runs(var_tmp) == []


def test_apply_refuses_a_host_change_in_an_extra_root(env, dirs, var_tmp):
    ws, extra = dirs
    run_id = overlay_exec(env, ws, extra, "echo two > {extra}/f")[1]["run_id"]
    (extra / "f").write_text("host\n")
    refused = nsbox_run(env, "apply", run_id)
    assert refused.returncode == 1
    assert f"{extra}/f: it changed since the run started" in refused.stderr
    assert (extra / "f").read_text() == "host\n"


def test_a_root_inside_the_workspace_is_part_of_its_overlay(env, dirs, var_tmp):
    ws, _ = dirs
    (ws / "nested").mkdir()
    done, record = overlay_exec(env, ws, ws / "nested", "echo x > {extra}/x")
    assert done.returncode == 0, done.stderr
    assert os.listdir(ws / "nested") == []
    assert [c["path"] for c in record["workspace_changes"]] == [str(ws / "nested" / "x")]
    assert record["protections"]["copy_on_write"] == [str(ws)]


def test_a_root_holding_the_workspace_is_refused(env, var_tmp):
    ws = var_tmp / "top" / "ws"
    ws.mkdir(parents=True)
    done = nsbox_run(env, "exec", "--workspace", str(ws), "--workspace-mode", "overlay",
                     "--writable", str(var_tmp / "top"), "--", "sh", "-c",
                     f"echo x > {var_tmp}/top/x")
    assert done.returncode == 125
    assert f"writable root {var_tmp}/top holds the workspace" in done.stderr
    assert not (var_tmp / "top" / "x").exists()
    assert overlay_runs(var_tmp) == []


def test_the_library_reports_an_extra_roots_changes(dirs, var_tmp, monkeypatch):
    ws, extra = dirs
    monkeypatch.setenv("XDG_STATE_HOME", str(var_tmp / "state"))
    result = nsbox.run(["sh", "-c", f"echo two > {extra}/f; echo n > {ws}/n"],
                       policy=Policy(workspace=str(ws), writable=(str(extra),),
                                     workspace_mode="overlay"), prewarm=False)
    assert result.returncode == 0, result.stderr
    assert {(c.path, c.what) for c in result.changes} == {
        (str(extra / "f"), "modified"), (str(ws / "n"), "created")}
    assert (extra / "f").read_text() == "old\n" and not (ws / "n").exists()
    assert result.run_id in overlay_runs(var_tmp)


def test_session_snapshot_restore_apply_and_discard_cover_an_extra_root(dirs, var_tmp,
                                                                         monkeypatch):
    ws, extra = dirs
    monkeypatch.setenv("XDG_STATE_HOME", str(var_tmp / "state"))
    before = tree_state(extra, times=True)
    # The session's start is stamped by a coarse clock: a file written in the same tick
    # just before would count as changed since (an apply conflict).
    time.sleep(0.05)
    policy = Policy(workspace=str(ws), writable=(str(extra),), workspace_mode="overlay")
    with nsbox.Session(policy) as session:
        def sh(script):
            done = session.run(["sh", "-c", script.format(extra=extra)])
            assert done.returncode == 0, done.stderr
            return done.stdout.decode()

        sh("echo one > {extra}/f; echo w > w")
        taken = session.snapshot()
        sh("echo two > {extra}/f; rm -r {extra}/tree; echo z > {extra}/z")
        assert {c.path for c in session.changes()} == {
            str(ws / "w"), str(extra / "f"), str(extra / "tree"), str(extra / "z")}
        session.restore(taken)
        assert sh("cat {extra}/f; ls {extra}") == "one\nf\ngone\ntree\n"
        assert sh("cat {extra}/tree/a/leaf") == "leaf\n"
        assert tree_state(extra, times=True) == before  # the real root is never written by a restore
        applied = session.apply([str(extra / "f")])
        assert [c.path for c in applied.applied] == [str(extra / "f")]
        assert (extra / "f").read_text() == "one\n" and not (ws / "w").exists()
        session.discard()
        assert session.changes() == ()
        assert sh("cat {extra}/f; ls {extra}; ls") == "one\nf\ngone\ntree\n"
    assert session.run_id is None
    assert (extra / "f").read_text() == "one\n" and not (extra / "z").exists()


def test_a_run_that_changed_nothing_is_removed_while_the_next_one_starts(env, dirs, var_tmp):
    ws, extra = dirs
    gone = var_tmp / "state" / "nsbox" / "gone"
    first = overlay_exec(env, ws, extra, "cat {extra}/f > /dev/null")[1]
    assert first["run_id"] is None and overlay_runs(var_tmp) == []
    [aside] = os.listdir(gone)  # moved aside, not yet removed: no run lists it
    assert "no kept run" in nsbox_run(env, "changes", aside).stderr
    overlay_exec(env, ws, extra, "true")
    assert aside not in os.listdir(gone) and len(os.listdir(gone)) == 1
    nsbox_run(env, "discard", "--older-than", "1d", check=True)  # and what is left
    assert os.listdir(gone) == []
