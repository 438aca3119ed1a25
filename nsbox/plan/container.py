"""Container mode: a directory (an extracted image) as the sandbox's root.

The image is always read-only below. Read-only mode binds it as the new root; the
mount points it lacks (the workspace's path, /proc, ...) come from a small tmpfs
layered over it as a second read-only overlay layer, so nothing is ever created in
the image. Writable mode (rootfs_writable) mounts it as the lower layer of an
overlayfs whose upper layer is this sandbox's own `<state>/rootfs/<id>/upper`
(the copy-on-write mechanism of workspace_mode overlay), removed after the run.
Runs in the parent before fork; nothing here follows a symlink inside the image.
"""

import os
import stat

from nsbox.errors import PolicyError
from nsbox.plan.layer_dirs import LayerDirs, make_upper_work, remove_tree
from nsbox.policy import plan as policy_plan
from nsbox.policy.defaults import HIDDEN_READ_AS_EMPTY
from nsbox.record import Record

LAYERS = "rootfs"  # under the state directory: one directory per writable-root sandbox
# The trees every sandbox mounts over, and so needs as directories in the image.
ALWAYS_MOUNTED = ("/tmp", "/run", "/dev", "/proc")


class Layer(LayerDirs):
    """A writable root's private layer: <state>/rootfs/<id>/{upper,work}."""
    id: str
    dir: str


def check_rootfs(path: str) -> str:
    """The image directory, resolved; PolicyError saying what is wrong with it."""
    real = os.path.realpath(os.path.expanduser(path))
    if not os.path.exists(real):
        raise PolicyError(f"rootfs {path!r} does not exist; pass an extracted image's root "
                          "directory (see 'nsbox image import')")
    if not os.path.isdir(real):
        raise PolicyError(f"rootfs {path!r} is not a directory")
    if real == "/":
        raise PolicyError("rootfs '/' is the host's own root; leave --rootfs out to run on "
                          "the host root")
    if not _lexists(real, "bin/sh") and not os.listdir(real):
        raise PolicyError(f"rootfs {path!r} is an empty directory, not a root filesystem")
    return real


def mount_points(rootfs: str, targets) -> tuple:
    """((relative path, mode), ...): the directories the image lacks for `targets`, each
    parent before its children, with the modes they get (the image's own where it has
    the directory). PolicyError when a target's path crosses a symlink or a file in the
    image: a mount there would land outside the new root."""
    wanted = {}
    for target in sorted(set(targets), key=lambda t: (t.count("/"), t)):
        parts = [p for p in target.split("/") if p]
        missing = False
        for depth in range(1, len(parts) + 1):
            rel = "/".join(parts[:depth])
            info = None if missing else _lstat(rootfs, rel)
            if info is None:
                missing = True
                wanted.setdefault(rel, 0o755)
                continue
            if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
                what = "a symlink" if stat.S_ISLNK(info.st_mode) else "not a directory"
                raise PolicyError(
                    f"the rootfs's /{rel} is {what}, but the sandbox mounts {target} there; "
                    f"use a workspace or writable root whose path is made of directories in "
                    f"the image, or change the image")
        if missing:
            for depth in range(1, len(parts) + 1):  # the image's modes for what it has
                rel = "/".join(parts[:depth])
                if rel in wanted:
                    break
                info = _lstat(rootfs, rel)
                wanted.setdefault(rel, stat.S_IMODE(info.st_mode))
    return tuple(sorted(wanted.items(), key=lambda item: (item[0].count("/"), item[0])))


