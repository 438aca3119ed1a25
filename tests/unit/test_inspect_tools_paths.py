"""Landlock-only isolation: which harness arguments the Inspect provider maps to host paths."""

import pytest

pytest.importorskip("inspect_ai", reason="Inspect AI is not installed")

from inspect_ai.util._sandbox._cli import SANDBOX_CLI, SANDBOX_TOOLS_DIR  # noqa: E402

from nsbox.integrations import inspect_tools  # noqa: E402

TREE = "/tmp/nsbox-inspect-tools-abc"
TMPDIR = "/tmp/nsbox-1-ff"


def test_the_tools_path_and_tmp_arguments_are_mapped_whole():
    cmd = [SANDBOX_CLI, "exec", "/tmp/setup-x", "/tmp", "echo /tmp/x", "/var/tmp",
           SANDBOX_TOOLS_DIR + "/sub", "/tmpfoo", f"{TMPDIR}/note"]
    assert inspect_tools.host_argv(cmd, TREE, TMPDIR) == [
        f"{TREE}/inspect-sandbox-tools", "exec", f"{TMPDIR}/setup-x", TMPDIR, "echo /tmp/x",
        "/var/tmp", f"{TREE}/sub", "/tmpfoo", f"{TMPDIR}/note"]


def test_inspects_directory_checks_get_the_trees_parent_and_name():
    parent, leaf = SANDBOX_TOOLS_DIR.rsplit("/", 1)
    cmd = ["/bin/sh", "-c", "script", "sh", "", "0", "1", "700", parent, leaf, "stat"]
    assert inspect_tools.host_argv(cmd, TREE, TMPDIR)[8:10] == ["/tmp",
                                                                 "nsbox-inspect-tools-abc"]
    # Without a tree nothing of the tools is mapped.
    assert inspect_tools.host_argv(cmd, None, TMPDIR)[8:10] == [parent, leaf]


def test_the_tools_server_state_goes_to_the_samples_tmpdir():
    env = inspect_tools.tools_env([SANDBOX_CLI, "exec"], {"X": "1"}, TMPDIR)
    assert env == {"INSPECT_SANDBOX_TOOLS_DIR": f"{TMPDIR}/.inspect-sandbox-tools", "X": "1"}
    assert inspect_tools.tools_env(["bash"], None, TMPDIR) is None


def test_what_is_refused_under_landlock():
    assert inspect_tools.tools_method([SANDBOX_CLI, "exec"], '{"method": "text_editor"}') == \
        "text_editor"
    assert inspect_tools.tools_method(["cat"], '{"method": "x"}') is None
    exec_cmd = [SANDBOX_CLI, "exec"]
    # bash_session is answered by the provider itself (inspect_bash_session).
    assert "bash_session" in inspect_tools.BASH_SESSION_METHODS
    assert inspect_tools.landlock_refusal(exec_cmd, False) is None
    # Where other samples could connect to the tools server's socket: no server at all.
    assert "unix socket" in inspect_tools.landlock_refusal(exec_cmd, True)
    assert inspect_tools.landlock_refusal(["bash", "-c", "x"], True) is None
