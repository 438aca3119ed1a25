"""PID 1 reads the denial supervisor's code before an image root hides nsbox's files
(launch/denial_channel.preload) and runs it later: from bytecode that matches the
source read with it, else from that source, never from anything read afterwards."""

import os
import py_compile
import shutil
import subprocess
import sys

import nsbox

PACKAGE = os.path.dirname(nsbox.__file__)
FILES = ("policy/denials.py", "kernel/seccomp_notify.py", "launch/denial_watch.py")

PROBE = """
import builtins, os, shutil, sys
import nsbox.launch.denial_channel as channel, nsbox.plan.denial_rules, nsbox.policy
copy = sys.argv[1]
channel._read_supervisor_code(copy)
shutil.rmtree(copy)  # what an image root does to nsbox's files
compiled = []
real_compile = builtins.compile
builtins.compile = lambda *a, **k: (compiled.append(os.path.basename(a[1])),
                                    real_compile(*a, **k))[1]
channel._run_read_code()
from nsbox.launch import denial_watch
assert denial_watch.json_line({"a": 1}) == b'{"a":1}\\n'
assert denial_watch.seccomp_notify is sys.modules["nsbox.kernel.seccomp_notify"]
assert sys.modules["nsbox.launch"].denial_watch is denial_watch
print(sorted(compiled), denial_watch.__file__.startswith(copy),
      getattr(denial_watch, "STALE", False))
"""


def test_supervisor_code_read_before_its_files_go_runs_from_matching_bytecode_only(tmp_path):
    copy = tmp_path / "nsbox"
    for rel in FILES:
        (copy / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(os.path.join(PACKAGE, rel), copy / rel)
    fresh = copy / "kernel" / "seccomp_notify.py"
    py_compile.compile(str(fresh), cfile=str(copy / "kernel" / "__pycache__" /
                       f"seccomp_notify.{sys.implementation.cache_tag}.pyc"))
    stale = copy / "launch" / "denial_watch.py"
    cached = copy / "launch" / "__pycache__" / f"denial_watch.{sys.implementation.cache_tag}.pyc"
    py_compile.compile(str(stale), cfile=str(cached))
    stale.write_bytes(stale.read_bytes() + b"\nSTALE = True\n")  # the bytecode no longer matches
    # (policy/denials.py has no bytecode at all)
    done = subprocess.run([sys.executable, "-c", PROBE, str(copy)], capture_output=True,
                          text=True, timeout=60, env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["['denial_watch.py',", "'denials.py']", "True",
                                  "True"], done.stdout
