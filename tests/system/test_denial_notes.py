"""The note the agent-framework integrations add to a tool result when the sandbox blocked
something, seen by each framework's own offline model in a real run.

The blocked operations: a request through the network allowlist to a name that is not
on it (the name maps, by NSBOX_TEST_RESOLVE, to a listener on the host's loopback, which
must see only the allowed request), and a write to a host file outside the workspace
(which must stay as it was).
"""

import asyncio
import os
import pwd
import uuid

import pytest

from conftest import LoopbackHTTPServer, mock_model_output

# mini-swe-agent writes a global config directory on import; keep it out of $HOME.
os.environ.setdefault("MSWEA_GLOBAL_CONFIG_DIR", f"/tmp/nsbox-test-mswea-{os.getuid()}")
os.environ.setdefault("MSWEA_SILENT_STARTUP", "1")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ALLOWED = "curl -sS http://allowed.test/allowed"
DENIED = "curl -sS -o /dev/null -w 'status %{http_code}\\n' http://denied.test/must-not-arrive"
NOTE = "[nsbox] blocked by policy: GET denied.test:80 (not in allowlist)"
HINT = ('[nsbox] hint: not on the network allowlist: --allow-domain denied.test '
        '([network] allow = ["denied.test"])')


@pytest.fixture
def listener(monkeypatch):
    server = LoopbackHTTPServer()
    port = server.port
    monkeypatch.setenv("NSBOX_TEST_RESOLVE", f"allowed.test:80=127.0.0.1:{port},"
                                             f"denied.test:80=127.0.0.1:{port}")
    yield server
    server.close()


@pytest.fixture
def policy_file(tmp_path):
    """An allowlist policy outside every workspace (so it is taken whole)."""
    path = tmp_path / "policy.toml"
    path.write_text('[network]\nallow = ["allowed.test"]\n')
    return path


def assert_noted(text: str):
    assert "status 403" in text, text
    assert NOTE in text and HINT in text, text


def write_to(victim) -> str:
    return f"echo started; echo pwned > {victim}"


def assert_write_noted(text: str, victim):
    assert "started" in text and "Read-only file system" in text, text  # it ran, and was denied
    assert f"[nsbox] blocked by policy: write {victim} (outside the writable roots)" in text, text
    assert "[nsbox] hint: writes outside the workspace and $TMPDIR are refused: --writable PATH" \
        in text, text


@pytest.fixture
def victim(var_tmp):
    path = var_tmp / "victim"
    path.write_text("original\n")
    return path


def test_inspect_tool_results_carry_the_note(listener, policy_file, workspaces_dir, tmp_path,
                                             monkeypatch):
    pytest.importorskip("inspect_ai", reason="Inspect AI is not installed")
    from inspect_ai import Task, eval as inspect_eval
    from inspect_ai.dataset import Sample
    from inspect_ai.model import ChatMessageTool, get_model
    from inspect_ai.solver import generate, use_tools
    from inspect_ai.tool import bash
    from inspect_ai.util import SandboxEnvironmentSpec
    from nsbox.integrations.inspect_sandbox import NsboxSandboxConfig

    # A file to create in the runner's home (read-only inside; Inspect's sandboxes get
    # a /var/tmp of their own).
    victim = os.path.join(pwd.getpwuid(os.getuid()).pw_dir, f"nsbox-denial-{uuid.uuid4().hex}")
    # Inspect's bash() runs a login shell: the runner's own start-up files may try writes
    # of their own (a version manager's rehash), which would be noted too.
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))

    def next_output(messages, tools, tool_choice, config):
        done = sum(isinstance(m, ChatMessageTool) for m in messages)
        commands = (ALLOWED, DENIED, write_to(victim))
        return mock_model_output(("bash", {"command": commands[done]})
                                 if done < len(commands) else None)

    spec = SandboxEnvironmentSpec("nsbox", NsboxSandboxConfig(policy=str(policy_file)))
    task = Task(dataset=[Sample(input="fetch", target="x")],
                solver=[use_tools(bash(timeout=60)), generate()], sandbox=spec)
    model = get_model("mockllm/model", custom_outputs=next_output)
    [log] = inspect_eval(task, model=model, log_dir=str(tmp_path / "logs"), display="none",
                         log_format="json")

    assert log.status == "success", log.error
    [sample] = log.samples
    allowed, denied, wrote = [m for m in sample.messages if isinstance(m, ChatMessageTool)]
    assert "hello /allowed" in allowed.text and "[nsbox]" not in allowed.text
    assert denied.error is None
    assert_noted(denied.text)
    assert_write_noted(wrote.error.message if wrote.error else wrote.text, victim)
    assert not os.path.lexists(victim)
    assert listener.paths == ["/allowed"]  # the refused request never left the proxy
    assert [n for n in os.listdir(workspaces_dir) if n.startswith("nsbox-inspect-sample-")] == []


def test_inspect_note_can_be_turned_off(listener, policy_file, workspaces_dir):
    pytest.importorskip("inspect_ai", reason="Inspect AI is not installed")
    from nsbox.integrations.inspect_sandbox import NsboxSandboxConfig, NsboxSandboxEnvironment

    config = NsboxSandboxEnvironment.config_deserialize(
        {"policy": str(policy_file), "denial_note": False})
    assert config == NsboxSandboxConfig(policy=str(policy_file), denial_note=False)

    async def scenario():
        envs = await NsboxSandboxEnvironment.sample_init("t", config, {})
        try:
            return await envs["default"].exec(["sh", "-c", DENIED])
        finally:
            await NsboxSandboxEnvironment.sample_cleanup("t", config, envs, False)

    result = asyncio.run(scenario())
    assert result.stdout == "status 403\n"
    assert "[nsbox]" not in result.stderr
    assert listener.seen == []


