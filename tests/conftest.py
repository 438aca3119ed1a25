import os
import subprocess
import sys

import pytest

IS_ROOT = os.geteuid() == 0


def nsbox_cmd(*args):
    """argv that runs this checkout's nsbox CLI with the test interpreter."""
    return [sys.executable, "-m", "nsbox", *args]


@pytest.fixture
def workspace(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    return ws


@pytest.fixture
def nsbox_exec(workspace):
    """Run `nsbox exec --workspace <ws> [opts] -- CMD...`; returns CompletedProcess."""

    def run(cmd, *opts, timeout=60, input=None, check=False, **kw):
        if isinstance(cmd, str):
            cmd = ["sh", "-c", cmd]
        argv = nsbox_cmd("exec", "--workspace", str(workspace), *opts, "--", *cmd)
        return subprocess.run(argv, capture_output=True, timeout=timeout, input=input,
                              check=check, **kw)

    return run
