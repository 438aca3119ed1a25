"""The benchmark runs end to end (no timing assertions) and NSBOX_TRACE records each stage."""

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
# Stages every default launch passes through, in the caller, PID 1 and the command.
CALLER_STAGES = {"prepare", "unshare", "id maps", "fork pid1", "exited"}
PID1_STAGES = {"pid1 start", "mounts", "pivot_root", "fork command"}
COMMAND_STAGES = {"command start", "exec"}


def traced(nsbox_exec, tmp_path, cmd, **env):
    log = tmp_path / "trace.log"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        r = nsbox_exec(cmd, pass_fds=(fd,),
                       env=dict(os.environ, NSBOX_TRACE="1", NSBOX_TRACE_FD=str(fd), **env))
    finally:
        os.close(fd)
    records = [line.split(" ", 3) for line in log.read_text().splitlines()]
    return r, fd, records


def test_trace_records_stages_from_every_process(nsbox_exec, tmp_path):
    r, _, records = traced(nsbox_exec, tmp_path, ["true"])
    assert r.returncode == 0, r.stderr
    assert records and all(rec[0] == "nsbox-trace" and len(rec) == 4 for rec in records)
    by_pid = {}
    for _, ns, pid, stage in records:
        assert ns.isdigit()
        by_pid.setdefault(pid, set()).add(stage)
    assert PID1_STAGES <= by_pid.pop("1")
    assert COMMAND_STAGES <= by_pid.pop("2")
    (caller,) = by_pid.values()
    assert CALLER_STAGES <= caller
    # One shared clock: each process's records are in order (processes run
    # concurrently, so lines from two of them may interleave either way).
    for pid in {rec[2] for rec in records}:
        times = [int(rec[1]) for rec in records if rec[2] == pid]
        assert times == sorted(times)
    first = {rec[2]: int(rec[1]) for rec in reversed(records)}
    caller_pid = next(pid for pid in first if pid not in ("1", "2"))
    assert first[caller_pid] < first["1"] < first["2"]


def test_trace_fd_does_not_reach_the_command(nsbox_exec, tmp_path):
    r, fd, _ = traced(nsbox_exec, tmp_path, "ls /proc/self/fd")
    assert r.returncode == 0, r.stderr
    assert str(fd) not in r.stdout.decode().split()


def test_trace_goes_to_stderr_without_an_fd(nsbox_exec):
    r = nsbox_exec(["true"], env=dict(os.environ, NSBOX_TRACE="1"))
    assert r.returncode == 0
    assert b"nsbox-trace " in r.stderr and b" exec\n" in r.stderr


def test_no_trace_unless_asked(nsbox_exec):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NSBOX_TRACE")}
    r = nsbox_exec(["true"], env=env)
    assert r.returncode == 0 and b"nsbox-trace" not in r.stderr


def test_trace_mark_is_a_no_op_when_disabled():
    probe = ("from nsbox import trace; import sys; "
             "sys.exit(0 if trace.mark is trace._off and not trace.ENABLED else 1)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NSBOX_TRACE")}
    assert subprocess.run([sys.executable, "-c", probe], env=env).returncode == 0


def test_benchmark_quickest_mode_runs(tmp_path):
    results = tmp_path / "results"
    r = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench.py"), "--quick", "--runs", "2",
         "--warmup", "1", "--binds", "1,2", "--concurrency", "1,2", "--results", str(results)],
        capture_output=True, text=True, timeout=360, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    table = (results / "latest.md").read_text()
    assert "| nsbox exec -- true (CLI) |" in table and "Linux " in table
    assert "Where the time goes, `nsbox exec -- true`" in table
    assert table in r.stdout or table.split("\n(no plot")[0] in r.stdout
    data = json.loads((results / "latest.json").read_text())
    names = [case["name"] for case in data["cases"]]
    assert "/bin/true" in names and "nsbox exec -- true" in names
    assert all(len(case["samples_ns"]) == 2 for case in data["cases"])
    assert set(data["binds"]) == {"1", "2"} and set(data["concurrency"]) == {"1", "2"}