def _mini_config(workspace, policy_file) -> dict:
    import yaml
    from minisweagent.config import builtin_config_dir

    config = yaml.safe_load((builtin_config_dir / "default.yaml").read_text())
    config["environment"].update(
        environment_class="nsbox.integrations.mini_swe_agent.NsboxEnvironment",
        cwd=str(workspace), timeout=60, policy=str(policy_file))
    return config


def test_mini_swe_agent_observations_carry_the_note(listener, policy_file, workspace, victim):
    pytest.importorskip("minisweagent", reason="mini-swe-agent is not installed")
    from minisweagent.agents.default import DefaultAgent
    from minisweagent.environments import get_environment
    from minisweagent.models.test_models import DeterministicModel, make_output

    def action(command: str) -> dict:
        return make_output(f"```mswea_bash_command\n{command}\n```", [{"command": command}])

    config = _mini_config(workspace, policy_file)
    model = DeterministicModel(outputs=[
        action(ALLOWED), action(DENIED), action(write_to(victim)),
        action(f"echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT && {DENIED}"),
    ])
    env = get_environment(config["environment"])
    agent = DefaultAgent(model, env, **config["agent"])
    try:
        result = agent.run("Fetch the page")
    finally:
        env.cleanup()

    assert result["exit_status"] == "Submitted"
    # A submission is the command's own output: no note in it.
    assert result["submission"] == "status 403\n"
    allowed, denied, wrote = [m["content"] for m in agent.messages if m["role"] == "user"][1:]
    assert "hello /allowed" in allowed and "[nsbox]" not in allowed
    assert_noted(denied)
    assert_write_noted(wrote, victim)
    assert victim.read_text() == "original\n"
    assert listener.paths == ["/allowed"]


def test_mini_swe_agent_note_can_be_turned_off(listener, policy_file, workspace):
    pytest.importorskip("minisweagent", reason="mini-swe-agent is not installed")
    from minisweagent.environments import get_environment

    config = _mini_config(workspace, policy_file)
    config["environment"]["denial_note"] = False
    env = get_environment(config["environment"])
    try:
        out = env.execute({"command": DENIED})
    finally:
        env.cleanup()
    assert out == {"output": "status 403\n", "returncode": 0, "exception_info": ""}
    assert listener.seen == []


def test_openai_agents_exec_results_carry_the_note(listener, workspaces_dir, victim):
    """Through the SDK's session API (its exec_command tool runs commands as PTY
    processes, which carry no note yet)."""
    pytest.importorskip("agents.sandbox", reason="the OpenAI Agents SDK is not installed")
    from nsbox.integrations.openai_agents import NsboxSandboxClient
    from nsbox.policy.model import Policy

    policy = Policy(network_allow=("allowed.test",))

    async def run(commands, **options):
        client = NsboxSandboxClient(policy=policy, isolation=None, **options)
        session = await client.create()
        try:
            async with session:
                return [await session.exec(command) for command in commands]
        finally:
            await client.delete(session)

    def text(result) -> str:
        return (result.stderr + result.stdout).decode()

    allowed, denied, wrote = asyncio.run(run([ALLOWED, DENIED, write_to(victim)]))
    [plain] = asyncio.run(run([DENIED], denial_note=False))
    assert "hello /allowed" in text(allowed) and "[nsbox]" not in text(allowed)
    assert_noted(text(denied))
    assert_write_noted(text(wrote), victim)
    assert victim.read_text() == "original\n"
    assert plain.stdout == b"status 403\n" and b"[nsbox]" not in plain.stderr
    assert listener.paths == ["/allowed"]
    assert os.listdir(workspaces_dir) == []


def test_hints_recognise_real_denials(workspace, var_tmp):
    """The hints match the targets the walls really report (resolved paths), and the
    host is unchanged."""
    import subprocess

    import nsbox
    from nsbox.policy.hints import hints
    from nsbox.policy.model import Policy

    home = pwd.getpwuid(os.getuid()).pw_dir
    cache_probe = os.path.join(home, ".cache", f"nsbox-hint-{uuid.uuid4().hex}")
    secret = var_tmp / "secret"
    secret.mkdir()
    subprocess.run(["git", "init", "-q", str(workspace)], check=True)
    policy = Policy(workspace=str(workspace), cache="off").hiding(str(secret))
    script = (f"echo started; echo x > {cache_probe}; echo x > {secret}/planted; "
              "echo x > .git/hooks/pre-commit; echo ok > fine.txt")
    result = nsbox.run(["sh", "-c", script], policy=policy)
    assert result.stdout.startswith(b"started"), result.stderr
    walls = sorted((d.wall, d.target) for d in result.denials)
    assert walls == [("filesystem", cache_probe),
                     ("filesystem", str(workspace / ".git/hooks/pre-commit")),
                     ("hidden", f"{secret}/planted")], result.denials
    cache, hidden, git = hints(result.denials, policy)
    assert "--cache shared" in cache and "[cache] mode" in cache
    assert f"--unhide {secret} " in hidden
    assert "git_protected" in git
    assert not os.path.lexists(cache_probe)
    assert os.listdir(secret) == []
    assert not (workspace / ".git/hooks/pre-commit").exists()
    assert (workspace / "fine.txt").read_text() == "ok\n"
