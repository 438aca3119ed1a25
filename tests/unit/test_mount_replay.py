"""Mount-step replay (launch.rootfs) without root: every kernel call is a recorder.

rootfs calls nsbox.kernel.mounts through the module (`mounts.bind(...)`) and the
filesystem through `os`: the test replaces each function of `mounts` with a
recorder and rootfs's `os` with a recording stand-in that refuses anything it
does not fake, so nothing is mounted or created. What is checked is the order of
the calls and which calls each step kind makes, for both mount APIs.
"""

import os
import types

import pytest

from nsbox import trace
from nsbox.kernel import mounts
from nsbox.launch import rootfs
from nsbox.policy import plan as policy_plan
from nsbox.policy.model import Policy
from nsbox.policy.plan import MountStep

STAGE = rootfs.STAGE
RO_ATTRS = mounts.MOUNT_ATTR_RDONLY | mounts.MOUNT_ATTR_NOSUID | mounts.MOUNT_ATTR_NODEV
MASK_FLAGS = mounts.MS_RDONLY | mounts.MS_NOSUID | mounts.MS_NODEV | mounts.MS_NOEXEC


class Call:
    __slots__ = ("name", "args", "kwargs")

    def __init__(self, name, args, kwargs):
        self.name, self.args, self.kwargs = name, args, kwargs

    def __repr__(self):
        extra = "".join(f", {k}={v!r}" for k, v in self.kwargs.items())
        return f"{self.name}({', '.join(map(repr, self.args))}{extra})"

    @property
    def mount_point(self):
        """Where this call mounts (None for calls that mount nothing)."""
        if self.name in ("mount_tmpfs", "mount_proc", "mount_devpts", "remount_readonly",
                         "remount_readonly_recursive", "mount_overlay"):
            return self.args[0]
        if self.name in ("bind", "attach"):
            return self.args[1]
        return None


class Recorder:
    """Stand-ins for nsbox.kernel.mounts' functions and for rootfs's `os`."""

    MOUNT_FUNCS = ("make_private_recursive", "clone_tree", "set_attrs_recursive", "attach",
                   "bind", "remount_readonly", "remount_readonly_recursive", "mount_tmpfs",
                   "mount_proc", "mount_devpts", "pivot_into", "has_mount_api")
    OS_FUNCS = ("makedirs", "mkdir", "chmod", "open", "close", "mknod", "symlink", "lstat")

    def __init__(self, monkeypatch):
        self.calls = []
        self.next_fd = 1000
        public = [n for n, v in vars(mounts).items()
                  if callable(v) and not n.startswith("_") and not isinstance(v, type)
                  and getattr(v, "__module__", None) == mounts.__name__]
        # Every function of the module is replaced, used by rootfs today or not.
        for name in public:
            monkeypatch.setattr(mounts, name, self._recorder(name))
        assert set(self.MOUNT_FUNCS) <= set(public)
        fake_os = types.SimpleNamespace(
            **{n: getattr(os, n) for n in dir(os) if n.isupper()},  # O_*, constants
            **{n: self._recorder("os." + n) for n in self.OS_FUNCS})
        fake_os.isatty = lambda fd: False
        monkeypatch.setattr(rootfs, "os", fake_os)
        monkeypatch.setattr(trace, "mark", self._recorder("trace.mark"))

    def _recorder(self, name):
        def record(*args, **kwargs):
            self.calls.append(Call(name, args, kwargs))
            if name in ("clone_tree", "os.open"):
                self.next_fd += 1
                return self.next_fd
            return None
        return record

    def names(self):
        return [c.name for c in self.calls]

    def kernel(self):
        """The calls to nsbox.kernel.mounts only."""
        return [c for c in self.calls if not c.name.startswith(("os.", "trace."))]

    def index(self, name, *args, start=0, **kwargs):
        for i, c in enumerate(self.calls[start:], start):
            if c.name == name and c.args[:len(args)] == args and all(
                    c.kwargs.get(k) == v for k, v in kwargs.items()):
                return i
        raise AssertionError(f"no {name}{args} {kwargs} in:\n" + "\n".join(map(repr, self.calls)))


@pytest.fixture
def rec(monkeypatch):
    return Recorder(monkeypatch)


