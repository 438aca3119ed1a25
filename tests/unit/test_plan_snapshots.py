"""Snapshots of whole compiled plans: each preset x isolation mode on a literal host.

A plan is turned into JSON-ready data (`summarise`) with every path of the test's
own directories replaced by a placeholder (<tmp>, <ws>, <home>, <private_tmp>) and
everything that depends on the machine or the user running the tests normalised
(see `summarise`), then compared with tests/unit/snapshots/<preset>--<mode>.json.

NSBOX_UPDATE_SNAPSHOTS=1 rewrites the files instead of comparing; review the diff.

The test's directories live under /var/tmp rather than under pytest's tmp_path,
which is below /tmp on most machines: /tmp is one of the trees the sandbox replaces
with a private one (policy.plan.PRIVATE_TREES), so a workspace there is refused for
the read-only preset and hidden paths there need no masks. A directory outside the
private trees gives the plan a real user's shape (like a home under /home), and the
same shape on every machine, whatever TMPDIR is.
"""

import hashlib
import json
import os
import posixpath
import shutil
import tempfile

import pytest

from conftest import literal_host
from nsbox import state
from nsbox.plan import prepare
from nsbox.plan.types import FULL, LANDLOCK
from nsbox.policy import landlock_rules, profiles
from nsbox.policy.model import Policy, PRESETS
from nsbox.policy.plan import PRIVATE_TREES

SNAPSHOTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "snapshots")
UPDATE = os.environ.get("NSBOX_UPDATE_SNAPSHOTS") == "1"
BASE_DIR = "/var/tmp"
BLOCKER = ("user namespaces are disabled on this host (kernel.unprivileged_userns_clone=0); "
           "fix: sysctl -w kernel.unprivileged_userns_clone=1")
# mode name -> (the policy's isolation, the host's userns_blocker)
MODES = {
    "full": ("full", ""),
    "landlock": ("landlock", ""),
    "auto-userns": ("auto", ""),
    "auto-fallback": ("auto", BLOCKER),
}
ARGV = ("sh", "-c", "echo snapshot")


class Layout:
    """The test's directories, all real paths."""

    def __init__(self, base: str):
        self.base = base
        self.ws = os.path.join(base, "ws")
        self.home = os.path.join(base, "home")
        self.xdg = os.path.join(base, "xdg")


def _touch(path: str, text: str = "x\n") -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


@pytest.fixture
def layout(monkeypatch):
    if not (os.path.isdir(BASE_DIR) and os.access(BASE_DIR, os.W_OK | os.X_OK)):
        pytest.skip(f"{BASE_DIR} is not a writable directory here")
    base = os.path.realpath(tempfile.mkdtemp(prefix="nsbox-snap-", dir=BASE_DIR))
    assert not any(base == t or base.startswith(t + "/") for t in PRIVATE_TREES)
    lay = Layout(base)
    # The workspace: a git checkout with files the presets protect.
    _touch(os.path.join(lay.ws, "src", "main.py"), "print('hi')\n")
    _touch(os.path.join(lay.ws, ".envrc"), "export A=1\n")
    os.makedirs(os.path.join(lay.ws, ".vscode"))
    _touch(os.path.join(lay.ws, ".git", "HEAD"), "ref: refs/heads/main\n")
    _touch(os.path.join(lay.ws, ".git", "config"), "[core]\n")
    os.makedirs(os.path.join(lay.ws, ".git", "hooks"))
    os.makedirs(os.path.join(lay.ws, ".git", "objects"))
    # The fake home: secret stores the presets hide, one read as empty under full isolation.
    _touch(os.path.join(lay.home, ".ssh", "id_ed25519"), "key\n")
    _touch(os.path.join(lay.home, ".aws", "credentials"), "[default]\n")
    _touch(os.path.join(lay.home, ".gradle", "gradle.properties"), "a=b\n")
    _touch(os.path.join(lay.home, "api_token.txt"), "t\n")
    _touch(os.path.join(lay.home, ".bashrc"), "# rc\n")
    _touch(os.path.join(lay.home, ".kube", "config"), "k\n")
    _touch(os.path.join(lay.home, "notes.txt"), "n\n")
    for name in ("config", "state", "cache", "data"):
        os.makedirs(os.path.join(lay.xdg, name))
    # nsbox's own environment: nothing of the caller's, nothing of the machine's.
    for name in list(os.environ):
        monkeypatch.delenv(name)
    fixed = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": lay.home, "LANG": "C.UTF-8",
             "XDG_CONFIG_HOME": os.path.join(lay.xdg, "config"),
             "XDG_STATE_HOME": os.path.join(lay.xdg, "state"),
             "XDG_CACHE_HOME": os.path.join(lay.xdg, "cache"),
             "XDG_DATA_HOME": os.path.join(lay.xdg, "data")}
    for name, value in fixed.items():
        monkeypatch.setenv(name, value)
    # The password database's home is the user's (root's /root, nsbox-test's
    # /home/nsbox-test, with whatever they hold): the fake home stands in for it.
    monkeypatch.setattr(state, "password_home", lambda: lay.home)
    yield lay
    shutil.rmtree(base, ignore_errors=True)


