"""Git dirs as a copy-on-write layer: git works normally inside, and after the command
nsbox carries its changes into the real git dir, except what would run later.

In a direct workspace each plain git dir in the writable roots (a `.git` directory,
not a worktree's or submodule's pointer) is mounted as an overlayfs: the real one
below, never written during the run, and above it `<state>/git/<id>` which takes every
write (the state directory is hidden in every sandbox). Git's own `config.lock` +
rename works there. When the command has ended (plan/gitapply.py) objects, refs, the
index, logs and the other data files are written into the real git dir one file at
a time (a new name renamed over the old one, never following a symlink); config files
are merged key by key (policy/git_config.py), and hooks and the files that redirect
git elsewhere are never applied. Both are reported.

This module only plans (it runs before every launch, so it stays small); the apply
side is imported after the run.
"""

import os

from nsbox.plan.layer_dirs import LayerDirs, make_upper_work, remove_tree
from nsbox.record import replace

LAYERS = "git"
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_CONFIG = 1 << 20


class Layer(LayerDirs):
    """One git dir's overlay: <state>/git/<id>/{upper,work}. Without a mount namespace
    (landlock-only isolation) there is no overlay (`dir` ''): the command writes the real
    git dir, and after the run its config files lose the changes a sandbox may not make."""
    gitdir: str  # the real git dir: the overlay's lower layer
    dir: str
    # (path relative to gitdir, bytes or None when missing) of each config file as the
    # run started: what the sandbox's config is compared with, key by key.
    base: tuple = ()
    started_ns: int = 0  # a real file with a newer ctime changed during the run

    def step_layers(self) -> tuple:
        return (self.gitdir, self.upper, self.work)


def plan(repos, roots, state_dir: str, skip_under: tuple = (),
         copy_on_write: bool = True) -> tuple:
    """The layers for the plain git dirs among `repos` (`.git` entries in the writable
    roots); none under `skip_under` (overlaid roots, copy-on-write already) and
    none when nsbox's state directory lies in a writable root (the upper layer would
    be reachable). Nothing is created (see create). Without `copy_on_write` (no mount
    namespace) only the config files are recorded, to be checked after the run."""
    state = os.path.realpath(state_dir) if state_dir else ""
    if copy_on_write and (not state or any(_under(state, r) or _under(r, state)
                                           for r in roots) or not can_hold_layers(state)):
        return ()
    import time

    started = time.time_ns() - 20_000_000  # ctimes are stamped by a coarse clock
    layers = []
    for dotgit in repos:
        if any(_under(dotgit, top) for top in skip_under):
            continue
        if not _plain_gitdir(dotgit):
            continue
        layers.append(Layer(gitdir=dotgit,
                            dir=os.path.join(state, LAYERS, _layer_name()) if copy_on_write
                            else "",
                            base=tuple(config_files(dotgit)), started_ns=started))
    return tuple(layers)


# Filesystems an overlay's upper layer works on inside a user namespace (user.* xattrs,
# whiteouts); elsewhere (overlayfs itself, as in many containers, NFS, FUSE, an old
# tmpfs) git dirs stay as before: config read-only, hooks read-only.
UPPER_FILESYSTEMS = ("ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "bcachefs")


def can_hold_layers(state: str) -> bool:
    """Unprivileged overlayfs (Linux 5.11) with `state` on a filesystem that holds an
    upper layer."""
    try:
        major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    except ValueError:
        return False
    if (major, minor) < (5, 11):
        return False
    from nsbox.kernel import mountinfo

    try:
        found = mountinfo.by_id(mountinfo.read_bytes(), mountinfo.mount_id_of(state))
    except OSError:
        return False
    return found is not None and found.fstype in UPPER_FILESYSTEMS


def _plain_gitdir(dotgit: str) -> bool:
    """A `.git` directory of its own (no symlink, no commondir: not a worktree's) whose
    top entries are the user's: overlayfs copies a file up with its owner, which the
    sandbox's user namespace must map (a group-shared repository's group is not)."""
    uid, gid = os.getuid(), os.getgid()
    try:
        info = os.lstat(dotgit)
        if not _is_dir(info) or (info.st_uid, info.st_gid) != (uid, gid):
            return False
        with os.scandir(dotgit) as entries:
            for entry in entries:
                if entry.name == "commondir":
                    return False
                child = entry.stat(follow_symlinks=False)
                if (child.st_uid, child.st_gid) != (uid, gid):
                    return False
        return True
    except OSError:
        return False


def _is_dir(info) -> bool:
    return info.st_mode & 0o170000 == 0o040000


def config_files(gitdir: str, rel: str = "") -> list:
    """(relative path, content) of config and config.worktree here and in every
    submodule's git dir below modules/ (a module name may hold '/')."""
    out = []
    for name in ("config", "config.worktree"):
        path = os.path.join(gitdir, rel, name)
        out.append((os.path.join(rel, name), read_file(path)))
    modules = os.path.join(rel, "modules")
    out += _module_configs(gitdir, modules)
    return out


def _module_configs(gitdir: str, rel: str) -> list:
    try:
        names = sorted(os.listdir(os.path.join(gitdir, rel)))
    except OSError:
        return []
    out = []
    for name in names:
        below = os.path.join(rel, name)
        path = os.path.join(gitdir, below)
        if os.path.islink(path) or not os.path.isdir(path):
            continue
        if os.path.lexists(os.path.join(path, "HEAD")):  # a submodule's git dir
            out += config_files(gitdir, below)
        else:  # part of a module's name
            out += _module_configs(gitdir, below)
    return out


def read_file(path: str):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, _MAX_CONFIG)
    except OSError:
        return None
    finally:
        os.close(fd)


