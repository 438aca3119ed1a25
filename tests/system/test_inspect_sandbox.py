"""nsbox as an Inspect AI sandbox provider, driven by a real eval with a scripted mock model."""

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import uuid

import pytest

import nsbox

inspect_ai = pytest.importorskip(
    "inspect_ai", reason="Inspect AI is not installed (pip install nsbox[inspect])")

from inspect_ai import Task, eval as inspect_eval  # noqa: E402
from inspect_ai.dataset import Sample  # noqa: E402
from inspect_ai.model import ChatMessageTool, get_model  # noqa: E402
from inspect_ai.scorer import CORRECT, INCORRECT, Score, Target, accuracy, scorer  # noqa: E402
from inspect_ai.solver import TaskState, generate, use_tools  # noqa: E402
from inspect_ai.tool import bash  # noqa: E402
from inspect_ai.util import sandbox  # noqa: E402
from conftest import mock_model_output, needs_landlock, pids_running  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SAMPLES = 10
TOOL_TIMEOUT = 2


def mountinfo() -> list:
    with open("/proc/self/mountinfo") as f:
        return sorted(line.split(" ", 4)[4] for line in f)


def test_the_entry_point_registers_the_provider():
    """What Inspect does for sandbox="nsbox", in a fresh interpreter (an import error
    there is only a logged warning, then "not recognized")."""
    code = ("from inspect_ai.util._sandbox.registry import registry_find_sandboxenv as find\n"
            "print(find('nsbox').__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "nsbox.integrations.inspect_sandbox"


@pytest.fixture
def eval_tmp(tmp_path, workspaces_dir):
    """Workspaces under tmp_path/work, so the test can see that none is left."""
    return tmp_path


def scripted_model(home_probe: str, secret: str, sleep_for: str):
    """Per sample: write a file, write to $HOME, time out, plant links to a secret, stop."""

    def next_output(messages, tools, tool_choice, config):
        sample = messages[0].text.split()[-1]
        done = sum(isinstance(m, ChatMessageTool) for m in messages)
        commands = [
            f"echo {sample} > result.txt && echo; echo $(ls)",
            f"echo pwned > {home_probe}",
            f"sleep {sleep_for}",
            f"ln -s {secret} notes.txt && ln -s {secret} clobber.txt",
        ]
        return mock_model_output(("bash", {"command": commands[done]})
                                 if done < len(commands) else None)

    return next_output


@scorer(metrics=[accuracy()])
def sandbox_checks():
    async def score(state: TaskState, target: Target) -> Score:
        box = sandbox()
        problems = []
        if (await box.read_file("result.txt")).strip() != target.text:
            problems.append("result.txt does not hold this sample's id")
        if (await box.read_file("result.txt", text=False)).strip() != target.text.encode():
            problems.append("read_file(text=False) differs")
        try:
            leaked = await box.read_file("notes.txt")
            problems.append(f"read_file followed a planted link: {leaked!r}")
        except FileNotFoundError:
            pass
        try:
            await box.write_file("clobber.txt", "overwritten")
        except OSError:
            pass
        await box.write_file("from_scorer/bytes.bin", b"\x00\x01")
        seen = await box.exec(["sh", "-c", "cat from_scorer/bytes.bin | od -An -tx1; pwd"])
        return Score(value=INCORRECT if problems else CORRECT, explanation="; ".join(problems),
                     metadata={"exec": seen.stdout})

    return score


def test_an_eval_runs_each_sample_in_its_own_nsbox(eval_tmp):
    secret = eval_tmp / "id_rsa"
    secret.write_text("TOPSECRET\n")
    home_probe = os.path.join(os.path.expanduser("~"), f"nsbox-inspect-{uuid.uuid4().hex}")
    sleep_for = f"{100 + uuid.uuid4().int % 100}.{uuid.uuid4().int % 10**6:06d}"
    mounts_before = mountinfo()

    task = Task(
        dataset=[Sample(input=f"do the task for sample-{i}", target=f"sample-{i}",
                        files={"given.txt": f"given to sample-{i}\n"}) for i in range(SAMPLES)],
        solver=[use_tools(bash(timeout=TOOL_TIMEOUT)), generate()],
        scorer=sandbox_checks(),
        sandbox="nsbox",
    )
    model = get_model("mockllm/model",
                      custom_outputs=scripted_model(home_probe, str(secret), sleep_for))
    [log] = inspect_eval(task, model=model, log_dir=str(eval_tmp / "logs"), display="none",
                         max_samples=SAMPLES, max_sandboxes=SAMPLES, log_format="json")

    assert log.status == "success", log.error
    assert len(log.samples) == SAMPLES
    workspaces = set()
    for sample in log.samples:
        score = next(iter(sample.scores.values()))
        assert score.value == CORRECT, score.explanation
        shown, workspace = score.metadata["exec"].split()[:2], score.metadata["exec"].split()[-1]
        assert shown == ["00", "01"]
        workspaces.add(workspace)
        tool_results = [m for m in sample.messages if isinstance(m, ChatMessageTool)]
        assert len(tool_results) == 4
        made, home, slept, _ = tool_results
        # Only this sample's files: the sample's own `files` and what it wrote.
        assert made.error is None and made.text.splitlines()[-1] == "given.txt result.txt"
        assert "Read-only file system" in (home.error.message if home.error else home.text)
        assert slept.error is not None and slept.error.type == "timeout"
    assert len(workspaces) == SAMPLES  # ten sandboxes, one per sample

    assert not os.path.exists(home_probe)
    assert secret.read_text() == "TOPSECRET\n"
    assert pids_running("sleep", sleep_for) == []
    assert mountinfo() == mounts_before
    # Only the helper tree, unpacked once per process (removed when it exits).
    assert [n for n in os.listdir(eval_tmp / "work")
            if not n.startswith("nsbox-inspect-tools-")] == []


def test_the_provider_contract_with_a_policy_file(tmp_path, monkeypatch):
    """exec's arguments and errors; paths outside the workspace (its private /tmp) are
    read and written from inside the sandbox."""
    from nsbox.integrations.inspect_sandbox import NsboxSandboxEnvironment
    from inspect_ai.util import OutputLimitExceededError, SandboxUserUnsupportedError
    from inspect_ai.util._sandbox.limits import override_max_exec_output_size

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    config = tmp_path / "policy.toml"
    config.write_text('hostname = "inspect-box"\n')
    host_tmp_file = f"/tmp/nsbox-inspect-{uuid.uuid4().hex}"

    async def scenario():
        await NsboxSandboxEnvironment.task_init("t", str(config))
        envs = await NsboxSandboxEnvironment.sample_init("t", str(config), {})
        box = envs["default"]
        try:
            assert (await box.exec(["uname", "-n"])).stdout == "inspect-box\n"
            await box.write_file(host_tmp_file, "inside\r\n")
            assert await box.read_file(host_tmp_file) == "inside\r\n"
            assert (await box.exec(["cat", host_tmp_file])).stdout == "inside\r\n"
            with pytest.raises(FileNotFoundError):
                await box.read_file("/tmp/does-not-exist")
            with pytest.raises(PermissionError):
                await box.write_file("/etc/nsbox-inspect-probe", "x")
            with pytest.raises(FileNotFoundError):  # Inspect's contract for a missing cwd
                await box.exec(["true"], cwd="no-such-dir")
            with pytest.raises(FileNotFoundError):
                await box.exec(["true"], cwd="/no-such-dir")
            assert (await box.exec(["true"])).success  # and the sandbox is still there
            with pytest.raises(SandboxUserUnsupportedError):
                await box.exec(["id"], user="nobody" if os.getuid() else "daemon")
            with override_max_exec_output_size(1000):
                with pytest.raises(OutputLimitExceededError):
                    await box.exec(["yes"])
            await box.write_file("sub/x", "")
            result = await box.exec(["sh", "-c", 'read line; echo "$line $WHO $(ls)"; exit 3'],
                                    input="hello", env={"WHO": "there"}, cwd="sub")
            assert (result.returncode, result.stdout, result.success) == (3, "hello there x\n", False)
        finally:
            await NsboxSandboxEnvironment.sample_cleanup("t", str(config), envs, False)
        return box.workspace

    workspace = asyncio.run(scenario())
    assert not os.path.exists(host_tmp_file)  # it was the sandbox's /tmp
    assert not os.path.exists("/etc/nsbox-inspect-probe")
    assert not os.path.exists(workspace)


def test_without_user_namespaces_the_error_says_to_set_isolation_auto(tmp_path, monkeypatch):
    from nsbox.errors import UnsupportedKernel
    from nsbox.integrations import inspect_sandbox

    def no_namespaces(policy):
        raise UnsupportedKernel("unshare(CLONE_NEWUSER) failed: EPERM. User namespaces are "
                                "disabled")

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(inspect_sandbox, "Session", no_namespaces)
    with pytest.raises(UnsupportedKernel, match='User namespaces are disabled.*isolation = "auto"'):
        asyncio.run(inspect_sandbox.NsboxSandboxEnvironment.sample_init("t", None, {}))
    assert os.listdir(tmp_path) == []  # the workspace went too


def test_cli_cleanup_removes_what_a_killed_eval_left_and_nothing_else(tmp_path, monkeypatch,
                                                                      capsys):
    from nsbox.integrations import inspect_tools
    from nsbox.integrations.inspect_sandbox import SAMPLE_PREFIX, NsboxSandboxEnvironment

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    # A harness killed mid-sample: its sample directory stays, with read-only parts.
    code = textwrap.dedent("""
        import asyncio, os, sys, tempfile
        from nsbox.integrations.inspect_sandbox import NsboxSandboxEnvironment

        tempfile.tempdir = sys.argv[1]

        async def main():
            box = (await NsboxSandboxEnvironment.sample_init("t", None, {}))["default"]
            await box.exec(["sh", "-c", "mkdir -p ro/deep && touch ro/deep/f && chmod 500 ro"])
            print(box.root, flush=True)
            os.kill(os.getpid(), 9)

        asyncio.run(main())
    """)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(nsbox.__file__)))
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                         text=True, timeout=120, env=dict(os.environ, PYTHONPATH=package_root))
    assert out.returncode == -9, out.stderr
    leftover = out.stdout.strip()
    assert os.path.basename(leftover).startswith(SAMPLE_PREFIX)
    assert os.path.isdir(os.path.join(leftover, "workspace", "ro", "deep"))
    # Not nsbox's, or not a leftover: kept.
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep").write_text("x")
    (tmp_path / f"{SAMPLE_PREFIX}link").symlink_to(other)
    (tmp_path / f"{SAMPLE_PREFIX}file").write_text("x")

    async def scenario():
        envs = await NsboxSandboxEnvironment.sample_init("t", None, {})
        try:
            await NsboxSandboxEnvironment.cli_cleanup(None)
            assert (await envs["default"].exec(["true"])).success
            return envs["default"].root
        finally:
            await NsboxSandboxEnvironment.sample_cleanup("t", None, envs, False)

    running = asyncio.run(scenario())
    printed = capsys.readouterr().out
    assert f"removed {leftover}" in printed
    assert f"kept {running} (a running eval uses it)" in printed
    # The killed harness's sample directory and the tools tree it unpacked (its atexit
    # never ran); this process's own tree is kept.
    assert printed.count("removed") == 2
    assert f"removed {tmp_path}/{inspect_tools.TOOLS_PREFIX}" in printed
    assert not os.path.lexists(leftover)
    assert (other / "keep").read_text() == "x"
    assert sorted(n for n in os.listdir(tmp_path)
                  if str(tmp_path / n) != inspect_tools._tree) == sorted(
        ["other", f"{SAMPLE_PREFIX}link", f"{SAMPLE_PREFIX}file"])
    # An id outside nsbox's sample directories is refused.
    asyncio.run(NsboxSandboxEnvironment.cli_cleanup(str(other)))
    assert "not an nsbox sample directory" in capsys.readouterr().out
    assert (other / "keep").exists()


