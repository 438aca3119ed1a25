"""The integrations' workspace_mode "overlay": the agent's changes are what the sandbox
(and a scorer through it) sees, while the host tree stays as it was."""

import asyncio
import os
import tempfile

import pytest

from nsbox.plan import overlay

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def state(var_tmp, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(var_tmp / "state"))
    return str(var_tmp / "state" / "nsbox")


def test_inspect_sample_in_overlay_mode(tmp_path, monkeypatch):
    pytest.importorskip("inspect_ai", reason="Inspect AI is not installed")
    from nsbox.integrations.inspect_sandbox import NsboxSandboxConfig, NsboxSandboxEnvironment

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    state = str(tmp_path / "state" / "nsbox")
    config = NsboxSandboxConfig(workspace_mode="overlay")

    async def scenario():
        envs = await NsboxSandboxEnvironment.sample_init("t", config, {})
        box = envs["default"]
        try:
            await box.write_file("task.txt", "the task\n")  # a sample's files
            await box.write_file(os.path.join(box.workspace, "sub/abs.txt"), "abs\n")
            result = await box.exec(["sh", "-c", "cat task.txt sub/abs.txt; echo done > out.txt"])
            assert result.stdout == "the task\nabs\n", result.stderr
            assert await box.read_file("out.txt") == "done\n"  # what a scorer reads
            assert await box.read_file(os.path.join(box.workspace, "out.txt")) == "done\n"
            assert os.listdir(box.workspace) == []  # the host directory stays empty
        finally:
            await NsboxSandboxEnvironment.sample_cleanup("t", config, envs, False)
        return box.workspace

    workspace = asyncio.run(scenario())
    assert not os.path.exists(workspace)
    assert overlay.kept(state) == []  # nothing kept for a sample's removed directory


def test_mini_swe_agent_in_overlay_mode(workspace, state, monkeypatch):
    monkeypatch.setenv("MSWEA_GLOBAL_CONFIG_DIR", f"/tmp/nsbox-test-mswea-{os.getuid()}")
    monkeypatch.setenv("MSWEA_SILENT_STARTUP", "1")
    pytest.importorskip("minisweagent", reason="mini-swe-agent is not installed")
    from nsbox.integrations.mini_swe_agent import NsboxEnvironment

    (workspace / "keep").write_text("real\n")
    env = NsboxEnvironment(cwd=str(workspace), timeout=2, workspace_mode="overlay")
    try:
        out = env.execute({"command": "echo agent > new.txt; echo more >> keep; cat keep"})
        assert out["returncode"] == 0 and out["output"] == "real\nmore\n", out
        # A timeout ends the sandbox; the next one goes on from the agent's changes.
        out = env.execute({"command": "echo before-timeout > late.txt; sleep 30"})
        assert out["returncode"] == -1
        out = env.execute({"command": "cat new.txt keep late.txt"})
        assert out["output"] == "agent\nreal\nmore\nbefore-timeout\n", out
        assert sorted(os.listdir(workspace)) == ["keep"]
        assert (workspace / "keep").read_text() == "real\n"
    finally:
        env.cleanup()
    kept = overlay.kept(state)
    assert len(kept) == 1  # the carried-over run was taken over, then this one kept
    run_id, meta, entries = kept[0]
    assert meta["workspace"] == str(workspace)
    assert {e.path: e.what for e in entries} == {"new.txt": "created", "keep": "modified",
                                                 "late.txt": "created"}
