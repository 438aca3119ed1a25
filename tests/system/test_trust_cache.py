"""The compiled seccomp cache: a sandbox that may write it cannot plant a filter that a
later run (without that grant) loads. Two real runs: the forger, then the victim."""

import errno
import json
import os
import platform
import shutil
import subprocess
import tempfile
import textwrap
from pathlib import Path

import pytest

from conftest import nsbox_cmd

PY = "/usr/bin/python3"  # readable by the unprivileged test user too
KEYCTL = {"x86_64": 250, "aarch64": 219}.get(platform.machine())

# Run 1, inside the sandbox: steal the key if it can, then rewrite every cached program
# with one that allows everything, in the on-disk format (a plain sha256 without the key).
FORGE = textwrap.dedent("""
    import glob, hashlib, hmac, json, os, sys
    cache, state = sys.argv[1], sys.argv[2]
    out = {"forged": [], "errors": []}
    try:
        with open(os.path.join(state, "cache.key"), "rb") as f:
            stolen = f.read()
        out["key"] = "stolen"
    except OSError:
        stolen = None
        out["key"] = "unreadable"
    try:
        out["state_listing"] = os.listdir(state)
    except OSError:
        out["state_listing"] = None
    allow_all = bytes.fromhex("060000000000ff7f")  # BPF_RET|BPF_K SECCOMP_RET_ALLOW
    for path in glob.glob(os.path.join(cache, "*.bpf")):
        with open(path, "rb") as f:
            head = b" ".join(f.read().split(b"\\n", 1)[0].split(b" ")[:3])
        if stolen:
            mac = hmac.new(stolen, head + b"\\n" + allow_all, "sha256").hexdigest()
        else:
            mac = hashlib.sha256(allow_all).hexdigest()
        try:
            with open(path + ".new", "wb") as f:
                f.write(head + b" " + mac.encode() + b"\\n" + allow_all)
            os.replace(path + ".new", path)
            out["forged"].append(os.path.basename(path))
        except OSError as e:
            out["errors"].append(e.strerror)
    print(json.dumps(out))
""")

# Run 2: calls the default profile denies with EPERM.
PROBE = textwrap.dedent("""
    import ctypes, json, sys
    print("sandbox started", flush=True)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    out = {}
    ctypes.set_errno(0)
    out["unshare"] = ctypes.get_errno() if libc.unshare(0x10000000) == -1 else 0
    ctypes.set_errno(0)
    ret = libc.syscall(ctypes.c_long(int(sys.argv[1])), ctypes.c_long(0), ctypes.c_long(0))
    out["keyctl"] = ctypes.get_errno() if ret == -1 else 0
    print(json.dumps(out))
""")


@pytest.fixture
def home():
    """A throw-away HOME under /var/tmp: the sandbox's /tmp is its own, so nsbox's state
    directory must lie where a sandbox could read it but for nsbox hiding it."""
    path = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="nsbox-trust-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _env(home: Path) -> dict:
    env = dict(os.environ)
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"),
               XDG_STATE_HOME=str(home / ".local" / "state"),
               XDG_CONFIG_HOME=str(home / ".config"))
    return env


def _exec(workspace, env, *args):
    return subprocess.run(nsbox_cmd("exec", "--workspace", str(workspace), *args),
                          capture_output=True, env=env, timeout=60)


@pytest.mark.skipif(KEYCTL is None, reason="keyctl's number is known for x86_64 and aarch64")
@pytest.mark.parametrize("grant", [".cache", ".cache/nsbox/seccomp"])
def test_forged_cache_entries_do_not_open_the_next_sandbox(workspace, home, grant):
    env = _env(home)
    cache = home / ".cache" / "nsbox" / "seccomp"
    state = home / ".local" / "state" / "nsbox"
    # Run 0 warms the cache.
    r = _exec(workspace, env, "--", "true")
    assert r.returncode == 0, r.stderr
    assert list(cache.glob("*.bpf")) and (state / "cache.key").is_file()
    honest = {p: p.read_bytes() for p in cache.glob("*.bpf")}

    # Run 1 may write the cache (`--writable ~/.cache` is a usual grant).
    r = _exec(workspace, env, "--writable", str(home / grant), "--",
              PY, "-c", FORGE, str(cache), str(state))
    assert r.returncode == 0, r.stderr
    attack = json.loads(r.stdout)
    assert attack["key"] == "unreadable", attack
    assert "cache.key" not in (attack["state_listing"] or ()), attack
    if grant == ".cache":
        # nsbox may keep its own cache read-only inside the grant; else the forgery landed.
        assert attack["forged"] or attack["errors"], attack
    else:
        # A grant of the cache directory itself: the forgery lands, only the MAC stands.
        assert sorted(attack["forged"]) == sorted(p.name for p in honest), attack
        assert all(p.read_bytes() != honest[p] for p in honest)

    # Run 2, without the grant, must still have the default profile's filter.
    r = _exec(workspace, env, "--", PY, "-c", PROBE, str(KEYCTL))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.decode().splitlines()
    assert lines[0] == "sandbox started", r.stdout
    assert json.loads(lines[1]) == {"unshare": errno.EPERM, "keyctl": errno.EPERM}
    # Run 2 recompiled and replaced the rejected entries.
    assert {p: p.read_bytes() for p in cache.glob("*.bpf")} == honest
