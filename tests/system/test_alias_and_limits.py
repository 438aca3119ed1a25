"""The runner's side out of reach: hidden paths through a second mount, /dev/shm under
the tmp limit, memory caps that say what they are, and a bounded share of the user's
inotify instances. Every denial test also shows that the sandbox started.
"""

import contextlib
import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from conftest import IS_ROOT, nsbox_cmd
from nsbox.plan import host
from nsbox.plan import limits as plan_limits
from nsbox.policy.limits import Limits

SECRET = "TOPSECRET-7f3a"


def env_with(**extra) -> dict:
    env = dict(os.environ)
    env.update(extra)
    return env


@pytest.fixture
def fake_home():
    """A home directory under /var/tmp with ~/.ssh/secret, and an empty second mount point."""
    base = tempfile.mkdtemp(prefix="nsbox-alias-", dir="/var/tmp")
    try:
        home, alias = os.path.join(base, "home"), os.path.join(base, "alias")
        os.makedirs(os.path.join(home, ".ssh", "keys"))
        os.mkdir(alias)
        for name in (".ssh/secret", ".ssh/keys/key", ".netrc"):
            with open(os.path.join(home, name), "w") as f:
                f.write(SECRET + "\n")
        with open(os.path.join(home, "notes"), "w") as f:
            f.write("notes readable\n")
        yield home, alias
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def host_bind(source: str, target: str):
    subprocess.run(["mount", "--bind", source, target], check=True)
    try:
        yield
    finally:
        if subprocess.run(["umount", target]).returncode != 0:
            subprocess.run(["umount", "-l", target])


def probe(alias: str) -> str:
    return (f"cat {alias}/.ssh/secret {alias}/.ssh/keys/key {alias}/.netrc; ls {alias}/.ssh; "
            f"echo started; cat {alias}/notes")


def assert_hidden_and_started(r) -> None:
    """No secret and no secret's name came out before `started`; what is not hidden reads."""
    out = r.stdout.decode()
    before = out.split("started")[0]
    assert SECRET not in out and "secret" not in before and "key" not in before, out
    assert "started" in out and "notes readable" in out, (out, r.stderr)
    assert r.returncode == 0, r.stderr


# --- hidden means hidden at every path ------------------------------------------------

@pytest.mark.parametrize("isolation", ["full", "landlock"])
def test_a_hidden_directory_stays_hidden_through_a_second_mount(nsbox_exec, fake_home, isolation,
                                                                tmp_path):
    if not IS_ROOT:
        pytest.skip("a bind mount on the host needs root; the alias finder is unit-tested on "
                    "recorded mountinfo, and the private-namespace test below runs it for real")
    home, alias = fake_home
    status = tmp_path / "status.json"
    with host_bind(home, alias):
        r = nsbox_exec(["sh", "-c", probe(alias)], "--isolation", isolation,
                       "--json-status", str(status), env=env_with(HOME=home))
    assert_hidden_and_started(r)
    if isolation == "full":  # a mask there, as on the original path
        assert f"{alias}/.ssh" in json.loads(status.read_text())["protections"]["hidden"]


def test_a_writable_root_inside_an_alias_of_a_hidden_path_is_refused(nsbox_exec, fake_home):
    if not IS_ROOT:
        pytest.skip("a bind mount on the host needs root")
    home, alias = fake_home
    os.mkdir(os.path.join(home, ".ssh", "project"))
    with host_bind(home, alias):
        r = subprocess.run(nsbox_cmd("exec", "--workspace", f"{alias}/.ssh/project", "--", "true"),
                           capture_output=True, env=env_with(HOME=home), timeout=60)
    assert r.returncode == 125
    assert f"{alias}/.ssh".encode() in r.stderr and f"{home}/.ssh".encode() in r.stderr


BIND_AND_EXEC = ("import ctypes, os, sys\n"
                 "libc = ctypes.CDLL(None, use_errno=True)\n"
                 "if libc.mount(sys.argv[1].encode(), sys.argv[2].encode(), None, 4096, None):\n"
                 "    sys.exit('bind: ' + os.strerror(ctypes.get_errno()))\n"
                 "os.execvp(sys.argv[3], sys.argv[3:])\n")


def in_private_mount_namespace(source: str, target: str, argv: list, env: dict):
    """Run argv (with no capabilities) where `source` is also bound at `target`: in a user
    and mount namespace of the test's own, so any user can, and the host is untouched."""
    if not (shutil.which("unshare") and shutil.which("setpriv")):
        pytest.skip("needs unshare and setpriv (util-linux)")
    r = subprocess.run(["unshare", "--user", "--map-current-user", "--keep-caps", "--mount",
                        "--propagation", "private", sys.executable, "-c", BIND_AND_EXEC, source,
                        target, "setpriv", "--inh-caps=-all", "--ambient-caps=-all", *argv],
                       capture_output=True, env=env, timeout=60)
    if b"bind:" in r.stderr or b"unshare:" in r.stderr:
        pytest.skip(f"no private user and mount namespace here: {r.stderr.decode().strip()}")
    return r


