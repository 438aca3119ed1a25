"""seccomp end to end: denied calls fail with EPERM inside a sandbox, real work still runs."""

import errno
import json
import os
import platform
import subprocess
import sys
import textwrap
import zipfile

import pytest

from conftest import nsbox_cmd

PY = "/usr/bin/python3"  # readable by the unprivileged test user too
X86_64 = platform.machine() == "x86_64"
needs_x86_64 = pytest.mark.skipif(not X86_64, reason="syscall numbers below are x86_64's")

# Runs inside the sandbox: call each syscall by number, print {name: errno or 0}.
SYSCALL_PROBE = textwrap.dedent("""
    import ctypes, json, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    out = {}
    for name, nr, args in json.loads(sys.argv[1]):
        ctypes.set_errno(0)
        ret = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
        if ret == 0 and name.startswith("clone"):
            os._exit(0)  # a child that escaped the filter: leave quietly
        out[name] = ctypes.get_errno() if ret == -1 else 0
    print(json.dumps(out))
""")

# name, x86_64 number, args: each must fail with EPERM under the default profile.
DENIED = [
    ("mount", 165, [0, 0, 0, 0, 0]), ("umount2", 166, [0, 0]), ("pivot_root", 155, [0, 0]),
    ("open_tree", 428, [-100, 0, 0]), ("move_mount", 429, [0, 0, 0, 0, 0]),
    ("fsopen", 430, [0, 0]), ("fsconfig", 431, [0, 0, 0, 0, 0]), ("fsmount", 432, [0, 0, 0]),
    ("fspick", 433, [0, 0, 0]), ("mount_setattr", 442, [0, 0, 0, 0, 0]),
    ("setns", 308, [0, 0]), ("unshare", 272, [0x10000000]),
    ("clone_newuser", 56, [0x10000000 | 17, 0, 0, 0, 0]),
    ("clone_newns", 56, [0x00020000 | 17, 0, 0, 0, 0]),
    ("clone_newnet", 56, [0x40000000 | 17, 0, 0, 0, 0]),
    ("keyctl", 250, [0, 0]), ("add_key", 248, [0, 0, 0, 0, 0]),
    ("request_key", 249, [0, 0, 0, 0]), ("bpf", 321, [0, 0, 0]),
    ("perf_event_open", 298, [0, 0, 0, 0, 0]), ("userfaultfd", 323, [0]),
    ("io_uring_setup", 425, [1, 0]), ("io_uring_enter", 426, [0, 0, 0, 0, 0, 0]),
    ("io_uring_register", 427, [0, 0, 0, 0]), ("kexec_load", 246, [0, 0, 0, 0]),
    ("kexec_file_load", 320, [0, 0, 0, 0, 0]), ("init_module", 175, [0, 0, 0]),
    ("finit_module", 313, [-1, 0, 0]), ("delete_module", 176, [0, 0]),
    ("reboot", 169, [0, 0, 0, 0]), ("swapon", 167, [0, 0]), ("swapoff", 168, [0]),
    ("acct", 163, [0]), ("quotactl", 179, [0, 0, 0, 0]),
    ("open_by_handle_at", 304, [0, 0, 0]), ("name_to_handle_at", 303, [0, 0, 0, 0, 0]),
    ("clock_settime", 227, [0, 0]), ("settimeofday", 164, [0, 0]), ("adjtimex", 159, [0]),
    ("syslog", 103, [3, 0, 0]), ("vhangup", 153, []),
    ("personality_linux32", 135, [0x0008]), ("personality_no_aslr", 135, [0x0040000]),
    ("socket_packet", 41, [17, 3, 0]), ("socket_vsock", 41, [40, 1, 0]),
    ("socket_alg", 41, [38, 5, 0]), ("socket_inet_high_bits", 41, [(1 << 32) | 2, 1, 0]),
    # Unfiltered, these fail with EBADF / ESRCH: another process's fds and memory.
    ("pidfd_getfd", 438, [-1, 0, 0]), ("process_vm_readv", 310, [0, 0, 0, 0, 0, 0]),
    ("process_vm_writev", 311, [0, 0, 0, 0, 0, 0]),
]
ALLOWED = [
    ("getpid", 39, []), ("personality_query", 135, [0xFFFFFFFF]), ("personality_default", 135, [0]),
    ("socket_unix", 41, [1, 1, 0]), ("socket_netlink", 41, [16, 3, 0]),
    # The sandbox's own empty network namespace: inet sockets only reach its loopback.
    ("socket_inet", 41, [2, 1, 0]), ("socket_inet6", 41, [10, 1, 0]),
]