def command_env(lay: Layout) -> dict:
    """The command's environment (`env=`): ordinary variables and secret-looking ones."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": lay.home,
        "LANG": "C.UTF-8",
        "TERM": "xterm-256color",
        "USER": "snapshot",
        "EDITOR": "vi",
        "PROJECT_DIR": lay.ws,
        "TMPDIR": "/caller/tmp",
        "KUBECONFIG": os.path.join(lay.home, ".kube", "config"),
        "GITHUB_TOKEN": "not-a-real-one",
        "AWS_SECRET_ACCESS_KEY": "abc",
        "MYSQL_PWD": "pw",
        "DATABASE_URL": "postgres://user:hunter2@db.example/app",
        "OPENAI_LIKE": "sk-proj-" + "Ab1" * 8,
        "KEYTIMEOUT": "1",
        "OLDPWD": "/",
    }


def compile_for(lay: Layout, preset: str, mode: str):
    isolation, blocker = MODES[mode]
    policy = Policy(preset=preset, workspace=lay.ws, isolation=isolation)
    return prepare.compile_plan(ARGV, policy, cwd=None, env=command_env(lay), session=False,
                                host=literal_host(userns_blocker=blocker))


# ---------------------------------------------------------------- normalising


class Paths:
    """Placeholders for the test's own paths; knows what lies on the way down to them."""

    def __init__(self, lay: Layout, private_tmp):
        self.lay = lay
        self.private_tmp = private_tmp
        # Longest first, so <ws> wins over <tmp>.
        self.prefixes = [(lay.ws, "<ws>"), (lay.home, "<home>"), (lay.base, "<tmp>")]
        above, d = set(), lay.base
        while d != "/":
            d = posixpath.dirname(d)
            above.add(d)
        self.above = above  # "/" and every directory above <tmp>

    def text(self, value: str) -> str:
        """Placeholders in any string (paths, env values, messages)."""
        if self.private_tmp:
            value = value.replace(self.private_tmp, "<private_tmp>")
        for prefix, name in self.prefixes:
            value = value.replace(prefix, name)
        return value

    def ours(self, path: str) -> bool:
        return path == self.lay.base or path.startswith(self.lay.base + "/")

    def rule_path(self, path: str, access: int) -> str:
        """A Landlock rule's path. Granting read around a hidden path lists the
        directories on the way down to it ("/", /var, /var/tmp): their other
        entries are the machine's, so they become <host-entry>; the directories
        above <tmp> other than "/" become <above-tmp>."""
        if self.ours(path) or path == self.private_tmp or (
                self.private_tmp and path.startswith(self.private_tmp + "/")):
            return self.text(path)
        if path == "/":
            return path
        if path in self.above:
            return "<above-tmp>"
        if access == landlock_rules.READ and posixpath.dirname(path) in self.above:
            return "<host-entry>"
        return path


def _octal(mode: int) -> str:
    return f"0o{mode:o}"


def _access_names(access: int) -> list:
    names = [n for n in dir(landlock_rules) if n.startswith("FS_")]
    return sorted(n for n in names if access & getattr(landlock_rules, n)) if access else []


