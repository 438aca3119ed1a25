"""Workspaces the integrations make for their sandboxes, and their removal."""

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