def test_benchmark_goals_and_host_size_measurements(tmp_path):
    results = tmp_path / "results"
    r = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench.py"), "--quick", "--runs", "2",
         "--warmup", "1", "--binds", "1", "--concurrency", "1,2", "--entries", "10,100",
         "--env-vars", "0,10", "--results", str(results)],
        capture_output=True, text=True, timeout=360, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    table = (results / "latest.md").read_text()
    assert table.index("### Goals") < table.index("### Latency")
    assert "| `nsbox exec -- true` ≤ 1.5× `python3 -c pass` (p50) |" in table
    data = json.loads((results / "latest.json").read_text())
    names = {case["name"]: case for case in data["cases"] + data["rotation"]}
    assert {"python3 -c pass", "subprocess.run(bwrap)", "nsbox.run(['true']) back to back",
            "nsbox.run(['true']) rotating 8 policies"} <= set(names)
    assert len(names["nsbox.run(['true']) rotating 8 policies"]["calls_ns"]) == 2 * 8
    assert data["install"]["script"] and os.path.isfile(data["install"]["nsbox_file"])
    assert set(data["threads"]) == {"1", "2"}
    assert all(len(s) == 2 for row in data["threads"].values() for s in row.values())
    assert set(data["hidden_entries"]) == {"HOME:10", "HOME:100", "--hide:10", "--hide:100"}
    assert {"nsbox exec:10", "bwrap:10", "Session.run:10"} <= set(data["env_size"])
    assert data["big_request"]["env_bytes"] > 256 * 1024
    assert isinstance(data["big_request"]["nsbox.run"]["ok"], bool)
    memory = data["session_memory"]
    assert len(memory["totals_kb"]) == memory["sessions"] + 1 and "first_kb" in memory
    assert "image_memory" in data, [n for n in data.get("notes", []) if "image" in n]
    image = data["image_memory"]
    assert image["sandboxes"] == 4 and len(image["kinds"]) >= 4 and not image["errors"], image
    assert "idle sandboxes held open at once on one image" in table


def bench_holder(name: str):
    """bench/<name>.py as a module, and the command line of its holder process."""
    import importlib

    sys.path.insert(0, str(ROOT / "bench"))
    try:
        module = importlib.import_module(name)
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return module, [sys.executable, str(ROOT / "bench" / f"{name}.py"), "hold"]


def test_session_memory_holder_steps():
    session_memory, holder = bench_holder("session_memory")
    result = session_memory.measure(holder, 2)
    assert len(result["totals_kb"]) == 3 and result["metric"].split()[0] in ("pss", "rss")
    # every session adds processes under the holder: the fork server's and its own
    counts = [len(step["processes"]) for step in result["steps"]]
    assert counts[0] < counts[1] < counts[2]


def test_image_memory_holds_every_kind_and_leaves_nothing_behind():
    image_memory, holder = bench_holder("image_memory")
    result = image_memory.measure(holder, 2)
    assert result["errors"] == []
    rows = {row["kind"]: row for row in result["kinds"]}
    assert set(rows) == {kind for kind, _ in image_memory.KINDS}
    for row in rows.values():  # each kind's sandboxes were running under the holder
        comms = [p["comm"] for p in row["processes"]]
        assert comms.count("sleep" if "exec" in row["kind"] or "bwrap" in row["kind"]
                           else "nsbox-init") >= 2, row
    disk = rows["session-image-writable-disk"]
    assert len(disk["layers"]) == 2
    if os.getuid() == 0:  # only root reads the sandboxes' roots and layers
        assert rows["session-image-writable"]["layer_kb"] == [0, 0]
        assert len(disk["layer_kb"]) == 2 and min(disk["layer_kb"]) > 0
    # nothing left: the image, the layers, the sandboxes
    assert not os.path.exists(result["image"])
    assert not any(os.path.exists(path) for path in disk["layers"])
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                assert result["image"].encode() not in f.read()
        except OSError:
            continue
