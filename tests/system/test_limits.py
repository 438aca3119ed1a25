"""Resource limits against the real kernel: fork bomb, memory hog, full /tmp, wall clock.

As root the limits are enforced by a cgroup (v2, or v1 on hybrid hosts); as an
unprivileged user without a delegated cgroup, by rlimits (memory only with
--best-effort: a cap per process is not a limit for the sandbox). Each test keeps its
limits small, bounds its own loop and runs under an outer timeout, and checks that
no cgroup directory and no process of the sandbox is left behind.
"""

import glob
import json
import os
import subprocess
import uuid

import pytest

from conftest import nsbox_cmd, processes_with
from nsbox.plan import host
from nsbox.plan import limits as plan_limits
from nsbox.policy.limits import Limits


def mechanism(name: str, **limits) -> str:
    return plan_limits.plan(Limits(**limits), host.facts(), best_effort=True).enforcement.mechanism(name)


def cgroup_parents() -> list:
    """Every directory nsbox may create a sandbox cgroup in, on this host, for this user."""
    probe = Limits(pids=10, memory=1 << 30, cpu=1.0, wall=1)
    return sorted({parent for _, parent, _, _ in plan_limits.plan(probe, host.facts(), True).cgroups})


@pytest.fixture
def run_limited(workspace):
    """Run CMD in a sandbox with `--limit` options; afterwards nothing may be left over."""
    marker = f"{29 + uuid.uuid4().int % 1000 / 1000:.3f}"  # a unique `sleep` argument
    started = []

    def run(cmd, *limit_options, timeout=60, flags=()):
        argv = nsbox_cmd("exec", "--workspace", str(workspace), *flags,
                         *[f"--limit={o}" for o in limit_options], "--", "sh", "-c",
                         cmd.replace("MARKER", marker))
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        started.append(proc.pid)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
        return subprocess.CompletedProcess(argv, proc.returncode, out.decode(), err.decode())

    yield run
    assert processes_with(marker) == [], "a sandboxed process outlived its sandbox"
    for pid in started:
        for parent in cgroup_parents():
            assert glob.glob(f"{parent}/nsbox-{pid}-*") == [], "cgroup left behind"


def test_fork_bomb_stops_at_the_pids_limit_and_the_host_still_forks(run_limited):
    bomb = ("i=0; while [ $i -lt 300 ]; do sleep MARKER & i=$((i+1)); done; "
            "echo started all $i")
    result = run_limited(bomb, "pids=40", timeout=60)
    assert "started all 300" not in result.stdout
    assert result.returncode != 0
    if mechanism("pids", pids=40) in ("cgroup1", "cgroup2"):
        assert "nsbox: command stopped: pids limit 40 reached" in result.stderr
    assert subprocess.run(["true"], timeout=10).returncode == 0


MEMORY_HOG = ("exec python3 -c 'chunks = []\n"
              "for _ in range(1024):\n"
              "    chunks.append(b\"x\" * (1 << 20))\n"
              "print(\"allocated 1G\")'")


def test_memory_hog_is_stopped_at_the_memory_limit(run_limited):
    by_cgroup = mechanism("memory", memory=64 << 20) in ("cgroup1", "cgroup2")
    # Without a cgroup only a cap per process exists, which takes --best-effort.
    result = run_limited(MEMORY_HOG, "memory=64M", timeout=60,
                         flags=() if by_cgroup else ("--best-effort",))
    assert "allocated 1G" not in result.stdout
    if by_cgroup:
        assert result.returncode == 128 + 9
        assert "nsbox: command killed: memory limit 64M reached (OOM)" in result.stderr
    else:  # RLIMIT_DATA: the allocation fails instead
        assert result.returncode == 1
        assert "MemoryError" in result.stderr


def test_filling_tmp_stops_at_its_size_with_enospc(run_limited):
    result = run_limited("dd if=/dev/zero of=/tmp/fill bs=1M count=32; echo dd=$?; "
                         "du -k /tmp/fill", "tmp=8M", timeout=30)
    assert "No space left on device" in result.stderr
    assert "dd=1" in result.stdout
    assert int(result.stdout.split()[-2]) <= 8 * 1024


def test_tmp_is_sized_by_default(run_limited):
    result = run_limited("df -k /tmp | tail -1", timeout=30)
    assert result.returncode == 0
    assert int(result.stdout.split()[1]) == 1024 * 1024  # 1 GiB in KiB


def test_wall_limit_kills_the_whole_tree(run_limited):
    result = run_limited("sleep MARKER & sleep MARKER; echo not killed", "wall=1", timeout=30)
    assert result.returncode == 124
    assert "not killed" not in result.stdout
    assert "nsbox: command killed: wall limit 1s reached (timeout)" in result.stderr


