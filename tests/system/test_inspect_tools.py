"""Inspect's helper-based tools (text_editor(), bash_session()) next to bash() and python()
in nsbox samples, ten at once, in full and landlock-only isolation, driven by a real eval
with a scripted mock model; the helper tree cannot be changed from inside a sample."""

import hashlib
import os
import pathlib
import shutil
import uuid

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
from conftest import marker, mock_model_output, needs_landlock, pids_running  # noqa: E402

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


def scripted_model():
    """Per sample: every tool once or more, an attempt on the helper, the tools again."""

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


def _run_eval(eval_tmp, config):
    task = Task(
        dataset=[Sample(input=f"work as sample-{i}", target=f"sample-{i}")
                 for i in range(SAMPLES)],
        solver=[use_tools(bash(timeout=60), python(timeout=60), text_editor(),
                          bash_session()), generate()],
        scorer=notes_edited(),
        sandbox=("nsbox", config) if config else "nsbox",
    )
    model = get_model("mockllm/model", custom_outputs=scripted_model())
    [log] = inspect_eval(task, model=model, log_dir=str(eval_tmp / "logs"), display="none",
                         max_samples=SAMPLES, max_sandboxes=SAMPLES, log_format="json")
    return log


def _check(log, eval_tmp):
    assert log.status == "success", log.error
    assert len(log.samples) == SAMPLES
    for sample in log.samples:
        assert sample.error is None, sample.error
        score = next(iter(sample.scores.values()))
        assert score.value == CORRECT, score.explanation
        results = [m for m in sample.messages if isinstance(m, ChatMessageTool)]
        assert len(results) == 9
        for message in results:
            assert message.error is None, (message.function, message.error)
        pwd, six_by_seven, created, replaced, viewed, started, tamper, marked, again = results
        assert "started" in started.text
        # Each sample's bash_session is its own: its variable, its directory.
        assert f"mark={sample.target}" in marked.text
        assert f"bye {sample.target}" in marked.text
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
def test_every_tool_in_ten_samples_with_landlock_only_isolation(eval_tmp):
    config = eval_tmp / "policy.toml"
    config.write_text('isolation = "landlock"\n')
    log = _run_eval(eval_tmp, str(config))
    _check(log, eval_tmp)
    _tree_intact()


# --- bash_session(): a shell per sample on a terminal made on the host, answered by nsbox

ISOLATIONS = ["full", pytest.param("landlock", marks=needs_landlock(6))]
WAIT = 3  # bash_session(wait_for_output=): a command silent this long answers ""
READS = 20  # "read" calls a step may take before its expected output is given up on
SECRET = "TOPSECRET-bash-session"
TERMINALS_THROUGH_PROC = (
    'me=$(readlink /proc/$$/fd/0); n=0; for f in /proc/[0-9]*/fd/0; do '
    't=$(readlink $f 2>/dev/null); [ "$t" = "$me" ] && continue; '
    '[ -n "$t" ] && case $t in /dev/pts/*) ;; *) continue;; esac; n=$((n+1)); '
    '(echo pwned > $f) 2>/dev/null && echo WROTE $f $t; done; echo attempts=$n')


def by_step(steps, texts) -> tuple:
    """The tool outputs `texts` joined per step (a step reads on until its output shows
    its expected text, READS times at most), and whether the last step is over."""
    groups, current = [], None
    for text in texts:
        if current is None:
            current = []
            groups.append(current)
        current.append(text)
        expected = steps[len(groups) - 1][1]
        if expected is None or expected in "".join(current) or len(current) > READS:
            current = None
    return ["".join(group) for group in groups], current is None


