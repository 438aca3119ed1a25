"""A `.git` file's `gitdir:` pointer (a worktree's or a submodule's): where it leads,
and whether git's own layout vouches for that place (see gitdirs.inspect).
"""

import os

from nsbox.errors import PolicyError
from nsbox.plan.gitdirs import MAX_POINTER, config_value


def target(dotgit: str) -> str:
    """The real path `dotgit`'s `gitdir:` line names; PolicyError when it has none."""
    with open(dotgit, "rb") as f:
        first = f.read(MAX_POINTER).split(b"\n", 1)[0].strip()
    if not first.startswith(b"gitdir:"):
        raise PolicyError(f"{dotgit} is a file but not a 'gitdir:' pointer; cannot protect it")
    named = os.fsdecode(first[7:].strip())
    return os.path.realpath(os.path.join(os.path.dirname(dotgit), named))


def vouched_worktree(dotgit: str, gitdir: str, common) -> bool:
    """`git worktree add` layout: common/worktrees/NAME, whose `gitdir` file names dotgit."""
    if common is None or os.path.dirname(gitdir) != os.path.join(common, "worktrees"):
        return False
    if not (os.path.isdir(os.path.join(common, "objects"))
            and os.path.isfile(os.path.join(common, "HEAD"))):
        return False
    try:
        with open(os.path.join(gitdir, "gitdir"), "rb") as f:
            back = os.fsdecode(f.read(MAX_POINTER).strip())
    except OSError:
        return False
    return os.path.realpath(os.path.join(gitdir, back)) == os.path.realpath(dotgit)


def vouched_submodule(dotgit: str, gitdir: str, common) -> bool:
    """A submodule's git dir (SUPER/.git/modules/...) whose core.worktree is this checkout."""
    if common is not None or "/modules/" not in gitdir:
        return False
    worktree = config_value(os.path.join(gitdir, "config"), "core", "worktree")
    if not worktree:
        return False
    return os.path.realpath(os.path.join(gitdir, worktree)) == os.path.dirname(dotgit)
