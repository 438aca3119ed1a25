"""Git repositories in the writable roots, read as untrusted data.

A `.git` entry, its `gitdir:` pointer, `commondir` and `core.hooksPath` are all
things an earlier sandbox may have written. None of them may make a path
writable unless git's own layout vouches for it: a worktree's private git dir
names this checkout back, and a submodule's config names its work tree.
"""

import os
import stat

from nsbox.errors import PolicyError
from nsbox.record import Record

# How deep below a writable root nested repositories are looked for: the root's
# own `.git`, `a/.git` and `a/b/.git`. Deeper ones are neither protected nor reported.
NESTED_DEPTH = 2
# Dependency and tool trees: nobody runs git inside them, and they can be huge.
SKIP_DIRS = frozenset(("node_modules", "__pycache__", ".venv", "venv", ".tox", ".nox",
                       ".mypy_cache", ".pytest_cache", ".ruff_cache", ".gradle"))
MAX_POINTER = 4096  # bytes read of a pointer file (`.git`, commondir)


class Repo(Record):
    dotgit: str  # the `.git` entry
    pointer: bool  # a `gitdir:` file (worktree or submodule) rather than a directory
    gitdirs: tuple  # the git dirs it uses, the shared (common) one first
    outside: tuple = ()  # those of gitdirs outside the writable roots (a vouched-for worktree)
    hooks_path: str = ""  # core.hooksPath, resolved, when set


def find(roots: tuple, depth: int = NESTED_DEPTH) -> tuple:
    """Every `.git` entry at most `depth` directories below each root, roots first."""
    found = []
    for root in roots:
        level = [root]
        for d in range(depth + 1):
            below = []
            for directory in level:
                if d == depth:  # the last level needs no listing
                    if os.path.lexists(os.path.join(directory, ".git")):
                        found.append(os.path.join(directory, ".git"))
                    continue
                try:
                    entries = os.scandir(directory)
                except OSError:
                    continue
                with entries:
                    for entry in entries:
                        if entry.name == ".git":
                            found.append(entry.path)
                        elif entry.name not in SKIP_DIRS and entry.is_dir(follow_symlinks=False):
                            below.append(entry.path)
            level = below
    return tuple(dict.fromkeys(found))


def inspect(dotgit: str, roots: tuple) -> Repo:
    """What `dotgit` stands for; PolicyError when it points outside `roots` unvouched."""
    info = os.lstat(dotgit)
    if stat.S_ISLNK(info.st_mode):
        raise PolicyError(f"{dotgit} is a symlink, which a sandbox could re-point; "
                          "replace it with the directory it points to")
    if stat.S_ISDIR(info.st_mode):
        common = _common_dir(dotgit)
        if common is not None and not _within(common, roots):
            raise PolicyError(
                f"{dotgit}/commondir redirects git to {common}, outside the writable roots; "
                f"git only writes commondir in worktrees, so a sandbox may have planted it. "
                f"Remove {dotgit}/commondir")
        gitdirs = (common, dotgit) if common else (dotgit,)
        return Repo(dotgit, False, gitdirs, hooks_path=_hooks_path(gitdirs[0], dotgit))
    if not stat.S_ISREG(info.st_mode):
        raise PolicyError(f"{dotgit} is neither a directory nor a 'gitdir:' file")
    from nsbox.plan import git_pointer  # worktrees and submodules only

    gitdir = git_pointer.target(dotgit)
    if not os.path.isdir(gitdir):
        return Repo(dotgit, True, ())  # git fails there on its own; nothing to make writable
    common = _common_dir(gitdir)
    gitdirs = (common, gitdir) if common and common != gitdir else (gitdir,)
    outside = tuple(d for d in gitdirs if not _within(d, roots))
    if outside and not (git_pointer.vouched_worktree(dotgit, gitdir, common)
                        or git_pointer.vouched_submodule(dotgit, gitdir, common)):
        raise PolicyError(
            f"{dotgit} points git at {outside[0]}, outside the writable roots, and git's "
            "layout does not vouch for it (no worktree or submodule there names this "
            "checkout); nsbox makes nothing writable from it. If you did not create "
            f"{dotgit}, remove it; for a moved worktree run 'git worktree repair'")
    return Repo(dotgit, True, gitdirs, outside,
                hooks_path=_hooks_path(gitdirs[0], dotgit))


def _common_dir(gitdir: str):
    """The real path `gitdir/commondir` names, or None without one."""
    try:
        with open(os.path.join(gitdir, "commondir"), "rb") as f:
            text = os.fsdecode(f.read(MAX_POINTER).strip())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        raise PolicyError(f"cannot read {gitdir}/commondir: {err.strerror}") from None
    return os.path.realpath(os.path.join(gitdir, text))


def _hooks_path(common: str, dotgit: str) -> str:
    """core.hooksPath from the repository's config or the user's, resolved; '' if unset."""
    value = config_value(os.path.join(common, "config"), "core", "hookspath")
    if not value:
        home = os.environ.get("HOME", "")
        xdg = os.environ.get("XDG_CONFIG_HOME") or (os.path.join(home, ".config") if home else "")
        for config in ([os.path.join(home, ".gitconfig")] if home else []) + (
                [os.path.join(xdg, "git", "config")] if xdg else []) + ["/etc/gitconfig"]:
            value = config_value(config, "core", "hookspath")
            if value:
                break
    if not value:
        return ""
    if value == "~" or value.startswith("~/"):
        value = os.path.expanduser(value)
    # Relative to where hooks run: the work tree's top (the directory holding .git).
    return os.path.realpath(os.path.join(os.path.dirname(dotgit), value))


def config_value(path: str, section: str, key: str) -> str:
    """The last `key` in `[section]` of a git config file ('' if absent or unreadable).

    Enough of git's syntax for core.* keys: no includes, no subsections.
    """
    try:
        with open(path, "rb") as f:
            text = f.read(1 << 20).decode("utf-8", "replace")
    except OSError:
        return ""
    current, value = "", ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = line[1:line.find("]")].strip().lower() if "]" in line else ""
            line = line[line.find("]") + 1:].strip() if "]" in line else ""
            if not line:
                continue
        name, eq, rest = line.partition("=")
        if current == section and name.strip().lower() == key:
            value = _unquote(rest.strip()) if eq else "true"
    return value


def _unquote(text: str) -> str:
    out, quoted = [], False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        elif ch in "#;" and not quoted:
            break
        else:
            out.append(ch)
    return "".join(out).strip()


def _within(path: str, roots: tuple) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)
