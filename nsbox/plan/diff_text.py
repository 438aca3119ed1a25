"""The text of a manifest entry's change: a unified diff for text files, one line for
everything else (`nsbox diff`, `nsbox exec --review`, Session.diff)."""

import difflib
import os

from nsbox.plan import overlay

TEXT_LIMIT = 4 << 20  # larger files are diffed as binaries


def entry_diff(entry, lower: int, upper: int, at: str = "") -> str:
    """`entry` (relative path) between the real tree `lower` and the upper layer `upper`;
    `at`: its path below those when it is not entry.path (an extra root's entry)."""
    path = entry.path
    if entry.kind == "dir" or (entry.what == "deleted" and entry.kind == "dir"):
        return f"{entry.what} directory {path}/\n"
    if entry.what == "mode":
        return f"mode changed {path}: {entry.mode:o}\n"
    if entry.kind == "symlink" and entry.what != "deleted":
        return f"{entry.what} symlink {path} -> {entry.target}\n"
    if entry.kind == "other":
        return f"{entry.what} special file {path}\n"
    old = _read(lower, at or path) if entry.what != "created" else b""
    new = _read(upper, at or path, layer=True) if entry.what != "deleted" else b""
    if old is None or new is None or not (_text(old) and _text(new)):
        return f"Binary files {_side('a', path) if entry.what != 'created' else '/dev/null'} " \
               f"and {_side('b', path) if entry.what != 'deleted' else '/dev/null'} differ\n"
    lines = difflib.unified_diff(
        old.decode().splitlines(keepends=True), new.decode().splitlines(keepends=True),
        fromfile="/dev/null" if entry.what == "created" else _side("a", path),
        tofile="/dev/null" if entry.what == "deleted" else _side("b", path))
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n"
                   for line in lines)


def _side(mark: str, path: str) -> str:
    """`a/src/x` for a workspace path, `a/srv/data/x` for an extra root's absolute one."""
    return f"{mark}{path}" if path.startswith("/") else f"{mark}/{path}"


def run_diff(run, entry) -> str:
    """entry_diff of a kept or session run's manifest entry, in whichever root it lies."""
    _, part, rel = run.locate(entry.path)
    lower = os.open(part.workspace, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        upper = os.open(part.upper, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            return entry_diff(entry, lower, upper, at=rel)
        finally:
            os.close(upper)
    finally:
        os.close(lower)


def _read(root: int, path: str, layer: bool = False):
    """The bytes of a regular file below `root` (None: not one, or too large)."""
    try:
        fd = overlay.open_beneath(root, path, os.O_RDONLY | os.O_NONBLOCK, layer=layer)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not (info.st_mode & 0o170000 == 0o100000) or info.st_size > TEXT_LIMIT:
            return None
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _text(data: bytes) -> bool:
    if b"\0" in data:
        return False
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True
