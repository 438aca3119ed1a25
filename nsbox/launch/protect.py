"""Resolve a policy's protected and hidden paths against the host filesystem.

Runs in the parent before fork. Protections live where commands write: each
writable root's git directories (pinned as mount points, with hooks and config
read-only) and the workspace's `.nsbox/`. A protected path that does not exist
yet is created empty on the host first: the sandbox needs a mount point, and an
empty hooks directory or config file changes nothing for git. A missing hidden
path is skipped; nothing can appear there from inside unless it lies in a
writable root, and then the plan's Landlock rules still deny it.
"""

import os
from nsbox.record import Record

from nsbox.errors import PolicyError
from nsbox.policy import plan as policy_plan
from nsbox.policy.model import Policy


class Protections(Record):
    extra_writable: tuple = ()  # git dirs outside the roots that a worktree's commits write to
    pinned: tuple = ()  # bound onto themselves so they can't be renamed away
    readonly: tuple = ()
    hidden: tuple = ()  # (path, is_dir), as the plan will mask them
    created: tuple = ()  # made on the host so they can be mount points
    landlock_hidden: tuple = ()  # every existing hidden path, for Landlock to deny

    def steps(self) -> tuple:
        return policy_plan.protection_steps(self.pinned, self.readonly, self.hidden)


def resolve(policy: Policy, workspace: str, writable: tuple, home: str | None,
            create: bool = True) -> Protections:
    """Everything to pin, bind read-only and mask; `create=False` only reports what would be made."""
    made: list = []
    extra, pinned, readonly = [], [], []
    roots = list(writable)
    for root in writable:
        git = _git_dirs(os.path.join(root, ".git"))
        if git is None:
            continue
        pointer, gitdirs = git
        if pointer:
            readonly.append(pointer)
        for gitdir in gitdirs:
            if gitdir in roots:
                continue
            if not any(_under(gitdir, r) for r in roots):
                extra.append(gitdir)
                roots.append(gitdir)
            else:
                pinned.append(gitdir)
        for gitdir in gitdirs:
            readonly += _expand(gitdir, policy.git_protected, create, made)
    anywhere = policy.preset == "full-access"
    for entry in policy.protected:
        if _is_relative(entry):
            found = _expand(workspace, (entry,), create and policy.workspace_writable, made)
        else:
            found = _expand("/", (_home_path(entry, home).lstrip("/"),), False, made)
        readonly += [p for p in found if anywhere or any(_under(p, r) for r in roots)]
    hidden = _hidden(policy, workspace, home)
    for path, _ in hidden:
        for root in roots:
            if _under(root, path):
                raise PolicyError(f"writable root {root} lies inside hidden path {path}; "
                                  f"pass --unhide {path} or choose another directory")
    return Protections(
        extra_writable=tuple(extra), pinned=tuple(dict.fromkeys(pinned)),
        readonly=tuple(dict.fromkeys(readonly)),
        hidden=policy_plan.visible_hidden(hidden, tuple(roots) if not anywhere else ("/",)),
        created=tuple(made), landlock_hidden=tuple(p for p, _ in hidden))


def _git_dirs(dotgit: str):
    """(the `.git` file if it is one, the git dirs it stands for), or None without a repo."""
    try:
        st = os.lstat(dotgit)
    except FileNotFoundError:
        return None
    import stat

    if stat.S_ISLNK(st.st_mode):
        raise PolicyError(f"{dotgit} is a symlink, which the sandbox could re-point; "
                          "replace it with the directory it points to")
    if stat.S_ISDIR(st.st_mode):
        return None, [dotgit]
    # A worktree or submodule: "gitdir: PATH", and PATH/commondir names the shared repo.
    with open(dotgit) as f:
        first = f.readline().strip()
    if not first.startswith("gitdir:"):
        raise PolicyError(f"{dotgit} is a file but not a 'gitdir:' pointer; cannot protect it")
    gitdir = os.path.realpath(os.path.join(os.path.dirname(dotgit), first[7:].strip()))
    dirs = [gitdir]
    try:
        with open(os.path.join(gitdir, "commondir")) as f:
            dirs.insert(0, os.path.realpath(os.path.join(gitdir, f.read().strip())))
    except FileNotFoundError:
        pass
    # The shared dir first, so a worktree's own dir nested in it is pinned, not re-bound.
    return dotgit, sorted(set(dirs), key=lambda p: (p.count("/"), p))


def _expand(base: str, patterns: tuple, create: bool, made: list) -> list:
    found = []
    for pattern in patterns:
        is_dir = pattern.endswith("/")
        path = os.path.join(base, pattern.rstrip("/"))
        if any(c in pattern for c in "*?["):
            import glob  # only for wildcard patterns: it drags in re and fnmatch

            matches = sorted(glob.glob(glob.escape(base) + "/" + pattern.rstrip("/")))
        elif os.path.lexists(path):
            matches = [path]
        elif os.path.isdir(os.path.dirname(path)):
            if create:
                _make(path, is_dir)
            made.append(path)
            matches = [path]
        else:
            matches = []
        for match in matches:
            if os.path.islink(match):
                raise PolicyError(f"protected path {match} is a symlink, which the sandbox could "
                                  "re-point; replace it with what it points to")
            found.append(match)
    return found


def _make(path: str, is_dir: bool) -> None:
    try:
        if is_dir:
            os.mkdir(path, 0o755)
        else:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644))
    except FileExistsError:
        pass  # a concurrent launch (library threads) made it first; checked as found below
    except OSError as err:
        raise PolicyError(f"cannot create protected path {path} as a mount point: "
                          f"{err.strerror}") from None


def _hidden(policy: Policy, workspace: str, home: str | None) -> list:
    out = []
    for entry in policy.hidden:
        if entry.startswith("~") and not home:
            continue
        path = _home_path(entry, home)
        if not os.path.isabs(path):
            path = os.path.join(workspace, path)
        if not os.path.lexists(path):
            continue
        real = os.path.realpath(path)
        if os.path.exists(real):
            out.append((real, os.path.isdir(real)))
    return out


def _home_path(entry: str, home: str | None) -> str:
    if entry == "~" or entry.startswith("~/"):
        return (home or "").rstrip("/") + entry[1:] if home else entry
    return entry


def _is_relative(entry: str) -> bool:
    return not entry.startswith(("/", "~"))


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")
