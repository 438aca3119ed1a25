"""nsbox as a mini-swe-agent environment, driven by its default agent and deterministic model."""

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

import nsbox

# mini-swe-agent writes a global config directory on import; keep it out of $HOME.
os.environ.setdefault("MSWEA_GLOBAL_CONFIG_DIR", f"/tmp/nsbox-test-mswea-{os.getuid()}")
os.environ.setdefault("MSWEA_SILENT_STARTUP", "1")
pytest.importorskip("minisweagent",
                    reason="mini-swe-agent is not installed (pip install nsbox[mini-swe-agent])")

import yaml  # noqa: E402
from minisweagent.agents.default import DefaultAgent  # noqa: E402
from minisweagent.config import builtin_config_dir  # noqa: E402
from minisweagent.environments import get_environment  # noqa: E402
from minisweagent.models.test_models import DeterministicModel, make_output  # noqa: E402
from conftest import assert_denied, needs_landlock, pids_running  # noqa: E402

ENVIRONMENT_CLASS = "nsbox.integrations.mini_swe_agent.NsboxEnvironment"


def action(command: str) -> dict:
    return make_output(f"```mswea_bash_command\n{command}\n```", [{"command": command}])


@pytest.fixture
def config(workspace):
    """mini-swe-agent's default config, with the nsbox environment over `workspace`."""
    config = yaml.safe_load((builtin_config_dir / "default.yaml").read_text())
    config["environment"].update(environment_class=ENVIRONMENT_CLASS, cwd=str(workspace),
                                 timeout=2, image="ignored-by-nsbox")
    return config


def test_the_default_agent_works_in_nsbox(config, workspace):
    home_probe = os.path.join(os.path.expanduser("~"), f"nsbox-mswea-{uuid.uuid4().hex}")
    background = f"{200 + uuid.uuid4().int % 100}.{uuid.uuid4().int % 10**6:06d}"
    model = DeterministicModel(outputs=[
        action("printf 'def answer():\\n    return 42\\n' > answer.py && echo written"),
        action("python3 -c 'import answer; print(answer.answer())' && echo kept > /tmp/kept"),
        action(f"cat /tmp/kept; echo pwned > {home_probe}"),
        action(f"(setsid sleep {background} &) ; sleep {background}"),
        action("echo $MARKER; uname -n; cat /tmp/kept 2>&1 || echo no-tmp"),
        action("echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT && cat answer.py"),
    ])
    config["environment"]["env"]["MARKER"] = "from-config"
    env = get_environment(config["environment"])
    agent = DefaultAgent(model, env, **config["agent"])
    try:
        result = agent.run("Write answer.py")
    finally:
        env.cleanup()

    assert result["exit_status"] == "Submitted"
    assert result["submission"] == "def answer():\n    return 42\n"
    assert (workspace / "answer.py").read_text() == result["submission"]
    observations = [m["content"] for m in agent.messages if m["role"] == "user"][1:]
    written, ran, denied, timed_out, after = observations
    assert "<returncode>0</returncode>" in written and "written" in written
    assert "42" in ran
    # A denied command is an ordinary failed observation.
    assert "<returncode>1</returncode>" in denied and "Read-only file system" in denied
    assert "kept" in denied  # the sandbox's /tmp lasts from one action to the next
    assert not os.path.exists(home_probe)
    # A timeout is returncode -1, and ends the whole sandbox: the setsid'd sleep too.
    assert "<returncode>-1</returncode>" in timed_out and "timed out" in timed_out
    assert pids_running("sleep", background) == []
    assert "from-config" in after and "nsbox" in after and "no-tmp" in after  # a new sandbox


def test_template_vars_and_a_failing_command(config, workspace):
    env = get_environment(config["environment"])
    try:
        names = env.get_template_vars()
        assert {"system", "release", "version", "machine", "cwd", "timeout"} <= set(names)
        assert names["node"] == "nsbox"
        out = env.execute({"command": "echo to-stderr >&2; exit 3"})
        assert out == {"output": "to-stderr\n", "returncode": 3, "exception_info": ""}
        missing = env.execute({"command": "true"}, cwd=str(workspace / "no-such-dir"))
        assert missing["returncode"] == -1 and missing["exception_info"]
        assert env.execute({"command": "pwd"}, cwd="/tmp")["output"] == "/tmp\n"
        assert env.serialize()["info"]["config"]["environment_type"] == ENVIRONMENT_CLASS
    finally:
        env.cleanup()


@needs_landlock(6)  # Landlock-only isolation needs it
def test_the_environment_under_landlock_isolation(config, workspace, tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text('isolation = "landlock"\n')
    victim = tmp_path / "victim"
    victim.write_text("original\n")
    background = f"{300 + uuid.uuid4().int % 100}.{uuid.uuid4().int % 10**6:06d}"
    config["environment"]["policy"] = str(policy)
    env = get_environment(config["environment"])
    try:
        first = env.execute({"command": 'echo kept > "$TMPDIR/kept"; echo ws > f; echo $TMPDIR'})
        assert first["returncode"] == 0, first
        tmpdir = first["output"].strip()
        assert env.execute({"command": 'cat "$TMPDIR/kept" f'})["output"] == "kept\nws\n"
        denied = env.execute({"command": f"echo started; echo pwned > {victim}"})
        # the environment merges stderr into output
        assert_denied(subprocess.CompletedProcess(None, denied["returncode"], denied["output"],
                                                  ""),
                      expect="Permission denied", started_marker="started")
        env.execute({"command": f"sleep {background} &"})
        deadline = time.monotonic() + 10
        while not pids_running("sleep", background) and time.monotonic() < deadline:
            time.sleep(0.05)  # the background shell may not have exec'd sleep yet
        assert pids_running("sleep", background)
    finally:
        env.cleanup()
    assert victim.read_text() == "original\n"
    assert (workspace / "f").read_text() == "ws\n"
    assert pids_running("sleep", background) == []
    assert not os.path.lexists(tmpdir)


def test_the_runners_api_key_is_out_of_the_commands_reach(workspace):
    """The agent's process holds the model's key in its environment. In a fresh one (its
    fork server starts with the key around), an action greps every environment it can
    read for it."""
    code = textwrap.dedent("""
        import json, os, sys
        from nsbox.integrations.mini_swe_agent import NsboxEnvironment

        env = NsboxEnvironment(cwd=sys.argv[1], timeout=60,
                               env={"GH_TOKEN": "x", "HF_TOKEN": "hf_chosenByTheConfig12345678"})
        try:
            out = env.execute({"command": "echo started; cat /proc/*/environ "
                               "/proc/*/task/*/environ 2>/dev/null | grep -c "
                               + os.environ["OPENAI_API_KEY"]})
            # The config's env is set as given, secret-looking names or not.
            chosen = env.execute({"command": 'echo "$GH_TOKEN $HF_TOKEN ${OPENAI_API_KEY:-unset}"'})
            # stdin is /dev/null, not this process's (which holds a line here).
            stdin = env.execute({"command": "cat; echo end"})
        finally:
            env.cleanup()
        print(json.dumps([out["returncode"], out["output"], chosen["output"], stdin["output"]]))
    """)
    secret = f"sk-test-{uuid.uuid4().hex}"
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(nsbox.__file__)))
    env = dict(os.environ, OPENAI_API_KEY=secret, PYTHONPATH=package_root)
    out = subprocess.run([sys.executable, "-c", code, str(workspace)], capture_output=True,
                         text=True, timeout=120, env=env, input="the runner's stdin\n")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == [
        1, "started\n0\n", "x hf_chosenByTheConfig12345678 unset\n", "end\n"]
