"""`nsbox exec --json-status FILE`: the record lands at FILE even when the command could
write FILE's directory, and a FILE nsbox cannot write stops the run before it starts."""

import json
import os
import subprocess

import pytest

from conftest import nsbox_cmd


def _exec(workspace, status, script, *opts):
    return subprocess.run(nsbox_cmd("exec", "--workspace", str(workspace), *opts,
                                    "--json-status", str(status), "--", "sh", "-c", script),
                          capture_output=True, timeout=60)


def _leftovers(directory) -> list:
    return [p.name for p in directory.iterdir() if p.name.startswith(".nsbox-status-")]


@pytest.mark.parametrize("attack", ["forged", "symlink"])
def test_command_cannot_replace_its_own_record(workspace, tmp_path, attack):
    status = workspace / "status.json"
    status.write_text('{"exit_code": 0, "from": "an earlier run"}\n')
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    if attack == "forged":
        script = ("mv status.json moved.json && "
                  "printf '{\"exit_code\": 0, \"forged\": true}\\n' > status.json; exit 7")
    else:
        script = f"rm -f status.json && ln -s {victim} status.json; exit 7"
    r = _exec(workspace, status, script)
    assert r.returncode == 7, r.stderr
    assert not status.is_symlink()
    record = json.loads(status.read_text())
    assert record["exit_code"] == 7 and record["command"] == ["sh", "-c", script]
    assert "forged" not in record and "from" not in record
    assert victim.read_text() == "precious\n"
    if attack == "forged":
        assert json.loads((workspace / "moved.json").read_text())["from"] == "an earlier run"
    assert not _leftovers(workspace)


def test_record_outside_the_workspace(workspace, tmp_path):
    status = tmp_path / "status.json"
    r = _exec(workspace, status, "echo ran > ran; exit 3")
    assert r.returncode == 3, r.stderr
    record = json.loads(status.read_text())
    assert record["exit_code"] == 3 and record["setup_error"] is None
    assert (workspace / "ran").read_text() == "ran\n"
    assert oct(status.stat().st_mode & 0o777) == oct(0o644 & ~_umask())
    assert not _leftovers(tmp_path)
    # Run again: the record replaces the last one.
    r = _exec(workspace, status, "exit 0")
    assert r.returncode == 0 and json.loads(status.read_text())["exit_code"] == 0


def test_record_to_a_stream(workspace):
    """/dev/stdout is written through, not replaced by a file."""
    r = _exec(workspace, "/dev/stdout", "echo out")
    assert r.returncode == 0, r.stderr
    first, rest = r.stdout.decode().split("\n", 1)
    assert first == "out" and json.loads(rest)["exit_code"] == 0
    assert os.path.islink("/dev/stdout")


@pytest.mark.parametrize("where", ["missing directory", "a directory"])
def test_unwritable_target_is_125_before_the_command_starts(workspace, tmp_path, where):
    if where == "missing directory":
        status = tmp_path / "nope" / "status.json"
    else:
        status = tmp_path / "status.json"
        status.mkdir()
    r = _exec(workspace, status, "touch ran")
    assert r.returncode == 125
    lines = r.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"nsbox: cannot write --json-status {status}")
    assert ("does not exist" if where == "missing directory" else "is a directory") in lines[0]
    assert not (workspace / "ran").exists()


def test_failure_to_write_after_the_run_keeps_the_exit_code(workspace):
    """The command makes FILE a non-empty directory: nothing can be renamed over it."""
    status = workspace / "status.json"
    r = _exec(workspace, status, "mkdir status.json && touch status.json/x; exit 5")
    assert r.returncode == 5
    message = f"nsbox: cannot write --json-status {status}: Is a directory"
    assert r.stderr.decode().splitlines().count(message) == 1, r.stderr
    assert not _leftovers(workspace)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
