"""Replay the plan's mount steps to build the sandbox's root, then pivot into it."""

import os

from nsbox import trace
from nsbox.kernel import mounts

STAGE = "/tmp"  # where the new root is assembled; private to this mount namespace
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_LINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
             "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx"}


def host_terminal():
    """(fd, host path) of the first of fds 0-2 that is a terminal, else None."""
    for fd in (0, 1, 2):
        if os.isatty(fd):
            try:
                return fd, os.ttyname(fd)
            except OSError:
                return None
    return None


def build_and_enter(steps, use_mount_api: bool, console=None, preload=None) -> None:
    """console: host_terminal()'s answer, shown as /dev/console. preload(stage, built):
    called before the new root is assembled at `stage` (covering the host's) and once
    it is built, before pivot_root (the host's files elsewhere are still seen)."""
    if preload is not None:
        preload(STAGE, built=False)
    mounts.make_private_recursive()
    # Take every writable tree from the host before anything is stacked on STAGE:
    # a workspace under /tmp would otherwise resolve into the read-only copy.
    sources = {s.source: _grab_writable(s.source, use_mount_api)
               for s in steps if s.kind == "bind_rw"}
    layers = {s.target: _grab_layers(s) for s in steps if s.kind == "overlay"}
    # A protection on a path the sandbox cannot reach (a nested repository in another
    # user's private directory, which this namespace's root may not enter either):
    # the command cannot reach it, so there is nothing to protect there.
    unreachable = {s.target for s in steps if s.kind in _PROTECTIONS
                   and (layers.get(s.target, ()) is None or not _reachable(s.target))}
    shown = {s.target: _grab_readonly(s.source, use_mount_api)
             for s in steps if s.kind == "bind_ro_from"}
    images = {s.target: _grab_image(s, use_mount_api) for s in steps if s.kind == "root_image"}
    masks = _empty_files_dir() if any(s.kind == "mask_file" for s in steps) else None
    masked = 0
    shm_from = {s.source for s in steps if s.kind == "dev" and s.source}
    shm = None  # O_PATH fd of the directory /dev/shm shows
    for step in steps:
        target = STAGE + step.target if step.target != "/" else STAGE
        if step.target in unreachable and step.kind in _PROTECTIONS:
            continue
        if step.kind == "root_readonly":
            _attach_root(readonly=True, use_mount_api=use_mount_api)
        elif step.kind == "root_writable":
            _attach_root(readonly=False, use_mount_api=use_mount_api)
        elif step.kind == "tmpfs" and step.target in shm_from:
            shm = _mount_shared_tmpfs(target, step.mode, step.size)
        elif step.kind == "tmpfs":
            mounts.mount_tmpfs(target, mode=step.mode, size=step.size)
        elif step.kind == "dev":
            _populate_dev(target, shm, console)
        elif step.kind == "bind_rw":
            os.makedirs(target, exist_ok=True)  # only ever needed on our own tmpfs
            _attach_writable(sources[step.source], target, use_mount_api)
        elif step.kind == "bind_ro_from":
            os.makedirs(target, exist_ok=True)  # the plan allows that only in a private dir
            _attach_readonly(shown[step.target], target, use_mount_api)
        elif step.kind == "overlay":
            os.makedirs(target, exist_ok=True)  # only ever needed on our own tmpfs
            fds = layers[step.target]
            if len(fds) == 1:
                fds = _memory_layer(fds[0], step)
            _mount_overlay(target, fds, step.volatile)
            for rel, mode in step.dirs:  # a writable image root: mount points in its layer
                _make_dir(f"{target}/{rel}", mode)
        elif step.kind == "root_image":
            _attach_image(images[step.target], step, use_mount_api)
        elif step.kind == "bind_new":
            os.makedirs(target, exist_ok=True)
            mounts.bind(STAGE + step.source, target)
        elif step.kind == "pin":
            _bind_onto_itself(target, readonly=False, use_mount_api=use_mount_api)
        elif step.kind == "bind_ro":
            _bind_onto_itself(target, readonly=True, use_mount_api=use_mount_api)
        elif step.kind == "mask_dir":
            mounts.mount_tmpfs(target, mode=step.mode, size=4096, flags=mounts.MS_RDONLY
                               | mounts.MS_NOSUID | mounts.MS_NODEV | mounts.MS_NOEXEC)
        elif step.kind == "mask_file":
            empty = _new_empty_file(masks, f"empty{masked}", step.mode)
            masked += 1
            mounts.bind(f"/proc/self/fd/{empty}", target, recursive=False)
            os.close(empty)
            mounts.remount_readonly(target)
        elif step.kind == "proc":
            mounts.mount_proc(target)
        else:
            raise ValueError(f"unknown mount step {step.kind!r}")
    if masks is not None:
        os.close(masks)
    if preload is not None:
        preload(STAGE, built=True)
    trace.mark("pivot_root")
    mounts.pivot_into(STAGE)


