"""Resolve a policy's protected and hidden paths against the host filesystem.

Runs in the parent before fork. Everything in a writable root is untrusted
data: a git pointer, a `commondir` or a hooks path found there never makes
anything writable unless git's layout vouches for it (see gitdirs). Existing
protected paths become read-only mounts; missing ones are not created in the
user's tree (only missing `hooks/` and `info/` inside a git dir, where git
itself keeps them) but watched, and reported or undone after the run (watch).
nsbox's own state directory is hidden in every sandbox; its config and cache
are read-only wherever a writable root contains them.
"""

import os

from nsbox.errors import PolicyError, UnsupportedKernel
from nsbox.kernel import mountinfo
from nsbox.plan import gitdirs, hidden_paths, watch
from nsbox.policy import plan as policy_plan
from nsbox.policy.model import Policy
from nsbox.record import Record


class Protections(Record):
    extra_writable: tuple = ()  # git dirs outside the roots that a vouched-for worktree writes to
    pinned: tuple = ()  # bound onto themselves so they can't be renamed away
    readonly: tuple = ()
    hidden: tuple = ()  # (path, is_dir), as the plan will mask them
    created: tuple = ()  # directories made inside git dirs so they can be mount points
    # Masked paths whose mask refuses access (EACCES) rather than reading as empty: the
    # host's credentials, but not files tools fail without (read as empty) nor paths in
    # a writable root (masked, as they were found).
    denied: tuple = ()
    # Landlock-only isolation: the hidden paths Landlock must deny, with no mounts to help.
    landlock_hidden: tuple = ()
    watched: tuple = ()  # paths compared after the run (see watch)
    repos: tuple = ()  # `.git` entries in the writable roots
    undo: tuple = ()  # git redirects that must not appear: removed after the run
    git_layers: tuple = ()  # plan.gitsync.Layer: git dirs mounted copy-on-write

    def steps(self) -> tuple:
        # Git dirs' overlays before the pins and read-only binds that go on top of them;
        # volatile: no sync of the state directory's whole filesystem when the mount goes
        # (tens of ms under load); the apply writes the files that count into the real dir.
        layers = tuple(policy_plan.MountStep("overlay", la.gitdir, la.gitdir, upper=la.upper,
                                             work=la.work, volatile=True)
                       for la in self.git_layers if la.dir)
        return layers + policy_plan.protection_steps(self.pinned, self.readonly, self.hidden,
                                                     self.denied)


class OwnDirs(Record):
    state: str = ""  # hidden in every sandbox: trust store, cache key
    config: str = ""  # read-only where a root contains it (hidden under landlock only)
    cache: str = ""  # read-only where a root contains it; entries are authenticated anyway


