"""Escape attempts against the default sandbox; each checks the host afterwards."""

import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import IS_ROOT, assert_denied, host_tcp_listener, nsbox_cmd, processes_with

PY = "/usr/bin/python3"  # an interpreter every test user can run inside the sandbox


def host_home():
    return os.path.expanduser("~")


@pytest.mark.parametrize("directory", ["HOME", "/etc", "/usr", "/var/tmp"])
def test_writes_outside_workspace_fail_and_leave_host_unchanged(nsbox_exec, directory):
    target_dir = host_home() if directory == "HOME" else directory
    name = f"nsbox-escape-{os.getpid()}"
    target = os.path.join(target_dir, name)
    r = nsbox_exec(f"echo started; echo pwned > '{target}'")
    assert_denied(r, expect=("Read-only file system", "Permission denied"),
                  started_marker="started")
    assert not os.path.exists(target)


def test_cannot_delete_home_contents(nsbox_exec, tmp_path):
    marker = os.path.join(host_home(), f".nsbox-keep-{os.getpid()}")
    with open(marker, "w") as f:
        f.write("keep")
    try:
        r = nsbox_exec(f"echo started; rm -f '{marker}'")
        assert_denied(r, expect="Read-only file system", started_marker="started")
        assert open(marker).read() == "keep"
    finally:
        os.unlink(marker)


def test_tmp_is_private(nsbox_exec, tmp_path):
    name = f"/tmp/nsbox-private-{os.getpid()}"
    r = nsbox_exec(f"echo inside > {name} && ls /tmp")
    assert r.returncode == 0, r.stderr
    assert not os.path.exists(name)
    # Host /tmp contents are not visible inside (only the workspace's own mount point path).
    host_only = tmp_path / "host-only"
    host_only.write_text("x")
    r = nsbox_exec(f"echo started; cat '{host_only}'")
    assert_denied(r, expect="No such file or directory", started_marker="started")
    assert r.stdout == b"started\n"


def test_tmpdir_points_at_private_tmp(nsbox_exec):
    r = nsbox_exec("echo $TMPDIR")
    assert r.stdout == b"/tmp\n"


def test_symlink_out_of_workspace_cannot_be_written_through(nsbox_exec, workspace):
    victim_dir = host_home()
    victim = os.path.join(victim_dir, f".nsbox-victim-{os.getpid()}")
    with open(victim, "w") as f:
        f.write("original")
    try:
        os.symlink(victim, workspace / "link")
        r = nsbox_exec("echo started; echo overwritten > link")
        assert_denied(r, expect="Read-only file system", started_marker="started")
        assert open(victim).read() == "original"
    finally:
        os.unlink(victim)


def test_only_sandbox_processes_are_visible(nsbox_exec):
    r = nsbox_exec("ls /proc | grep -E '^[0-9]+$' | sort -n | tr '\\n' ' '")
    pids = [int(p) for p in r.stdout.split()]
    assert pids and max(pids) < 20, r.stdout
    assert 1 in pids


def test_every_host_mount_is_read_only(nsbox_exec, workspace):
    """Submounts of / included (the recursive read-only bind must reach them)."""
    r = nsbox_exec(["cat", "/proc/self/mountinfo"])
    assert r.returncode == 0, r.stderr
    from nsbox import state
    from nsbox.plan import caches

    package_cache = caches.leaf_path(os.path.realpath(state.cache_dir()), caches.SHARED)
    ours = {str(workspace), "/tmp", "/run", "/dev", "/dev/shm", "/dev/pts", "/proc",
            package_cache}
    writable = []
    for line in r.stdout.decode().splitlines():
        fields = line.split()
        point, opts = fields[4], fields[5].split(",")
        if point in ours or point.startswith("/dev/") or point.startswith("/proc/"):
            continue
        if "rw" in opts:
            writable.append(point)
    assert writable == []


# Writes under a host submount, prints the mount table, and writes in the workspace.
READ_ONLY_PROBE = ["sh", "-c", "mkdir /sys/fs/cgroup/nsbox-probe; cat /proc/self/mountinfo; "
                               "echo ok > inside"]


def assert_host_mounts_read_only(r, workspace):
    assert r.returncode == 0, r.stderr
    assert not os.path.exists("/sys/fs/cgroup/nsbox-probe")
    assert (workspace / "inside").read_text() == "ok\n"
    for line in r.stdout.decode().splitlines():
        fields = line.split()
        if fields[4] in ("/", "/usr", "/etc", "/sys", "/sys/fs/cgroup"):
            assert "ro" in fields[5].split(","), line