def _empty_files_dir() -> int:
    """An O_PATH fd of a private tmpfs for the sources of file masks.

    It sits under STAGE, so the root attached next covers it; the fd keeps it reachable.
    """
    mounts.mount_tmpfs(STAGE, mode=0o700, size=4096)
    return os.open(STAGE, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


def _new_empty_file(directory: int, name: str, mode: int) -> int:
    """An O_PATH fd of a new empty file with `mode`: one per mask, so that each mask's
    mode is its own."""
    os.mknod(name, mode, dir_fd=directory)  # a regular file (mknod's mode passes the umask)
    os.chmod(name, mode, dir_fd=directory)
    return os.open(name, os.O_PATH | os.O_CLOEXEC, dir_fd=directory)


def _mount_shared_tmpfs(target: str, mode: int, size: int) -> int:
    """One tmpfs for `target` and /dev/shm, so that its size bounds both: `target` shows
    its `tmp` directory (bound over the tmpfs's root), /dev/shm will show its `shm`
    directory. Returns an O_PATH fd of `shm`."""
    mounts.mount_tmpfs(target, mode=0o755, size=size)
    for name in ("tmp", "shm"):
        os.mkdir(f"{target}/{name}")
        os.chmod(f"{target}/{name}", mode)  # mkdir's mode would pass through the umask
    shm = os.open(f"{target}/shm", os.O_PATH | os.O_CLOEXEC)
    mounts.bind(f"{target}/tmp", target, recursive=False)
    return shm


def _bind_onto_itself(target: str, readonly: bool, use_mount_api: bool) -> None:
    """Make `target` a mount point (it can't be renamed, removed or renamed over), maybe read-only."""
    if use_mount_api:
        tree = mounts.clone_tree(target)
        if readonly:
            mounts.set_attrs_recursive(tree, mounts.MOUNT_ATTR_RDONLY, what=repr(target))
        mounts.attach(tree, target, what=repr(target))
        os.close(tree)
    else:
        mounts.bind(target, target)
        if readonly:
            mounts.remount_readonly_recursive(target)


def _attach_root(readonly: bool, use_mount_api: bool) -> None:
    if use_mount_api:
        tree = mounts.clone_tree("/")
        flags = mounts.MOUNT_ATTR_NOSUID | mounts.MOUNT_ATTR_NODEV
        if readonly:
            flags |= mounts.MOUNT_ATTR_RDONLY
        mounts.set_attrs_recursive(tree, flags, what="'/'")
        mounts.attach(tree, STAGE, what="'/'")
        os.close(tree)
    else:
        mounts.bind("/", STAGE)
        if readonly:
            mounts.remount_readonly_recursive(STAGE)


def _grab_writable(path: str, use_mount_api: bool) -> int:
    if use_mount_api:
        tree = mounts.clone_tree(path)
        # Only add restrictions: a read-only submount inside a writable root stays so.
        mounts.set_attrs_recursive(tree, mounts.MOUNT_ATTR_NOSUID | mounts.MOUNT_ATTR_NODEV,
                                   what=repr(path))
        return tree
    return os.open(path, os.O_PATH | os.O_CLOEXEC)


def _grab_image(step, use_mount_api: bool) -> int:
    """An image root, taken before anything is stacked on STAGE (it may lie under it):
    with nothing to add, a read-only clone of its mount tree; else an O_PATH fd."""
    if use_mount_api and not step.dirs:
        tree = mounts.clone_tree(step.source)
        mounts.set_attrs_recursive(
            tree, mounts.MOUNT_ATTR_RDONLY | mounts.MOUNT_ATTR_NOSUID | mounts.MOUNT_ATTR_NODEV,
            what=repr(step.source))
        return tree
    return os.open(step.source, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


def _attach_image(fd: int, step, use_mount_api: bool) -> None:
    """The image, read-only, as the new root. Mount points it lacks (step.dirs) are made
    in a small tmpfs laid over it as the upper of two read-only overlay layers: the
    image itself is never written. step.mode: the image root's mode, which the top
    layer's root shows."""
    if not step.dirs:
        if use_mount_api:
            mounts.attach(fd, STAGE, what="the rootfs")
        else:
            mounts.bind(f"/proc/self/fd/{fd}", STAGE)
            mounts.remount_readonly_recursive(STAGE)
        os.close(fd)
        return
    mounts.mount_tmpfs(STAGE, mode=0o700, size=1 << 20)
    os.mkdir(f"{STAGE}/scaffold")
    os.chmod(f"{STAGE}/scaffold", step.mode)
    for rel, mode in step.dirs:
        _make_dir(f"{STAGE}/scaffold/{rel}", mode)
    scaffold = os.open(f"{STAGE}/scaffold", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    mounts.mount_overlay_readonly(STAGE, (f"/proc/self/fd/{scaffold}", f"/proc/self/fd/{fd}"))
    os.close(scaffold)
    os.close(fd)


def _make_dir(path: str, mode: int) -> None:
    try:
        os.mkdir(path)
    except FileExistsError:
        return
    os.chmod(path, mode)  # mkdir's mode would pass through the umask


def _grab_readonly(path: str, use_mount_api: bool) -> int:
    """Like _grab_writable, and read-only (with the mount API, before it is attached)."""
    tree = _grab_writable(path, use_mount_api)
    if use_mount_api:
        mounts.set_attrs_recursive(tree, mounts.MOUNT_ATTR_RDONLY, what=repr(path))
    return tree


def _attach_readonly(fd: int, target: str, use_mount_api: bool) -> None:
    _attach_writable(fd, target, use_mount_api)
    if not use_mount_api:
        mounts.remount_readonly_recursive(target)


_PROTECTIONS = ("pin", "bind_ro", "mask_dir", "mask_file", "overlay")


def _reachable(path: str) -> bool:
    try:
        os.lstat(path)
    except PermissionError:
        return False
    except OSError:
        pass  # missing: the step itself says so
    return True


def _grab_layers(step):
    """O_PATH fds of an overlay's lower, upper and work directories, taken (like the
    writable trees) before anything is stacked on STAGE; without an upper path, only
    the lower one (the layer is made in memory, _memory_layer). None when a git dir's
    lower layer is out of the sandbox's reach (see build_and_enter)."""
    if step.upper and step.target != "/" and not _reachable(step.source):
        return None
    return tuple(os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                 for path in (step.source, step.upper, step.work) if path)


def _memory_layer(lower: int, step) -> tuple:
    """(lower, upper, work) fds with the upper and work directories in a tmpfs of this
    sandbox's own (bounded by step.size), mounted on STAGE and covered by the overlay
    mounted there next: it goes when the sandbox does."""
    mounts.mount_tmpfs(STAGE, mode=0o700, size=step.size)
    os.mkdir(f"{STAGE}/upper")
    os.chmod(f"{STAGE}/upper", step.mode)  # what / shows
    os.mkdir(f"{STAGE}/work", 0o700)
    return (lower,) + tuple(os.open(f"{STAGE}/{name}", os.O_PATH | os.O_DIRECTORY
                                    | os.O_CLOEXEC) for name in ("upper", "work"))


def _mount_overlay(target: str, fds: tuple, volatile: bool = False) -> None:
    lower, upper, work = (f"/proc/self/fd/{fd}" for fd in fds)
    mounts.mount_overlay(target, lower, upper, work, volatile=volatile)
    for fd in fds:
        os.close(fd)


def _attach_writable(fd: int, target: str, use_mount_api: bool) -> None:
    if use_mount_api:
        mounts.attach(fd, target)
    else:
        mounts.bind(f"/proc/self/fd/{fd}", target)
    os.close(fd)


def _populate_dev(dev: str, shm, console=None) -> None:
    mounts.mount_tmpfs(dev, mode=0o755, flags=mounts.MS_NOSUID | mounts.MS_NOEXEC)
    for name in DEVICES:
        node = f"{dev}/{name}"
        os.close(os.open(node, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o666))
        mounts.bind(f"/dev/{name}", node, recursive=False)
    os.mkdir(f"{dev}/pts", 0o755)
    mounts.mount_devpts(f"{dev}/pts")
    os.mkdir(f"{dev}/shm", 0o1777)
    if shm is None:
        mounts.mount_tmpfs(f"{dev}/shm", mode=0o1777)
    else:
        mounts.bind(f"/proc/self/fd/{shm}", f"{dev}/shm", recursive=False)
        os.close(shm)
    for name, points_to in DEV_LINKS.items():
        os.symlink(points_to, f"{dev}/{name}")
    if console is not None:
        _bind_console(f"{dev}/console", *console)


def _bind_console(node: str, fd: int, path: str) -> None:
    """Bind the terminal on `fd` (named `path` on the host) onto `node`: that one device
    node only, never its devpts, so that ttyname() finds it."""
    try:
        found = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return  # gone since the caller looked: no console
    try:
        want, got = os.fstat(fd), os.fstat(found)
        if (want.st_rdev, want.st_dev, want.st_ino) != (got.st_rdev, got.st_dev, got.st_ino):
            return  # not the same terminal
        os.close(os.open(node, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
        mounts.bind(f"/proc/self/fd/{found}", node, recursive=False)
    finally:
        os.close(found)
