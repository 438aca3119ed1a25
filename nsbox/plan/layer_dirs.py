"""The private directory of one copy-on-write overlay: <dir>/{upper,work}.

Overlay workspaces (plan/overlay.py), git dirs (plan/gitsync.py) and writable
container roots (plan/container.py) each keep such a directory in the state
directory. This module holds what they share: the paths, their creation and the
removal of what a sandbox wrote there. It imports nothing beyond `os` and `stat`:
overlay and git dir runs load it before the command starts.
"""

import os
import stat

from nsbox.record import Record

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class LayerDirs(Record):
    """Base of a record with a `dir` field holding an overlay's upper and work layers."""

    @property
    def upper(self) -> str:
        return os.path.join(self.dir, "upper")

    @property
    def work(self) -> str:
        return os.path.join(self.dir, "work")


def make_upper_work(layer: LayerDirs, lower: str) -> None:
    """Make the layer's work and upper directories (0700, as the state directory) in
    its existing `dir`; the upper one is the mount's root, so it gets `lower`'s mode."""
    os.mkdir(layer.work, 0o700)
    os.mkdir(layer.upper, 0o700)
    os.chmod(layer.upper, stat.S_IMODE(os.stat(lower).st_mode))


def remove_tree(parent_fd: int, name: str) -> None:
    """Remove `name` below `parent_fd` and all it holds, never following a symlink;
    directories without rights (a sandbox's chmod 000, overlayfs's own work/work) are
    opened up first."""
    info = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    if not stat.S_ISDIR(info.st_mode):
        os.unlink(name, dir_fd=parent_fd)
        return
    if info.st_mode & 0o700 != 0o700:
        os.chmod(name, 0o700, dir_fd=parent_fd)  # a directory, as lstat just said
    fd = os.open(name, _DIR, dir_fd=parent_fd)
    try:
        for child in os.listdir(fd):
            remove_tree(fd, child)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent_fd)