def staged(target: str) -> str:
    return STAGE if target == "/" else STAGE + target


def replay(rec, steps, use_mount_api):
    rootfs.build_and_enter(tuple(steps), use_mount_api=use_mount_api)
    return rec


def full_steps(workspace="/tmp/ws", preset="workspace-write"):
    """A plan with every step kind: a workspace under /tmp, protections and masks."""
    protections = policy_plan.protection_steps(
        pinned=(f"{workspace}/.git",),
        readonly=(f"{workspace}/.git/hooks", f"{workspace}/.envrc"),
        hidden=(("/home/u/.ssh", True), ("/home/u/api_token.txt", False)))
    return policy_plan.mount_steps(Policy(preset=preset), (workspace,), var_run_is_dir=True,
                                   protections=protections)


API = pytest.mark.parametrize("use_mount_api", [True, False], ids=["mount-api", "legacy"])


def first_mount_onto(rec, step, after=0):
    """Index of the call that performs `step`: the first mount onto its staged target."""
    target = staged(step.target)
    for i, c in enumerate(rec.calls[after:], after):
        if c.mount_point != target:
            continue
        if step.kind.startswith("root_") and c.name == "mount_tmpfs":
            continue  # the masks' scratch tmpfs, under the root on purpose
        return i
    raise AssertionError(f"nothing mounted onto {target} for {step}")


@API
def test_steps_are_replayed_in_plan_order(rec, use_mount_api):
    steps = full_steps()
    assert [s.kind for s in steps] == [
        "root_readonly", "tmpfs", "tmpfs", "bind_new", "dev", "bind_rw", "pin", "bind_ro",
        "bind_ro", "mask_dir", "mask_file", "proc"]
    replay(rec, steps, use_mount_api)
    positions = [first_mount_onto(rec, s) for s in steps]
    assert positions == sorted(positions), list(zip(steps, positions))
    assert rec.calls[0].name == "make_private_recursive"
    assert [c.name for c in rec.calls[-2:]] == ["trace.mark", "pivot_into"]
    assert rec.calls[-1].args == (STAGE,)


@API
def test_private_tmp_comes_before_a_workspace_under_tmp(rec, use_mount_api):
    steps = full_steps("/tmp/ws")
    replay(rec, steps, use_mount_api)
    tmpfs = rec.index("mount_tmpfs", STAGE + "/tmp")
    if use_mount_api:
        grab = rec.index("clone_tree", "/tmp/ws")
        bind = rec.index("attach", grab_fd(rec, grab), STAGE + "/tmp/ws")
    else:
        grab = rec.index("os.open", "/tmp/ws")
        bind = rec.index("bind", f"/proc/self/fd/{grab_fd(rec, grab)}", STAGE + "/tmp/ws")
    # The host's /tmp/ws is taken before anything is stacked on STAGE, and attached
    # on top of the private /tmp.
    assert rec.index("make_private_recursive") < grab
    assert grab < first_mount_onto(rec, steps[0])
    assert tmpfs < bind
    assert rec.index("os.makedirs", STAGE + "/tmp/ws", exist_ok=True) < bind


def overlay_steps(workspace="/tmp/ws"):
    """full_steps with the workspace copy-on-write (workspace_mode overlay)."""
    protections = policy_plan.protection_steps(
        pinned=(f"{workspace}/.git",), readonly=(f"{workspace}/.git/hooks",),
        hidden=((f"{workspace}/.env", False),))
    return policy_plan.mount_steps(Policy(workspace_mode="overlay"), (workspace,),
                                   protections=protections,
                                   overlay=(workspace, "/s/runs/r/upper", "/s/runs/r/work"))