def seccomp_variant(plan) -> str:
    """Which program the command loads, by comparison with the profile compiled here
    (its bytes depend on the machine's libseccomp, kernel and architecture): the plain
    filter, or the reporting variant when the plan reports denials."""
    from nsbox.plan import denial_rules, profile_compiler

    path = profiles.find(plan.policy.seccomp)
    data = profiles.read(path)
    report = None
    if plan.denial_watch is not None:
        report = denial_rules.notified(plan.isolation == "full")
    loaded = plan.denial_watch.program if report else plan.seccomp_bpf
    for name, network_off in (("profile", False), ("profile+deny-inet", True)):
        program = profile_compiler.compile_profile(data, path, network_off, report)
        if (program[0] if report else program) == loaded:
            return name + ("+report" if report else "")
    return "other"


def _depth(path: str) -> int:
    return path.rstrip("/").count("/")


def _same_depth_sorted(steps: list) -> list:
    """Pins and read-only binds come sorted by depth only (policy.plan.protection_steps
    sorts a set): paths of one depth come in string-hash order, which changes from
    one interpreter to the next (PYTHONHASHSEED). They cannot lie inside one another,
    so their order is immaterial: sort each run of them by (depth, path)."""
    out, i = [], 0
    while i < len(steps):
        j = i
        while j < len(steps) and steps[j]["kind"] == steps[i]["kind"]:
            j += 1
        block = steps[i:j]
        if steps[i]["kind"] in ("pin", "bind_ro"):
            block = sorted(block, key=lambda s: (_depth(s["target"]), s["target"]))
        out += block
        i = j
    return out


def summarise(plan, lay: Layout) -> dict:
    """The plan as JSON-ready data, the same on every machine and for every user.

    Normalised: the test's paths (placeholders); the private TMPDIR's random name;
    uid and gid (left out); the bind of /var/run (a step only where the host's
    /var/run is a directory, not a symlink: left out here, checked on its own);
    Landlock rules on the host's entries along the way down to the test's
    directories (<host-entry>, <above-tmp>; rules sorted and deduplicated, as their
    order means nothing to Landlock); pins and read-only binds of one depth (in
    hash order: sorted by path, see _same_depth_sorted); hidden paths outside the test's directories
    (other mounts of the same files, which depend on the machine's mount table:
    dropped); the seccomp program's bytes (which program it is, not its hash);
    the digest (which covers the random paths: its shape only).
    """
    p = Paths(lay, plan.private_tmp)
    steps = []
    for step in plan.mounts:
        if step.kind == "bind_new" and step.target == "/var/run":
            continue
        if step.kind in ("mask_dir", "mask_file") and not p.ours(step.target):
            continue
        steps.append({"kind": step.kind, "target": p.text(step.target),
                      "source": p.text(step.source), "mode": _octal(step.mode),
                      "size": step.size})
    steps = _same_depth_sorted(steps)
    ruleset = None
    if plan.landlock is not None:
        ll = plan.landlock
        rules = sorted({(p.rule_path(r.path, r.access), r.access) for r in ll.paths})
        ruleset = {
            "abi": ll.abi, "handled_fs": _access_names(ll.handled_fs),
            "handled_net": ll.handled_net, "scoped": ll.scoped,
            "file_access": _access_names(ll.file_access),
            "ports": [list(port) for port in ll.ports],
            "paths": [{"path": path, "access": _access_names(access)} for path, access in rules],
        }
    limits = plan.limits
    bpf = plan.seccomp_bpf or (plan.denial_watch and plan.denial_watch.program)
    return {
        "argv": list(plan.argv),
        "cwd": p.text(plan.cwd),
        "namespaces": list(plan.namespaces),
        "ns_flags": hex(plan.ns_flags),
        "hostname": plan.hostname,
        "loopback": plan.loopback,
        "use_mount_api": plan.use_mount_api,
        "last_cap": plan.last_cap,
        "mounts": steps,
        "isolation": plan.isolation,
        "isolation_requested": plan.policy.isolation,
        "isolation_missing": list(plan.isolation_missing),
        "isolation_fallback": plan.isolation_fallback,
        "private_tmp": p.text(plan.private_tmp) if plan.private_tmp else None,
        "writable": [p.text(w) for w in plan.writable],
        "hidden": [p.text(h) for h in plan.hidden if p.ours(h)],
        "landlock": ruleset,
        "env": {k: p.text(v) for k, v in sorted(plan.env.items())},
        "limits": {
            "applied": limits.applied() if limits is not None else None,
            "shares": dict(sorted(limits.shares().items())) if limits is not None else None,
            "cgroups": len(limits.cgroups) if limits is not None else None,
        },
        "seccomp": {"present": bpf is not None,
                    "variant": seccomp_variant(plan) if bpf else None},
        "net_proxy": plan.net_proxy is not None,
        "watch": plan.watch is not None,
    }