@pytest.mark.parametrize("isolation", ["full", "landlock"])
def test_the_alias_is_hidden_for_any_user_in_a_private_mount_namespace(workspace, fake_home,
                                                                        isolation):
    home, alias = fake_home
    r = in_private_mount_namespace(home, alias, nsbox_cmd(
        "exec", "--workspace", str(workspace), "--isolation", isolation, "--",
        "sh", "-c", probe(alias)), env_with(HOME=home))
    assert_hidden_and_started(r)


@pytest.mark.parametrize("isolation", ["full", "landlock"])
def test_a_mount_of_a_part_of_a_hidden_directory_is_hidden_whole(workspace, fake_home, isolation):
    home, alias = fake_home
    r = in_private_mount_namespace(os.path.join(home, ".ssh", "keys"), alias, nsbox_cmd(
        "exec", "--workspace", str(workspace), "--isolation", isolation, "--",
        "sh", "-c", f"cat {alias}/key; ls {alias}; echo started; cat {home}/notes"),
        env_with(HOME=home))
    assert_hidden_and_started(r)


# --- /dev/shm under the tmp limit ------------------------------------------------------

def test_dev_shm_counts_against_the_tmp_limit_and_the_host_is_untouched(nsbox_exec):
    host_before = os.statvfs("/dev/shm")
    name = f"nsbox-fill-{os.getpid()}"
    r = nsbox_exec(f"echo started; dd if=/dev/zero of=/dev/shm/{name} bs=1M count=64; "
                   f"echo dd=$?; du -k /dev/shm/{name}; "
                   "dd if=/dev/zero of=/tmp/more bs=1M count=1; echo tmp=$?",
                   "--limit", "tmp=16M")
    out, err = r.stdout.decode(), r.stderr.decode()
    assert "started" in out and "dd=1" in out, (out, err)
    assert "No space left on device" in err
    assert int(out.split("dd=1")[1].split()[0]) <= 16 * 1024
    assert "tmp=1" in out  # /tmp and /dev/shm share the one 16M
    assert not os.path.exists(f"/dev/shm/{name}")
    host_after = os.statvfs("/dev/shm")
    assert abs(host_after.f_bfree - host_before.f_bfree) * host_after.f_frsize < 8 << 20


# --- memory: a limit for the sandbox, or a cap per process that says so ---------------

def memory_by_cgroup() -> bool:
    plan = plan_limits.plan(Limits(memory=256 << 20), host.facts(), best_effort=True)
    return plan.enforcement.mechanism("memory") in ("cgroup1", "cgroup2")


def memory_flags() -> tuple:
    return () if memory_by_cgroup() else ("--best-effort",)


def test_a_memory_limit_without_a_cgroup_fails_closed_and_names_the_fix(nsbox_exec):
    r = nsbox_exec(["echo", "started"], "--limit", "memory=256M")
    if memory_by_cgroup():
        assert r.returncode == 0 and r.stdout == b"started\n"  # a limit for the whole sandbox
        return
    assert r.returncode == 125 and r.stdout == b""
    err = r.stderr.decode()
    assert "cannot enforce limit memory=256M for the sandbox as a whole" in err
    assert "--best-effort" in err and "RLIMIT_DATA = 256M per process" in err
    r = nsbox_exec(["echo", "started"], "--best-effort", "--limit", "memory=256M")
    assert r.returncode == 0 and r.stdout == b"started\n"
    assert "caps each process (RLIMIT_DATA), not the sandbox as a whole" in r.stderr.decode()


@pytest.mark.skipif(not shutil.which("node"), reason="node is not installed")
def test_node_starts_under_a_memory_cap(nsbox_exec):
    r = nsbox_exec(["node", "-e", "console.log('node ran')"], *memory_flags(),
                   "--limit", "memory=256M")
    assert r.returncode == 0 and r.stdout == b"node ran\n", r.stderr


@pytest.mark.skipif(not shutil.which("java"),
                    reason="java is not installed (apt-get install default-jre-headless)")