def resolve(policy: Policy, workspace: str, writable: tuple, homes=(),
            create: bool = True, own: OwnDirs = OwnDirs(),
            landlock_only: bool = False, envs: tuple = ()) -> Protections:
    """Everything to pin, bind read-only, mask and watch; `create=False` only reports.

    `homes`: the user's home directories (password database and $HOME); `~` in
    hidden and protected entries means each of them. `envs`: the environments whose
    variables `$NAME` hidden entries name (nsbox's own and the command's).
    """
    homes = _homes(homes)
    anywhere = policy.preset == "full-access"
    # The policy's private dirs are fresh tmpfs mounts (full isolation only).
    private = () if landlock_only else tuple(os.path.normpath(p) for p in policy.private_dirs)
    if not anywhere and not policy.allow_broad_workspace:
        _refuse_broad(writable, homes)
    made, extra, pinned, readonly, watched, undo = [], [], [], [], [], []
    roots = list(writable)
    repos = gitdirs.find(tuple(writable)) if writable and not anywhere else ()
    for dotgit in repos:
        repo = gitdirs.inspect(dotgit, tuple(writable))
        extra += [d for d in repo.outside if d not in extra]
        roots += [d for d in repo.outside if d not in roots]
        if repo.pointer:
            readonly.append(dotgit)
            watched.append(dotgit)
        for gitdir in repo.gitdirs:
            if gitdir not in roots:
                pinned.append(gitdir)
            inside = _within(gitdir, writable)
            readonly += _expand(gitdir, policy.git_protected, inside, made, dry_run=True)
            watched += [os.path.join(gitdir, p) for p in watch.GIT_WATCHED]
            undo += [p for p in (os.path.join(gitdir, r) for r in watch.GIT_REDIRECTS)
                     if not os.path.lexists(p)]
        if repo.hooks_path and _within(repo.hooks_path, roots):
            readonly += _expand(repo.hooks_path, ("",), False, made)
            watched.append(repo.hooks_path)
    for entry in policy.protected:
        if _is_relative(entry):
            for root in writable:
                found = _expand(root, (entry,), False, made)
                readonly += found
                watched.append(os.path.join(root, entry.rstrip("/")))
        else:
            for path in _home_paths(entry, homes):
                if anywhere or _within(path, roots):
                    readonly += _expand("/", (path.lstrip("/"),), False, made)
                    watched.append(path.rstrip("/"))
    hidden, read_as_empty = hidden_paths.existing(policy.hidden, workspace, homes, envs,
                                                  own.state)
    for path, _ in hidden:
        for root in roots:
            if _under(root, path):
                raise PolicyError(f"writable root {root} lies inside hidden path {path}; "
                                  f"pass --unhide {path} or choose another directory")
    own_hidden = _own_hidden(own, roots, landlock_only)
    # The same files through another mount (a second bind of the home directory).
    found = _elsewhere(hidden + own_hidden, roots, policy.best_effort)
    own_paths = {path for path, _ in own_hidden}
    hidden += [(alias, is_dir) for alias, is_dir, original in found if original not in own_paths]
    read_as_empty |= {alias for alias, _, original in found if original in read_as_empty}
    own_hidden += [(alias, is_dir) for alias, is_dir, original in found if original in own_paths]
    readonly += [p for p in (own.config, own.cache)
                 if p and _within(p, roots) and os.path.isdir(p) and not landlock_only]
    readonly = [p for p in readonly if os.path.lexists(p)] + made
    if create:  # only once every check above has passed
        make_mount_points(made)
    return Protections(
        extra_writable=tuple(extra), pinned=tuple(dict.fromkeys(pinned)),
        readonly=tuple(dict.fromkeys(readonly)),
        hidden=policy_plan.visible_hidden(tuple(hidden + own_hidden),
                                          tuple(roots) if not anywhere else ("/",),
                                          private=private),
        created=tuple(made),
        denied=tuple(p for p, _ in hidden if not (
            _within(p, roots) or p in read_as_empty
            or _within(p, policy_plan.PRIVATE_TREES + private))),
        # With mounts, each hidden path is masked and the mask cannot be lifted (the
        # kernel locks the mounts a less privileged namespace inherits, and refuses a
        # bind that would show what they cover), so Landlock adds nothing there: no
        # rule, and no listing of the parent, whose size then costs nothing.
        landlock_hidden=tuple(dict.fromkeys(
            [p for p, _ in hidden + own_hidden])) if landlock_only else (),
        watched=tuple(dict.fromkeys(watched)), repos=repos, undo=tuple(dict.fromkeys(undo)))


def _refuse_broad(writable: tuple, homes: tuple) -> None:
    """A writable root that is `/` or holds a home directory gives away shell start-up
    files, credentials and nsbox's own state: only on request. A root that is another
    mount of the home or of a directory above it counts too (same device and inode)."""
    above = {}  # (st_dev, st_ino) of "/", each home and each directory above one
    for top in ("/",) + homes:
        path = top
        while True:
            try:
                info = os.stat(path)
                above.setdefault((info.st_dev, info.st_ino), top)
            except OSError:
                pass
            if path == "/":
                break
            path = os.path.dirname(path)
    for root in writable:
        top = next((t for t in ("/",) + homes if _under(t, root)), None)
        if top is None:
            try:
                info = os.stat(root)
            except OSError:
                continue
            top = above.get((info.st_dev, info.st_ino))
        if top is not None:
            what = "the root directory" if top == "/" else f"the home directory {top}"
            raise PolicyError(
                f"writable root {root} is or contains {what}; a sandbox could then plant "
                "what runs later in your shell. Use a project directory, or pass "
                "--allow-broad-workspace (shell start-up files, git config and nsbox's "
                "own files stay read-only)")


def _own_hidden(own: OwnDirs, roots: list, landlock_only: bool) -> list:
    out = []
    if own.state and os.path.isdir(own.state):
        out.append((os.path.realpath(own.state), True))
    # Landlock cannot make a path read-only beneath a writable root: hide it instead.
    if landlock_only and own.config and _within(own.config, roots) and os.path.isdir(own.config):
        out.append((os.path.realpath(own.config), True))
    return out


