"""The Inspect provider's exec_remote (events while the command runs, kill() ends its
whole tree), timeout_retry, and setup= scripts where user namespaces are blocked."""

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

inspect_ai = pytest.importorskip(
    "inspect_ai", reason="Inspect AI is not installed (pip install nsbox[inspect])")

from inspect_ai.util import (  # noqa: E402
    ExecCompleted,
    ExecRemoteAwaitableOptions,
    ExecRemoteStreamingOptions,
    ExecStdout,
)
from conftest import WITHOUT_USERNS, marker, needs_blocked_userns, needs_landlock  # noqa: E402
from conftest import pids_running, wait_until  # noqa: E402

from nsbox.integrations.inspect_sandbox import NsboxSandboxEnvironment  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _isolations():
    from conftest import LANDLOCK_ABI

    modes = ["full"]
    if LANDLOCK_ABI >= 6:
        modes.append("landlock")
    return modes


def _in_sample(tmp_path, monkeypatch, isolation, scenario):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    config = tmp_path / "policy.toml"
    config.write_text(f'isolation = "{isolation}"\n')

    async def run():
        envs = await NsboxSandboxEnvironment.sample_init("t", str(config), {})
        try:
            return await scenario(envs["default"])
        finally:
            await NsboxSandboxEnvironment.sample_cleanup("t", str(config), envs, False)

    return asyncio.run(run())


@pytest.mark.parametrize("isolation", _isolations())
def test_a_stream_delivers_output_before_the_command_ends_and_kill_ends_its_tree(
        tmp_path, monkeypatch, isolation):
    child, escaped = marker(), marker()
    script = (f"echo first; sleep {child} & setsid sleep {escaped} & "
              "sleep 0.2; echo second >&2; wait")

    async def scenario(box):
        process = await box.exec_remote(["sh", "-c", script])
        first = await asyncio.wait_for(process.__anext__(), 60)
        # The command is still running: its sleeps are there.
        running = await asyncio.to_thread(wait_until, lambda: pids_running("sleep", child)
                                          and pids_running("sleep", escaped))
        await process.kill()
        rest = [event async for event in process]
        return first, running, rest

    first, running, rest = _in_sample(tmp_path, monkeypatch, isolation, scenario)
    assert isinstance(first, ExecStdout) and first.data == "first\n"
    assert running
    assert not any(isinstance(e, ExecCompleted) for e in rest)  # killed, not completed
    assert wait_until(lambda: not pids_running("sleep", child)
                      and not pids_running("sleep", escaped))


@pytest.mark.parametrize("isolation", _isolations())
def test_exec_remote_input_env_and_awaited_results(tmp_path, monkeypatch, isolation):
    token = f"ghp_{marker()}"

    async def scenario(box):
        done = await box.exec_remote(
            ["sh", "-c", 'read line; echo "$line $GH_TOKEN"; exit 3'],
            ExecRemoteAwaitableOptions(input="hello\n", env={"GH_TOKEN": token}), stream=False)
        process = await box.exec_remote(["cat"], ExecRemoteStreamingOptions(stdin_open=True))
        await process.write_stdin("typed\n")
        await process.close_stdin()
        events = [event async for event in process]
        with pytest.raises(TimeoutError):
            await box.exec_remote(["sleep", "30"], ExecRemoteAwaitableOptions(timeout=1),
                                  stream=False)
        return done, events

    done, events = _in_sample(tmp_path, monkeypatch, isolation, scenario)
    assert (done.returncode, done.stdout, done.success) == (3, f"hello {token}\n", False)
    assert "".join(e.data for e in events if isinstance(e, ExecStdout)) == "typed\n"
    assert events[-1] == ExecCompleted(exit_code=0)