def hidden_inside(rootfs: str, entries, homes: tuple, bound: tuple, host_hidden) -> tuple:
    """(path, is_dir) masks for container mode: the host's hidden paths inside the trees
    bound from the host (`bound`), and the policy's plain entries ("/x", "~/x") found in
    the image itself (its own copy of a secret store). Host paths outside `bound` are
    not in the sandbox at all."""
    found = [(p, d) for p, d in host_hidden if any(policy_plan.under(p, b) for b in bound)]
    missing = set()  # directories the image lacks: ~180 default entries share a few
    homes = tuple(dict.fromkeys(h.rstrip("/") for h in homes if h and h != "/"))
    # Most default entries are under a home: none to look for in a home the image lacks.
    homes = tuple(h for h in homes if _is_dir(_plain_path(rootfs, h, missing)))
    for entry in entries:
        if "*" in entry or entry.startswith("$"):
            continue
        if entry.startswith("~"):
            paths = [h + entry[1:] for h in homes]
        elif entry.startswith("/"):
            paths = [entry]
        else:
            continue  # relative: inside the workspace, which comes from the host
        for path in paths:
            path = path.rstrip("/")
            info = _plain_path(rootfs, path, missing)
            # A link's target is elsewhere; a path in a bound tree is the host's (above).
            if info is not None and not stat.S_ISLNK(info.st_mode) and not any(
                    policy_plan.under(path, b) for b in bound):
                found.append((path, stat.S_ISDIR(info.st_mode)))
    return tuple(dict.fromkeys(found))


def denied_inside(hidden, entries, homes: tuple, bound: tuple, host_denied) -> tuple:
    """Which masks refuse access, as on the host: the image's secret stores and the host
    ones in bound trees, but not the files tools fail without (read as empty)."""
    as_empty = set()
    for entry in HIDDEN_READ_AS_EMPTY:
        if entry.startswith("~"):
            as_empty.update(h + entry[1:] for h in homes if h)
    denied = set(host_denied)
    return tuple(p for p, _ in hidden if p in denied or not (
        p in as_empty or any(policy_plan.under(p, b) for b in bound)))


def _is_dir(info) -> bool:
    return info is not None and stat.S_ISDIR(info.st_mode)


def var_run_is_dir(rootfs: str) -> bool:
    return _is_dir(_lstat(rootfs, "var/run"))


# --- a writable root's layer -----------------------------------------------------------

def plan_layer(state_dir: str) -> Layer:
    """A new layer's name and paths; nothing is created (see create_layer)."""
    layer_id = f"{os.getpid()}-{os.urandom(4).hex()}"
    return Layer(id=layer_id, dir=os.path.join(state_dir, LAYERS, layer_id))


def create_layer(layer: Layer, rootfs: str) -> None:
    """Make the layer's directories (0700, as the state directory); layers of sandboxes
    whose nsbox process is gone (killed before it could remove them) go first."""
    parent = os.path.dirname(layer.dir)
    os.makedirs(parent, mode=0o700, exist_ok=True)
    _remove_orphans(parent)
    os.mkdir(layer.dir, 0o700)
    make_upper_work(layer, rootfs)  # the upper layer's root is the sandbox's /


