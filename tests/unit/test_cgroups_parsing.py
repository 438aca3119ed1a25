"""Finding our own cgroup from mountinfo and /proc/self/cgroup text (no cgroup touched)."""

from nsbox.kernel import cgroups

HYBRID_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
HYBRID_CGROUP = "4:memory:/agents/a1\n3:cpu,cpuacct:/\n2:pids:/\n0::/user.slice\n"


def test_cgroup_mounts_name_versions_and_v1_controllers(tmp_path):
    path = tmp_path / "mountinfo"
    path.write_text(HYBRID_MOUNTINFO)
    found = {mount: (version, set(ctl)) for version, mount, _, ctl in cgroups._cgroup_mounts(str(path))}
    assert found == {
        "/sys/fs/cgroup/cpu,cpuacct": ("cgroup1", {"cpu"}),
        "/sys/fs/cgroup/memory": ("cgroup1", {"memory"}),
        "/sys/fs/cgroup/pids": ("cgroup1", {"pids"}),
        "/sys/fs/cgroup/unified": ("cgroup2", set()),
    }


def test_own_groups_per_hierarchy(tmp_path):
    path = tmp_path / "cgroup"
    path.write_text(HYBRID_CGROUP)
    own = cgroups._own_groups(str(path))
    assert own == {"memory": "/agents/a1", "cpu": "/", "cpuacct": "/", "pids": "/",
                   "": "/user.slice"}


def test_join_respects_the_mount_root():
    assert cgroups._join("/sys/fs/cgroup", "/", "/user.slice/a") == "/sys/fs/cgroup/user.slice/a"
    assert cgroups._join("/sys/fs/cgroup", "/", "/") == "/sys/fs/cgroup"
    # A container's mount shows only its own subtree.
    assert cgroups._join("/sys/fs/cgroup", "/docker/x", "/docker/x/sub") == "/sys/fs/cgroup/sub"
    assert cgroups._join("/sys/fs/cgroup", "/docker/x", "/elsewhere") is None
