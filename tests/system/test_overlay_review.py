"""`nsbox exec --review`: after an overlay run, on a terminal, the changes are offered one
by one (y, n, d, a, q) and the chosen ones land in the real tree; without a terminal
the run is kept; without overlay mode --review is refused before anything runs."""

import os
import pty
import select
import subprocess
import sys
import time

import pytest

from conftest import SETUP_FAILED, nsbox_cmd, overlay_runs

CTRL_C = "\x03"
PROMPT = b"Apply [y,n,d(diff),a(all remaining),q(quit)]? "
# Sorted by path, the manifest is: .envrc (protected), a (modified), b (deleted),
# c (created), d/ (created), d/f (created).
SCRIPT = "echo new > a; rm b; echo c > c; echo e > .envrc; mkdir d; echo f > d/f"


@pytest.fixture
def env(var_tmp):
    return {**os.environ, "XDG_STATE_HOME": str(var_tmp / "state")}


@pytest.fixture
def ws(var_tmp):
    path = var_tmp / "ws"
    path.mkdir()
    (path / "a").write_text("old\n")
    (path / "b").write_text("b\n")
    return path


def review(env, ws, answers, script=SCRIPT, timeout=30.0):
    """Run `nsbox exec --review` on a pseudo-terminal, answering each prompt in turn;
    (exit status, everything the terminal showed)."""
    argv = nsbox_cmd("exec", "--workspace", str(ws), "--workspace-mode", "overlay",
                     "--review", "--", "sh", "-c", script)
    pid, fd = pty.fork()
    if pid == 0:
        try:
            os.chdir(ws)
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    shown = b""
    deadline = time.monotonic() + timeout
    pending = list(answers)
    asked = 0

    def more() -> bool:
        nonlocal shown
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            os.kill(pid, 9)
            pytest.fail(f"timed out; the terminal shows:\n{shown.decode(errors='replace')}")
        try:
            data = os.read(fd, 4096)
        except OSError:  # EIO: the other side is closed
            return False
        shown += data
        return bool(data)

    try:
        while True:
            if shown.count(PROMPT) > asked:
                asked += 1
                assert pending, f"asked once more than expected:\n{shown.decode()}"
                answer = pending.pop(0)
                os.write(fd, answer.encode() + (b"" if answer == CTRL_C else b"\n"))
                continue
            if not more():
                break
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    assert not pending, f"not asked for {pending}:\n{shown.decode()}"
    return os.waitstatus_to_exitcode(status), shown.decode(errors="replace").replace("\r\n", "\n")


def test_yes_no_and_quit_apply_only_what_was_chosen(env, ws, var_tmp):
    code, shown = review(env, ws, ["y", "d", "n", "y", "q"])
    assert code == 0, shown
    assert "created file .envrc (2 bytes)\n  protected: skipped here" in shown
    assert "--include-protected .envrc" in shown
    assert "modified file a (4 bytes)" in shown and "deleted file b" in shown
    assert "--- a/b\n+++ /dev/null\n" in shown  # d showed the diff, then asked again
    assert shown.count("deleted file b\n") == 2
    assert (ws / "a").read_text() == "new\n"  # y
    assert (ws / "b").read_text() == "b\n"  # n
    assert (ws / "c").read_text() == "c\n"  # y
    assert not (ws / "d").exists() and not (ws / ".envrc").exists()  # q; protected
    assert "applied 1 created, 1 modified, 0 deleted" in shown
    [run_id] = overlay_runs(var_tmp)
    assert f"run {run_id} kept: 4 change(s) not applied" in shown
    listed = subprocess.run(nsbox_cmd("changes", run_id, "--json"), capture_output=True,
                            text=True, env=env, check=True).stdout
    assert '"path": "d/f"' in listed and '"path": "a"' not in listed


def test_all_remaining_applies_the_rest_but_not_protected_paths(env, ws, var_tmp):
    code, shown = review(env, ws, ["n", "a"])
    assert code == 0, shown
    assert (ws / "a").read_text() == "old\n"  # n
    assert not (ws / "b").exists()
    assert (ws / "d" / "f").read_text() == "f\n" and (ws / "c").exists()
    assert not (ws / ".envrc").exists()
    assert len(overlay_runs(var_tmp)) == 1  # a and .envrc are left


def test_everything_applied_removes_the_run(env, ws, var_tmp):
    code, shown = review(env, ws, ["a"], script="echo new > a; rm b")
    assert code == 0, shown
    assert (ws / "a").read_text() == "new\n" and not (ws / "b").exists()
    assert "run " in shown and " removed" in shown
    assert overlay_runs(var_tmp) == []


def test_ctrl_c_at_a_question_applies_nothing(env, ws, var_tmp):
    code, shown = review(env, ws, ["y", CTRL_C])
    assert code == 0, shown
    assert "interrupted: nothing applied" in shown
    assert (ws / "a").read_text() == "old\n" and (ws / "b").exists()
    assert len(overlay_runs(var_tmp)) == 1


def test_the_command_exit_status_is_kept_and_no_changes_means_no_question(env, ws, var_tmp):
    code, shown = review(env, ws, [], script="exit 3")
    assert code == 3
    assert "no changes in the workspace" in shown and "Apply [" not in shown
    assert overlay_runs(var_tmp) == []


def test_without_a_terminal_the_run_is_kept_and_nothing_is_asked(env, ws, var_tmp):
    done = subprocess.run(nsbox_cmd("exec", "--workspace", str(ws), "--workspace-mode",
                                    "overlay", "--review", "--", "sh", "-c", SCRIPT),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env,
                          cwd=ws, timeout=60)
    assert done.returncode == 0, done.stderr
    [run_id] = overlay_runs(var_tmp)
    assert f"--review needs a terminal (stdin and stderr); run {run_id} kept" in done.stderr
    assert "Apply [" not in done.stderr
    assert (ws / "a").read_text() == "old\n" and (ws / "b").exists()


def test_review_without_overlay_is_refused_before_running(env, ws, var_tmp):
    done = subprocess.run(nsbox_cmd("exec", "--workspace", str(ws), "--review", "--",
                                    "sh", "-c", "echo ran > ran"),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env,
                          cwd=ws, timeout=60)
    assert done.returncode == SETUP_FAILED
    assert "--review needs --workspace-mode overlay" in done.stderr
    assert not (ws / "ran").exists()


def test_review_is_not_imported_without_the_option(ws):
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "nsbox", "exec",
                           "--workspace", str(ws), "--", "true"],
                          capture_output=True, text=True, cwd=ws, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "nsbox.cli.review" not in done.stderr
    assert "nsbox.cli.review" in subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "nsbox", "exec", "--workspace", str(ws),
         "--workspace-mode", "overlay", "--review", "--", "true"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd=ws, timeout=60).stderr