def _run_shell_eval(eval_tmp, config, steps_for, samples) -> dict:
    """An eval whose samples take `steps_for(sample id)`: (bash_session arguments,
    expected text) per step; each sample's outputs per step, checked."""
    def next_output(messages, tools, tool_choice, config):
        steps = steps_for(messages[0].text.split()[-1])
        groups, over = by_step(steps, [m.text for m in messages
                                       if isinstance(m, ChatMessageTool)])
        if not over:
            return mock_model_output(("bash_session", {"action": "read"}))
        if len(groups) == len(steps):
            return mock_model_output(None)
        return mock_model_output(("bash_session", steps[len(groups)][0]))

    task = Task(dataset=[Sample(input=f"work as sample-{i}", target=f"sample-{i}")
                         for i in range(samples)],
                solver=[use_tools(bash_session(wait_for_output=WAIT)), generate()],
                sandbox=("nsbox", str(config)))
    model = get_model("mockllm/model", custom_outputs=next_output)
    [log] = inspect_eval(task, model=model, log_dir=str(eval_tmp / "logs"), display="none",
                         max_samples=samples, max_sandboxes=samples, log_format="json")
    assert log.status == "success", log.error
    assert len(log.samples) == samples
    outputs = {}
    for sample in log.samples:
        assert sample.error is None, sample.error
        results = [m for m in sample.messages if isinstance(m, ChatMessageTool)]
        for message in results:
            assert message.error is None, message.error
        steps = steps_for(sample.target)
        groups, over = by_step(steps, [m.text for m in results])
        assert over and len(groups) == len(steps), groups
        for (arguments, expected), output in zip(steps, groups):
            assert expected is None or expected in output, (arguments, output)
        outputs[sample.target] = groups
    return outputs


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_bash_session_keeps_state_is_interrupted_and_ends_with_the_sample(eval_tmp,
                                                                          isolation):
    sleeper, lingerer = marker(), marker()

    def steps_for(sample):
        return [
            ({"action": "type_submit",
              "input": f"export MARK={sample}; echo hi; cd /tmp; pwd"}, "hi\n/tmp\n"),
            # A second call: the same shell, its variable and directory kept.
            ({"action": "type_submit", "input": "echo mark=$MARK; pwd"},
             f"mark={sample}\n/tmp\n"),
            ({"action": "type_submit", "input": f"sleep {sleeper}"}, None),
            ({"action": "interrupt"}, None),
            # ^C on the terminal ended the sleep (SIGINT: 128 + 2); the shell goes on.
            ({"action": "type_submit", "input": "echo status=$?"}, "status=130"),
            # Left running in a session of its own: the sample's end kills it.
            ({"action": "type_submit", "input": f"setsid sleep {lingerer} & echo lingers"},
             "lingers"),
            ({"action": "restart"}, "restarted"),
            ({"action": "type_submit", "input": "echo mark=[$MARK]; pwd"}, "mark=[]\n"),
        ]

    config = eval_tmp / "policy.toml"
    config.write_text(f'isolation = "{isolation}"\n')
    outputs = _run_shell_eval(eval_tmp, config, steps_for, SAMPLES)
    workspaces = set()
    for groups in outputs.values():
        # The restarted shell: no variable, back in the sample's workspace.
        workspace = groups[-1].split("mark=[]\n", 1)[1].splitlines()[0]
        assert workspace.startswith(str(eval_tmp / "work"))
        workspaces.add(workspace)
    assert len(workspaces) == SAMPLES
    assert pids_running("sleep", sleeper) == []
    assert pids_running("sleep", lingerer) == []
    # No sample's shell is left.
    assert [pid for pid in pids_running("/bin/bash", "-i") if str(eval_tmp) in _cwd(pid)] == []


def _cwd(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return ""


@pytest.fixture
def home_dir():
    """A directory in the home (where secrets are), removed afterwards."""
    path = pathlib.Path(os.path.expanduser("~")) / f"nsbox-test-{uuid.uuid4().hex}"
    path.mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_an_escape_through_bash_session_is_denied(eval_tmp, home_dir, isolation):
    secret = home_dir / "secret.txt"
    secret.write_text(SECRET + "\n")
    home_probe = os.path.join(os.path.expanduser("~"), f"nsbox-bash-session-{uuid.uuid4().hex}")
    config = eval_tmp / "policy.toml"
    config.write_text(f'isolation = "{isolation}"\n\n[filesystem]\nhide = ["{secret}"]\n')

    def steps_for(sample):
        return [
            ({"action": "type_submit", "input": f"echo pwned > {home_probe}; echo wrote=$?"},
             "wrote="),
            ({"action": "type_submit", "input": f"cat {secret}; echo read=$?"}, "read="),
            # The host's terminals, the user's own among them.
            ({"action": "type_submit",
              "input": "for t in /dev/pts/[0-9]*; do echo pwned 2>/dev/null > $t "
                       "&& echo WROTE $t; done; echo tried"}, "tried"),
            # Other processes' terminals (the other sample's shell, the user's) through
            # /proc: those it cannot even name are tried too; its own is skipped.
            ({"action": "type_submit", "input": TERMINALS_THROUGH_PROC}, "attempts="),
        ]

    outputs = _run_shell_eval(eval_tmp, config, steps_for, 2)
    for wrote, read, terminals, through_proc in outputs.values():
        assert "wrote=0" not in wrote and ("Read-only" in wrote or "denied" in wrote), wrote
        assert "read=0" not in read and "denied" in read, read
        assert SECRET not in read
        assert "WROTE" not in terminals, terminals
        assert "WROTE" not in through_proc, through_proc
        if isolation == "landlock":  # host processes are visible: the attempts were made
            assert "attempts=0" not in through_proc, through_proc
    assert not os.path.exists(home_probe)
    assert secret.read_text() == SECRET + "\n"
