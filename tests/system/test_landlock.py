"""Landlock against the real kernel: on its own, and as the only isolation.

Every escape is tried for real from inside a sandbox; each test checks both the
denial and that nothing changed on the host.
"""

import os
import socket
import subprocess
import sys
import tempfile
import textwrap

import pytest

from conftest import assert_denied, host_tcp_listener, needs_landlock, nsbox_cmd

PY = sys.executable
pytestmark = needs_landlock(1)


@pytest.fixture
def host_dir():
    """A host directory outside the workspace and outside /tmp (which sandboxes replace)."""
    d = tempfile.mkdtemp(prefix="nsbox-host-", dir="/var/tmp")
    with open(os.path.join(d, "victim"), "w") as f:
        f.write("original\n")
    yield d
    subprocess.run(["rm", "-rf", d], check=False)


def _host_state(d: str) -> dict:
    state = {}
    for name in sorted(os.listdir(d)):
        with open(os.path.join(d, name), "rb") as f:
            state[name] = f.read()
    return state


# Every kind of write Landlock handles, against a host directory; one line each.
WRITE_PROBE = textwrap.dedent("""
    import os, sys
    d = sys.argv[1]
    v = os.path.join(d, "victim")
    attempts = {
        "overwrite": lambda: open(v, "w").write("pwned"),
        "append": lambda: open(v, "a").write("pwned"),
        "truncate": lambda: os.truncate(v, 0),
        "create": lambda: open(os.path.join(d, "new"), "x"),
        "mkdir": lambda: os.mkdir(os.path.join(d, "newdir")),
        "symlink": lambda: os.symlink("/etc/passwd", os.path.join(d, "link")),
        "mkfifo": lambda: os.mkfifo(os.path.join(d, "fifo")),
        "hardlink": lambda: os.link(v, os.path.join(d, "hard")),
        "rename": lambda: os.rename(v, os.path.join(d, "moved")),
        "unlink": lambda: os.unlink(v),
    }
    for name, attempt in attempts.items():
        try:
            attempt()
            print(name, "ALLOWED")
        except OSError as err:
            print(name, "denied", err.errno)
""")


def _write_results(r) -> dict:
    return {line.split()[0]: line.split()[1:] for line in r.stdout.decode().splitlines()}


# --- Landlock alone, under mounts that expose the host read-write ---------------------

def test_landlock_alone_blocks_writes_when_the_root_is_mounted_writable(
        nsbox_exec, workspace, host_dir):
    before = _host_state(host_dir)
    env = dict(os.environ, NSBOX_TEST_WRITABLE_ROOT="1")
    # Control: the mount really is read-write, so only Landlock stands in the way.
    r = nsbox_exec(f"grep -q ' / / rw' /proc/self/mountinfo && echo root-rw >&2 && "
                   f"echo ok > inside && {PY} -c '{WRITE_PROBE}' {host_dir}", env=env)
    assert r.returncode == 0, r.stderr
    assert b"NSBOX_TEST_WRITABLE_ROOT" in r.stderr and b"WARNING" in r.stderr
    assert b"root-rw" in r.stderr
    results = _write_results(r)
    assert len(results) == 10
    # EACCES from Landlock, not EROFS from a mount.
    assert all(res == ["denied", "13"] for res in results.values()), results
    assert _host_state(host_dir) == before
    assert (workspace / "inside").read_text() == "ok\n"


def test_full_isolation_writes_outside_workspace_fail(nsbox_exec, host_dir):
    before = _host_state(host_dir)
    r = nsbox_exec([PY, "-c", WRITE_PROBE, host_dir])
    assert r.returncode == 0, r.stderr
    results = _write_results(r)
    assert len(results) == 10 and all(res[0] == "denied" for res in results.values()), results
    assert _host_state(host_dir) == before


# --- Landlock-only isolation ------------------------------------------------------------

