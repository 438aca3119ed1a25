"""What changed in a run that runs later outside the sandbox: noticed, said, and where
git would obey it, undone.

Mounts can make an existing file read-only, but not a missing one: covering a
path needs a mount point, and nsbox creates nothing in the user's tree. So the
paths that matter are fingerprinted before the run and compared after it, when
no sandboxed process is left. Files git never writes into an existing git dir
(`commondir`, `gitdir`, `objects/info/alternates`, `config.worktree`) are removed
if they appeared; everything else that appeared or changed is reported.
"""

import os
import stat

from nsbox.plan import gitdirs
from nsbox.record import Record

# Relative to a git dir that existed before the run: redirects git would obey.
GIT_REDIRECTS = ("commondir", "gitdir", "objects/info/alternates", "config.worktree")
# Relative to a git dir: what git runs or obeys later.
GIT_WATCHED = ("config", "hooks", "info/attributes") + GIT_REDIRECTS


class Change(Record):
    path: str
    what: str  # appeared | changed | removed | new repository | new git pointer
    #            | removed (planted); an overlay run's manifest (plan/overlay.py):
    #            created | modified | deleted | mode | type changed
    # The manifest's details; left at their defaults in the reports above.
    kind: str = ""  # file | dir | symlink | other
    size: int | None = None  # a file's new size
    sha256: str = ""  # a file's new content
    mode: int | None = None  # the new permission bits
    target: str = ""  # a symlink's new target

    def as_dict(self) -> dict:
        out = {"path": self.path, "what": self.what}
        for name in ("kind", "size", "sha256", "mode", "target"):
            value = getattr(self, name)
            if value not in ("", None):
                out[name] = value
        return out


class Watch(Record):
    roots: tuple  # writable roots, scanned for new repositories after the run
    paths: tuple  # watched paths
    before: tuple  # their fingerprints, in order
    repos: tuple  # `.git` entries found before the run
    undo: tuple  # paths removed if they appear (git redirects)


def start(roots: tuple, paths, repos: tuple, undo) -> Watch:
    paths = tuple(dict.fromkeys(paths))
    return Watch(roots=tuple(roots), paths=paths, before=tuple(fingerprint(p) for p in paths),
                 repos=tuple(repos), undo=tuple(dict.fromkeys(undo)))


def review(watch: Watch):
    """(changes since `watch` was taken, a fresh Watch to compare the next run with)."""
    changes = []
    undone = set()
    for path in watch.undo:
        try:
            info = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISDIR(info.st_mode):
            changes.append(Change(path, "appeared"))
            continue
        try:
            os.unlink(path)
            changes.append(Change(path, "removed (planted)"))
            undone.add(path)
        except OSError:
            changes.append(Change(path, "appeared"))
    after = tuple(fingerprint(p) for p in watch.paths)
    for path, old, new in zip(watch.paths, watch.before, after):
        if old == new or path in undone or UNREACHABLE in (old, new):
            continue
        what = "appeared" if old is None else "removed" if new is None else "changed"
        changes.append(Change(path, what))
    repos = gitdirs.find(watch.roots) if watch.roots else ()
    for dotgit in repos:
        if dotgit not in watch.repos:
            pointer = os.path.isfile(dotgit) and not os.path.islink(dotgit)
            changes.append(Change(dotgit, "new git pointer" if pointer else "new repository"))
    reported = set()
    unique = [c for c in changes if not (c.path in reported or reported.add(c.path))]
    fresh = Watch(roots=watch.roots, paths=watch.paths, before=after,
                  repos=tuple(repos) if watch.roots else watch.repos, undo=watch.undo)
    return tuple(unique), fresh


# A path this process may not look up: after a run the CLI is in the sandbox's user
# namespace, where another user's private directories are closed to it, as they
# were to the command (which therefore changed nothing there).
UNREACHABLE = "unreachable"


def fingerprint(path: str):
    """None if absent; else the entry's identity and times, with a directory's entries."""
    try:
        info = os.lstat(path)
    except PermissionError:
        return UNREACHABLE
    except OSError:
        return None
    own = (info.st_mode, info.st_ino, info.st_size, info.st_mtime_ns)
    if not stat.S_ISDIR(info.st_mode):
        return own
    entries = []
    try:
        with os.scandir(path) as it:
            for entry in it:
                try:
                    e = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                entries.append((entry.name, e.st_mode, e.st_ino, e.st_size, e.st_mtime_ns))
    except OSError:
        pass
    return own + (tuple(sorted(entries)),)


def summary(changes, cwd: str = "") -> str:
    """One stderr line, or '' when nothing changed."""
    if not changes:
        return ""
    return ("changed where code runs later outside the sandbox: " + listing(changes, cwd)
            + "; review before using them")


def listing(changes, cwd: str = "", separator: str = ", ") -> str:
    """`path (what)` of the first 8 changes, paths relative to `cwd` below it, and how
    many more."""
    shown = []
    for change in changes[:8]:
        path = change.path
        if cwd and path.startswith(cwd.rstrip("/") + "/"):
            path = path[len(cwd.rstrip("/")) + 1:]
        shown.append(f"{path} ({change.what})")
    more = f" and {len(changes) - 8} more" if len(changes) > 8 else ""
    return separator.join(shown) + more
