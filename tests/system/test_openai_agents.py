"""nsbox as the OpenAI Agents SDK's sandbox client: driven by a SandboxAgent and the SDK's
ScriptedModel (agents.testing; offline, no model API is called), and through the SDK's
session API."""

import asyncio
import io
import json
import os
import pwd
import tarfile
import uuid

import pytest

pytest.importorskip(
    "agents.sandbox",
    reason="the OpenAI Agents SDK is not installed (pip install nsbox[openai-agents])")

from agents import RunConfig, Runner  # noqa: E402
from agents.sandbox import (  # noqa: E402
    LocalSnapshotSpec, Manifest, SandboxAgent, SandboxRunConfig, WorkspaceArchiveWriteError,
    WorkspaceReadNotFoundError)
from agents.sandbox.entries import File  # noqa: E402
from agents.sandbox.errors import ExecTimeoutError, SandboxError  # noqa: E402
from agents.testing import ScriptedModel, assistant_message, function_call  # noqa: E402
from openai.types.responses import ResponseCustomToolCall  # noqa: E402

from conftest import assert_denied, needs_landlock  # noqa: E402
from nsbox.integrations.openai_agents import NsboxSandboxClient  # noqa: E402

STARTED = "NSBOX-AGENT-STARTED"


def shell(cmd: str):
    return function_call("exec_command", {"cmd": cmd}, call_id=f"call_{uuid.uuid4().hex[:8]}")


def patch(text: str):
    return ResponseCustomToolCall(type="custom_tool_call", call_id=f"call_{uuid.uuid4().hex[:8]}",
                                  name="apply_patch", input=text)


def output_of(model: ScriptedModel, call) -> str:
    """What the tool answered to `call`, as the model was sent it."""
    for recorded in model.calls:
        for item in recorded.input if isinstance(recorded.input, list) else ():
            if (isinstance(item, dict) and item.get("call_id") == call.call_id
                    and item.get("type", "").endswith("call_output")):
                output = item.get("output")
                return output if isinstance(output, str) else json.dumps(output)
    raise AssertionError(f"no output for {call.call_id}")


async def run_agent(session, steps) -> ScriptedModel:
    model = ScriptedModel([[step] for step in steps] + [[assistant_message("done")]])
    agent = SandboxAgent(name="nsbox-test", instructions="Do the task.", model=model)
    config = RunConfig(sandbox=SandboxRunConfig(session=session), tracing_disabled=True)
    await Runner.run(agent, "do it", run_config=config, max_turns=len(steps) + 2)
    model.assert_complete()
    return model


def test_an_agent_runs_commands_and_edits_files(workspaces_dir):
    first = shell("printf 'hello\\n' > notes.txt && echo written && id -u")
    edit = patch("*** Begin Patch\n*** Update File: notes.txt\n@@\n-hello\n+hello nsbox\n"
                 "*** End Patch\n")
    last = shell("cat notes.txt; echo kept > /tmp/kept; cat /tmp/kept")

    async def scenario():
        client = NsboxSandboxClient()
        session = await client.create()
        root = session._inner.workspace
        try:
            async with session:
                model = await run_agent(session, [first, edit, last])
                with open(os.path.join(root, "notes.txt")) as f:
                    assert f.read() == "hello nsbox\n"
                assert await session.running()
        finally:
            await client.delete(session)
        assert not os.path.exists(root)
        return model, root

    model, root = asyncio.run(scenario())
    assert os.path.dirname(root) == str(workspaces_dir)
    out = output_of(model, first)
    assert "written" in out and str(os.getuid()) in out, out
    assert "hello nsbox" in output_of(model, last) and "kept" in output_of(model, last)


def test_escapes_from_inside_are_denied(workspaces_dir, var_tmp, monkeypatch):
    real_home = pwd.getpwuid(os.getuid()).pw_dir
    home_probe = os.path.join(real_home, f"nsbox-agents-{uuid.uuid4().hex}")
    fake_home = var_tmp / "home"
    (fake_home / ".ssh").mkdir(parents=True)
    key = fake_home / ".ssh" / "id_ed25519"
    key.write_text("SECRET-KEY\n")
    monkeypatch.setenv("HOME", str(fake_home))
    link_probe = var_tmp / "written-through-a-link"

    write_home = shell(f"echo {STARTED}; echo pwned > {home_probe}")
    read_key = shell(f"echo {STARTED}; cat ~/.ssh/id_ed25519")
    plant = shell(f"ln -s {key} leak.txt && ln -s {link_probe} out.txt && echo planted")

    async def scenario():
        client = NsboxSandboxClient()
        session = await client.create()
        try:
            async with session:
                model = await run_agent(session, [write_home, read_key, plant])
                # The same attacks through the session API, to see the denial itself.
                results = [await session.exec(f"echo {STARTED}; echo pwned > {home_probe}"),
                           await session.exec(f"echo {STARTED}; cat ~/.ssh/id_ed25519")]
                # The harness follows no link the agent planted.
                with pytest.raises((WorkspaceReadNotFoundError, SandboxError)):
                    await session.read("leak.txt")
                with pytest.raises(SandboxError):
                    await session.write("out.txt", io.BytesIO(b"pwned"))
                return model, results
        finally:
            await client.delete(session)

    try:
        model, results = asyncio.run(scenario())
    finally:
        if os.path.lexists(home_probe):
            os.unlink(home_probe)
            pytest.fail(f"the sandbox wrote {home_probe}")
    assert not os.path.lexists(link_probe)
    assert key.read_text() == "SECRET-KEY\n"
    assert_denied(results[0], expect=("Read-only file system", "Permission denied"),
                  started_marker=STARTED)
    assert_denied(results[1], expect=("No such file or directory", "Permission denied"),
                  started_marker=STARTED)
    for call in (write_home, read_key):
        out = output_of(model, call)
        assert STARTED in out and "SECRET-KEY" not in out, out
        assert any(text in out for text in ("Read-only file system", "Permission denied",
                                            "No such file or directory")), out
    assert "planted" in output_of(model, plant)