@needs_landlock(6)  # Landlock-only isolation needs it
def test_the_provider_under_landlock_isolation(tmp_path, monkeypatch, var_tmp):
    from nsbox.integrations.inspect_sandbox import NsboxSandboxEnvironment

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    config = tmp_path / "policy.toml"
    config.write_text('isolation = "landlock"\n')
    # Outside /tmp: a harness path in /tmp means the sandbox's own (its private TMPDIR).
    victim = var_tmp / "victim"
    victim.write_text("original\n")
    in_host_tmp = tmp_path / "host-tmp-file"
    in_host_tmp.write_text("host\n")

    async def scenario():
        envs = await NsboxSandboxEnvironment.sample_init("t", str(config), {})
        box = envs["default"]
        try:
            tmpdir = (await box.exec(["sh", "-c", 'echo "$TMPDIR"'])).stdout.strip()
            await box.write_file(f"{tmpdir}/note", "inside\n")
            assert await box.read_file(f"{tmpdir}/note") == "inside\n"
            await box.write_file("here", "ws\n")
            assert (await box.exec(["cat", "here"])).stdout == "ws\n"
            with pytest.raises(PermissionError):
                await box.write_file(str(victim), "pwned")
            # /tmp paths are the sandbox's: the host's file is neither read nor written.
            with pytest.raises(FileNotFoundError):
                await box.read_file(str(in_host_tmp))
            await box.write_file(str(in_host_tmp), "sandbox\n")
            assert await box.read_file(str(in_host_tmp)) == "sandbox\n"
        finally:
            await NsboxSandboxEnvironment.sample_cleanup("t", str(config), envs, False)
        return tmpdir, box.workspace

    tmpdir, workspace = asyncio.run(scenario())
    assert victim.read_text() == "original\n"
    assert in_host_tmp.read_text() == "host\n"
    assert not os.path.lexists(tmpdir)
    assert not os.path.exists(workspace)


