"""Overlay runs without a kernel overlay: the manifest read from hand-built upper layers
(both whiteout forms), which paths `apply` treats as protected, and apply's safety
rules (conflicts, symlinks on the way, write-then-rename)."""

import hashlib
import json
import os
import stat
import time

import pytest

from conftest import IS_ROOT
from nsbox.errors import PolicyError
from nsbox.plan import apply as applying
from nsbox.plan import overlay
from nsbox.policy import loader, trust
from nsbox.policy import plan as policy_plan
from nsbox.policy.model import Policy


def write(path, text="x\n", mode=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    if mode is not None:
        os.chmod(path, mode)


def whiteout(path):
    """A deletion mark in the form this test may make: the kernel's char device 0:0 as
    root, else the xattr form (an empty file with user.overlay.whiteout)."""
    if IS_ROOT:
        os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))
    else:
        write(path, "")
        os.setxattr(path, overlay.WHITEOUT_XATTR, b"")


def opaque(path):
    os.makedirs(path, exist_ok=True)
    os.setxattr(path, overlay.OPAQUE_XATTR, b"y")


@pytest.fixture
def layers(var_tmp):
    lower, upper = var_tmp / "lower", var_tmp / "upper"
    lower.mkdir()
    upper.mkdir()
    return str(lower), str(upper)


