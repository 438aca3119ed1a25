"""Workspaces the integrations make for their sandboxes: their removal, and the errors
of file commands run in them."""

import os
import shutil


def remove_tree(path: str, ignore_errors: bool = False) -> None:
    """Remove a workspace even where its commands took away our write or search rights.

    Only called once its sandbox is closed: nothing can swap entries meanwhile.
    """
    pending = [path]
    while pending:
        directory = pending.pop()
        try:
            os.chmod(directory, 0o700)
            with os.scandir(directory) as entries:
                pending.extend(e.path for e in entries if e.is_dir(follow_symlinks=False))
        except OSError:
            pass
    shutil.rmtree(path, ignore_errors=ignore_errors)


def file_error(file: str, stderr: bytes) -> OSError:
    """The OSError a file command run inside the sandbox failed with, from its stderr."""
    message = stderr.decode(errors="replace").strip()
    for text, kind in (("No such file", FileNotFoundError), ("Is a directory", IsADirectoryError),
                       ("Permission denied", PermissionError),
                       ("Read-only file system", PermissionError)):
        if text in message:
            return kind(f"{file}: {message}")
    return OSError(f"{file}: {message}")
