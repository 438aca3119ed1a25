"""The text of a manifest entry's change: a unified diff for text files, one line for
everything else (`nsbox diff`, `nsbox exec --review`, Session.diff)."""

import difflib
import os

from nsbox.plan import overlay

TEXT_LIMIT = 4 << 20  # larger files are diffed as binaries


def entry_diff(entry, lower: int, upper: int) -> str:
    """`entry` (relative path) between the real tree `lower` and the upper layer `upper`."""
    path = entry.path
    if entry.kind == "dir" or (entry.what == "deleted" and entry.kind == "dir"):
        return f"{entry.what} directory {path}/\n"
    if entry.what == "mode":
        return f"mode changed {path}: {entry.mode:o}\n"
    if entry.kind == "symlink" and entry.what != "deleted":
        return f"{entry.what} symlink {path} -> {entry.target}\n"
    if entry.kind == "other":
        return f"{entry.what} special file {path}\n"
    old = _read(lower, path) if entry.what != "created" else b""
    new = _read(upper, path, layer=True) if entry.what != "deleted" else b""
    if old is None or new is None or not (_text(old) and _text(new)):
        return f"Binary files {'a/' + path if entry.what != 'created' else '/dev/null'} and " \
               f"{'b/' + path if entry.what != 'deleted' else '/dev/null'} differ\n"
    lines = difflib.unified_diff(
        old.decode().splitlines(keepends=True), new.decode().splitlines(keepends=True),
        fromfile="/dev/null" if entry.what == "created" else f"a/{path}",
        tofile="/dev/null" if entry.what == "deleted" else f"b/{path}")
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n"
                   for line in lines)


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
