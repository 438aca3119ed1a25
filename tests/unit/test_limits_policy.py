"""Resource limits as data: parsing, validation, mechanism choice (no kernel involved)."""

import pytest

from nsbox.errors import PolicyError
from nsbox.policy import limit_values
from nsbox.policy import limits as L
from nsbox.policy import plan
from nsbox.policy.limits import Limits
from nsbox.policy.model import Policy


@pytest.mark.parametrize("text, size", [
    ("512M", 512 << 20), ("1G", 1 << 30), ("1GiB", 1 << 30), ("64k", 64 << 10),
    ("4096", 4096), ("1.5G", 3 << 29), ("2MB", 2 << 20), (1000, 1000),
])
def test_sizes(text, size):
    assert limit_values.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "M", "-1M", "12X", "0", "inf", "1e999G"])
def test_bad_sizes_name_the_limit(text):
    with pytest.raises(PolicyError, match="limit memory"):
        limit_values.parse_size(text, "memory")


@pytest.mark.parametrize("text, seconds", [
    ("30", 30), ("30s", 30), ("500ms", 0.5), ("2m", 120), ("1h", 3600), (1.5, 1.5),
])
def test_durations(text, seconds):
    assert limit_values.parse_duration(text) == seconds


def test_defaults_suit_agent_work():
    limits = Limits()
    assert (limits.pids, limits.tmp, limits.nofile) == (4096, 1 << 30, 4096)
    assert limits.memory is None and limits.cpu is None and limits.wall is None


def test_options_override_and_none_lifts_a_default():
    limits = Limits().with_options("memory=512M", "pids=100", "cpu=1.5", "wall=30s",
                                   "tmp=64M", "nofile=none")
    assert limits == Limits(pids=100, memory=512 << 20, cpu=1.5, wall=30, tmp=64 << 20,
                            nofile=None)
    assert limits.describe("memory") == "512M"
    assert limits.describe("cpu") == "1.5 cores"
    assert limits.describe("wall") == "30s"


@pytest.mark.parametrize("option, message", [
    ("memory", "NAME=VALUE"), ("bogus=1", "unknown limit 'bogus'"),
    ("pids=0", "limit pids"), ("pids=1.5", "limit pids"), ("cpu=-1", "limit cpu"),
    ("wall=soon", "limit wall"),
])
def test_bad_options_are_policy_errors(option, message):
    with pytest.raises(PolicyError, match=message):
        Limits().with_options(option)


def test_policy_accepts_a_mapping_and_validates_direct_values():
    policy = Policy(limits={"memory": "1G", "wall": 10})
    assert policy.limits.memory == 1 << 30 and policy.limits.pids == 4096
    with pytest.raises(PolicyError):
        Limits(pids=-3)
    assert Policy().as_dict()["limits"]["pids"] == 4096


def test_tmp_size_reaches_the_tmpfs_mount_step():
    steps = plan.mount_steps(Policy(limits={"tmp": "64M"}), ())
    tmp = next(s for s in steps if s.kind == "tmpfs" and s.target == "/tmp")
    assert tmp.size == 64 << 20
    steps = plan.mount_steps(Policy(limits={"tmp": "none"}), ())
    assert next(s for s in steps if s.target == "/tmp").size == 0


def test_cgroups_take_precedence_and_the_rest_become_rlimits():
    limits = Limits(pids=100, memory=64 << 20, wall=5, fsize=1 << 20)
    chosen = L.enforcement(limits, {"pids": "cgroup2", "memory": "cgroup1"})
    assert chosen.as_dict() == {"pids": "cgroup2", "memory": "cgroup1", "wall": "supervisor",
                                "tmp": "tmpfs", "nofile": "rlimit", "fsize": "rlimit",
                                "inotify": "userns"}
    assert chosen.rlimits == (("RLIMIT_NOFILE", 4096), ("RLIMIT_FSIZE", 1 << 20))
    assert chosen.unenforced == () and chosen.per_process == ()


def test_without_cgroups_everything_falls_back_to_rlimits():
    limits = Limits(pids=100, memory=64 << 20, cpu=0.5, wall=10)
    chosen = L.enforcement(limits, {})
    assert dict(chosen.rlimits) == {"RLIMIT_NPROC": 100, "RLIMIT_DATA": 64 << 20,
                                    "RLIMIT_CPU": 5, "RLIMIT_NOFILE": 4096}