def probe(nsbox_exec, calls, *opts):
    r = nsbox_exec([PY, "-c", SYSCALL_PROBE, json.dumps(calls)], *opts)
    assert r.returncode == 0, r.stderr.decode()
    return json.loads(r.stdout)


@needs_x86_64
def test_denied_syscalls_fail_with_eperm(nsbox_exec):
    results = probe(nsbox_exec, DENIED + ALLOWED)
    wrong = {name: errno.errorcode.get(e, e) for name, _, _ in DENIED
             if (e := results[name]) != errno.EPERM}
    assert not wrong, f"not denied with EPERM: {wrong}"
    assert all(results[name] == 0 for name, _, _ in ALLOWED), results


@needs_x86_64
def test_clone3_is_enosys_so_libc_falls_back_to_clone(nsbox_exec):
    results = probe(nsbox_exec, [("clone3", 435, [0, 0])])
    assert results["clone3"] == errno.ENOSYS
    # fork, threads and subprocesses (clone without namespace flags) still work.
    r = nsbox_exec([PY, "-c", "import subprocess, threading; t = threading.Thread(target=print); "
                    "t.start(); t.join(); print(subprocess.run(['echo', 'child'], "
                    "capture_output=True).stdout.decode().strip())"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().split() == ["child"]


def test_unshare_command_fails(nsbox_exec, workspace):
    r = nsbox_exec("unshare -Ur touch escaped; echo rc=$?")
    assert b"rc=0" not in r.stdout
    assert b"Operation not permitted" in r.stderr
    assert not (workspace / "escaped").exists()


@needs_x86_64
def test_network_host_allows_inet_sockets_but_keeps_the_rest(nsbox_exec):
    results = probe(nsbox_exec, [("socket_inet", 41, [2, 1, 0]), ("socket_packet", 41, [17, 3, 0])],
                    "--network", "host")
    assert results == {"socket_inet": 0, "socket_packet": errno.EPERM}


def test_without_network_namespace_inet_socket_fails_fast_while_unix_works(nsbox_exec):
    """--isolation landlock shares the host's network: seccomp is what cuts it."""
    code = ("import socket\n"
            "a, b = socket.socketpair(socket.AF_UNIX); a.send(b'ok'); print(b.recv(2).decode())\n"
            "try:\n    socket.socket(socket.AF_INET)\nexcept PermissionError as e:\n"
            "    print('inet', e.errno)\n")
    r = nsbox_exec([PY, "-c", code], "--isolation", "landlock")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().split("\n")[:2] == ["ok", f"inet {errno.EPERM}"]


TIOCSTI_PROBE = textwrap.dedent("""
    import fcntl, os, select, termios, tty
    master, slave = os.openpty()
    tty.setraw(slave)
    pid = os.fork()
    if pid == 0:
        # Our own session with the pty as controlling terminal: the kernel allows
        # TIOCSTI there, so only the filter stands in the way.
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
        out = []
        for request in (termios.TIOCSTI, (1 << 32) | termios.TIOCSTI, 0x541C):  # + TIOCLINUX
            try:
                fcntl.ioctl(slave, request, bytes([7]))
                out.append("done")
            except OSError as e:
                out.append(str(e.errno))
        # Whatever TIOCSTI pushed would now be readable on the terminal.
        out.append("pending" if select.select([slave], [], [], 0.2)[0] else "nothing")
        print(" ".join(out), flush=True)
        os._exit(0)
    os.waitpid(pid, 0)
""")


def test_tiocsti_and_tioclinux_fail_and_nothing_is_injected(nsbox_exec):
    r = nsbox_exec([PY, "-c", TIOCSTI_PROBE])
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().split() == [str(errno.EPERM)] * 3 + ["nothing"]


@needs_x86_64
def test_compat_entry_points_do_not_bypass_the_filter(nsbox_exec):
    """x32 numbers and 32-bit int 0x80 get ENOSYS, so unshare can't be reached through them."""
    x32_unshare = 0x40000000 | 272
    results = probe(nsbox_exec, [("x32_unshare", x32_unshare, [0x10000000]),
                                 ("x32_getpid", 0x40000000 | 39, [])])
    assert results == {"x32_unshare": errno.ENOSYS, "x32_getpid": errno.ENOSYS}
    # int 0x80 with eax=20 (i386 getpid): outside it returns our pid, inside -ENOSYS.
    code = textwrap.dedent("""
        import ctypes, mmap
        code = bytes([0xb8, 20, 0, 0, 0, 0xcd, 0x80, 0xc3])  # mov eax,20; int 0x80; ret
        mem = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        mem.write(code)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(mem))
        print(ctypes.CFUNCTYPE(ctypes.c_int)(addr)())
    """)
    outside = subprocess.run([PY, "-c", code], capture_output=True)
    if outside.returncode != 0 or int(outside.stdout) <= 0:
        pytest.skip("this kernel has no 32-bit int 0x80 entry point (IA32 emulation off)")
    r = nsbox_exec([PY, "-c", code])
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) == -errno.ENOSYS


@needs_x86_64
def test_strict_profile_denies_ptrace_and_netlink(nsbox_exec):
    results = probe(nsbox_exec, [("ptrace", 101, [16, 1, 0, 0]), ("socket_netlink", 41, [16, 3, 0]),
                                 ("unshare", 272, [0x10000000]), ("getpid", 39, [])],
                    "--seccomp", "strict")
    assert results == {"ptrace": errno.EPERM, "socket_netlink": errno.EPERM,
                       "unshare": errno.EPERM, "getpid": 0}


# --- real work still runs ---------------------------------------------------------------

def test_git_init_and_commit_in_workspace(nsbox_exec, workspace):
    r = nsbox_exec("git init -q . && echo hi > f && git add f && "
                   "git -c user.name=t -c user.email=t@e commit -qm first && git log --oneline")
    assert r.returncode == 0, r.stderr
    assert b"first" in r.stdout
    assert (workspace / ".git" / "HEAD").exists()


def test_gcc_compile_and_make(nsbox_exec, workspace):
    (workspace / "hello.c").write_text(
        '#include <stdio.h>\n#include <pthread.h>\n'
        'static void *run(void *a) { return a; }\n'
        'int main(void) { pthread_t t; pthread_create(&t, 0, run, 0); pthread_join(t, 0);\n'
        '  printf("hello from C\\n"); return 0; }\n')
    (workspace / "Makefile").write_text("hello: hello.c\n\tgcc -O1 -pthread -o $@ $<\n")
    r = nsbox_exec("make -s && ./hello")
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"hello from C\n"


def _write_wheel(path):
    """A minimal valid wheel for package 'tinypkg', built without network or build tools."""
    files = {
        "tinypkg/__init__.py": "VALUE = 42\n",
        "tinypkg-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\n",
        "tinypkg-1.0.dist-info/WHEEL": ("Wheel-Version: 1.0\nGenerator: test\n"
                                        "Root-Is-Purelib: true\nTag: py3-none-any\n"),
    }
    record = "".join(f"{name},,\n" for name in files) + "tinypkg-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)
        wheel.writestr("tinypkg-1.0.dist-info/RECORD", record)


def test_pip_install_local_wheel_into_workspace_venv(nsbox_exec, workspace):
    if subprocess.run([PY, "-m", "pip", "--version"], capture_output=True).returncode != 0:
        pytest.skip(f"{PY} has no pip")
    _write_wheel(workspace / "tinypkg-1.0-py3-none-any.whl")
    # The system pip from a venv with system site packages: no ensurepip run, no network.
    r = nsbox_exec(f"{PY} -m venv --system-site-packages --without-pip venv && "
                   "venv/bin/python -m pip install -q --no-index --no-cache-dir "
                   "--disable-pip-version-check tinypkg-1.0-py3-none-any.whl && "
                   "venv/bin/python -c 'import tinypkg; print(tinypkg.VALUE)'", timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == b"42"
    assert list((workspace / "venv").glob("lib/python3*/site-packages/tinypkg/__init__.py"))


# --- profiles: choice, errors, cache ------------------------------------------------------

def run_nsbox(*args, env=None, timeout=60):
    return subprocess.run(nsbox_cmd(*args), capture_output=True, timeout=timeout,
                          env=env)


def test_unknown_profile_is_125_before_anything_starts(workspace):
    r = run_nsbox("exec", "--workspace", str(workspace), "--seccomp", "nosuch", "--",
                  "touch", str(workspace / "ran"))
    assert r.returncode == 125
    assert b"unknown seccomp profile 'nosuch'" in r.stderr and b"default" in r.stderr
    assert not (workspace / "ran").exists()


@pytest.mark.parametrize("text, expected", [
    ('{\n "defaultAction": "SCMP_ACT_ALLOW",\n "syscalls": [\n  {"names": ["mount"] "action": 1}\n ]\n}\n',
     b"bad.json:4: malformed JSON"),
    ('{\n "defaultAction": "SCMP_ACT_ALLOW",\n "syscalls": [\n  {"names": ["mount"],\n'
     '   "action": "SCMP_ACT_DENY"}\n ]\n}\n', b"bad.json:4: unknown action 'SCMP_ACT_DENY'"),
    ('{\n "defaultAction": "SCMP_ACT_ALLOW",\n "syscalls": [\n  {"names": ["mount",\n'
     '   "mountt"], "action": "SCMP_ACT_ERRNO"}\n ]\n}\n', b"bad.json:5: unknown syscall 'mountt'"),
])
def test_malformed_profile_is_125_with_the_line(workspace, tmp_path, text, expected):
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    r = run_nsbox("exec", "--workspace", str(workspace), "--seccomp", str(bad), "--",
                  "touch", str(workspace / "ran"))
    assert r.returncode == 125
    assert expected in r.stderr, r.stderr
    assert not (workspace / "ran").exists()
    check = run_nsbox("profiles", "check", str(bad))
    assert check.returncode == 1 and expected in check.stderr, check.stderr


def test_profiles_list_show_check():
    listed = run_nsbox("profiles", "list")
    assert listed.returncode == 0, listed.stderr
    names = [line.split()[0] for line in listed.stdout.decode().splitlines()]
    assert {"default", "strict"} <= set(names)
    shown = run_nsbox("profiles", "show", "strict")
    assert shown.returncode == 0 and json.loads(shown.stdout)["defaultAction"]
    checked = run_nsbox("profiles", "check", "default")
    assert checked.returncode == 0 and b"ok" in checked.stdout


def test_own_profile_from_a_path(nsbox_exec, tmp_path):
    own = tmp_path / "own.json"
    own.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["uname"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EACCES}]}))
    r = nsbox_exec([PY, "-c", "import os\ntry:\n    os.uname()\nexcept OSError as e:\n"
                    "    print(e.errno)"], "--seccomp", str(own))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(errno.EACCES).encode()


