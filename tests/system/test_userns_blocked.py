"""Hosts that forbid user namespaces, for real: nsbox runs inside bubblewrap with
`--unshare-user --disable-userns`, where no nested user namespace can be made.

"auto" must then fall back to Landlock-only isolation and say why; "landlock" must
never claim namespaces or a read-only root; "full" must fail (125) with a hint.
Every test runs the command and checks both what nsbox reports and what happened.
"""

import functools
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

import nsbox
from conftest import LANDLOCK_ABI, WITHOUT_USERNS, needs_blocked_userns, needs_landlock

PY = sys.executable
NSBOX = [PY, "-m", "nsbox"]
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(nsbox.__file__)))
BWRAP = shutil.which("bwrap")
NO_USERNS = WITHOUT_USERNS
ABI = LANDLOCK_ABI

# Landlock-only isolation without --best-effort needs signal/abstract-socket scoping.
pytestmark = needs_landlock(6)


@functools.lru_cache(maxsize=None)
def _userns_unavailable() -> str:
    """"" when this host (outside bwrap) lets nsbox make its namespaces, else why not."""
    from nsbox.launch import probe

    return probe.userns_failure()[0]


blocked = needs_blocked_userns()
userns_works = pytest.mark.skipif(bool(_userns_unavailable()),
                                  reason=f"user namespaces are unavailable on this host: "
                                         f"{_userns_unavailable()}")

MARKER = "nsbox-userns-blocked-ran"


@pytest.fixture
def place(tmp_path):
    """A workspace, a private HOME, and a host file outside the workspace that the
    test user may write (so only the sandbox can stop the write)."""
    ws = tmp_path / "ws"
    ws.mkdir()
    (tmp_path / "home").mkdir()
    (tmp_path / "host.txt").write_text("original\n")
    return tmp_path


def _env(place) -> dict:
    return dict(os.environ, HOME=str(place / "home"), PYTHONPATH=PACKAGE_ROOT, COLUMNS="200")


def _run(argv, place, under_bwrap: bool, timeout=90):
    prefix = NO_USERNS if under_bwrap else []
    return subprocess.run(prefix + argv, cwd=place / "ws", env=_env(place), capture_output=True,
                          text=True, timeout=timeout)


def _confinement_script(place) -> str:
    """Prints what the command saw; tries a write outside the workspace (to a file the
    user owns) and into the private TMPDIR and the workspace."""
    host, ws = place / "host.txt", place / "ws"
    return textwrap.dedent(f"""\
        echo started
        echo "tmpdir=$TMPDIR"
        echo "ns_user=$(readlink /proc/self/ns/user)"
        echo "ns_mnt=$(readlink /proc/self/ns/mnt)"
        echo "ns_pid=$(readlink /proc/self/ns/pid)"
        echo in-tmp > "$TMPDIR/t" && echo "tmp_write=ok"
        echo pwned > {host}; echo "outside_rc=$?"
        echo ok > {ws}/inside && echo "ws_write=ok"
        touch {ws}/{MARKER}
    """)


def _values(stdout: str) -> dict:
    return dict(line.split("=", 1) for line in stdout.splitlines() if "=" in line)


def _outer_namespaces_then(argv) -> list:
    """sh that prints its own namespaces (those of the process that starts nsbox), then
    execs argv: the sandboxed command must show the very same ones in landlock mode."""
    return ["sh", "-c", 'echo "outer_user=$(readlink /proc/self/ns/user)"; '
                        'echo "outer_mnt=$(readlink /proc/self/ns/mnt)"; '
                        'echo "outer_pid=$(readlink /proc/self/ns/pid)"; exec "$@"', "sh", *argv]


def _read_record(path) -> dict:
    with open(path) as f:
        return json.load(f)


