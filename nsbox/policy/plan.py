"""Policy -> launch plan: the ordered mount steps and namespace set, as plain data.

Pure functions over already-resolved paths, so the whole order is testable
without root. nsbox.launch.rootfs replays the steps exactly in this order.
"""

from nsbox.record import Record

from nsbox.policy.model import Policy


class MountStep(Record):
    # root_readonly | root_writable | tmpfs | dev | proc | bind_rw | bind_new
    # | pin (bind a path onto itself: a mount point can't be renamed or removed)
    # | bind_ro (the same, read-only) | mask_dir | mask_file (empty, read-only, `mode`)
    # dev: its shm shows a directory of the tmpfs step whose target is `source`
    # | overlay (a writable root as an overlayfs: `source` the real tree, read-only
    #   below; writes go to `upper`, with overlayfs's scratch directory `work`)
    # | root_image (container mode: `source`, an image's root, read-only as the new root;
    #   `dirs` are mount points it lacks, made in a tmpfs layered over it)
    # An overlay of "/" without `upper` keeps its layer in a tmpfs of `size` (root `mode`).
    # | bind_ro_from (the host directory `source`, read-only at `target`)
    kind: str
    target: str
    source: str = ""
    mode: int = 0
    size: int = 0  # tmpfs size in bytes; 0: the kernel's default (half of RAM)
    upper: str = ""  # overlay only
    work: str = ""  # overlay only
    dirs: tuple = ()  # root_image, and overlay of "/": mount points made in it
    volatile: bool = False  # overlay: a throw-away upper layer, never synced to disk


NAMESPACES_ALWAYS = ("user", "mount", "pid", "ipc", "uts", "cgroup")


def namespaces(policy: Policy) -> tuple:
    if policy.network == "host":
        return NAMESPACES_ALWAYS
    return NAMESPACES_ALWAYS + ("net",)


def writable_roots(policy: Policy, workspace: str, extra: tuple) -> tuple:
    """Resolved writable roots, workspace first, duplicates and nested repeats removed."""
    roots = ([workspace] if policy.workspace_writable else []) + list(extra)
    unique = []
    for root in roots:
        if root not in unique:
            unique.append(root)
    hidden_by = [t for t in PRIVATE_TREES if under(workspace, t)]
    if hidden_by and policy.isolation != "landlock" and not any(
            under(workspace, root) for root in unique):
        from nsbox.errors import PolicyError

        raise PolicyError(f"workspace {workspace} is under {hidden_by[0]}, which the sandbox "
                          f"replaces with a private one, so preset {policy.preset} would not "
                          "show it; use a workspace outside /tmp and /run, or add "
                          "--writable for it")
    return tuple(unique)


# Trees the sandbox gets fresh copies of; host paths below them are not visible anyway.
PRIVATE_TREES = ("/tmp", "/run", "/dev", "/proc")


def under(path: str, top: str) -> bool:
    """`path` is `top` or lies beneath it (both resolved)."""
    return path == top or path.startswith(top.rstrip("/") + "/")


def _depth(path: str) -> int:
    return path.rstrip("/").count("/")


def visible_hidden(hidden: tuple, writable: tuple, private: tuple = ()) -> tuple:
    """The (path, is_dir) masks worth mounting: none under another mask or a private tree
    (nsbox's own or the policy's `private`, each a fresh tmpfs where nothing hidden is)."""
    kept, masked = [], set()
    fresh = PRIVATE_TREES + tuple(private)
    for path, is_dir in sorted(set(hidden), key=lambda h: (_depth(h[0]), h[0])):
        if _has_ancestor_in(path, masked):
            continue
        if any(under(path, t) for t in fresh) and not any(under(path, w) for w in writable):
            continue
        kept.append((path, is_dir))
        masked.add(path.rstrip("/") or "/")
    return tuple(kept)


def _has_ancestor_in(path: str, paths: set) -> bool:
    """`path` or a directory above it is in `paths` (one set lookup per level)."""
    path = path.rstrip("/") or "/"
    while True:
        if path in paths:
            return True
        if path == "/":
            return False
        path = path.rpartition("/")[0] or "/"


def _shallowest_first(paths) -> list:
    # A parent before what is inside it; by name within a depth, so plans are reproducible.
    return sorted(set(paths), key=lambda p: (_depth(p), p))