def _expand(base: str, patterns: tuple, create: bool, made: list,
            dry_run: bool = False) -> list:
    """Existing paths matching `patterns` under `base`; missing directories ("x/") are
    made when `create` (inside git dirs), or only listed in `made` on a `dry_run`."""
    found = []
    for pattern in patterns:
        is_dir = pattern.endswith("/")
        path = os.path.join(base, pattern.rstrip("/")) if pattern else base
        if any(c in pattern for c in _WILDCARDS):
            matches = sorted(_glob(base, pattern.rstrip("/")))
        elif os.path.lexists(path):
            matches = [path]
        elif is_dir and os.path.isdir(os.path.dirname(path)):
            if create:
                made.append(path)
                if dry_run:
                    continue
                _make_dir(path)
                matches = [path]
            else:
                matches = []
        else:
            matches = []
        for match in matches:
            if os.path.islink(match):
                raise PolicyError(f"protected path {match} is a symlink, which the sandbox could "
                                  "re-point; replace it with what it points to")
            found.append(match)
    return found


_WILDCARDS = "*?["


def _glob(base: str, pattern: str) -> list:
    """glob.glob(glob.escape(base) + "/" + pattern). The default git patterns' wildcards
    are whole `*` components: those are matched here, step by step as glob does, since
    glob imports re, fnmatch and contextlib (several ms on each run in a git workspace)."""
    if any(c in base for c in _WILDCARDS) or any(
            part != "*" and any(c in part for c in _WILDCARDS) for part in pattern.split("/")):
        import glob

        return glob.glob(glob.escape(base) + "/" + pattern)
    return list(_star_glob(base + "/" + pattern, dironly=False))


def _star_glob(pathname: str, dironly: bool):
    # glob._iglob for a pattern whose wildcards are all `*` components: `*` matches the
    # names that do not start with "." (only directories, followed, on the way down);
    # a plain name after a wildcard only has to exist.
    dirname, basename = os.path.split(pathname)
    if dirname != pathname and "*" in dirname:
        dirs = _star_glob(dirname, True)
    else:
        dirs = (dirname,)
    for directory in dirs:
        if basename == "*":
            names = [n for n in _names(directory, dironly) if n[0] != "."]
        elif basename:
            names = [basename] if os.path.lexists(os.path.join(directory, basename)) else []
        else:
            names = [basename] if os.path.isdir(directory) else []
        for name in names:
            yield os.path.join(directory, name)


def _names(directory: str, dironly: bool) -> list:
    """The entries of `directory` (only its directories if `dironly`), as far as it lists."""
    names = []
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                try:
                    if not dironly or entry.is_dir():
                        names.append(entry.name)
                except OSError:
                    pass
    except OSError:
        pass
    return names


def make_mount_points(paths) -> None:
    """Create the missing directories inside git dirs that `resolve` planned to mount."""
    for path in paths:
        _make_dir(path)


def _make_dir(path: str) -> None:
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        pass  # a concurrent launch (library threads) made it first
    except OSError as err:
        raise PolicyError(f"cannot create protected path {path} as a mount point: "
                          f"{err.strerror}") from None


def _elsewhere(hidden: list, roots: list, best_effort: bool) -> list:
    """Other places that show a hidden path (mountinfo.elsewhere), failing closed; a
    writable root inside one is refused as inside the path itself."""
    try:
        found = mountinfo.elsewhere(hidden)
    except OSError as err:
        if best_effort:
            return []
        raise UnsupportedKernel(f"cannot check where else the hidden paths are mounted "
                                f"({err}). Pass --best-effort to run without that check") from None
    for alias, _, original in found:
        for root in roots:
            if _under(root, alias):
                raise PolicyError(f"writable root {root} lies inside {alias}, another mount of "
                                  f"hidden path {original}; choose another directory")
    return found


def _homes(homes) -> tuple:
    if homes is None:
        return ()
    if isinstance(homes, str):
        homes = (homes,)
    return tuple(dict.fromkeys(os.path.realpath(h) for h in homes if h and os.path.isabs(h)))


def _home_paths(entry: str, homes: tuple) -> list:
    """`entry` for each home if it starts with `~`; an entry without a home is dropped."""
    if entry == "~" or entry.startswith("~/"):
        return [home.rstrip("/") + entry[1:] for home in homes]
    if entry.startswith("~"):
        return []
    return [entry]


def _is_relative(entry: str) -> bool:
    return not entry.startswith(("/", "~"))


def _within(path: str, roots) -> bool:
    return any(_under(path, r) for r in roots)


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")
