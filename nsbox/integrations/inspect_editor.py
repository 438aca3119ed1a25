"""Inspect's text_editor() for nsbox samples, answered by the provider.

Inspect's tools keep the editor's history in /tmp/inspect-editor-UID, a fixed path that
without a mount namespace every sample on the host would share (and that Landlock keeps
the sample from writing), and they refuse it unless every directory above it is owned
by root or the user: in a user namespace, / shows as an unmapped uid's to anyone but
root. Here the provider answers the editor's requests itself, in both modes: its
file reads and writes are commands run in the sample's sandbox, with the sample's rights
and no more, and the history (for undo_edit) stays in this object, one per sample.
The answers follow the wording of Inspect's own editor.
"""

import json

SNIPPET_LINES = 4
TOOL_ERROR = -32099  # Inspect hands these to the model as a ToolError
_READ = ["cat", "--"]
_WRITE = ["sh", "-c", 'cat > "$1"', "nsbox-text-editor"]
_LIST = ["sh", "-c", 'cd -- "$1" && find . -maxdepth 2 -not -path "*/.*" | sort',
         "nsbox-text-editor"]
_KIND = ["sh", "-c", 'if [ -d "$1" ]; then echo dir; elif [ -e "$1" ]; then echo file; '
         'else echo none; fi', "nsbox-text-editor"]


class EditorError(Exception):
    """A refusal the model sees (a missing file, an old_str that is not unique, ...)."""


class Editor:
    """One sample's text_editor; `run(argv, input)` runs a command in its sandbox and
    returns an nsbox Result."""

    def __init__(self, run):
        self._run = run
        self._history: dict[str, list[str]] = {}

    async def answer(self, request: str) -> str:
        """The JSON-RPC response to one text_editor request."""
        message = json.loads(request)
        try:
            result = await self._dispatch(message.get("params") or {})
            reply = {"jsonrpc": "2.0", "result": result, "id": message.get("id")}
        except EditorError as err:
            reply = {"jsonrpc": "2.0", "id": message.get("id"),
                     "error": {"code": TOOL_ERROR, "message": str(err)}}
        return json.dumps(reply)

    async def _dispatch(self, params: dict) -> str:
        command, path = params.get("command"), params.get("path") or ""
        if not path.startswith("/"):
            raise EditorError(f"The path {path} is not an absolute path, it should start "
                              "with `/`. Maybe you meant /{path}?")
        kind = (await self._sh(_KIND, path)).strip()
        if command == "create":
            if kind != "none":
                raise EditorError(f"File already exists at: {path}. Cannot overwrite files "
                                  "using command `create`.")
            text = params.get("file_text")
            if text is None:
                raise EditorError("Parameter `file_text` is required for command: create")
            await self._write(path, text)
            self._history.setdefault(path, []).append(text)
            return f"File created successfully at: {path}"
        if kind == "none":
            raise EditorError(f"The path {path} does not exist. Please provide a valid path.")
        if kind == "dir":
            if command != "view":
                raise EditorError(f"The path {path} is a directory and only the `view` "
                                  "command can be used on directories")
            listing = await self._sh(_LIST, path)
            return (f"Here's the files and directories up to 2 levels deep in {path}, "
                    f"excluding hidden items:\n{listing}\n")
        text = await self._read(path)
        if command == "view":
            return self._view(path, text, params.get("view_range"))
        if command == "str_replace":
            return await self._replace(path, text, params.get("old_str"),
                                       params.get("new_str") or "")
        if command == "insert":
            return await self._insert(path, text, params.get("insert_line"),
                                      params.get("new_str") or params.get("insert_text") or "")
        if command == "undo_edit":
            earlier = self._history.get(path) or []
            if len(earlier) < 2:
                raise EditorError(f"No edit history found for {path}.")
            earlier.pop()
            await self._write(path, earlier[-1])
            return f"Last edit to {path} undone successfully. {_numbered(earlier[-1], path)}"
        raise EditorError(f"Unrecognized command {command}. The allowed commands are: view, "
                          "create, str_replace, insert, undo_edit")

    def _view(self, path: str, text: str, view_range) -> str:
        if not view_range:
            return _numbered(text, path)
        lines = text.split("\n")
        try:
            start, end = int(view_range[0]), int(view_range[1])
        except (TypeError, ValueError, IndexError):
            raise EditorError("Invalid `view_range`. It should be a list of two integers.")
        if not 1 <= start <= len(lines) or (end != -1 and not start <= end <= len(lines)):
            raise EditorError(f"Invalid `view_range`: {view_range}. Its lines should be "
                              f"within [1, {len(lines)}], the second -1 or not before the first")
        chosen = lines[start - 1:] if end == -1 else lines[start - 1:end]
        return _numbered("\n".join(chosen), path, start)

    async def _replace(self, path: str, text: str, old, new: str) -> str:
        if old is None:
            raise EditorError("Parameter `old_str` is required for command: str_replace")
        count = text.count(old)
        if count == 0:
            raise EditorError(f"No replacement was performed, old_str `{old}` did not "
                              f"appear verbatim in {path}.")
        if count > 1:
            lines = [n + 1 for n, line in enumerate(text.split("\n")) if old in line]
            raise EditorError(f"No replacement was performed. Multiple occurrences of old_str "
                              f"`{old}` in lines {lines}. Please ensure it is unique")
        changed = text.replace(old, new)
        await self._save(path, text, changed)
        line = text.split(old)[0].count("\n")
        return self._edited(path, changed, line, new.count("\n"))

    async def _insert(self, path: str, text: str, at, new: str) -> str:
        lines = text.split("\n")
        if not isinstance(at, int) or not 0 <= at <= len(lines):
            raise EditorError(f"Invalid `insert_line` parameter: {at}. It should be within "
                              f"the range of lines of the file: [0, {len(lines)}]")
        changed = "\n".join(lines[:at] + new.split("\n") + lines[at:])
        await self._save(path, text, changed)
        return self._edited(path, changed, at, new.count("\n") + 1)

    async def _save(self, path: str, before: str, after: str) -> None:
        history = self._history.setdefault(path, [])
        if not history:
            history.append(before)
        await self._write(path, after)
        history.append(after)
        del history[:-11]  # the current text and the last 10 edits

    def _edited(self, path: str, text: str, line: int, added: int) -> str:
        lines = text.split("\n")
        start = max(0, line - SNIPPET_LINES)
        end = line + added + SNIPPET_LINES + 1
        snippet = "\n".join(lines[start:end])
        return (f"The file {path} has been edited. "
                f"{_numbered(snippet, f'a snippet of {path}', start + 1)}"
                "Review the changes and make sure they are as expected. Edit the file again "
                "if necessary.")

    async def _read(self, path: str) -> str:
        result = await self._run([*_READ, path], None)
        if result.returncode:
            raise EditorError(f"Ran into {result.stderr.decode(errors='replace').strip()} "
                              f"while trying to read {path}")
        return result.stdout.decode("utf-8", errors="replace")

    async def _write(self, path: str, text: str) -> None:
        result = await self._run([*_WRITE, path], text.encode())
        if result.returncode:
            raise EditorError(f"Ran into {result.stderr.decode(errors='replace').strip()} "
                              f"while trying to write to {path}")

    async def _sh(self, argv: list, path: str) -> str:
        result = await self._run([*argv, path], None)
        return result.stdout.decode("utf-8", errors="replace")


def _numbered(text: str, what: str, first: int = 1) -> str:
    lines = "\n".join(f"{n:6}\t{line}" for n, line in enumerate(text.split("\n"), first))
    return f"Here's the result of running `cat -n` on {what}:\n{lines}\n"