def test_the_runners_api_key_is_out_of_the_commands_reach(tmp_path):
    """An eval runner holds the model's key in its environment. In a fresh runner (its
    fork server starts with the key around), a sample's command greps every
    environment it can read for it."""
    code = textwrap.dedent("""
        import asyncio, json, os, sys, tempfile
        from nsbox.integrations.inspect_sandbox import NsboxSandboxEnvironment

        tempfile.tempdir = sys.argv[1]
        grep = 'echo started; cat /proc/*/environ /proc/*/task/*/environ 2>/dev/null | grep -c "$1"'

        async def main():
            envs = await NsboxSandboxEnvironment.sample_init("t", None, {})
            try:
                box = envs["default"]
                # env: Inspect's way in for the runner's own environment, too.
                result = await box.exec(["sh", "-c", grep, "sh", os.environ["OPENAI_API_KEY"]],
                                        env={"FROM_SAMPLE": "1"})
                # What the harness passes on purpose is set as given, secret-looking or not.
                chosen = await box.exec(
                    ["sh", "-c", 'echo "$GH_TOKEN $HF_TOKEN ${OPENAI_API_KEY:-unset}"'],
                    env={"GH_TOKEN": "x", "HF_TOKEN": "hf_chosenByTheHarness1234567"})
            finally:
                await NsboxSandboxEnvironment.sample_cleanup("t", None, envs, False)
            return [result.returncode, result.stdout, chosen.stdout]

        print(json.dumps(asyncio.run(main())))
    """)
    secret = f"sk-test-{uuid.uuid4().hex}"
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(nsbox.__file__)))
    env = dict(os.environ, OPENAI_API_KEY=secret, PYTHONPATH=package_root)
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                         text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == [
        1, "started\n0\n", "x hf_chosenByTheHarness1234567 unset\n"]
