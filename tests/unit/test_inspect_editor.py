"""The provider's own text_editor (landlock-only isolation), over a fake sandbox whose
commands act on a dict of files."""

import asyncio
import json

import pytest

pytest.importorskip("inspect_ai", reason="Inspect AI is not installed")

from nsbox.integrations.inspect_editor import TOOL_ERROR, Editor  # noqa: E402


class Done:
    def __init__(self, returncode=0, stdout=b"", stderr=b""):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def fake_sandbox(files: dict, dirs: set):
    async def run(argv, data):
        path = argv[-1]
        if argv[0] == "cat":
            if path in files:
                return Done(stdout=files[path].encode())
            return Done(1, stderr=f"cat: {path}: No such file or directory".encode())
        script = argv[2]
        if script.startswith("if [ -d"):
            kind = "dir" if path in dirs else "file" if path in files else "none"
            return Done(stdout=f"{kind}\n".encode())
        if script.startswith("cat >"):
            files[path] = data.decode()
            return Done()
        return Done(stdout=b".\n./a.txt")
    return run


def ask(editor, **params) -> dict:
    request = json.dumps({"jsonrpc": "2.0", "method": "text_editor", "params": params, "id": 7})
    return json.loads(asyncio.run(editor.answer(request)))


def test_create_replace_insert_view_and_undo():
    files = {}
    editor = Editor(fake_sandbox(files, {"/w"}))
    assert ask(editor, command="create", path="/w/a.txt",
               file_text="one\ntwo\n")["result"] == "File created successfully at: /w/a.txt"
    replaced = ask(editor, command="str_replace", path="/w/a.txt", old_str="two", new_str="2")
    assert files["/w/a.txt"] == "one\n2\n" and "has been edited" in replaced["result"]
    ask(editor, command="insert", path="/w/a.txt", insert_line=1, new_str="1.5")
    assert files["/w/a.txt"] == "one\n1.5\n2\n"
    view = ask(editor, command="view", path="/w/a.txt", view_range=[2, 3])["result"]
    assert view.endswith("     2\t1.5\n     3\t2\n")
    ask(editor, command="undo_edit", path="/w/a.txt")
    assert files["/w/a.txt"] == "one\n2\n"
    assert "a.txt" in ask(editor, command="view", path="/w")["result"]
    assert ask(editor, command="view", path="/w/a.txt")["id"] == 7


@pytest.mark.parametrize("params, words", [
    ({"command": "view", "path": "rel.txt"}, "not an absolute path"),
    ({"command": "view", "path": "/w/missing"}, "does not exist"),
    ({"command": "create", "path": "/w/a.txt", "file_text": "x"}, "already exists"),
    ({"command": "str_replace", "path": "/w/a.txt", "old_str": "x", "new_str": "y"},
     "Multiple occurrences"),
    ({"command": "str_replace", "path": "/w/a.txt", "old_str": "zz", "new_str": "y"},
     "did not appear verbatim"),
    ({"command": "str_replace", "path": "/w", "old_str": "x"}, "is a directory"),
])
def test_refusals_reach_the_model_as_tool_errors(params, words):
    editor = Editor(fake_sandbox({"/w/a.txt": "x\nx\n"}, {"/w"}))
    error = ask(editor, **params)["error"]
    assert error["code"] == TOOL_ERROR and words in error["message"]