# A mask's mode: readable and empty, or refusing access (its mount is read-only, so the
# mode cannot be changed inside).
MASK_DIR_READABLE, MASK_FILE_READABLE, MASK_DENIED = 0o555, 0o444, 0o000


def protection_steps(pinned: tuple = (), readonly: tuple = (), hidden: tuple = (),
                     denied: tuple = ()) -> tuple:
    """Steps that go on top of the writable roots: pins, then read-only binds, then masks
    (those of `denied` refuse access; the others read as empty)."""
    steps = [MountStep("pin", p, p) for p in _shallowest_first(pinned)]
    steps += [MountStep("bind_ro", p, p) for p in _shallowest_first(readonly)]
    # Masks last: a hidden path inside a writable or protected tree stays hidden.
    denied = set(denied)
    for path, is_dir in hidden:
        readable = MASK_DIR_READABLE if is_dir else MASK_FILE_READABLE
        steps.append(MountStep("mask_dir" if is_dir else "mask_file", path,
                               mode=MASK_DENIED if path in denied else readable))
    return tuple(steps)


# Room for the mount points of the writable roots inside a hidden parent, nothing more.
HIDDEN_PARENT_SIZE = 1 << 20


def mount_steps(policy: Policy, writable: tuple, var_run_is_dir: bool = False,
                protections: tuple = (), overlay: tuple = (), root=None,
                read_only_binds: tuple = (), hidden_parents: tuple = ()) -> tuple:
    """The new root, in order. Later steps mount on top of earlier ones.
    overlay: (root, upper, work), or a tuple of them, to mount each `root` copy-on-write
    instead of writable.
    read_only_binds: resolved (host dir, path in the sandbox) pairs.
    hidden_parents: resolved host directories shown empty but for the writable roots inside.
    root: container mode's first step (a root_image or an overlay of "/"), else the host's."""
    steps = []
    layers = {o[0]: o for o in ((overlay,) if overlay and isinstance(overlay[0], str)
                                else overlay)}
    if root is not None:
        steps.append(root)
    elif policy.preset == "full-access":
        steps.append(MountStep("root_writable", "/", "/"))
    else:
        steps.append(MountStep("root_readonly", "/", "/"))
    # Private /tmp and /run come before the writable binds: a workspace under /tmp
    # must be mounted on top of the tmpfs, not hidden by it.
    steps.append(MountStep("tmpfs", "/tmp", mode=0o1777, size=policy.limits.tmp or 0))
    # A fresh /run hides the host's D-Bus, docker, ssh-agent and gpg-agent sockets.
    steps.append(MountStep("tmpfs", "/run", mode=0o755))
    if var_run_is_dir:
        steps.append(MountStep("bind_new", "/var/run", source="/run"))
    # /dev/shm is a directory of the /tmp tmpfs: the tmp limit bounds both together.
    steps.append(MountStep("dev", "/dev", source="/tmp"))
    # Before the writable roots, as /tmp is: a root beneath one must stay visible.
    for path in _shallowest_first(policy.private_dirs):
        steps.append(MountStep("tmpfs", path, mode=0o1777))
    # An empty tmpfs over each hidden parent, before the writable roots inside it, so
    # that those are bound on top (their mount points made in the tmpfs, not on the
    # host) and nothing else shows; after any root above it, which would cover it.
    # Landlock keeps it read-only: it is in no writable root.
    parents = [(p.count("/"), 0, MountStep("tmpfs", p, mode=0o755, size=HIDDEN_PARENT_SIZE))
               for p in sorted(set(hidden_parents))]
    # Shallow roots first so a nested root is mounted on top of its parent.
    for _, _, step in sorted(parents + [(r.count("/"), 1, r) for r in writable],
                             key=lambda layer: layer[:2]):
        if isinstance(step, MountStep):
            steps.append(step)
        elif step in layers:
            # volatile: no sync of the state directory's filesystem when the sandbox's
            # mounts go (ms, on nsbox exec's path); a kept run is synced then (overlay.conclude).
            steps.append(MountStep("overlay", step, step, upper=layers[step][1],
                                   work=layers[step][2], volatile=True))
        else:
            steps.append(MountStep("bind_rw", step, step))
    for source, target in sorted(read_only_binds, key=lambda b: (_depth(b[1]), b[1])):
        steps.append(MountStep("bind_ro_from", target, source))
    steps.extend(protections)
    steps.append(MountStep("proc", "/proc"))
    return tuple(steps)