def readonly_kept(paths, layers) -> tuple:
    """The read-only paths that stay so with these layers: inside an overlaid git dir
    config files and info/ become writable (their changes are merged or applied after
    the run); hooks and git's redirects stay read-only."""
    out = []
    for path in paths:
        layer = next((la for la in layers if _under(path, la.gitdir)), None)
        if layer is not None and _merged_or_applied(os.path.relpath(path, layer.gitdir)):
            continue
        out.append(path)
    return tuple(out)


def _merged_or_applied(rel: str) -> bool:
    parts = rel.split("/")
    return parts[-1] in ("config", "config.worktree", "info") and "hooks" not in parts


def outside(paths, layers) -> tuple:
    """`paths` without those inside an overlaid git dir (they don't change in the run)."""
    return tuple(p for p in paths if not any(_under(p, la.gitdir) for la in layers))


# Layers left by a process that ended without applying them (a plan prepared and never
# run, a killed caller) are removed by a later run once this old, if they hold nothing.
STALE_S = 600
_OWNED = {}  # layer dir -> fd holding a shared flock: this process will apply the layer


def _layer_name() -> str:
    import time

    return f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{os.urandom(4).hex()}"


def renewed(layers) -> tuple:
    """Copies of `layers` on new directories, made and locked (create): a spare sandbox's
    own, so that the run which takes it applies what that sandbox wrote."""
    fresh = tuple(replace(layer, dir=os.path.join(os.path.dirname(layer.dir), _layer_name()))
                  if layer.dir else layer for layer in layers)
    create(fresh)
    return fresh


def with_layers(plan, layers):
    """`plan` (a LaunchPlan) mounting `layers` in place of its own git layers."""
    moved = {(old.upper, old.work): new for old, new in zip(plan.git_layers, layers)
             if old.dir}
    mounts = tuple(replace(step, upper=moved[key].upper, work=moved[key].work)
                   if (key := (step.upper, step.work)) in moved else step
                   for step in plan.mounts)
    return replace(plan, mounts=mounts, git_layers=tuple(layers))


def for_spare(plan):
    """(the plan for one more spare sandbox, on its own new layers; what removes those
    layers if it goes unused): spares.Pool's `renew`."""
    fresh = renewed(plan.git_layers)
    return with_layers(plan, fresh), lambda: discard(fresh)


def taken_over(plan, spare_plan):
    """`plan`, whose command a spare built from `spare_plan` runs: the spare's layers with
    this run's start (its config base, its clock); the layers made for it are removed."""
    layers = tuple(replace(mine, dir=theirs.dir) for mine, theirs in
                   zip(plan.git_layers, spare_plan.git_layers))
    discard(plan.git_layers)
    return with_layers(plan, layers)


def discard(layers) -> None:
    """Remove layers no command wrote to (a spare dropped unused, or the layers a run
    prepared before it took a spare's); a layer holding anything is left to the sweep."""
    held = Held([layer for layer in layers if layer.dir])
    if not drop_if_unchanged(held):
        held.close()