def test_landlock_mode_reports_itself_and_writes_only_the_workspace(
        nsbox_exec, workspace, host_dir):
    before = _host_state(host_dir)
    r = nsbox_exec(f"echo ok > inside && {PY} -c '{WRITE_PROBE}' {host_dir}",
                   "--isolation", "landlock")
    assert r.returncode == 0, r.stderr
    assert b"isolation: landlock only" in r.stderr
    results = _write_results(r)
    assert len(results) == 10
    assert all(res == ["denied", "13"] for res in results.values()), results
    assert _host_state(host_dir) == before
    assert (workspace / "inside").read_text() == "ok\n"


def test_landlock_mode_tmpdir_is_private_and_removed(nsbox_exec):
    r = nsbox_exec('echo "$TMPDIR"; stat -c %a "$TMPDIR"; echo x > "$TMPDIR/f"; '
                   'mkdir "$TMPDIR/locked"; touch "$TMPDIR/locked/f"; chmod 0 "$TMPDIR/locked"; '
                   'touch /tmp/nsbox-escape-$$ 2>/dev/null && echo tmp-writable; true',
                   "--isolation", "landlock")
    assert r.returncode == 0, r.stderr
    tmpdir, mode = r.stdout.decode().split()
    assert tmpdir.startswith("/") and os.path.basename(tmpdir).startswith("nsbox-")
    assert mode == "700"
    assert not os.path.lexists(tmpdir)


def test_landlock_mode_denies_tcp_to_a_host_listener(nsbox_exec):
    with host_tcp_listener() as probe:
        r = nsbox_exec([PY, "-c", f"print('started', flush=True); {probe}"],
                       "--isolation", "landlock")
        # EPERM: seccomp refuses inet sockets; EACCES: Landlock refuses the connect
        assert_denied(r, expect=("Operation not permitted", "Permission denied"),
                      started_marker="started")
        assert b"connected" not in r.stdout


@needs_landlock(6)
def test_landlock_mode_cannot_signal_host_processes(nsbox_exec):
    victim = subprocess.Popen(["sleep", "60"])
    try:
        r = nsbox_exec(f"echo started; kill -TERM {victim.pid}", "--isolation", "landlock")
        assert_denied(r, expect="Operation not permitted", started_marker="started")
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()


@needs_landlock(6)
def test_landlock_mode_cannot_reach_host_abstract_sockets(nsbox_exec):
    name = f"\0nsbox-test-{os.getpid()}"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(name)
    srv.listen(1)
    try:
        probe = ("print('started', flush=True); import socket; "
                 f"s = socket.socket(socket.AF_UNIX); s.connect({name!r}); print('connected')")
        r = nsbox_exec([PY, "-c", probe], "--isolation", "landlock")
        assert_denied(r, expect="Operation not permitted", started_marker="started")
        assert b"connected" not in r.stdout
        srv.setblocking(False)
        with pytest.raises(BlockingIOError):
            srv.accept()
    finally:
        srv.close()


def test_landlock_mode_kills_what_the_command_leaves_behind(nsbox_exec, workspace):
    # An orphan (its parent shell exits first) and a plain background child; both
    # keep stdout open, so nsbox only returns once they are gone.
    r = nsbox_exec("sh -c 'sleep 1000 & echo $! > orphan' ; sleep 1001 & echo $! > child",
                   "--isolation", "landlock", timeout=30)
    assert r.returncode == 0, r.stderr
    for name in ("orphan", "child"):
        pid = int((workspace / name).read_text())
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                assert b"sleep\0100" not in f.read()
        except FileNotFoundError:
            pass


# --- Hidden paths -----------------------------------------------------------------------

HIDDEN_DRIVER = textwrap.dedent("""
    import sys
    from nsbox.launch import caller
    from nsbox.plan import host, isolation, prepare
    from nsbox.policy.model import Policy
    from nsbox.record import replace
    ws, secret, mode = sys.argv[1:4]
    policy = Policy(workspace=ws, isolation=mode)
    plan = prepare.prepare(sys.argv[4:], policy)
    rules = isolation.ruleset(isolation.resolve(policy, host.facts()), policy, (ws,), plan.private_tmp,
                              hidden=(secret,))
    plan = replace(plan, landlock=rules)
    sys.exit(caller.run(plan))
""")