@API
def test_an_overlay_workspace_is_grabbed_first_and_mounted_after_the_private_tmp(
        rec, use_mount_api):
    steps = overlay_steps("/tmp/ws")
    assert [s.kind for s in steps] == [
        "root_readonly", "tmpfs", "tmpfs", "dev", "overlay", "pin", "bind_ro", "mask_file",
        "proc"]
    replay(rec, steps, use_mount_api)
    grabs = [rec.index("os.open", path) for path in ("/tmp/ws", "/s/runs/r/upper",
                                                     "/s/runs/r/work")]
    mount = rec.index("mount_overlay", STAGE + "/tmp/ws")
    assert rec.calls[mount].args[1:] == tuple(f"/proc/self/fd/{grab_fd(rec, g)}"
                                              for g in grabs)
    # Taken before anything is stacked on STAGE (the layers may lie under /tmp too),
    # mounted on top of the private /tmp, and under every protection.
    assert max(grabs) < first_mount_onto(rec, steps[0])
    assert rec.index("mount_tmpfs", STAGE + "/tmp") < mount
    assert rec.index("os.makedirs", STAGE + "/tmp/ws", exist_ok=True) < mount
    positions = [first_mount_onto(rec, s) for s in steps]
    assert positions == sorted(positions), list(zip(steps, positions))
    assert not any(c.name == "clone_tree" and c.args[0] == "/tmp/ws" for c in rec.calls)


def grab_fd(rec, index):
    """The fd the recorder handed out for call `index` (clone_tree / os.open)."""
    return 1000 + 1 + sum(1 for c in rec.calls[:index] if c.name in ("clone_tree", "os.open"))


def test_read_only_root_with_the_mount_api_covers_every_submount(rec):
    replay(rec, [MountStep("root_readonly", "/", "/")], True)
    clone = rec.index("clone_tree", "/")
    tree = grab_fd(rec, clone)
    setattr_ = rec.index("set_attrs_recursive", tree, RO_ATTRS, what="'/'")
    attach = rec.index("attach", tree, STAGE, what="'/'")
    assert clone < setattr_ < attach < rec.index("os.close", tree)


def test_read_only_root_without_the_mount_api_remounts_each_submount(rec):
    replay(rec, [MountStep("root_readonly", "/", "/")], False)
    bind = rec.index("bind", "/", STAGE)
    assert bind < rec.index("remount_readonly_recursive", STAGE)
    assert "clone_tree" not in rec.names()


@API
def test_writable_root_is_not_made_read_only(rec, use_mount_api):
    replay(rec, [MountStep("root_writable", "/", "/")], use_mount_api)
    assert "remount_readonly_recursive" not in rec.names()
    for c in rec.calls:
        if c.name == "set_attrs_recursive":
            assert not c.args[1] & mounts.MOUNT_ATTR_RDONLY
            assert c.args[1] & mounts.MOUNT_ATTR_NOSUID and c.args[1] & mounts.MOUNT_ATTR_NODEV


@API
def test_writable_roots_keep_their_flags_but_lose_suid_and_devices(rec, use_mount_api):
    replay(rec, [MountStep("root_readonly", "/", "/"), MountStep("bind_rw", "/w", "/w")],
           use_mount_api)
    if use_mount_api:
        tree = grab_fd(rec, rec.index("clone_tree", "/w"))
        rec.index("set_attrs_recursive", tree,
                  mounts.MOUNT_ATTR_NOSUID | mounts.MOUNT_ATTR_NODEV, what="'/w'")
        rec.index("attach", tree, STAGE + "/w")
    else:
        fd = grab_fd(rec, rec.index("os.open", "/w"))
        rec.index("bind", f"/proc/self/fd/{fd}", STAGE + "/w")
    assert not any(c.name == "remount_readonly_recursive" and c.args == (STAGE + "/w",)
                   for c in rec.calls)


@API
def test_pins_and_read_only_binds(rec, use_mount_api):
    steps = [MountStep("root_readonly", "/", "/"), MountStep("pin", "/w/.git", "/w/.git"),
             MountStep("bind_ro", "/w/.envrc", "/w/.envrc")]
    replay(rec, steps, use_mount_api)
    pin, ro = STAGE + "/w/.git", STAGE + "/w/.envrc"
    if use_mount_api:
        pin_tree = grab_fd(rec, rec.index("clone_tree", pin))
        rec.index("attach", pin_tree, pin)
        assert not any(c.name == "set_attrs_recursive" and c.args[0] == pin_tree
                       for c in rec.calls)
        ro_tree = grab_fd(rec, rec.index("clone_tree", ro))
        assert (rec.index("set_attrs_recursive", ro_tree, mounts.MOUNT_ATTR_RDONLY)
                < rec.index("attach", ro_tree, ro))
    else:
        rec.index("bind", pin, pin)
        assert ("remount_readonly_recursive", (pin,)) not in [(c.name, c.args) for c in rec.calls]
        assert rec.index("bind", ro, ro) < rec.index("remount_readonly_recursive", ro)