def manifest(lower, upper):
    up = os.open(upper, os.O_RDONLY | os.O_DIRECTORY)
    low = os.open(lower, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return {c.path: c for c in overlay.changes(up, low)}
    finally:
        os.close(up)
        os.close(low)


def test_each_kind_of_change_is_classified(layers):
    lower, upper = layers
    for name in ("same", "edited", "chmodded", "gone", "renamed", "to_dir"):
        write(f"{lower}/{name}", name + "\n", mode=0o644)
    write(f"{lower}/tree/a/b", "deep\n")
    write(f"{lower}/dir_to_file/x")
    os.symlink("same", f"{lower}/link")
    os.symlink("same", f"{lower}/relink")
    write(f"{upper}/same", "same\n", mode=0o644)  # copied up, nothing changed
    write(f"{upper}/edited", "edited!\n", mode=0o644)
    write(f"{upper}/chmodded", "chmodded\n", mode=0o600)
    whiteout(f"{upper}/gone")
    whiteout(f"{upper}/renamed")
    write(f"{upper}/renamed.new", "renamed\n", mode=0o644)
    whiteout(f"{upper}/tree")
    opaque(f"{upper}/to_dir")
    write(f"{upper}/to_dir/inner")
    write(f"{upper}/dir_to_file", "now a file\n")
    os.symlink("same", f"{upper}/link")  # copied up unchanged
    os.symlink("edited", f"{upper}/relink")
    os.symlink("nowhere", f"{upper}/new_link")
    write(f"{upper}/new_dir/sub/file", "hello\n")
    whiteout(f"{upper}/never_there")  # a deletion of nothing: not reported
    found = manifest(lower, upper)
    what = {path: (c.what, c.kind) for path, c in found.items()}
    assert what == {
        "edited": ("modified", "file"),
        "chmodded": ("mode", "file"),
        "gone": ("deleted", "file"),
        "renamed": ("deleted", "file"),
        "renamed.new": ("created", "file"),
        "tree": ("deleted", "dir"),
        "to_dir": ("type changed", "dir"),
        "to_dir/inner": ("created", "file"),
        "dir_to_file": ("type changed", "file"),
        "relink": ("modified", "symlink"),
        "new_link": ("created", "symlink"),
        "new_dir": ("created", "dir"),
        "new_dir/sub": ("created", "dir"),
        "new_dir/sub/file": ("created", "file"),
    }
    assert found["edited"].size == 8
    assert found["edited"].sha256 == hashlib.sha256(b"edited!\n").hexdigest()
    assert found["chmodded"].mode == 0o600
    assert found["relink"].target == "edited" and found["new_link"].target == "nowhere"


def test_an_opaque_directory_deletes_what_it_does_not_hold(layers):
    lower, upper = layers
    write(f"{lower}/d/kept", "k\n")
    write(f"{lower}/d/dropped", "d\n")
    write(f"{lower}/d/sub/deep", "x\n")
    opaque(f"{upper}/d")
    write(f"{upper}/d/kept", "k\n")
    os.chmod(f"{upper}/d", os.stat(f"{lower}/d").st_mode & 0o7777)
    found = manifest(lower, upper)
    assert {p: c.what for p, c in found.items()} == {"d/dropped": "deleted", "d/sub": "deleted"}


def test_an_untouched_parent_of_a_change_is_not_reported(layers):
    lower, upper = layers
    write(f"{lower}/a/b/c", "1\n")
    os.makedirs(f"{upper}/a/b")
    for d in ("a", "a/b"):
        os.chmod(f"{upper}/{d}", os.stat(f"{lower}/{d}").st_mode & 0o7777)
    write(f"{upper}/a/b/c", "2\n", mode=os.stat(f"{lower}/a/b/c").st_mode & 0o7777)
    assert list(manifest(lower, upper)) == ["a/b/c"]


# --- protected paths ---------------------------------------------------------------

@pytest.mark.parametrize("path", [
    ".git/hooks/pre-commit", ".git/config", ".git/info/attributes", ".git/commondir",
    ".git", "sub/.git", "sub/.git/hooks/x", ".git/modules/m/hooks/x", ".nsbox/policy.toml",
    ".envrc", "sub/.envrc", ".vscode/tasks.json", ".gitmodules", ".husky/pre-push",
])
def test_execution_sensitive_paths_are_protected(path):
    assert applying.is_protected(path)


@pytest.mark.parametrize("path", [
    "src/main.py", ".git/objects/ab/cdef", ".git/refs/heads/main", ".git/index",
    ".git/HEAD", ".git/logs/HEAD", "config", "hooks/x", ".gitignore",
])
def test_ordinary_paths_are_not(path):
    assert not applying.is_protected(path)


def test_home_startup_files_are_protected_in_a_workspace_that_holds_the_home():
    assert applying.is_protected("me/.bashrc", home="/h/me", workspace="/h")
    assert not applying.is_protected("me/notes", home="/h/me", workspace="/h")


def entries(*pairs):
    from nsbox.plan.watch import Change

    return [Change(p, w, kind="dir" if p.endswith("/") else "file") for p, w in pairs]


def test_select_leaves_protected_paths_out_unless_named():
    changes = entries(("a", "modified"), (".git/hooks/x", "created"), (".git/config", "modified"))
    kept, skipped = applying.select(changes)
    assert [e.path for e in kept] == ["a"] and skipped == [".git/config", ".git/hooks/x"]
    kept, skipped = applying.select(changes, include_protected=[".git/config"])
    assert [e.path for e in kept] == [".git/config", "a"] and skipped == [".git/hooks/x"]


def test_select_by_path_brings_the_new_directories_it_needs():
    from nsbox.plan.watch import Change

    changes = [Change("n", "created", kind="dir", mode=0o755),
               Change("n/f", "created", kind="file"), Change("n/g", "created", kind="file"),
               Change("other", "modified", kind="file")]
    kept, _ = applying.select(changes, ["n/g"])
    assert [e.path for e in kept] == ["n", "n/g"]
    with pytest.raises(applying.ApplyError, match="changed nothing at nowhere"):
        applying.select(changes, ["nowhere"])


def test_select_inside_a_deleted_tree_names_the_tree():
    with pytest.raises(applying.ApplyError, match="inside d, which the run deleted"):
        applying.select(entries(("d", "deleted")), ["d/x"])


# --- apply -----------------------------------------------------------------------------

def make_run(var_tmp, build_lower, build_upper):
    """A kept run on a real directory tree, with its manifest computed."""
    state = var_tmp / "state"
    ws = var_tmp / "ws"
    ws.mkdir()
    build_lower(str(ws))
    # A change in the clock tick the run starts in counts as one after the start
    # (overlay.start_stamp): the real tree is made a tick earlier.
    time.sleep(time.clock_getres(overlay.CLOCK_REALTIME_COARSE) * 2)
    run = overlay.plan_run(str(state), str(ws))
    overlay.create(run, ["test"], "sha256:x")
    build_upper(run.upper)
    return run, overlay.recompute(run), json.load(open(os.path.join(run.dir, "meta.json")))


def test_apply_refuses_on_a_host_change_and_force_overrides(var_tmp):
    run, found, meta = make_run(var_tmp, lambda ws: write(f"{ws}/f", "old\n"),
                                lambda up: write(f"{up}/f", "new\n", mode=0o644))
    write(f"{run.workspace}/f", "host edit\n")  # after the run started
    with pytest.raises(applying.ApplyError, match="f: it changed since the run started"):
        applying.apply(run, found, started_ns=meta["started_ns"])
    assert open(f"{run.workspace}/f").read() == "host edit\n"
    applying.apply(run, found, force=True, started_ns=meta["started_ns"])
    assert open(f"{run.workspace}/f").read() == "new\n"


def test_apply_refuses_a_file_created_on_the_host_where_the_run_created_one(var_tmp):
    run, found, meta = make_run(var_tmp, lambda ws: None,
                                lambda up: write(f"{up}/n", "run\n"))
    write(f"{run.workspace}/n", "host\n")
    with pytest.raises(applying.ApplyError, match="n: it exists now"):
        applying.apply(run, found, started_ns=meta["started_ns"])


def test_apply_never_follows_a_symlink_on_the_way(var_tmp):
    outside = var_tmp / "outside"
    outside.mkdir()

    def lower(ws):
        write(f"{ws}/sub/f", "old\n")

    run, found, meta = make_run(var_tmp, lower, lambda up: write(f"{up}/sub/f", "new\n"))
    # After the run, the real `sub` becomes a symlink to a directory outside.
    import shutil

    shutil.rmtree(f"{run.workspace}/sub")
    os.symlink(str(outside), f"{run.workspace}/sub")
    write(f"{outside}/f", "outside\n")
    with pytest.raises(applying.ApplyError, match="directory above it"):
        applying.apply(run, found, started_ns=meta["started_ns"])
    with pytest.raises(OSError):
        applying.apply(run, found, force=True, started_ns=meta["started_ns"])
    assert open(f"{outside}/f").read() == "outside\n"


def test_apply_writes_files_links_dirs_modes_and_deletions(var_tmp):
    def lower(ws):
        write(f"{ws}/keep", "k\n")
        write(f"{ws}/gone", "g\n")
        write(f"{ws}/tree/deep/x", "x\n")
        write(f"{ws}/mode", "m\n", mode=0o644)
        write(f"{ws}/was_file", "w\n")

    def upper(up):
        whiteout(f"{up}/gone")
        whiteout(f"{up}/tree")
        write(f"{up}/mode", "m\n", mode=0o600)
        write(f"{up}/new/file", "n\n", mode=0o640)
        os.symlink("keep", f"{up}/link")
        opaque(f"{up}/was_file")
        write(f"{up}/was_file/inside", "i\n")

    run, found, meta = make_run(var_tmp, lower, upper)
    done, not_applicable = applying.apply(run, found, started_ns=meta["started_ns"])
    ws = run.workspace
    assert len(done) == len(found) and not not_applicable
    assert sorted(os.listdir(ws)) == ["keep", "link", "mode", "new", "was_file"]
    assert stat.S_IMODE(os.stat(f"{ws}/mode").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(f"{ws}/new/file").st_mode) == 0o640
    assert os.readlink(f"{ws}/link") == "keep"
    assert open(f"{ws}/was_file/inside").read() == "i\n"
    assert not [n for n in os.listdir(ws) if n.startswith(".nsbox-apply-")]


def test_discard_removes_directories_without_rights(var_tmp):
    run, _, _ = make_run(var_tmp, lambda ws: None, lambda up: write(f"{up}/d/x"))
    os.chmod(f"{run.upper}/d", 0)
    os.makedirs(f"{run.work}/work", mode=0)
    overlay.discard(run)
    assert os.listdir(os.path.dirname(run.dir)) == []


# --- policy ----------------------------------------------------------------------------

def test_workspace_mode_is_checked():
    assert Policy().workspace_mode == "direct"
    with pytest.raises(PolicyError, match="workspace_mode must be one of direct, overlay"):
        Policy(workspace_mode="cow")


def test_workspace_mode_in_a_policy_file():
    layer = loader.parse_toml('workspace_mode = "overlay"\n', "p.toml")
    assert loader.merge([layer]).workspace_mode == "overlay"


def test_an_untrusted_file_may_turn_overlay_on_but_not_off():
    kept, ignored = trust.only_narrowing({"workspace_mode": "overlay"}, Policy())
    assert kept == {"workspace_mode": "overlay"} and not ignored
    kept, ignored = trust.only_narrowing({"workspace_mode": "direct"},
                                         Policy(workspace_mode="overlay"))
    assert kept == {} and ignored == ["workspace_mode"]


def test_the_workspace_option_sets_the_mode(var_tmp):
    from nsbox.cli import exec_args

    parsed = exec_args.parse(["--workspace-mode", "overlay", "--workspace", str(var_tmp),
                              "--", "true"])
    assert exec_args.policy_from_options(parsed.values).workspace_mode == "overlay"


def test_the_overlay_step_takes_the_workspace_bind_s_place():
    policy = Policy(workspace="/w", workspace_mode="overlay")
    direct = policy_plan.mount_steps(policy, ("/w", "/x"))
    steps = policy_plan.mount_steps(policy, ("/w", "/x"), overlay=("/w", "/s/u", "/s/k"))
    assert [s.kind for s in steps] == [
        "overlay" if s.kind == "bind_rw" and s.target == "/w" else s.kind for s in direct]
    step = next(s for s in steps if s.kind == "overlay")
    assert (step.target, step.source, step.upper, step.work) == ("/w", "/w", "/s/u", "/s/k")


def test_entries_the_command_made_unreadable_are_read_and_applied_with_their_mode(var_tmp):
    def upper(up):
        write(f"{up}/closed/inside", "in\n", mode=0o644)
        write(f"{up}/locked", "l\n")
        os.chmod(f"{up}/locked", 0)
        os.chmod(f"{up}/closed", 0)

    run, found, meta = make_run(var_tmp, lambda ws: None, upper)
    assert {p.path: (p.what, p.mode) for p in found} == {
        "closed": ("created", 0), "closed/inside": ("created", 0o644),
        "locked": ("created", 0)}
    assert found[-1].sha256 == hashlib.sha256(b"l\n").hexdigest()
    applying.apply(run, found, started_ns=meta["started_ns"])
    ws = run.workspace
    assert stat.S_IMODE(os.stat(f"{ws}/closed").st_mode) == 0
    assert stat.S_IMODE(os.stat(f"{ws}/locked").st_mode) == 0
    os.chmod(f"{ws}/closed", 0o755)
    assert open(f"{ws}/closed/inside").read() == "in\n"