def remove_layer(layer: Layer) -> None:
    """Remove a layer and everything the sandbox wrote into it (never following a link)."""
    try:
        parent = os.open(os.path.dirname(layer.dir), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        remove_tree(parent, layer.id)
    except FileNotFoundError:
        pass
    finally:
        os.close(parent)


class HeldLayer:
    """The layers' directory, opened before the launch, so that the removal after the run
    does not depend on the view of the namespaces `nsbox exec` waited in."""

    def __init__(self, layer: Layer):
        self.layer = layer
        self.parent_fd = os.open(os.path.dirname(layer.dir),
                                 os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def remove(self) -> None:
        try:
            remove_tree(self.parent_fd, self.layer.id)
        except FileNotFoundError:
            pass
        finally:
            os.close(self.parent_fd)


def _remove_orphans(parent: str) -> None:
    fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in os.listdir(fd):
            pid = name.partition("-")[0]
            if pid.isdigit() and not _alive(int(pid)):
                try:
                    remove_tree(fd, name)
                except OSError:
                    pass  # another nsbox removing it too, or not ours to judge
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- looking inside the image, never following its symlinks ------------------------------

def _lstat(rootfs: str, rel: str):
    """lstat of `rel` (a plain relative path) in the image, through real directories only;
    None when missing or behind a symlink."""
    return _plain_path(rootfs, "/" + rel)


def _plain_path(rootfs: str, path: str, missing=None):
    """lstat of `path` inside the image through real directories only, else None.
    `missing`: a set of paths known not to lead anywhere, updated."""
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in parts):
        return None
    current = rootfs
    for i, part in enumerate(parts):
        current = f"{current}/{part}"
        if missing is not None and current in missing:
            return None
        try:
            info = os.lstat(current)
        except OSError:
            if missing is not None:
                missing.add(current)
            return None
        if i < len(parts) - 1 and not stat.S_ISDIR(info.st_mode):
            return None
    return os.lstat(rootfs) if not parts else info


def _lexists(rootfs: str, rel: str) -> bool:
    return _plain_path(rootfs, "/" + rel) is not None


# --- the plan's part ---------------------------------------------------------------------

class Root(Record):
    """Container mode's part of a plan."""
    rootfs: str  # the image directory, resolved
    steps: tuple  # the mount steps, the image's root first
    layer: Layer | None = None  # rootfs_writable: the private upper layer (not made yet)


def refuse_without_namespaces(iso, what: str) -> None:
    from nsbox.errors import UnsupportedKernel

    why = f" ({iso.fallback_reason})" if iso.fallback_reason else ""
    raise UnsupportedKernel(
        f"{what} needs the sandbox's own user and mount namespaces (an image as / or "
        f"uid 0 inside), which Landlock-only isolation does not have{why}. Use "
        "--isolation full on a host that allows user namespaces, or run without it")


def plan_root(policy, writable: tuple, protections: tuple, host_hidden, host_denied,
              homes: tuple, state_dir: str, overlay: tuple = (), workdir: str = "",
              workspace: str = "") -> Root:
    """The mount steps of a sandbox whose / is policy.rootfs. `protections`: the
    protection steps as on the host root (pins, read-only binds, the cache area's bind,
    masks), of which the masks are recomputed for the image. A workspace that is not
    writable (preset read-only) is still shown, read-only, as on the host root."""
    from nsbox.policy.plan import MountStep

    rootfs = check_rootfs(policy.rootfs)
    binds = tuple(s for s in protections if not s.kind.startswith("mask_"))
    if workspace and not any(policy_plan.under(workspace, w) for w in writable):
        binds = (MountStep("bind_rw", workspace, workspace),
                 MountStep("bind_ro", workspace, workspace)) + binds
    bound = tuple(writable) + tuple(s.target for s in binds if s.kind == "bind_rw")
    hidden = hidden_inside(rootfs, policy.hidden, homes, bound, host_hidden)
    hidden = policy_plan.visible_hidden(hidden, bound)
    masks = policy_plan.protection_steps(
        hidden=hidden, denied=denied_inside(hidden, policy.hidden, homes, bound, host_denied))
    in_image = (workdir,) if workdir and not any(policy_plan.under(workdir, b)
                                                 for b in bound) else ()
    dirs = mount_points(rootfs, ALWAYS_MOUNTED + bound + in_image)
    layer = None
    if policy.rootfs_writable and policy.rootfs_layer == "disk":
        layer = plan_layer(state_dir)
        root = MountStep("overlay", "/", rootfs, upper=layer.upper, work=layer.work,
                         dirs=dirs, volatile=True)
    elif policy.rootfs_writable:  # no upper path: a tmpfs of its own, made at mount time
        root = MountStep("overlay", "/", rootfs, dirs=dirs, volatile=True,
                         mode=stat.S_IMODE(os.stat(rootfs).st_mode),
                         size=policy.limits.tmp or 0)
    else:
        root = MountStep("root_image", "/", rootfs, dirs=dirs,
                         mode=stat.S_IMODE(os.stat(rootfs).st_mode) if dirs else 0)
    steps = policy_plan.mount_steps(policy, writable, var_run_is_dir=var_run_is_dir(rootfs),
                                    protections=binds + masks, overlay=overlay, root=root)
    return Root(rootfs=rootfs, steps=steps, layer=layer)