@API
def test_masks_go_on_after_every_bind(rec, use_mount_api):
    steps = full_steps()
    replay(rec, steps, use_mount_api)
    mask_dir = rec.index("mount_tmpfs", STAGE + "/home/u/.ssh", mode=0o555, size=4096,
                         flags=MASK_FLAGS)
    file_binds = [i for i, c in enumerate(rec.calls)
                  if c.name == "bind" and c.args[1] == STAGE + "/home/u/api_token.txt"]
    assert len(file_binds) == 1
    mask_file = file_binds[0]
    assert rec.calls[mask_file].kwargs == {"recursive": False}
    assert rec.calls[mask_file].args[0].startswith("/proc/self/fd/")
    after = [c for c in rec.calls[mask_file + 1:] if not c.name.startswith("os.")]
    assert (after[0].name, after[0].args) == ("remount_readonly",
                                              (STAGE + "/home/u/api_token.txt",))
    bind_targets = {staged(s.target) for s in steps if s.kind in ("bind_rw", "pin", "bind_ro")}
    last_bind = max(i for i, c in enumerate(rec.calls)
                    if c.mount_point in bind_targets)
    assert last_bind < mask_dir < mask_file < rec.index("mount_proc", STAGE + "/proc")


@API
def test_file_masks_get_a_fresh_empty_file_each_from_a_scratch_tmpfs(rec, use_mount_api):
    steps = [MountStep("root_readonly", "/", "/"), MountStep("mask_file", "/a", mode=0o444),
             MountStep("mask_file", "/b", mode=0o000)]
    replay(rec, steps, use_mount_api)
    scratch = rec.index("mount_tmpfs", STAGE, mode=0o700, size=4096)
    assert scratch < first_mount_onto(rec, steps[0])  # the root covers it afterwards
    nodes = [c for c in rec.calls if c.name == "os.mknod"]
    # Each mask its own file, with its own mode: one that reads as empty, one that refuses.
    assert [c.args[:2] for c in nodes] == [("empty0", 0o444), ("empty1", 0o000)]
    assert len({c.kwargs["dir_fd"] for c in nodes}) == 1


def test_no_scratch_tmpfs_without_file_masks(rec):
    replay(rec, [MountStep("root_readonly", "/", "/"), MountStep("mask_dir", "/a")], True)
    assert not any(c.name == "mount_tmpfs" and c.args[0] == STAGE for c in rec.calls)


def test_tmp_and_dev_shm_share_one_tmpfs(rec):
    steps = [MountStep("root_readonly", "/", "/"),
             MountStep("tmpfs", "/tmp", mode=0o1777, size=1 << 30),
             MountStep("dev", "/dev", source="/tmp")]
    replay(rec, steps, True)
    tmp = STAGE + "/tmp"
    made = rec.index("mount_tmpfs", tmp, mode=0o755, size=1 << 30)
    assert rec.index("os.mkdir", f"{tmp}/tmp") > made
    assert rec.index("os.chmod", f"{tmp}/tmp", 0o1777) > made
    assert rec.index("os.chmod", f"{tmp}/shm", 0o1777) > made
    shm_fd = grab_fd(rec, rec.index("os.open", f"{tmp}/shm"))
    shown = rec.index("bind", f"{tmp}/tmp", tmp, recursive=False)
    dev = rec.index("mount_tmpfs", STAGE + "/dev", mode=0o755,
                    flags=mounts.MS_NOSUID | mounts.MS_NOEXEC)
    assert shown < dev
    assert rec.index("bind", f"/proc/self/fd/{shm_fd}", STAGE + "/dev/shm",
                     recursive=False) > dev
    assert not any(c.name == "mount_tmpfs" and c.args[0] == STAGE + "/dev/shm"
                   for c in rec.calls)