def create(layers) -> None:
    """Make each layer's directories (0700), the upper one with its git dir's mode, each
    locked (flock) until this process has applied it (Held.close)."""
    import fcntl

    made = [layer for layer in layers if layer.dir]
    for layer in made:
        os.makedirs(os.path.dirname(layer.dir), mode=0o700, exist_ok=True)
        os.mkdir(layer.dir, 0o700)
        fd = os.open(layer.dir, _DIR)
        fcntl.flock(fd, fcntl.LOCK_SH)
        _OWNED[layer.dir] = fd
        make_upper_work(layer, layer.gitdir)
    if made:
        _sweep(os.path.dirname(made[0].dir))


def _sweep(top: str) -> None:
    """Remove old layers no process holds (no flock) whose upper layer is empty."""
    import fcntl
    import time

    try:
        names = os.listdir(top)
    except OSError:
        return
    for name in names:
        path = os.path.join(top, name)
        if path in _OWNED:
            continue
        try:
            fd = os.open(path, _DIR)
        except OSError:
            continue
        try:
            if time.time() - os.fstat(fd).st_mtime < STALE_S:
                continue
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if _empty(fd, "upper"):
                _remove(top, name)
        except OSError:
            continue  # held (a run or a session in progress), or already gone
        finally:
            os.close(fd)


def _empty(dir_fd: int, name: str) -> bool:
    fd = os.open(name, _DIR, dir_fd=dir_fd)
    try:
        return not os.listdir(fd)
    finally:
        os.close(fd)


def _remove(top: str, name: str) -> None:
    parent = os.open(top, _DIR)
    try:
        remove_tree(parent, name)
    finally:
        os.close(parent)


def _release(layer) -> None:
    fd = _OWNED.pop(layer.dir, None)
    if fd is not None:
        os.close(fd)


class Held:
    """Descriptors of each layer's directory and real git dir, taken before the launch:
    afterwards `nsbox exec` sees the sandbox's mounts, where neither path leads there."""

    def __init__(self, layers):
        self.layers = tuple(layers)
        self.fds = []
        try:
            for layer in self.layers:
                parent = os.open(os.path.dirname(layer.dir) if layer.dir else "/", _DIR)
                try:
                    lower = os.open(layer.gitdir, _DIR)
                except OSError:
                    os.close(parent)
                    raise
                self.fds.append((parent, lower))
        except OSError:
            self.close()
            raise

    def close(self) -> None:
        for parent, lower in self.fds:
            os.close(parent)
            os.close(lower)
        self.fds = []
        for layer in self.layers:
            _release(layer)


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def protections_with(guard, layers):
    """`guard` (plan.protect.Protections) with these layers mounted: what becomes
    writable in them is neither bound read-only nor watched (the real git dir does not
    change during the run; the apply reports what it leaves out)."""
    from nsbox.record import replace

    if not any(la.dir for la in layers):  # nothing mounted: the watch reports as before
        return replace(guard, git_layers=tuple(layers))
    return replace(guard, git_layers=tuple(layers),
                   readonly=readonly_kept(guard.readonly, layers),
                   created=readonly_kept(guard.created, layers),
                   watched=outside(guard.watched, layers), undo=outside(guard.undo, layers))


def drop_if_unchanged(held) -> bool:
    """After a command that left git alone (the common case): True when no layer holds
    a change, and then the layers are removed and the descriptors closed, without
    loading the apply side (plan/gitapply.py)."""
    for layer, (parent, lower) in zip(held.layers, held.fds):
        if not layer.dir:
            if config_files(layer.gitdir) != list(layer.base):
                return False
            continue
        try:
            upper = os.open(os.path.join(os.path.basename(layer.dir), "upper"), _DIR,
                            dir_fd=parent)
        except OSError:
            return False
        try:
            if os.listdir(upper):
                return False
        finally:
            os.close(upper)
    for layer, (parent, _) in zip(held.layers, held.fds):
        if layer.dir:
            name = os.path.basename(layer.dir)
            try:  # overlayfs leaves work/work behind (mode 000, empty) once mounted
                for rel in ("upper", "work/work", "work", ""):
                    try:
                        os.rmdir(os.path.join(name, rel) if rel else name, dir_fd=parent)
                    except FileNotFoundError:
                        if rel != "work/work":
                            raise
            except OSError:
                remove_tree(parent, name)
    held.close()
    return True
