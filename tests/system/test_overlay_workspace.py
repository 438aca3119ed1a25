"""Copy-on-write workspaces on the real kernel: an overlay run leaves the real tree
unchanged, its manifest says exactly what changed, and `nsbox apply` / `discard` turn
it into the same tree a direct run gives, or into nothing."""

import json
import os
import shutil
import subprocess

import pytest

import nsbox
from conftest import nsbox_run, overlay_runs, tree_state
from nsbox.policy.model import Policy

GIT = shutil.which("git")
# Writes, deletes (a file and a whole tree), renames, chmod, a file replaced by a
# directory, a directory by a file, a symlink re-pointed and a new one.
SCRIPT = """
set -e
echo more >> edited
rm gone
rm -rf tree
mv old_name new_name
chmod 600 private
rm was_file && mkdir was_file && echo inside > was_file/x
rm -rf was_dir && echo now a file > was_dir
ln -sfn edited link
ln -s new_name new_link
mkdir -p made/deeper && printf 'bin\\000ary' > made/deeper/blob
"""
EXPECTED = {
    "edited": "modified", "gone": "deleted", "tree": "deleted", "old_name": "deleted",
    "new_name": "created", "private": "mode", "was_file": "type changed",
    "was_file/x": "created", "was_dir": "type changed", "link": "modified",
    "new_link": "created", "made": "created", "made/deeper": "created",
    "made/deeper/blob": "created",
}


def fill(ws):
    (ws / "edited").write_text("first\n")
    (ws / "gone").write_text("bye\n")
    (ws / "tree" / "a" / "b").mkdir(parents=True)
    (ws / "tree" / "a" / "b" / "leaf").write_text("leaf\n")
    (ws / "old_name").write_text("renamed\n")
    (ws / "private").write_text("secret\n")
    os.chmod(ws / "private", 0o644)
    (ws / "was_file").write_text("file\n")
    (ws / "was_dir").mkdir()
    (ws / "was_dir" / "y").write_text("y\n")
    (ws / "untouched").write_text("same\n")
    os.symlink("untouched", ws / "link")


@pytest.fixture
def env(var_tmp):
    """This test's own nsbox state directory, so that its runs are its own."""
    return {**os.environ, "XDG_STATE_HOME": str(var_tmp / "state")}


@pytest.fixture
def ws(var_tmp):
    path = var_tmp / "ws"
    path.mkdir()
    return path


def overlay_exec(env, ws, script, *extra):
    status = ws.parent / "status.json"
    done = nsbox_run(env, "exec", "--workspace", str(ws), "--workspace-mode", "overlay",
                     "--json-status", str(status), *extra, "--", "sh", "-c", script)
    return done, json.loads(status.read_text())


def test_an_overlay_run_leaves_the_real_tree_unchanged_and_lists_what_changed(env, ws, var_tmp):
    fill(ws)
    before = tree_state(ws, times=True)
    done, record = overlay_exec(env, ws, SCRIPT + "cat edited; ls was_file")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "first\nmore\nx\n"  # the command saw its own writes
    assert tree_state(ws, times=True) == before
    run_id = record["run_id"]
    found = {os.path.relpath(c["path"], ws): c["what"] for c in record["workspace_changes"]}
    assert found == EXPECTED
    assert (f"nsbox: 6 created, 5 modified, 3 deleted \u2014 kept as run {run_id} "
            f"(nsbox changes {run_id})") in done.stderr
    assert record["changes"] == []  # the trust-boundary watch: the host tree did not change
    assert record["protections"]["copy_on_write"] == [str(ws)]
    assert str(ws) in record["protections"]["writable"]
    listed = nsbox_run(env, "changes", run_id, "--json", check=True)
    shown = json.loads(listed.stdout)
    assert {c["path"]: c["what"] for c in shown["changes"]} == EXPECTED
    assert shown["workspace"] == str(ws) and shown["command"][:2] == ["sh", "-c"]
    diff = nsbox_run(env, "diff", run_id, "edited", "made", check=True).stdout
    assert "--- a/edited\n+++ b/edited\n" in diff and "+more\n" in diff
    assert "Binary files /dev/null and b/made/deeper/blob differ" in diff


def test_apply_gives_the_tree_a_direct_run_gives(env, ws, var_tmp):
    fill(ws)
    direct = var_tmp / "direct"
    shutil.copytree(ws, direct, symlinks=True)
    done = nsbox_run(env, "exec", "--workspace", str(direct), "--", "sh", "-c", SCRIPT)
    assert done.returncode == 0, done.stderr
    done, record = overlay_exec(env, ws, SCRIPT)
    assert done.returncode == 0, done.stderr
    applied = nsbox_run(env, "apply", record["run_id"], check=True)
    assert "applied 6 created, 5 modified, 3 deleted" in applied.stdout
    assert tree_state(ws) == tree_state(direct)
    assert overlay_runs(var_tmp) == []  # removed after a full apply


def test_apply_of_some_paths_keeps_the_rest(env, ws, var_tmp):
    fill(ws)
    _, record = overlay_exec(env, ws, SCRIPT)
    run_id = record["run_id"]
    nsbox_run(env, "apply", run_id, "edited", "made/deeper/blob", check=True)
    assert (ws / "edited").read_text() == "first\nmore\n"
    assert (ws / "made" / "deeper" / "blob").read_bytes() == b"bin\0ary"
    assert (ws / "gone").exists() and not (ws / "new_name").exists()
    left = json.loads(nsbox_run(env, "changes", run_id, "--json", check=True).stdout)
    assert {c["path"] for c in left["changes"]} == set(EXPECTED) - {
        "edited", "made", "made/deeper", "made/deeper/blob"}
    nsbox_run(env, "apply", run_id, check=True)
    assert not (ws / "gone").exists() and (ws / "new_name").read_text() == "renamed\n"
    assert overlay_runs(var_tmp) == []