def test_dev_without_a_shared_tmpfs_gets_its_own_shm(rec):
    replay(rec, [MountStep("root_readonly", "/", "/"), MountStep("dev", "/dev")], True)
    rec.index("mount_tmpfs", STAGE + "/dev/shm", mode=0o1777)
    rec.index("mount_devpts", STAGE + "/dev/pts")
    for name in rootfs.DEVICES:
        rec.index("bind", f"/dev/{name}", f"{STAGE}/dev/{name}", recursive=False)
    links = {c.args[1]: c.args[0] for c in rec.calls if c.name == "os.symlink"}
    assert links == {f"{STAGE}/dev/{n}": t for n, t in rootfs.DEV_LINKS.items()}


def test_var_run_follows_the_new_run(rec):
    replay(rec, [MountStep("root_readonly", "/", "/"), MountStep("tmpfs", "/run", mode=0o755),
                 MountStep("bind_new", "/var/run", source="/run")], True)
    made = rec.index("mount_tmpfs", STAGE + "/run", mode=0o755)
    assert made < rec.index("bind", STAGE + "/run", STAGE + "/var/run")


@API
def test_proc_is_mounted_last_then_pivot(rec, use_mount_api):
    replay(rec, full_steps(), use_mount_api)
    kernel = rec.kernel()
    assert kernel[-2].name == "mount_proc" and kernel[-2].args == (STAGE + "/proc",)
    assert kernel[-1].name == "pivot_into"


def test_unknown_step_kind_is_refused(rec):
    with pytest.raises(ValueError, match="unknown mount step 'teleport'"):
        rootfs.build_and_enter((MountStep("teleport", "/x"),), use_mount_api=True)
    assert "pivot_into" not in rec.names()


def test_nothing_real_was_touched(rec):
    """The stand-in `os` refuses what it does not fake: a new call in rootfs fails
    here loudly instead of touching the test machine."""
    with pytest.raises(AttributeError):
        rootfs.os.rename
    with pytest.raises(AttributeError):
        rootfs.os.unlink


@API
def test_image_root_without_missing_mount_points_is_one_read_only_bind(rec, use_mount_api):
    replay(rec, [MountStep("root_image", "/", "/images/x")], use_mount_api)
    if use_mount_api:
        tree = grab_fd(rec, rec.index("clone_tree", "/images/x"))
        assert rec.index("set_attrs_recursive", tree, RO_ATTRS, what="'/images/x'") < rec.index(
            "attach", tree, STAGE, what="the rootfs")
    else:
        fd = grab_fd(rec, rec.index("os.open", "/images/x", os.O_PATH | os.O_DIRECTORY
                                    | os.O_CLOEXEC))
        assert rec.index("bind", f"/proc/self/fd/{fd}", STAGE) < rec.index(
            "remount_readonly_recursive", STAGE)
    assert "mount_overlay_readonly" not in rec.names() and "os.mkdir" not in rec.names()


def test_image_root_gets_missing_mount_points_from_a_tmpfs_layer_above_it(rec):
    step = MountStep("root_image", "/", "/images/x", mode=0o755,
                     dirs=(("work", 0o755), ("work/ws", 0o700)))
    replay(rec, [step, MountStep("bind_rw", "/work/ws", "/work/ws")], True)
    image = grab_fd(rec, rec.index("os.open", "/images/x", os.O_PATH | os.O_DIRECTORY
                                   | os.O_CLOEXEC))
    tmpfs = rec.index("mount_tmpfs", STAGE, mode=0o700, size=1 << 20)
    made = rec.index("os.mkdir", f"{STAGE}/scaffold/work/ws")
    scaffold = grab_fd(rec, rec.index("os.open", f"{STAGE}/scaffold", os.O_PATH
                                      | os.O_DIRECTORY | os.O_CLOEXEC))
    overlay = rec.index("mount_overlay_readonly", STAGE,
                        (f"/proc/self/fd/{scaffold}", f"/proc/self/fd/{image}"))
    assert tmpfs < made < overlay
    assert rec.index("os.chmod", f"{STAGE}/scaffold/work/ws", 0o700) > made
    # Nothing is created in the image itself: every mkdir is in the scaffold.
    assert all(c.args[0].startswith(f"{STAGE}/scaffold") for c in rec.calls if c.name == "os.mkdir")