@pytest.mark.parametrize("mode", ["full", "landlock"])
def test_hidden_path_is_unreadable_and_its_siblings_are_not(workspace, host_dir, mode):
    secret = os.path.join(host_dir, "secret")
    os.mkdir(secret)
    with open(os.path.join(secret, "key"), "w") as f:
        f.write("s3cret\n")
    script = (f"cat {secret}/key; cat {host_dir}/victim; "
              f"ls {secret} >/dev/null 2>&1 && echo listable; true")
    r = subprocess.run([PY, "-c", HIDDEN_DRIVER, str(workspace), secret, mode,
                        "sh", "-c", script], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert b"s3cret" not in r.stdout
    assert b"Permission denied" in r.stderr
    assert b"original" in r.stdout
    # Full isolation keeps names listable: there the mounts mask the hidden path.
    assert (b"listable" in r.stdout) == (mode == "full")


# --- Landlock missing, user namespaces missing ------------------------------------------

# Makes landlock_create_ruleset fail with ENOSYS, as on a kernel without Landlock.
NO_LANDLOCK = textwrap.dedent("""
    import errno, os, sys
    import pyseccomp as sc
    f = sc.SyscallFilter(sc.ALLOW)
    f.add_rule(sc.ERRNO(errno.ENOSYS), "landlock_create_ruleset")
    f.load()
    os.execv(sys.executable, [sys.executable] + sys.argv[1:])
""")


def _without_landlock(workspace, *opts):
    argv = nsbox_cmd("exec", "--workspace", str(workspace), *opts, "--", "true")
    return subprocess.run([PY, "-c", NO_LANDLOCK, *argv[1:]], capture_output=True, timeout=60)


def test_missing_landlock_fails_closed(workspace):
    pytest.importorskip("pyseccomp")
    r = _without_landlock(workspace)
    assert r.returncode == 125, r.stderr
    assert b"CONFIG_SECURITY_LANDLOCK" in r.stderr and b"lsm=" in r.stderr
    assert b"--best-effort" in r.stderr


def test_missing_landlock_with_best_effort_runs_and_says_so(workspace):
    pytest.importorskip("pyseccomp")
    r = _without_landlock(workspace, "--best-effort")
    assert r.returncode == 0, r.stderr
    assert b"best effort: running without Landlock" in r.stderr


BLOCK_USERNS = "echo 0 > /proc/sys/user/max_user_namespaces && exec \"$@\""


def test_auto_falls_back_to_landlock_where_user_namespaces_are_blocked(workspace, host_dir):
    # Inside a fresh user namespace we own its limit: 0 blocks nested ones for real.
    before = _host_state(host_dir)
    argv = nsbox_cmd("exec", "--workspace", str(workspace), "--isolation", "auto", "--",
                     "sh", "-c", f"echo ok > inside; echo started; echo pwned > {host_dir}/victim")
    r = subprocess.run(["unshare", "--user", "--map-root-user", "sh", "-c", BLOCK_USERNS,
                        "sh", *argv], capture_output=True, timeout=60)
    if r.returncode != 0 and b"max_user_namespaces" in r.stderr and b"nsbox" not in r.stderr:
        pytest.skip(f"cannot block user namespaces here: {r.stderr!r}")
    assert b"isolation: landlock only" in r.stderr
    assert b"max_user_namespaces" in r.stderr  # the reason it fell back
    # the write outside the workspace failed
    assert_denied(r, expect="Permission denied", started_marker="started")
    assert (workspace / "inside").read_text() == "ok\n"
    assert _host_state(host_dir) == before


def test_auto_is_full_where_user_namespaces_work(nsbox_exec):
    r = nsbox_exec("hostname", "--isolation", "auto")
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"nsbox\n"
    assert b"isolation:" not in r.stderr
