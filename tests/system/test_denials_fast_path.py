"""The denial supervisor's fast path: writes the plan certainly allows are answered
without an event, and the denied ones beside them are still reported, once each, with
their counts, whether named absolutely, from the cwd or from a directory fd."""

import json
import os
import subprocess
import uuid

import pytest

from conftest import nsbox_cmd

pytestmark = pytest.mark.skipif(os.uname().machine != "x86_64",
                                reason="the reporting filter is tested on x86_64")

PROBE = """
import os, sys
ws, name = os.getcwd(), sys.argv[1]
flags = os.O_WRONLY | os.O_CREAT
done = []

def attempt(label, fn):
    try:
        os.close(fn())
        done.append(label + ":ok")
    except OSError as err:
        done.append(f"{label}:{err.errno}")

etc = os.open("/etc", os.O_RDONLY)
sub = os.open(ws + "/sub", os.O_RDONLY)
for _ in range(2):  # the second time from the cache
    attempt("absolute", lambda: os.open(ws + "/allowed.txt", flags))
    attempt("denied", lambda: os.open("/etc/" + name, flags))
attempt("dirfd", lambda: os.open("in-sub.txt", flags, dir_fd=sub))
for _ in range(3):
    attempt("dirfd-denied", lambda: os.open(name + "-rel", flags, dir_fd=etc))
attempt("hook", lambda: os.open(".git/hooks/pre-commit", flags))
attempt("hook-absolute", lambda: os.open(ws + "/.git/hooks/post-commit", flags))
os.chdir(ws + "/sub")
attempt("cwd", lambda: os.open("from-cwd.txt", flags))
os.mkdir("made")
attempt("parent", lambda: os.open("../" + name, flags))
print(" ".join(done))
"""


def run_probe(workspace, var_tmp):
    subprocess.run(["git", "init", "-q", str(workspace)], check=True)
    (workspace / "sub").mkdir()
    (workspace / "probe.py").write_text(PROBE)
    name = f"nsbox-fast-{uuid.uuid4().hex}"
    status = var_tmp / "status.json"
    result = subprocess.run(
        nsbox_cmd("exec", "--workspace", str(workspace), "--json-status", str(status), "--",
                  "python3", "probe.py", name),
        capture_output=True, text=True, timeout=120)
    denials = json.loads(status.read_text())["denials"]
    return result, name, {(d["target"], d["rule"]): d["count"] for d in denials}


def test_allowed_writes_are_silent_and_denied_ones_beside_them_counted(workspace, var_tmp):
    result, name, events = run_probe(workspace, var_tmp)
    assert result.returncode == 0, result.stderr
    rofs, eacces = "30", "13"
    outcome = result.stdout.split()
    assert outcome[:4] == ["absolute:ok", f"denied:{rofs}", "absolute:ok", f"denied:{rofs}"]
    assert outcome[4] == "dirfd:ok"
    assert outcome[5:8] == [f"dirfd-denied:{rofs}"] * 3
    assert outcome[8] in (f"hook:{rofs}", f"hook:{eacces}"), outcome
    assert outcome[9] in (f"hook-absolute:{rofs}", f"hook-absolute:{eacces}"), outcome
    assert outcome[10] == "cwd:ok" and outcome[11] == "parent:ok"
    # The kernel decided: what was allowed is there, what was denied is not.
    for made in ("allowed.txt", "sub/in-sub.txt", "sub/from-cwd.txt", "sub/made", name):
        assert (workspace / made).exists(), made
    assert not os.path.exists(f"/etc/{name}") and not os.path.exists(f"/etc/{name}-rel")
    hooks = workspace / ".git" / "hooks"
    assert not (hooks / "pre-commit").exists() and not (hooks / "post-commit").exists()
    # One event per denied target, with its count; none for the allowed writes.
    assert events == {
        (f"/etc/{name}", "outside the writable roots"): 2,
        (f"/etc/{name}-rel", "outside the writable roots"): 3,
        (str(hooks / "pre-commit"), f"protected path {hooks}"): 1,
        (str(hooks / "post-commit"), f"protected path {hooks}"): 1,
    }, events


def test_a_session_command_stopped_nowhere_has_no_events_and_repeats_still_count(workspace):
    """A session's exit record says when the supervisor saw nothing stopped while the
    command ran; a denial met again (answered from the cache) still counts."""
    import nsbox
    from nsbox.policy.model import Policy

    target = f"/etc/nsbox-fast-{uuid.uuid4().hex}"
    denied = ["sh", "-c", f"echo started; echo x > {target}"]
    with nsbox.Session(Policy(workspace=str(workspace))) as session:
        runs = [session.run(["sh", "-c", "echo ok > fine"], timeout=60),
                session.run(denied, timeout=60),
                session.run(["sh", "-c", "echo ok > fine2"], timeout=60),
                session.run(denied, timeout=60),
                session.run(denied, timeout=60)]
    assert [r.returncode for r in runs] == [0, 2, 0, 2, 2], [r.stderr for r in runs]
    assert not os.path.exists(target)
    assert (workspace / "fine").exists() and (workspace / "fine2").exists()
    assert [[(d.target, d.count) for d in r.denials] for r in runs] == [
        [], [(target, 1)], [], [(target, 1)], [(target, 1)]]


def test_counts_stay_exact_as_one_process_loops_and_then_several_call_at_once(
        workspace, var_tmp):
    """The supervisor switches to same-CPU wake-ups while one process makes call after
    call and back when several do: every denied write is still counted, every allowed
    one lands, and nothing reaches the host."""
    name = f"nsbox-serial-{uuid.uuid4().hex}"
    loop = ("i=0; while [ $i -lt {n} ]; do true 2>/dev/null >/etc/{target}; "
            "echo x >{mine}; i=$((i+1)); done")
    script = "; ".join([
        loop.format(n=300, target=f"{name}-a", mine="mine-a"),
        "(" + loop.format(n=200, target=f"{name}-b", mine="mine-b") + ") & "
        + loop.format(n=200, target=f"{name}-c", mine="mine-c") + "; wait",
        loop.format(n=300, target=f"{name}-a", mine="mine-d"),
        "echo finished"])
    status = var_tmp / "status.json"
    result = subprocess.run(
        nsbox_cmd("exec", "--workspace", str(workspace), "--json-status", str(status), "--",
                  "sh", "-c", script),
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "finished" in result.stdout, result.stderr
    events = {d["target"]: d["count"] for d in json.loads(status.read_text())["denials"]}
    assert events == {f"/etc/{name}-a": 600, f"/etc/{name}-b": 200,
                      f"/etc/{name}-c": 200}, events
    for mine in ("mine-a", "mine-b", "mine-c", "mine-d"):
        assert (workspace / mine).read_text() == "x\n"
    assert not any(os.path.exists(f"/etc/{name}-{x}") for x in "abc")
