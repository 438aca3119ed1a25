"""A command may write what a process may write about itself (its /proc files) and
reopen its inherited std fds by name, whatever file the caller connected them to;
nothing else becomes writable by that."""

import os
import subprocess
import tempfile

import pytest

from conftest import needs_landlock, nsbox_cmd

PY = "/usr/bin/python3"  # an interpreter every test user can run inside the sandbox


pytestmark = needs_landlock(1)
MODES = {"full": ("--isolation", "full"), "landlock": ("--isolation", "landlock")}


@pytest.fixture
def host_dir():
    """Outside the workspace and outside /tmp (which the sandbox replaces)."""
    d = tempfile.mkdtemp(prefix="nsbox-std-", dir="/var/tmp")
    os.chmod(d, 0o755)
    with open(os.path.join(d, "victim"), "w") as f:
        f.write("original\n")
    yield d
    subprocess.run(["rm", "-rf", d], check=False)


def run(workspace, mode, cmd, stdin=subprocess.DEVNULL, stdout=None, stderr=None):
    argv = nsbox_cmd("exec", "--workspace", str(workspace), *MODES[mode], "--", "sh", "-c", cmd)
    return subprocess.run(argv, stdin=stdin, stdout=stdout or subprocess.PIPE,
                          stderr=stderr or subprocess.PIPE, timeout=60)


@pytest.mark.parametrize("mode", MODES)
def test_std_fds_reopen_to_a_log_file_outside_the_roots(workspace, host_dir, mode):
    log, victim = os.path.join(host_dir, "log"), os.path.join(host_dir, "victim")
    cmd = ("echo a >> /dev/stdout; echo b | tee -a /dev/stderr >/dev/null; "
           "echo c >> /proc/self/fd/1; echo d >> /proc/self/fd/2; "
           f"echo x >> {victim}; echo victim=$?; echo y >> /proc/self/fd/0; echo stdin=$?; "
           f"echo z >> /proc/self/root{victim}; echo root=$?")
    with open(log, "ab") as out, open(victim, "rb") as stdin:
        r = run(workspace, mode, cmd, stdin=stdin, stdout=out, stderr=out)
    text = open(log).read()
    assert r.returncode == 0, text
    for line in ("a", "b", "c", "d", "victim=2", "stdin=2", "root=2"):
        assert line + "\n" in text, text
    # A different host file, and a file only read through stdin, stay unwritable.
    assert open(victim).read() == "original\n"


@pytest.mark.parametrize("mode", MODES)
def test_redirect_to_dev_stdout_truncates_like_anywhere(workspace, host_dir, mode):
    log = os.path.join(host_dir, "log")
    with open(log, "wb") as out:
        out.write(b"old contents\n")
        out.flush()
        r = run(workspace, mode, "echo hi > /dev/stdout", stdout=out)
    assert r.returncode == 0, r.stderr
    assert open(log).read() == "hi\n"


# Written about itself: comm, oom_score_adj upward, another thread's name; then the
# same for other processes, which must fail.
OWN_FILES = r"""
echo renamed > /proc/self/comm && read c < /proc/self/comm && echo comm=$c
echo 500 > /proc/self/oom_score_adj && echo oom=$(cat /proc/self/oom_score_adj)
echo x > /proc/thread-self/comm && echo thread-self=ok
echo x > /proc/1/comm; echo pid1=$?
echo 900 > /proc/1/oom_score_adj; echo pid1oom=$?
sleep 30 & child=$!
echo 900 > /proc/$child/oom_score_adj; echo child=$?
echo childoom=$(cat /proc/$child/oom_score_adj)
kill $child
echo 900 > /proc/$HOSTPID/oom_score_adj; echo host=$?
echo 1 > /proc/sys/vm/overcommit_memory; echo sys=$?
"""


@pytest.mark.parametrize("mode", MODES)
def test_command_writes_its_own_proc_files_only(workspace, mode):
    host = subprocess.Popen(["sleep", "60"])
    try:
        before = open(f"/proc/{host.pid}/oom_score_adj").read()
        r = run(workspace, mode, f"HOSTPID={host.pid}; " + OWN_FILES)
        out = r.stdout.decode()
        for line in ("comm=renamed", "oom=500", "thread-self=ok", "pid1=2", "pid1oom=2",
                     "child=2", "childoom=500", "host=2", "sys=2"):
            assert line + "\n" in out, (out, r.stderr)
        assert open(f"/proc/{host.pid}/oom_score_adj").read() == before
    finally:
        host.kill()
        host.wait()


THREAD_NAME = """
import ctypes, threading, time
libc = ctypes.CDLL(None)
t = threading.Thread(target=time.sleep, args=(1,))
t.start()
assert libc.pthread_setname_np(ctypes.c_ulong(t.ident), b"worker") == 0
print(open(f"/proc/self/task/{t.native_id}/comm").read().strip())
"""


@pytest.mark.parametrize("mode", MODES)
def test_pthread_setname_np_on_another_thread(workspace, mode):
    argv = nsbox_cmd("exec", "--workspace", str(workspace), *MODES[mode], "--",
                     PY, "-c", THREAD_NAME)
    r = subprocess.run(argv, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"worker\n"