def test_apply_refuses_after_a_host_change_unless_forced(env, ws, var_tmp):
    (ws / "f").write_text("one\n")
    _, record = overlay_exec(env, ws, "echo two > f")
    (ws / "f").write_text("host\n")  # the user edited it after the run started
    refused = nsbox_run(env, "apply", record["run_id"])
    assert refused.returncode == 1
    assert "f: it changed since the run started" in refused.stderr
    assert "--force" in refused.stderr
    assert (ws / "f").read_text() == "host\n"
    nsbox_run(env, "apply", record["run_id"], "--force", check=True)
    assert (ws / "f").read_text() == "two\n"


def test_discard_leaves_nothing_behind(env, ws, var_tmp):
    (ws / "f").write_text("one\n")
    first = overlay_exec(env, ws, "echo two > f; mkdir d; chmod 000 d")[1]["run_id"]
    second = overlay_exec(env, ws, "rm f")[1]["run_id"]
    assert sorted(overlay_runs(var_tmp)) == sorted([first, second])
    nsbox_run(env, "discard", first, check=True)
    assert overlay_runs(var_tmp) == [second]
    assert "kept" not in nsbox_run(env, "discard", "--older-than", "1d", check=True).stdout
    assert overlay_runs(var_tmp) == [second]
    nsbox_run(env, "discard", "--older-than", "0s", check=True)
    assert overlay_runs(var_tmp) == []
    assert (ws / "f").read_text() == "one\n"


def test_a_run_that_changes_nothing_is_not_kept(env, ws, var_tmp):
    (ws / "f").write_text("one\n")
    done, record = overlay_exec(env, ws, "cat f > /dev/null; touch /tmp/x")
    assert record["run_id"] is None and record["workspace_changes"] == []
    assert "no changes in the workspace" in done.stderr
    assert overlay_runs(var_tmp) == []


@pytest.mark.skipif(GIT is None, reason="git is not installed")
def test_git_commit_in_overlay_mode_lands_with_apply_and_hooks_need_their_flag(env, ws):
    def git(*args):
        return subprocess.run([GIT, "-c", "user.name=t", "-c", "user.email=t@e", *args],
                              cwd=ws, check=True, capture_output=True, text=True, env=env)

    git("init", "-q", "-b", "main")
    (ws / "f").write_text("1\n")
    git("add", "f")
    git("commit", "-qm", "one")
    script = ("echo 2 >> f && git -c user.name=t -c user.email=t@e commit -qam two && "
              "echo 'echo pwned' > .git/hooks/post-commit 2>/dev/null; "
              "git init -q sub && echo 'echo hi' > .envrc")
    done, record = overlay_exec(env, ws, script)
    assert done.returncode == 0, done.stderr
    assert git("log", "--format=%s").stdout == "one\n"  # the real repo: unchanged
    run_id = record["run_id"]
    shown = nsbox_run(env, "changes", run_id, check=True).stdout
    assert "A .envrc (8 bytes) [protected]" in shown
    applied = nsbox_run(env, "apply", run_id, check=True).stdout
    assert "not applied (protected): .envrc" in applied
    assert "not applied (protected): sub/.git" in applied
    assert git("log", "--format=%s").stdout == "two\none\n"
    assert git("status", "--porcelain").stdout == ""  # sub/ came, without its .git
    assert (ws / "sub").is_dir()
    assert not (ws / ".git" / "hooks" / "post-commit").exists()  # read-only in the run
    assert not (ws / ".envrc").exists() and not (ws / "sub" / ".git").exists()
    nsbox_run(env, "apply", run_id, "--include-protected", ".envrc", check=True)
    assert (ws / ".envrc").read_text() == "echo hi\n"
    nsbox_run(env, "apply", run_id, "--include-protected", "sub/.git", check=True)
    assert (ws / "sub" / ".git" / "HEAD").exists()


def test_landlock_only_isolation_refuses_overlay_mode(env, ws):
    done = nsbox_run(env, "exec", "--workspace", str(ws), "--workspace-mode", "overlay",
                     "--isolation", "landlock", "--", "true")
    assert done.returncode == 125
    assert "workspace_mode overlay needs a mount namespace" in done.stderr


def test_the_library_reports_the_manifest_and_the_run(ws, var_tmp, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(var_tmp / "state"))
    (ws / "f").write_text("one\n")
    # The library reads the layer without the user namespace's capabilities: a
    # directory the command closed (chmod 000) is still read.
    result = nsbox.run(["sh", "-c", "echo two > f; echo new > g; mkdir c; echo x > c/x; "
                        "chmod 000 c"],
                       policy=Policy(workspace=str(ws), workspace_mode="overlay"),
                       prewarm=False)
    assert result.returncode == 0, result.stderr
    assert {(c.path, c.what, c.size) for c in result.changes} == {
        (str(ws / "f"), "modified", 4), (str(ws / "g"), "created", 4),
        (str(ws / "c"), "created", None), (str(ws / "c" / "x"), "created", 2)}
    assert result.run_id in overlay_runs(var_tmp)
    assert (ws / "f").read_text() == "one\n" and not (ws / "g").exists()