def test_timeout_retry_runs_a_timed_out_command_again_unless_told_not_to(tmp_path, monkeypatch):
    # Slow the first time only: the retry (Inspect's contract) finds the mark and is quick.
    script = "if [ -e mark ]; then echo again; else touch mark; sleep 20; fi"

    async def scenario(box):
        retried = await box.exec(["sh", "-c", script], timeout=2)
        await box.exec(["rm", "mark"])
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await box.exec(["sh", "-c", script], timeout=2, timeout_retry=False)
        return retried, time.monotonic() - started

    retried, _ = _in_sample(tmp_path, monkeypatch, "full", scenario)
    assert retried.success and retried.stdout.endswith("again\n")


SETUP_EVAL = textwrap.dedent("""
    import json, sys, tempfile
    from inspect_ai import Task, eval as inspect_eval
    from inspect_ai.dataset import Sample
    from inspect_ai.model import ModelOutput, ModelUsage, get_model
    from inspect_ai.scorer import CORRECT, INCORRECT, Score, accuracy, scorer
    from inspect_ai.solver import generate
    from inspect_ai.util import sandbox
    from nsbox.integrations.inspect_sandbox import NsboxSandboxEnvironment

    tempfile.tempdir = sys.argv[1]

    @scorer(metrics=[accuracy()])
    def setup_ran():
        async def score(state, target):
            text = await sandbox().read_file("from_setup.txt")
            isolation = sandbox().as_type(NsboxSandboxEnvironment).session.isolation
            ok = text.startswith("setup ran in ")
            return Score(value=CORRECT if ok else INCORRECT, explanation=text,
                         metadata={"isolation": isolation})
        return score

    def reply(messages, tools, tool_choice, config):
        out = ModelOutput.from_content("mockllm/model", "done")
        out.usage = ModelUsage(input_tokens=1, output_tokens=1, total_tokens=2)
        return out

    task = Task(dataset=[Sample(input="go", setup="echo setup ran in $PWD > from_setup.txt")
                         for _ in range(3)],
                solver=[generate()], scorer=setup_ran(), sandbox=("nsbox", sys.argv[2]))
    [log] = inspect_eval(task, model=get_model("mockllm/model", custom_outputs=reply),
                         log_dir=sys.argv[3], display="none", log_format="json")
    print(json.dumps({"status": log.status, "error": str(log.error),
                      "scores": [next(iter(s.scores.values())).value for s in log.samples],
                      "isolation": [next(iter(s.scores.values())).metadata["isolation"]
                                    for s in log.samples]}))
""")


@needs_landlock(6)
@needs_blocked_userns()
def test_setup_scripts_run_where_user_namespaces_are_blocked(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    config = tmp_path / "policy.toml"
    config.write_text('isolation = "auto"\n')
    script = tmp_path / "setup_eval.py"
    script.write_text(SETUP_EVAL)
    env = dict(os.environ, PYTHONPATH=PACKAGE_ROOT)
    done = subprocess.run([*WITHOUT_USERNS, sys.executable, str(script), str(work), str(config),
                           str(tmp_path / "logs")],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["status"] == "success", report["error"]
    assert report["scores"] == ["C"] * 3
    assert report["isolation"] == ["landlock"] * 3
    assert os.listdir(work) == [] or all(n.startswith("nsbox-inspect-tools-")
                                         for n in os.listdir(work))


@needs_landlock(6)
def test_landlock_only_isolation_starts_no_tools_server_others_could_reach(tmp_path, monkeypatch):
    from inspect_ai.util._sandbox._cli import SANDBOX_CLI

    request = json.dumps({"jsonrpc": "2.0", "method": "exec_remote_start",
                          "params": {"command": "true"}, "id": 1})

    async def scenario(box):
        result = await box.exec([SANDBOX_CLI, "exec"], input=request)
        state = os.path.join(box.session.tmpdir, ".inspect-sandbox-tools")
        return box.session.host_sockets_reachable, result, os.path.exists(state)

    reachable, result, state_made = _in_sample(tmp_path, monkeypatch, "landlock", scenario)
    if not reachable:
        pytest.skip("this kernel's Landlock confines unix sockets: the server may run")
    assert not result.success and "other samples' commands could connect" in result.stderr
    assert not state_made  # the server never started
