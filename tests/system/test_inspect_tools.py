"""Inspect's helper-based tools (text_editor(), bash_session()) next to bash() and python()
in nsbox samples, ten at once, in full and landlock-only isolation, driven by a real eval
with a scripted mock model; the helper tree cannot be changed from inside a sample."""

import hashlib
import os

import pytest

inspect_ai = pytest.importorskip(
    "inspect_ai", reason="Inspect AI is not installed (pip install nsbox[inspect])")

from inspect_ai import Task, eval as inspect_eval  # noqa: E402
from inspect_ai.dataset import Sample  # noqa: E402
from inspect_ai.model import ChatMessageTool, get_model  # noqa: E402
from inspect_ai.scorer import CORRECT, INCORRECT, Score, Target, accuracy, scorer  # noqa: E402
from inspect_ai.solver import TaskState, generate, use_tools  # noqa: E402
from inspect_ai.tool import bash, bash_session, python, text_editor  # noqa: E402
from inspect_ai.util import sandbox  # noqa: E402
from inspect_ai.util._sandbox._cli import SANDBOX_TOOLS_DIR  # noqa: E402
from conftest import mock_model_output, needs_landlock  # noqa: E402

from nsbox.integrations import inspect_tools  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SAMPLES = 10
LAUNCHER = f"{SANDBOX_TOOLS_DIR}/inspect-sandbox-tools"


def tamper_command() -> str:
    """From inside a sample: change, remove, move or add to the helper, where the sample
    sees it and where it is on the host (which landlock-only isolation lets it see)."""
    host = os.path.join(inspect_tools._tree or "/nonexistent", "inspect-sandbox-tools")
    return (f"for f in {LAUNCHER} {host}; do "
            f'[ -e "$f" ] || continue; echo pwned >> "$f" && echo "CHANGED $f"; '
            f'rm -f "$f" && echo "REMOVED $f"; '
            f'mv "$(dirname "$f")" "$(dirname "$f").moved" && echo "MOVED $f"; '
            f'mkdir "$(dirname "$f")/planted" && echo "PLANTED $f"; done; echo tried')


def scripted_model(with_session: bool = True):
    """Per sample: every tool once or more, an attempt on the helper, the tools again
    (bash_session left out unless `with_session`)."""

    def next_output(messages, tools, tool_choice, config):
        sample = messages[0].text.split()[-1]
        results = [m for m in messages if isinstance(m, ChatMessageTool)]
        workspace = results[0].text.strip().splitlines()[-1] if results else ""
        notes = f"{workspace}/notes.txt"
        calls = [
            ("bash", {"command": "pwd"}),
            ("python", {"code": "print(6 * 7)"}),
            ("text_editor", {"command": "create", "path": notes,
                             "file_text": f"hello {sample}\nsecond line\n"}),
            ("text_editor", {"command": "str_replace", "path": notes,
                             "old_str": "hello", "new_str": "bye"}),
            ("text_editor", {"command": "view", "path": notes}),
            ("bash_session", {"action": "type_submit",
                              "input": f"export MARK={sample}; cd {workspace}; echo started"}),
            ("bash", {"command": tamper_command()}),
            ("bash_session", {"action": "type_submit", "input": "echo mark=$MARK; cat notes.txt"}),
            ("text_editor", {"command": "view", "path": notes}),
        ]
        if not with_session:
            calls = [c for c in calls if c[0] != "bash_session"]
        return mock_model_output(calls[len(results)] if len(results) < len(calls) else None)

    return next_output


@scorer(metrics=[accuracy()])
def notes_edited():
    async def score(state: TaskState, target: Target) -> Score:
        text = await sandbox().read_file("notes.txt")
        ok = text == f"bye {target.text}\nsecond line\n"
        return Score(value=CORRECT if ok else INCORRECT, explanation=repr(text))

    return score


def _tool_name(message: ChatMessageTool) -> str:
    return message.function or ""


@pytest.fixture
def eval_tmp(tmp_path, workspaces_dir):
    """tmp_path, its work/ holding the samples' workspaces."""
    return tmp_path


def _digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _run_eval(eval_tmp, config, with_session=True, samples=SAMPLES):
    task = Task(
        dataset=[Sample(input=f"work as sample-{i}", target=f"sample-{i}")
                 for i in range(samples)],
        solver=[use_tools(bash(timeout=60), python(timeout=60), text_editor(),
                          bash_session()), generate()],
        scorer=notes_edited(),
        sandbox=("nsbox", config) if config else "nsbox",
    )
    model = get_model("mockllm/model", custom_outputs=scripted_model(with_session))
    [log] = inspect_eval(task, model=model, log_dir=str(eval_tmp / "logs"), display="none",
                         max_samples=SAMPLES, max_sandboxes=SAMPLES, log_format="json")
    return log


def _check(log, eval_tmp, with_session=True):
    assert log.status == "success", log.error
    assert len(log.samples) == SAMPLES
    for sample in log.samples:
        assert sample.error is None, sample.error
        score = next(iter(sample.scores.values()))
        assert score.value == CORRECT, score.explanation
        results = [m for m in sample.messages if isinstance(m, ChatMessageTool)]
        assert len(results) == (9 if with_session else 7)
        for message in results:
            assert message.error is None, (message.function, message.error)
        if with_session:
            pwd, six_by_seven, created, replaced, viewed, started, tamper, marked, again = results
            assert "started" in started.text
            # Each sample's bash_session is its own: its variable, its directory.
            assert f"mark={sample.target}" in marked.text
            assert f"bye {sample.target}" in marked.text
        else:
            pwd, six_by_seven, created, replaced, viewed, tamper, again = results
        assert six_by_seven.text.strip().splitlines()[-1] == "42"
        assert "bye " + sample.target in viewed.text and "bye " + sample.target in again.text
        assert pwd.text.strip().splitlines()[-1].startswith(str(eval_tmp / "work"))
        # The helper could be neither changed, removed, moved nor added to.
        assert "tried" in tamper.text
        for word in ("CHANGED", "REMOVED", "MOVED", "PLANTED"):
            assert word not in tamper.text, tamper.text


def _tree_intact():
    tree = inspect_tools._tree
    assert tree is not None and os.path.isdir(tree)
    launcher = os.path.join(tree, "inspect-sandbox-tools")
    with open(launcher, "rb") as f:
        assert not f.read().endswith(b"pwned\n")
    assert sorted(os.listdir(tree)) == ["_internal", "inspect-sandbox-tools"]
    return _digest(launcher)


def test_every_tool_in_ten_samples_with_full_isolation(eval_tmp):
    log = _run_eval(eval_tmp, None)
    _check(log, eval_tmp)
    _tree_intact()
    assert os.listdir(eval_tmp / "work") == [os.path.basename(inspect_tools._tree)] or \
        os.listdir(eval_tmp / "work") == []


@needs_landlock(6)
def test_bash_python_and_text_editor_in_ten_samples_with_landlock_only_isolation(eval_tmp):
    config = eval_tmp / "policy.toml"
    config.write_text('isolation = "landlock"\n')
    log = _run_eval(eval_tmp, str(config), with_session=False)
    _check(log, eval_tmp, with_session=False)
    _tree_intact()


@needs_landlock(6)
def test_bash_session_with_landlock_only_isolation_fails_saying_why(eval_tmp):
    config = eval_tmp / "policy.toml"
    config.write_text('isolation = "landlock"\n')
    log = _run_eval(eval_tmp, str(config), samples=1)
    [sample] = log.samples
    assert sample.error is not None
    assert "bash_session() needs a terminal" in sample.error.message
    assert "/dev/pts" in sample.error.message
