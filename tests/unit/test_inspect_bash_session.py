"""bash_session() as the Inspect provider answers it: the requests it refuses before a
shell is involved, and how output is bounded and cleaned (no sandbox needed)."""

import asyncio
import json

import pytest

pytest.importorskip("inspect_ai", reason="Inspect AI is not installed")

from nsbox.integrations import inspect_bash_session as bs  # noqa: E402


def _answer(sessions, method, params):
    request = json.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": 7})
    return json.loads(asyncio.run(sessions.answer(request)))


def test_requests_that_are_refused_before_any_shell_starts():
    class NoSandbox:
        def popen(self, *args, **kwargs):
            raise AssertionError("no shell should start")

    sessions = bs.BashSessions(NoSandbox(), lambda user: user == "me")
    other = _answer(sessions, "bash_session_new_session", {"user": "someone"})
    assert other["id"] == 7 and other["error"]["code"] == bs.UNEXPECTED
    assert "cannot run bash_session as 'someone'" in other["error"]["message"]
    unknown = _answer(sessions, "bash_session", {"session_name": "nope", "input": "ls\n",
                                                 "wait_for_output": 30, "idle_timeout": 0.5})
    assert unknown["error"] == {"code": bs.UNEXPECTED, "message": "KeyError('nope')"}
    bad = _answer(sessions, "bash_session", {"session_name": "BashSession", "bogus": 1})
    assert bad["error"]["code"] == bs.INVALID_PARAMS
    assert bad["error"]["message"].splitlines() == [
        "Invalid parameters: 'InteractParams.wait_for_output' Field required",
        "'InteractParams.idle_timeout' Field required",
        "'InteractParams.bogus' Extra inputs are not permitted",
        "'RestartParams.restart' Field required",
        "'RestartParams.bogus' Extra inputs are not permitted"]
    extra = _answer(sessions, "bash_session_new_session", {"shell": "zsh"})
    assert extra["error"]["message"] == ("Invalid parameters: 'NewSessionParams.shell' "
                                         "Extra inputs are not permitted")
    assert _answer(sessions, "nothing", {})["error"]["code"] == bs.METHOD_NOT_FOUND


def test_output_within_the_limit_is_kept_whole():
    assert bs.bounded("héllo\n".encode(), 0, 10) == "héllo\n"


def test_output_past_the_limit_keeps_its_tail_and_says_how_much_was_left_out():
    text = bs.bounded(b"x" * 500 + b"TAIL", 1000, 200)
    assert len(text.encode()) <= 200 and text.endswith("xTAIL")
    notice, tail = text[1:].split("\n", 1)
    assert notice == (f"[bash_session output exceeded 200 bytes; showing the tail; "
                      f"{1000 + 504 - len(tail)} bytes omitted]")
    # A multi-byte character cut by the limit is left out, not garbled.
    text = bs.bounded("é".encode() * 300, 7, 150)
    assert "\ufffd" not in text and len(text.encode()) <= 150
    assert bs.bounded(b"abc", 5, 10) == "[8 bytes omitted]\n"[:10]


def test_escape_sequences_and_control_characters_are_removed():
    assert bs._printable("\x1b[31mred\x1b[0m\tok\r\n\x07\x1b]8;;http://x;link\x00") == \
        "red\tok\r\nlink"