# Runs nsbox exec in-process, then reports which libseccomp modules it imported.
IMPORT_PROBE = textwrap.dedent("""
    import sys
    from nsbox.cli import main
    code = main(["exec", "--workspace", sys.argv[1], "--", "true"])
    print(code, "pyseccomp" in sys.modules, "nsbox.kernel.seccomp_compile" in sys.modules)
""")


def _cache_env(cache_home):
    env = dict(os.environ)
    env["XDG_CACHE_HOME"] = str(cache_home)
    return env


def test_cache_hit_imports_no_libseccomp_binding(workspace, tmp_path):
    env = _cache_env(tmp_path / "cache")
    run = [sys.executable, "-c", IMPORT_PROBE, str(workspace)]
    first = subprocess.run(run, capture_output=True, env=env, timeout=60)
    assert first.stdout.split() == [b"0", b"True", b"True"], first.stderr
    entries = list((tmp_path / "cache" / "nsbox" / "seccomp").glob("*.bpf"))
    assert len(entries) == 1  # the reporting variant only (plan/denial_rules.py)
    second = subprocess.run(run, capture_output=True, env=env, timeout=60)
    assert second.stdout.split() == [b"0", b"False", b"False"], second.stderr


@needs_x86_64
@pytest.mark.parametrize("opts", [(), ("--no-denial-events",)])
def test_corrupt_cache_entry_is_recompiled(nsbox_exec, workspace, tmp_path, opts):
    env = _cache_env(tmp_path / "cache")
    assert nsbox_exec(["true"], *opts, env=env).returncode == 0
    # The one filter the run loads, corrupted: the reporting variant (plan/denial_rules.py)
    # or, without reporting, the plain profile.
    entries = list((tmp_path / "cache" / "nsbox" / "seccomp").glob("*.bpf"))
    assert len(entries) == 1
    good = {entry: entry.read_bytes() for entry in entries}
    for entry in entries:
        entry.write_bytes(good[entry][:-8])  # drop the last instruction
    results = probe(lambda cmd, *o: nsbox_exec(cmd, *opts, *o, env=env),
                    [("unshare", 272, [0x10000000])])
    assert results == {"unshare": errno.EPERM}
    assert {entry: entry.read_bytes() for entry in entries} == good


def test_cache_inside_the_workspace_is_never_used(nsbox_exec, workspace):
    """A sandboxed command must not be able to plant a filter for the next run."""
    cache_home = workspace / "dot-cache"
    r = nsbox_exec("unshare -Ur true; echo rc=$?", env=_cache_env(cache_home))
    assert b"rc=0" not in r.stdout
    assert not cache_home.exists()
