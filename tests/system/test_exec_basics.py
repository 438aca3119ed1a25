"""End-to-end behaviour of `nsbox exec` against the real kernel."""

import signal
import subprocess

from conftest import nsbox_cmd


def test_write_in_workspace_is_seen_on_host(nsbox_exec, workspace):
    r = nsbox_exec("echo hello > out.txt")
    assert r.returncode == 0, r.stderr
    assert (workspace / "out.txt").read_text() == "hello\n"


def test_exit_status_passes_through(nsbox_exec):
    assert nsbox_exec("exit 3").returncode == 3
    assert nsbox_exec(["true"]).returncode == 0


def test_killed_by_signal_gives_128_plus_n(nsbox_exec):
    r = nsbox_exec("kill -TERM $$")
    assert r.returncode == 128 + signal.SIGTERM


def test_stdin_stdout_stderr_pass_through(nsbox_exec):
    r = nsbox_exec("tr a-z A-Z; echo oops >&2", input=b"abc\n")
    assert r.stdout == b"ABC\n"
    assert r.stderr == b"oops\n"


def test_command_not_found_is_127(nsbox_exec):
    r = nsbox_exec(["no-such-command-xyz"])
    assert r.returncode == 127
    assert b"no-such-command-xyz" in r.stderr and b"not found" in r.stderr


def test_not_executable_is_126(nsbox_exec, workspace):
    script = workspace / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    r = nsbox_exec([str(script)])
    assert r.returncode == 126
    assert b"script.sh" in r.stderr


def test_missing_workspace_is_125(tmp_path):
    missing = tmp_path / "nope"
    r = subprocess.run(nsbox_cmd("exec", "--workspace", str(missing), "--", "true"),
                       capture_output=True)
    assert r.returncode == 125
    assert b"does not exist" in r.stderr and str(missing).encode() in r.stderr


def test_workspace_that_is_a_file_is_125(tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    r = subprocess.run(nsbox_cmd("exec", "--workspace", str(f), "--", "true"), capture_output=True)
    assert r.returncode == 125
    assert b"not a directory" in r.stderr


def test_unknown_option_is_125():
    r = subprocess.run(nsbox_cmd("exec", "--bogus", "--", "true"), capture_output=True)
    assert r.returncode == 125
    assert b"--bogus" in r.stderr


def test_sigterm_to_nsbox_is_forwarded(workspace):
    proc = subprocess.Popen(
        nsbox_cmd("exec", "--workspace", str(workspace), "--", "sh", "-c",
                  "trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.05; done"),
        stdout=subprocess.PIPE)
    assert proc.stdout.readline() == b"ready\n"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    assert b"got-term" in out
    assert proc.returncode == 7


def test_closed_stdout_and_stdin_are_passed_through(workspace):
    r = subprocess.run(" ".join(nsbox_cmd("exec", "--workspace", str(workspace), "--", "sh", "-c",
                                          "'echo done >&2; exit 4'")) + " <&- >&-",
                       shell=True, capture_output=True)
    assert r.returncode == 4
    assert r.stderr == b"done\n"
