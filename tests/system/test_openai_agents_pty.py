"""PTY sessions of the Agents SDK client: a process that keeps running between calls,
with a terminal of its own (its controlling terminal: ^C interrupts it) or pipes."""

import asyncio

import pytest

pytest.importorskip(
    "agents.sandbox",
    reason="the OpenAI Agents SDK is not installed (pip install nsbox[openai-agents])")

from conftest import LANDLOCK_ABI, marker, pids_running, wait_until  # noqa: E402

from nsbox.integrations.openai_agents import NsboxSandboxClient  # noqa: E402

ISOLATIONS = ["full"] + (["landlock"] if LANDLOCK_ABI >= 6 else [])
ECHO_LINES = "printf 'ready\\n'; while IFS= read -r line; do printf 'got:%s\\n' \"$line\"; done"


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_a_terminal_session_reads_what_is_typed_and_stops_on_ctrl_c(workspaces_dir, isolation):
    sleeper = marker()

    async def scenario():
        client = NsboxSandboxClient(isolation=isolation)
        session = await client.create()
        try:
            async with session:
                assert session.supports_pty()
                started = await session.pty_exec_start(
                    "sh", "-c", f"test -t 0 && echo on-a-terminal; {ECHO_LINES}",
                    shell=False, tty=True, yield_time_s=5)
                typed = await session.pty_write_stdin(session_id=started.process_id,
                                                      chars="hello\n", yield_time_s=2)
                looping = await session.pty_exec_start(
                    "sh", "-c", f"sleep {sleeper}", shell=False, tty=True, yield_time_s=0.5)
                await asyncio.to_thread(wait_until, lambda: pids_running("sleep", sleeper))
                interrupted = await session.pty_write_stdin(
                    session_id=looping.process_id, chars="\x03", yield_time_s=5)
                piped = await session.pty_exec_start("echo piped; echo err >&2", tty=False,
                                                     yield_time_s=5)
                return started, typed, interrupted, piped
        finally:
            await client.delete(session)

    started, typed, interrupted, piped = asyncio.run(scenario())
    assert b"on-a-terminal" in started.output and b"ready" in started.output
    assert started.process_id is not None and started.exit_code is None
    assert b"got:hello" in typed.output
    # ^C on the controlling terminal: SIGINT ended it (128 + 2).
    assert interrupted.exit_code == 130 and interrupted.process_id is None
    assert not pids_running("sleep", sleeper)
    assert b"piped" in piped.output and b"err" in piped.output and piped.exit_code == 0