def test_memory_without_a_cgroup_is_only_per_process_and_says_so():
    chosen = L.enforcement(Limits(memory=64 << 20), {})
    assert [name for name, _ in chosen.per_process] == ["memory"]
    assert L.scope("memory", chosen.mechanism("memory")) == "per process"
    assert L.scope("pids", "rlimit") == "sandbox"  # RLIMIT_NPROC counts per user namespace
    assert L.scope("memory", "cgroup2") == "sandbox"
    assert L.enforcement(Limits(memory=64 << 20), {"memory": "cgroup2"}).per_process == ()


def test_inotify_is_bounded_in_the_user_namespace_or_not_at_all():
    assert Limits().inotify == 64
    assert Limits().with_options("inotify=8").inotify == 8
    assert L.enforcement(Limits(), {}).mechanism("inotify") == "userns"
    unset = L.enforcement(Limits(), {}, user_counters=False)
    assert [name for name, _ in unset.unenforced] == ["inotify"]


def test_the_sandbox_gets_half_of_each_shared_counter():
    host = {"max_inotify_watches": 8192, "max_fanotify_groups": 128, "max_user_namespaces": 0}
    counters, rlimits = L.shares(Limits(inotify=16), host, {"RLIMIT_MSGQUEUE": 819200})
    assert counters == (("max_inotify_instances", 16), ("max_inotify_watches", 4096),
                        ("max_fanotify_groups", 64))  # a counter the host disabled is left
    assert rlimits == (("RLIMIT_MSGQUEUE", 409600),)
    assert L.shares(Limits(inotify=None), {}, {}) == ((), ())
    assert "max_inotify_watches" not in L.counters_to_read(Limits(inotify=None), False)
    assert "max_mnt_namespaces" in L.counters_to_read(Limits(), True)
    assert "max_mnt_namespaces" not in L.counters_to_read(Limits(), False)


def test_the_shipped_profiles_deny_creating_namespaces():
    """What lets nsbox skip bounding the namespace counters under them."""
    import json

    from nsbox.policy import profiles

    for name in L.PROFILES_WITHOUT_NAMESPACES:
        with open(profiles.find(name)) as f:
            rules = json.load(f)["syscalls"]
        denied = {n for r in rules if r["action"] == "SCMP_ACT_ERRNO" and not r.get("args")
                  for n in r["names"]}
        assert {"unshare", "setns", "clone3"} <= denied, name
        masks = {a["value"] for r in rules if "clone" in r["names"] for a in r.get("args", ())}
        assert 0x10000000 in masks, name  # clone(CLONE_NEWUSER)


def test_a_cpu_rate_without_cgroup_or_wall_is_unenforceable():
    chosen = L.enforcement(Limits(cpu=1.5), {})
    assert [name for name, _ in chosen.unenforced] == ["cpu"]
    assert "cpu" not in chosen.as_dict()


def test_without_namespaces_pids_and_tmp_cannot_be_enforced_by_rlimit_or_tmpfs():
    chosen = L.enforcement(Limits(), {}, namespaced=False)
    assert sorted(name for name, _ in chosen.unenforced) == ["inotify", "pids", "tmp"]
    assert L.enforcement(Limits(), {"pids": "cgroup2"}, namespaced=False).mechanism("pids") \
        == "cgroup2"


def test_cgroup_settings_per_version():
    limits = Limits(memory=64 << 20, cpu=1.5)
    assert L.cgroup_settings(limits, "cgroup2", "cpu") == (("cpu.max", "150000 100000", True),)
    assert L.cgroup_settings(limits, "cgroup1", "memory") == (
        ("memory.limit_in_bytes", str(64 << 20), True),)
    assert ("memory.swap.max", "0", False) in L.cgroup_settings(limits, "cgroup2", "memory")


def test_the_default_pids_limit_alone_does_not_cost_a_cgroup():
    assert L.enforcement(Limits(), {"pids": "cgroup2"}).mechanism("pids") == "rlimit"
    # Set explicitly, or alongside a limit that needs a cgroup anyway: the cgroup.
    assert L.enforcement(Limits(pids=100), {"pids": "cgroup2"}).mechanism("pids") == "cgroup2"
    both = L.enforcement(Limits(memory=1 << 30), {"pids": "cgroup1", "memory": "cgroup1"})
    assert both.mechanism("pids") == "cgroup1"