def test_java_starts_under_a_memory_cap(nsbox_exec):
    # Java commits 1/64 of RAM for its heap at start; RLIMIT_DATA counts that, so the
    # cap must exceed it (RLIMIT_AS would need about 4G whatever the RAM).
    ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    cap = max(1 << 30, ram // 64 + (256 << 20)) >> 20
    r = nsbox_exec(["java", "-version"], *memory_flags(), "--limit", f"memory={cap}M")
    assert r.returncode == 0 and b"version" in r.stderr, r.stderr


HOGS = ("echo started; for i in 1 2 3 4; do python3 -c 'chunks = []\n"
        "for _ in range(1024):\n"
        "    chunks.append(bytearray(1 << 20))\n"
        "print(\"allocated 1G\")' & done; wait")


def test_a_memory_hog_in_several_processes_is_stopped(nsbox_exec):
    r = nsbox_exec(HOGS, *memory_flags(), "--limit", "memory=128M", timeout=120)
    out, err = r.stdout.decode(), r.stderr.decode()
    assert out.startswith("started") and "allocated 1G" not in out, (out, err)
    if not memory_by_cgroup():  # each process hits its own cap
        assert err.count("MemoryError") == 4, err


# --- per-user kernel counters: a bounded share --------------------------------------

INOTIFY_HOG = ("import ctypes, os, sys\n"
               "libc = ctypes.CDLL(None, use_errno=True)\n"
               "print('started', flush=True)\n"
               "n = 0\n"
               "while n < 10000 and libc.inotify_init1(0) >= 0:\n"
               "    n += 1\n"
               "print(n, os.strerror(ctypes.get_errno()), flush=True)\n"
               "sys.stdin.read()\n")


def host_can_make_an_inotify_instance() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(0)
    if fd < 0:
        return False
    os.close(fd)
    return True


@pytest.mark.parametrize("options, bound", [(("--limit", "inotify=8"), 8), ((), 64)])
def test_inotify_instances_stop_at_the_sandbox_share_and_the_host_keeps_some(workspace, options,
                                                                             bound):
    proc = subprocess.Popen(nsbox_cmd("exec", "--workspace", str(workspace), *options, "--",
                                      "python3", "-c", INOTIFY_HOG),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"started\n"
        count, reason = proc.stdout.readline().decode().split(" ", 1)
        # The sandbox's share, or less when the user's other processes hold some already.
        assert 0 < int(count) <= bound and int(count) < 10000, (count, reason)
        assert reason.strip() == "Too many open files"
        assert host_can_make_an_inotify_instance()  # while the sandbox holds its share
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    assert proc.returncode == 0, proc.stderr.read()
    assert host_can_make_an_inotify_instance()


def test_json_status_and_check_say_what_each_limit_bounds(workspace, tmp_path):
    status = tmp_path / "status.json"
    r = subprocess.run(nsbox_cmd("exec", "--workspace", str(workspace), *memory_flags(),
                                 "--json-status", str(status), "--limit", "memory=256M",
                                 "--", "echo", "started"), capture_output=True, timeout=60)
    assert r.returncode == 0 and r.stdout == b"started\n", r.stderr
    record = json.loads(status.read_text())
    memory = record["limits"]["memory"]
    if memory_by_cgroup():
        assert memory["scope"] == "sandbox"
    else:
        assert memory == {"value": "256M", "mechanism": "rlimit", "scope": "per process",
                          "rlimit": "RLIMIT_DATA"}
    assert record["limits"]["inotify"] == {"value": "64", "mechanism": "userns",
                                           "scope": "sandbox"}
    shares = record["limit_shares"]
    assert shares["max_inotify_instances"] == 64 and shares["max_inotify_watches"] >= 1
    assert shares["RLIMIT_MSGQUEUE"] >= 1
    check = json.loads(subprocess.run(nsbox_cmd("check", "--json"), capture_output=True,
                                      timeout=60).stdout)
    assert check["limits"]["scopes"]["memory"] == ("sandbox" if memory_by_cgroup()
                                                   else "per process")


def test_namespace_counts_get_a_share_when_the_profile_lets_the_command_create_namespaces(
        nsbox_exec, tmp_path):
    """The shipped profiles deny creating namespaces, so only a custom one needs the bound."""
    profile = tmp_path / "custom.json"
    profile.write_text(open(os.path.join(os.path.dirname(__file__), "..", "..",
                                         "seccomp_profiles", "default.json")).read())
    with open("/proc/sys/user/max_user_namespaces") as f:
        host = int(f.read())
    r = nsbox_exec(["cat", "/proc/sys/user/max_user_namespaces"], "--seccomp", str(profile))
    assert r.returncode == 0 and int(r.stdout) == max(1, host // 2), r.stderr


def test_another_mount_of_the_home_is_a_broad_workspace_too(workspace, fake_home):
    home, alias = fake_home
    r = in_private_mount_namespace(home, alias, nsbox_cmd(
        "exec", "--workspace", alias, "--", "sh", "-c", "echo started; echo x >> .bashrc"),
        env_with(HOME=home))
    assert r.returncode == 125 and b"--allow-broad-workspace" in r.stderr, r.stderr
    assert alias.encode() in r.stderr and b"started" not in r.stdout