def test_legacy_remount_fallback_is_read_only_too(workspace):
    env = dict(os.environ, NSBOX_TEST_LEGACY_MOUNTS="1")
    r = subprocess.run(nsbox_cmd("exec", "--workspace", str(workspace), "--", *READ_ONLY_PROBE),
                       capture_output=True, env=env, timeout=60)
    assert_host_mounts_read_only(r, workspace)


# Mounts a nosuid,nodev,noexec tmpfs on argv[1], then runs the rest with this interpreter.
MOUNT_THEN_RUN = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.mount(b"tmpfs", sys.argv[1].encode(), b"tmpfs", 2 | 4 | 8, b"mode=777") != 0:
    sys.exit("nsbox-test mount: " + os.strerror(ctypes.get_errno()))
if sys.argv[2] == "--":
    sys.exit(0)
os.execv(sys.executable, [sys.executable] + sys.argv[2:])
"""


def test_legacy_fallback_keeps_locked_flags_of_host_submounts(workspace):
    """A host mount with nosuid,nodev,noexec: remounting it read-only without those
    flags is refused in the user namespace; the run must still start."""
    point = f"/var/tmp/nsbox-locked-{os.getpid()}"
    os.mkdir(point)
    probe = (f"echo x > {point}/f; echo rc=$?; grep ' {point} ' /proc/self/mountinfo; "
             "echo ok > inside")
    argv = nsbox_cmd("exec", "--workspace", str(workspace), "--", "sh", "-c", probe)
    env = dict(os.environ, NSBOX_TEST_LEGACY_MOUNTS="1")
    mounted = False
    try:
        if IS_ROOT:
            subprocess.run([sys.executable, "-c", MOUNT_THEN_RUN, point, "--"], check=True)
            mounted = True
        else:  # the mount is made in a user namespace of our own, nsbox runs in it
            argv = ["unshare", "--user", "--map-root-user", "--mount", sys.executable,
                    "-c", MOUNT_THEN_RUN, point, *argv[1:]]
        r = subprocess.run(argv, capture_output=True, env=env, timeout=60)
        if b"nsbox-test mount:" in r.stderr or b"unshare:" in r.stderr:
            pytest.skip(f"can't make a mount to test with: {r.stderr.decode().strip()}")
        assert r.returncode == 0, r.stderr
        assert b"Read-only file system" in r.stderr and b"rc=2" in r.stdout, r
        opts = r.stdout.split(b"\n")[1].split()[5].split(b",")
        assert {b"ro", b"nosuid", b"nodev", b"noexec"} <= set(opts), r.stdout
        assert (workspace / "inside").read_text() == "ok\n"
        assert not os.path.exists(f"{point}/f")
    finally:
        if mounted:
            subprocess.run(["umount", point], check=True)
        os.rmdir(point)


# As on a kernel older than 5.12: the new mount API answers ENOSYS.
NO_MOUNT_API = """
import errno, os, sys
import pyseccomp as sc
f = sc.SyscallFilter(sc.ALLOW)
for name in ("open_tree", "move_mount", "mount_setattr"):
    f.add_rule(sc.ERRNO(errno.ENOSYS), name)