def test_nofile_and_fsize_are_rlimits_of_the_command(run_limited):
    result = run_limited("ulimit -n", "nofile=100", timeout=30)
    assert result.stdout.strip() == "100"
    result = run_limited("dd if=/dev/zero of=big bs=64k count=32", "fsize=1M", timeout=30)
    assert result.returncode == 128 + 25  # SIGXFSZ
    assert "nsbox: command killed: fsize limit 1M reached" in result.stderr


def test_cpu_limit_runs_or_fails_closed(run_limited):
    result = run_limited("echo ran", "cpu=0.5", timeout=30)
    if mechanism("cpu", cpu=0.5) is None:
        assert result.returncode == 125
        assert "cannot enforce limit cpu" in result.stderr and "--best-effort" in result.stderr
    else:
        assert result.returncode == 0 and result.stdout == "ran\n"
    # With a wall limit there is always a fallback: RLIMIT_CPU = cpu x wall.
    result = run_limited("echo ran", "cpu=0.5", "wall=20", timeout=30)
    assert result.returncode == 0 and result.stdout == "ran\n"


def test_the_sandbox_runs_inside_its_own_cgroup(run_limited):
    if mechanism("pids", pids=50) not in ("cgroup1", "cgroup2"):
        pytest.skip("no writable cgroup with the pids controller for this user (rlimit fallback)")
    result = run_limited("cat /proc/self/cgroup", "pids=50", timeout=30)
    assert result.returncode == 0
    assert "/nsbox-" in result.stdout


def test_bad_limit_is_a_usage_error(run_limited):
    result = run_limited("true", "memory=lots", timeout=30)
    assert result.returncode == 125
    assert "limit memory" in result.stderr


def test_a_cgroup2_group_is_joined_by_its_owner_and_removed_with_what_runs_in_it():
    """The v2 mechanics (join by fd, cgroup.kill, rmdir), even where v2 has no controllers."""
    from nsbox.kernel import cgroups, mountinfo

    mount = mountinfo.find_fstype("cgroup2")
    if mount is None or not os.access(mount, os.W_OK):
        pytest.skip("no writable cgroup2 mount for this user")
    group = cgroups.Group(f"nsbox-{os.getpid()}-test")
    group.add(cgroups.V2, mount, (), ())
    ready_r, ready_w = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            group.join()
            os.write(ready_w, b"j")
            os.execvp("sleep", ["sleep", "30"])
        finally:
            os._exit(1)
    os.close(ready_w)
    try:
        assert os.read(ready_r, 1) == b"j"
        with open(f"{mount}/{group.name}/cgroup.procs") as f:
            assert str(child) in f.read().split()
        assert group.remove() == []  # kills the still-running child first
        assert not os.path.exists(f"{mount}/{group.name}")
    finally:
        os.close(ready_r)
        try:
            os.kill(child, 9)
        except ProcessLookupError:
            pass
        os.waitpid(child, 0)
        group.remove()


def test_json_status_names_each_mechanism_and_the_limit_that_ended_the_run(workspace, tmp_path):
    status = tmp_path / "status.json"
    r = subprocess.run(nsbox_cmd("exec", "--workspace", str(workspace), "--json-status",
                                 str(status), "--limit", "wall=1", "--limit", "nofile=100",
                                 "--", "sleep", "30"), capture_output=True, timeout=60)
    assert r.returncode == 124
    record = json.loads(status.read_text())
    assert record["limits"]["wall"] == {"value": "1s", "mechanism": "supervisor",
                                        "scope": "sandbox"}
    assert record["limits"]["nofile"] == {"value": "100", "mechanism": "rlimit",
                                          "scope": "per process", "rlimit": "RLIMIT_NOFILE"}
    assert record["limits"]["tmp"]["mechanism"] == "tmpfs"
    assert record["limit_hit"]["limit"] == "wall" and record["limit_hit"]["reason"] == "timeout"


def test_json_status_has_no_limit_hit_when_none_ended_the_run(workspace, tmp_path):
    status = tmp_path / "status.json"
    r = subprocess.run(nsbox_cmd("exec", "--workspace", str(workspace), "--json-status",
                                 str(status), "--", "true"), capture_output=True, timeout=60)
    assert r.returncode == 0
    record = json.loads(status.read_text())
    assert record["limit_hit"] is None
    assert record["limits"]["pids"]["mechanism"] in ("rlimit", "cgroup1", "cgroup2")


def test_library_result_names_the_limit_that_ended_the_run(workspace):
    import nsbox

    policy = nsbox.Policy(workspace=str(workspace), limits={"wall": 1})
    r = nsbox.run(["sleep", "30"], policy=policy, timeout=60)
    assert r.returncode == 124
    assert r.limit_hit is not None and r.limit_hit["limit"] == "wall"
    assert nsbox.run(["true"], policy=policy).limit_hit is None