def _compare(name: str, summary: dict) -> None:
    path = os.path.join(SNAPSHOTS, name + ".json")
    text = json.dumps(summary, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    if UPDATE:
        os.makedirs(SNAPSHOTS, exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        return
    if not os.path.exists(path):
        pytest.fail(f"no snapshot {path}: run with NSBOX_UPDATE_SNAPSHOTS=1 to write it")
    with open(path) as f:
        stored = f.read()
    if json.loads(stored) != summary:
        import difflib

        diff = "".join(difflib.unified_diff(stored.splitlines(True), text.splitlines(True),
                                            f"{name}.json (stored)", "this run"))
        pytest.fail(f"plan differs from {path}; if the change is intended, rerun with "
                    f"NSBOX_UPDATE_SNAPSHOTS=1 and review the diff:\n{diff}", pytrace=False)


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("preset", PRESETS)
def test_plan_snapshot(layout, preset, mode):
    done = compile_for(layout, preset, mode)
    _compare(f"{preset}--{mode}", summarise(done.plan, layout))


@pytest.mark.parametrize("preset", PRESETS)
def test_landlock_only_plan_has_no_namespaces_and_a_private_tmp(layout, preset):
    plan = compile_for(layout, preset, "landlock").plan
    assert plan.isolation == LANDLOCK
    assert plan.ns_flags == 0
    assert plan.mounts == ()
    assert plan.namespaces == ()
    assert plan.private_tmp and os.path.isabs(plan.private_tmp)
    assert not os.path.exists(plan.private_tmp)  # the launcher creates it, not the plan
    assert plan.env["TMPDIR"] == plan.private_tmp
    assert plan.hostname == "" and plan.loopback is False


@pytest.mark.parametrize("preset", PRESETS)
def test_full_plan_has_no_private_tmp(layout, preset):
    plan = compile_for(layout, preset, "full").plan
    assert plan.isolation == FULL
    assert plan.private_tmp is None
    assert plan.env["TMPDIR"] == "/tmp"
    assert plan.ns_flags != 0 and plan.mounts and "user" in plan.namespaces


@pytest.mark.parametrize("preset", PRESETS)
def test_auto_with_a_blocker_falls_back_to_landlock(layout, preset):
    plan = compile_for(layout, preset, "auto-fallback").plan
    assert plan.isolation == LANDLOCK
    assert plan.isolation_fallback == BLOCKER
    assert plan.policy.isolation == "auto"
    assert plan.private_tmp is not None and plan.mounts == () and plan.ns_flags == 0


@pytest.mark.parametrize("preset", PRESETS)
def test_auto_with_user_namespaces_is_full(layout, preset):
    auto = compile_for(layout, preset, "auto-userns").plan
    full = compile_for(layout, preset, "full").plan
    assert auto.isolation == FULL and auto.isolation_fallback == ""
    assert (auto.ns_flags, _stable(auto.mounts), auto.namespaces) == (
        full.ns_flags, _stable(full.mounts), full.namespaces)


def _stable(mounts) -> tuple:
    """Mount steps without the git dir layers' per-run directories (plan/gitsync.py)."""
    from nsbox.record import replace

    return tuple(replace(s, upper="", work="") if s.kind == "overlay" else s for s in mounts)


@pytest.mark.parametrize("preset", PRESETS)
def test_protection_binds_go_shallow_first_then_masks(layout, preset):
    """What the snapshots' sorting of same-depth binds relies on."""
    steps = compile_for(layout, preset, "full").plan.mounts
    kinds = [s.kind for s in steps]
    for kind in ("pin", "bind_ro"):
        depths = [_depth(s.target) for s in steps if s.kind == kind]
        assert depths == sorted(depths)
    masks = [i for i, k in enumerate(kinds) if k.startswith("mask_")]
    binds = [i for i, k in enumerate(kinds) if k in ("bind_rw", "pin", "bind_ro")]
    if masks and binds:
        assert max(binds) < min(masks)
    assert kinds[-1] == "proc"


def test_var_run_bind_follows_the_host(layout):
    """The one step the snapshots leave out, checked against this machine."""
    plan = compile_for(layout, "workspace-write", "full").plan
    var_run = [s for s in plan.mounts if s.kind == "bind_new"]
    if os.path.isdir("/var/run") and not os.path.islink("/var/run"):
        assert [(s.target, s.source) for s in var_run] == [("/var/run", "/run")]
        kinds = [s.kind for s in plan.mounts]
        assert kinds.index("bind_new") == kinds.index("tmpfs") + 2  # right after /run's tmpfs
    else:
        assert var_run == []


def test_seccomp_program_is_the_same_for_the_same_input(layout):
    first = compile_for(layout, "workspace-write", "landlock").plan.denial_watch.program
    again = compile_for(layout, "workspace-write", "landlock").plan.denial_watch.program
    assert first and len(first) % 8 == 0  # struct sock_filter: 8 bytes each
    assert hashlib.sha256(first).digest() == hashlib.sha256(again).digest()


def test_summary_holds_no_machine_or_user_paths(layout):
    """What the snapshots must not pin: the test's real paths, the user, the uid."""
    for preset in PRESETS:
        for mode in MODES:
            text = json.dumps(summarise(compile_for(layout, preset, mode).plan, layout))
            assert layout.base not in text
            assert "/tmp/nsbox-" not in text
            assert "pytest-of-" not in text
            for home in ("/root", "/home/"):
                assert home not in text


def test_snapshot_files_are_all_used():
    if UPDATE or not os.path.isdir(SNAPSHOTS):
        return
    wanted = {f"{p}--{m}.json" for p in PRESETS for m in MODES}
    assert set(os.listdir(SNAPSHOTS)) == wanted


def _overlay_plan(lay: Layout, mode: str):
    isolation, blocker = MODES[mode]
    policy = Policy(workspace=lay.ws, isolation=isolation, workspace_mode="overlay")
    return prepare.compile_plan(ARGV, policy, cwd=None, env=command_env(lay), session=False,
                                host=literal_host(userns_blocker=blocker))


def test_overlay_mode_changes_only_the_workspace_step(layout):
    """workspace_mode overlay: the workspace-write plan, its workspace bind become an
    overlay whose layers lie in a run directory under the state directory (not made)."""
    direct = compile_for(layout, "workspace-write", "full").plan
    plan = _overlay_plan(layout, "full").plan
    runs = os.path.join(layout.xdg, "state", "nsbox", "runs")
    assert plan.overlay is not None and plan.overlay.dir == os.path.join(runs, plan.overlay.id)
    assert not os.path.exists(runs)
    swapped = [replace_step(s, plan.overlay) if s.kind == "bind_rw" and s.target == layout.ws
               else s for s in direct.mounts]
    # The workspace's git dir: copy-on-write of its own in a direct workspace (gitsync),
    # inside the workspace's overlay here, where its config stays read-only as before.
    dotgit = os.path.join(layout.ws, ".git")

    def outside_git(steps):
        return tuple(s for s in steps if not (s.target + "/").startswith(dotgit + "/"))

    assert outside_git(plan.mounts) == outside_git(swapped)
    assert ("bind_ro", dotgit + "/config") in [(s.kind, s.target) for s in plan.mounts]
    assert ("overlay", dotgit) in [(s.kind, s.target) for s in direct.mounts]
    assert direct.overlay is None


def replace_step(step, run):
    from nsbox.policy.plan import MountStep

    return MountStep("overlay", step.target, step.source, upper=run.upper, work=run.work,
                     volatile=True)


@pytest.mark.parametrize("mode", ["landlock", "auto-fallback"])
def test_overlay_mode_needs_a_mount_namespace(layout, mode):
    from nsbox.errors import UnsupportedKernel

    with pytest.raises(UnsupportedKernel, match="overlay needs a mount namespace") as err:
        _overlay_plan(layout, mode)
    if mode == "auto-fallback":
        assert "unprivileged_userns_clone" in str(err.value)


def test_overlay_mode_refuses_a_state_directory_inside_the_workspace(layout, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", os.path.join(layout.ws, "state"))
    from nsbox.errors import PolicyError

    with pytest.raises(PolicyError, match="lies inside the workspace"):
        _overlay_plan(layout, "full")