f.load()
os.execv(sys.executable, [sys.executable] + sys.argv[1:])
"""


def test_kernel_without_mount_setattr_falls_back_to_read_only_remounts(workspace):
    pytest.importorskip("pyseccomp")
    argv = nsbox_cmd("exec", "--workspace", str(workspace), "--", *READ_ONLY_PROBE)
    r = subprocess.run([sys.executable, "-c", NO_MOUNT_API, *argv[1:]], capture_output=True,
                       timeout=60)
    assert_host_mounts_read_only(r, workspace)


def _host_unix_listener(path):
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    os.chmod(path, 0o777)
    srv.listen(1)
    srv.settimeout(0.5)
    return srv


def test_host_unix_socket_under_run_is_unreachable(nsbox_exec):
    base = "/run" if IS_ROOT else "/run/lock"
    if not os.access(base, os.W_OK):
        pytest.skip(f"{base} is not writable for this user; no host socket to plant")
    path = f"{base}/nsbox-test-{os.getpid()}.sock"
    srv = _host_unix_listener(path)
    try:
        probe = (f"print('started', flush=True); import socket; "
                 f"s = socket.socket(socket.AF_UNIX); s.connect({path!r}); print('connected')")
        r = nsbox_exec([PY, "-c", probe])
        assert_denied(r, expect="No such file or directory", started_marker="started")
        assert b"connected" not in r.stdout
        with pytest.raises(socket.timeout):
            srv.accept()
    finally:
        srv.close()
        os.unlink(path)


def test_run_inside_is_empty(nsbox_exec):
    r = nsbox_exec("ls -A /run")
    assert r.returncode == 0
    assert r.stdout == b""


def test_host_loopback_tcp_is_unreachable(nsbox_exec):
    with host_tcp_listener() as probe:
        r = nsbox_exec([PY, "-c", f"print('started', flush=True); {probe}"])
        # the sandbox's own loopback: nothing listens there
        assert_denied(r, expect="Connection refused", started_marker="started")
        assert b"connected" not in r.stdout


def test_loopback_inside_works(nsbox_exec):
    probe = (
        "import socket, threading\n"
        "srv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen(1)\n"
        "port = srv.getsockname()[1]\n"
        "def serve():\n"
        "    c, _ = srv.accept(); c.sendall(c.recv(10).upper()); c.close()\n"
        "threading.Thread(target=serve).start()\n"
        "cli = socket.create_connection(('127.0.0.1', port)); cli.sendall(b'ping')\n"
        "print(cli.recv(10).decode())\n"
    )
    r = nsbox_exec([PY, "-c", probe])
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"PING\n"


def test_orphans_die_when_command_exits(nsbox_exec):
    marker = f"31{os.getpid() % 100000:05d}"
    r = nsbox_exec(f"setsid sleep {marker} & nohup sleep {marker} >/dev/null 2>&1 & echo started")
    assert r.stdout == b"started\n"
    deadline = time.monotonic() + 5
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_with(marker) == []


def test_sigkill_of_nsbox_kills_the_sandbox(workspace):
    marker = f"32{os.getpid() % 100000:05d}"
    proc = subprocess.Popen(nsbox_cmd("exec", "--workspace", str(workspace), "--", "sh", "-c",
                                      f"sleep {marker} & echo ready; wait"),
                            stdout=subprocess.PIPE)
    assert proc.stdout.readline() == b"ready\n"
    assert processes_with(marker)
    proc.kill()
    proc.wait(timeout=10)
    deadline = time.monotonic() + 5
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_with(marker) == []


def test_twenty_sandboxes_in_parallel(tmp_path):
    results = {}

    def one(i):
        ws = tmp_path / f"ws{i}"
        ws.mkdir()
        r = subprocess.run(nsbox_cmd("exec", "--workspace", str(ws), "--", "sh", "-c",
                                     f"echo {i} > n; cat n"), capture_output=True, timeout=120)
        results[i] = (r.returncode, r.stdout, (ws / "n").read_text())

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: (0, f"{i}\n".encode(), f"{i}\n") for i in range(20)}


def test_hostname_and_ids(nsbox_exec):
    r = nsbox_exec("hostname; id -u; id -g")
    assert r.stdout.split() == [b"nsbox", str(os.getuid()).encode(), str(os.getgid()).encode()]


def test_no_capabilities_inside(nsbox_exec):
    r = nsbox_exec("grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status")
    assert r.returncode == 0
    for line in r.stdout.decode().splitlines():
        assert line.split()[1] == "0000000000000000", line


def test_no_new_privs_is_set(nsbox_exec):
    r = nsbox_exec("grep NoNewPrivs /proc/self/status")
    assert r.stdout.split() == [b"NoNewPrivs:", b"1"]


def test_inherited_fds_are_closed(workspace):
    r_fd, w_fd = os.pipe()
    try:
        r = subprocess.run(nsbox_cmd("exec", "--workspace", str(workspace), "--", "ls", "/proc/self/fd"),
                           capture_output=True, pass_fds=(w_fd,), timeout=60)
        fds = sorted(int(x) for x in r.stdout.split())
        assert w_fd not in fds
        assert all(fd <= 3 for fd in fds), fds  # 0-2 and ls's own directory fd
    finally:
        os.close(r_fd)
        os.close(w_fd)


def test_blocked_user_namespaces_give_125_and_name_the_setting(workspace):
    # Inside a fresh user namespace we own the per-namespace limit, so setting it
    # to 0 blocks nested user namespaces for real.
    script = ("echo 0 > /proc/sys/user/max_user_namespaces && exec \"$@\"")
    r = subprocess.run(["unshare", "--user", "--map-root-user", "sh", "-c", script, "sh",
                        *nsbox_cmd("exec", "--workspace", str(workspace), "--", "true")],
                       capture_output=True, timeout=60)
    if b"max_user_namespaces" in r.stderr and r.returncode != 125:
        pytest.skip(f"cannot set the limit here: {r.stderr!r}")
    assert r.returncode == 125, r.stderr
    assert b"max_user_namespaces" in r.stderr
    assert b"sysctl" in r.stderr


def test_the_new_mount_api_is_found_on_kernels_that_have_it():
    """Also unprivileged: the probe must not mistake a permission check for a missing call."""
    from nsbox.kernel import mounts

    release = tuple(int(x) for x in os.uname().release.split(".")[:2])
    if release < (5, 12):
        pytest.skip(f"kernel {os.uname().release} predates mount_setattr")
    assert mounts.has_mount_api()