def _assert_landlock_only_run(r, place, record: dict, fallback: bool):
    """The command ran under Landlock only, and the record says so and nothing more."""
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert "started" in r.stdout.splitlines()
    seen = _values(r.stdout)
    # Really landlock-only: the same user, mount and pid namespaces as the process
    # that started nsbox (no unshare at all, so no private root or /tmp either).
    for ns in ("user", "mnt", "pid"):
        assert seen[f"ns_{ns}"] == seen[f"outer_{ns}"], (ns, r.stdout)
    # Landlock stops the write outside the workspace, though the user owns the file.
    assert seen["outside_rc"] != "0"
    assert "Permission denied" in r.stderr
    assert (place / "host.txt").read_text() == "original\n"
    assert seen["ws_write"] == "ok" and (place / "ws" / "inside").read_text() == "ok\n"
    assert seen["tmp_write"] == "ok"

    assert record["exit_code"] == 0 and record["setup_error"] is None
    prot = record["protections"]
    assert prot["isolation"] == "landlock"
    assert prot["namespaces"] == []
    assert prot["read_only_root"] is False
    assert prot["landlock_abi"] == ABI
    assert prot["no_new_privs"] is True and prot["seccomp_profile"] == "default"
    # The private TMPDIR the record names is the one the command was given, and it is
    # gone after the run.
    assert prot["private_tmp"] and seen["tmpdir"] == prot["private_tmp"]
    assert os.path.basename(prot["private_tmp"]).startswith("nsbox-")
    assert not os.path.lexists(prot["private_tmp"])
    assert str(place / "ws") in prot["writable"]
    assert prot["protected"] == [] and prot["pinned"] == []
    # No mounts: nothing is claimed read-only, and stderr says the run is weaker.
    assert "landlock only" in r.stderr
    if fallback:
        assert prot["fallback_reason"] and "user namespace" in prot["fallback_reason"].lower()
        assert prot["fallback_reason"] in r.stderr
    else:
        assert prot["fallback_reason"] is None


# 1. --isolation auto where user namespaces are blocked: falls back, says why.

@blocked
def test_exec_auto_falls_back_to_landlock_under_blocked_userns(place):
    status = place / "status.json"
    argv = NSBOX + ["exec", "--workspace", str(place / "ws"), "--isolation", "auto",
                    "--json-status", str(status), "--", "sh", "-c", _confinement_script(place)]
    r = _run(_outer_namespaces_then(argv), place, under_bwrap=True)
    _assert_landlock_only_run(r, place, _read_record(status), fallback=True)


# 2. --isolation landlock: never claims namespaces or a read-only root, with or
#    without user namespaces.

@pytest.mark.parametrize("under_bwrap", [
    False, pytest.param(True, marks=blocked)], ids=["userns-allowed", "userns-blocked"])
def test_exec_landlock_record_claims_no_namespaces(place, under_bwrap):
    status = place / "status.json"
    argv = NSBOX + ["exec", "--workspace", str(place / "ws"), "--isolation", "landlock",
                    "--json-status", str(status), "--", "sh", "-c", _confinement_script(place)]
    r = _run(_outer_namespaces_then(argv), place, under_bwrap=under_bwrap)
    _assert_landlock_only_run(r, place, _read_record(status), fallback=False)


# 3. --isolation full (the default) where user namespaces are blocked: 125 and a hint.

@blocked
@pytest.mark.parametrize("explicit", [True, False], ids=["--isolation-full", "default"])
def test_exec_full_fails_under_blocked_userns_with_a_hint(place, explicit):
    status = place / "status.json"
    opts = ["--isolation", "full"] if explicit else []
    argv = NSBOX + ["exec", "--workspace", str(place / "ws"), *opts, "--json-status",
                    str(status), "--", "sh", "-c", f"echo started; touch {MARKER}"]
    r = _run(argv, place, under_bwrap=True)
    assert r.returncode == 125, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert "user namespace" in r.stderr.lower()
    assert "--isolation auto" in r.stderr
    # Nothing ran.
    assert "started" not in r.stdout
    assert not (place / "ws" / MARKER).exists()
    record = _read_record(status)
    assert record["exit_code"] == 125
    assert record["setup_error"] and "user namespace" in record["setup_error"].lower()
    # Nothing was enforced, so the record claims no protections.
    assert record["protections"] is None


# 4. `nsbox policy show` resolves the isolation exec would get.

def _resolved(place, under_bwrap: bool, isolation: str) -> dict:
    r = _run(NSBOX + ["policy", "show", "--workspace", str(place / "ws"),
                      "--isolation", isolation], place, under_bwrap=under_bwrap)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    report = json.loads(r.stdout)
    assert report["policy"]["isolation"] == isolation
    return report["resolved"]


def _assert_resolved_landlock(resolved: dict, fallback: bool):
    assert resolved["isolation"] == "landlock"
    assert resolved["namespaces"] == []
    assert resolved["mounts"] == []
    assert resolved["private_tmp"] is True
    assert resolved["pinned"] == [] and resolved["protected"] == []
    assert resolved["created_on_exec"] == []
    prot = resolved["protections"]
    assert prot["isolation"] == "landlock" and prot["namespaces"] == []
    assert prot["read_only_root"] is False and prot["private_tmp"]
    if fallback:
        assert resolved["isolation_fallback"]
        assert "user namespace" in resolved["isolation_fallback"].lower()
        assert prot["fallback_reason"] == resolved["isolation_fallback"]
    else:
        assert resolved["isolation_fallback"] is None and prot["fallback_reason"] is None