def test_the_workspace_is_persisted_and_hydrated_through_a_snapshot(workspaces_dir, var_tmp):
    snapshots = var_tmp / "snapshots"
    manifest = Manifest(entries={"seed.txt": File(content=b"from the manifest\n")})

    async def scenario():
        client = NsboxSandboxClient()
        session = await client.create(manifest=manifest,
                                      snapshot=LocalSnapshotSpec(base_path=snapshots))
        first_root = session._inner.workspace
        async with session:
            assert (await session.read("seed.txt")).read() == b"from the manifest\n"
            result = await session.exec("mkdir -p src cache && echo 'print(42)' > src/app.py && "
                                        "ln -s src/app.py link.py && ln src/app.py src/hard.py && "
                                        "echo scratch > cache/tmp && echo ok")
            assert result.exit_code == 0, result.stderr
            session.register_persist_workspace_skip_path("cache")
            await session.write("data/notes.txt", io.BytesIO(b"written by the harness\n"))
        # Leaving the block persisted the workspace into the snapshot.
        payload = client.serialize_session_state(session.state)
        await client.delete(session)
        assert not os.path.exists(first_root)
        assert list(snapshots.iterdir())

        stored = json.loads(json.dumps(payload))
        resumed = await client.resume(client.deserialize_session_state(stored))
        try:
            async with resumed:
                result = await resumed.exec("cat src/app.py link.py data/notes.txt seed.txt; "
                                            "readlink link.py; cat src/hard.py; "
                                            "test ! -e cache && echo no-cache")
                assert result.exit_code == 0, result.stderr
                return result.stdout.decode()
        finally:
            await client.delete(resumed)

    out = asyncio.run(scenario())
    assert out == ("print(42)\nprint(42)\nwritten by the harness\nfrom the manifest\n"
                   "src/app.py\nprint(42)\nno-cache\n"), out


def _tar(*members) -> io.BytesIO:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for info, payload in members:
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)
    data.seek(0)
    return data


def _file(name: str, payload: bytes):
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    return info, payload


def _link(name: str, target: str):
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info, None


@pytest.mark.parametrize("members", [
    [_file("../escaped.txt", b"x")],
    [_file("/var/tmp/escaped.txt", b"x")],
    [_link("up", ".."), _file("up/escaped.txt", b"x")],
    [_link("abs", "/var/tmp")],
], ids=["dotdot", "absolute", "through-a-link", "absolute-link"])
def test_hydrate_rejects_members_escaping_the_workspace(workspaces_dir, members):
    async def scenario():
        client = NsboxSandboxClient()
        session = await client.create()
        root = session._inner.workspace
        try:
            async with session:
                with pytest.raises(WorkspaceArchiveWriteError):
                    await session.hydrate_workspace(_tar(*members))
                return sorted(os.listdir(root)), os.listdir(os.path.dirname(root))
        finally:
            await client.delete(session)

    inside, beside = asyncio.run(scenario())
    assert inside == []
    assert "escaped.txt" not in beside
    assert not os.path.exists("/var/tmp/escaped.txt")


def test_timeouts_and_output_limits(workspaces_dir):
    async def scenario():
        client = NsboxSandboxClient(max_output=4096)
        session = await client.create()
        try:
            async with session:
                with pytest.raises(ExecTimeoutError):
                    await session.exec("sleep 30", timeout=0.5)
                big = await session.exec("yes x", timeout=60)  # endless: only the limit stops it
                after = await session.exec("echo still-alive")
                return big, after
        finally:
            await client.delete(session)

    big, after = asyncio.run(scenario())
    assert len(big.stdout) <= 4096 and big.exit_code != 0
    assert b"output passed 4096 bytes" in big.stderr
    assert after.exit_code == 0 and after.stdout == b"still-alive\n"


def test_commands_run_only_as_the_user_running_the_agent(workspaces_dir):
    async def scenario():
        client = NsboxSandboxClient()
        session = await client.create()
        try:
            async with session:
                with pytest.raises(ValueError, match="runs commands as uid"):
                    await session.exec("id", user="nobody" if os.getuid() else "daemon")
                me = pwd.getpwuid(os.getuid()).pw_name
                return await session.exec("id -u", user=me)
        finally:
            await client.delete(session)

    result = asyncio.run(scenario())
    assert result.stdout.decode().strip() == str(os.getuid())


@needs_landlock(1)
def test_landlock_isolation(workspaces_dir, var_tmp):
    outside = var_tmp / "outside.txt"

    async def scenario():
        client = NsboxSandboxClient(isolation="landlock")
        session = await client.create()
        try:
            async with session:
                ok = await session.exec("echo inside > here.txt && cat here.txt")
                denied = await session.exec(f"echo {STARTED}; echo x > {outside}")
                return ok, denied
        finally:
            await client.delete(session)

    ok, denied = asyncio.run(scenario())
    assert ok.exit_code == 0 and ok.stdout == b"inside\n", ok.stderr
    assert_denied(denied, expect="Permission denied", started_marker=STARTED)
    assert not outside.exists()