@blocked
def test_policy_show_auto_under_blocked_userns_is_landlock(place):
    _assert_resolved_landlock(_resolved(place, True, "auto"), fallback=True)


@userns_works
def test_policy_show_auto_where_userns_work_is_full(place):
    resolved = _resolved(place, False, "auto")
    assert resolved["isolation"] == "full"
    assert resolved["isolation_fallback"] is None
    assert "user" in resolved["namespaces"] and "mount" in resolved["namespaces"]
    kinds = {m["kind"] for m in resolved["mounts"]}
    assert "root_readonly" in kinds and "bind_rw" in kinds
    assert resolved["private_tmp"] is False
    prot = resolved["protections"]
    assert prot["read_only_root"] is True and prot["private_tmp"] is None
    assert prot["namespaces"] == resolved["namespaces"]


@pytest.mark.parametrize("under_bwrap", [
    False, pytest.param(True, marks=blocked)], ids=["userns-allowed", "userns-blocked"])
def test_policy_show_landlock_has_no_namespaces_or_mounts(place, under_bwrap):
    _assert_resolved_landlock(_resolved(place, under_bwrap, "landlock"), fallback=False)


# 5. The library: "auto" falls back, and the verdict comes from the fork server.

LIBRARY = r"""
import json, os, sys

# Instrument the runner before nsbox is imported. `before` hooks run in this process
# for every os.fork() (what a probe in this process would do: probe.in_child forks and
# runs Python in the child); `after_in_child` runs in any such child that then runs
# Python before exec. subprocess.Popen without preexec_fn (how the fork server is
# started) fork/vfork+execs in C and runs neither hook, so both counts must stay 0.
RUNNER = os.getpid()
forks_here = []
os.register_at_fork(before=lambda: forks_here.append(os.getpid()))
python_children = os.open(sys.argv[2], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
os.register_at_fork(after_in_child=lambda: os.write(python_children, b"child\n"))

import nsbox
from nsbox.service import forkserver

policy = nsbox.Policy(workspace=sys.argv[1], isolation="auto")
one = nsbox.run(["sh", "-c", "echo started; echo $TMPDIR"], policy=policy)
with nsbox.Session(policy) as session:
    two = session.run(["sh", "-c", "echo started; echo $TMPDIR"])
out = {
    "run": {"isolation": one.isolation, "fallback": one.isolation_fallback,
            "returncode": one.returncode, "stdout": one.stdout.decode()},
    "session": {"isolation": two.isolation, "fallback": two.isolation_fallback,
                "returncode": two.returncode, "stdout": two.stdout.decode()},
    "runner_forks": len([pid for pid in forks_here if pid == RUNNER]),
    "python_children": os.path.getsize(sys.argv[2]),
    # The verdict cached by forkserver.userns_blocker(): asked of the fork server.
    "server_verdict": forkserver._userns_blocker,
    "server_pid": forkserver.client().pid,
}
# Control: a probe in this process is exactly what the hooks catch.
from nsbox.launch import probe
probe.in_child(lambda: None)
out["control_forks"] = len([pid for pid in forks_here if pid == RUNNER])
out["control_python_children"] = os.path.getsize(sys.argv[2])
print(json.dumps(out))
"""


@blocked
def test_library_auto_falls_back_and_runner_never_forks_a_probe(place):
    ws = place / "ws"
    children = place / "python-children"
    r = _run([PY, "-c", LIBRARY, str(ws), str(children)], place, under_bwrap=True)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.splitlines()[-1])
    for name in ("run", "session"):
        got = out[name]
        assert got["isolation"] == "landlock", (name, got)
        assert "user namespace" in got["fallback"].lower(), (name, got)
        assert got["returncode"] == 0, (name, got)
        lines = got["stdout"].splitlines()
        assert lines[0] == "started", (name, got)
        assert lines[1].startswith("/") and "/nsbox-" in lines[1], (name, got)  # private TMPDIR
        assert not os.path.lexists(lines[1])  # removed after the run / at close()
    assert out["run"]["fallback"] == out["session"]["fallback"] == out["server_verdict"]
    assert out["server_pid"] and out["server_pid"] != 0
    # The runner forked nothing that ran Python: the probe ran in the fork server.
    assert out["runner_forks"] == 0
    assert out["python_children"] == 0
    # ... and the instrument works: one probe in the runner is one fork and one child.
    assert out["control_forks"] == 1
    assert out["control_python_children"] == len("child\n")
