"""Package managers' caches: the policy setting, its trust rule, the variables and the
plan (a writable area kept apart from the projects), without starting a sandbox."""

import os
import stat
import tempfile

import pytest

from conftest import literal_host
from nsbox import state
from nsbox.cli import exec_args
from nsbox.errors import PolicyError
from nsbox.plan import caches, prepare, protect
from nsbox.policy import defaults, loader, trust
from nsbox.policy.model import Policy

NAMES = [name for name, _ in defaults.CACHE_ENV]


# ---------------------------------------------------------------- the policy setting

@pytest.mark.parametrize("preset,mode", [("workspace-write", "shared"), ("read-only", "off"),
                                         ("full-access", "off")])
def test_each_preset_has_a_cache_mode(preset, mode):
    assert Policy(preset=preset).cache == mode
    assert Policy(preset=preset).as_dict()["cache"] == mode


def test_changing_the_preset_rederives_a_default_cache_but_keeps_a_chosen_one():
    assert Policy().with_changes(preset="read-only").cache == "off"
    assert Policy(cache="workspace").with_changes(preset="read-only").cache == "workspace"


def test_a_bad_cache_mode_is_refused():
    with pytest.raises(PolicyError, match="cache must be one of shared, workspace, off"):
        Policy(cache="everywhere")


def test_the_digest_covers_the_cache_mode():
    assert Policy(cache="off").digest() != Policy().digest()


@pytest.mark.parametrize("text,mode", [('[cache]\nmode = "workspace"\n', "workspace"),
                                       ('cache = "off"\n', "off"),
                                       ('cache.mode = "shared"\n', "shared")])
def test_policy_files_set_the_mode(text, mode):
    layer = loader.parse_toml(text, "p.toml")
    assert layer == {"cache": mode}
    assert loader.merge([layer]).cache == mode


@pytest.mark.parametrize("text,words", [
    ('[cache]\nmode = "nowhere"\n', "line 2: cache must be one of"),
    ('[cache]\nmode = 1\n', "line 2: [cache] mode must be a string"),
    ('[cache]\npath = "/x"\n', "unknown key 'path' in [cache]; known: mode"),
    ('cache = 1\n', "line 1: cache must be a string"),
])
def test_bad_cache_settings_name_the_line(text, words):
    with pytest.raises(PolicyError) as err:
        loader.parse_toml(text, "p.toml")
    assert words in str(err.value)


def test_the_flag_becomes_the_policy_setting_and_wins_over_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".nsbox").mkdir()
    (tmp_path / ".nsbox" / "policy.toml").write_text('[cache]\nmode = "workspace"\n')
    parsed = exec_args.parse(["--cache", "off", "--", "true"])
    assert parsed.values["cache"] == "off"
    assert exec_args.policy_from_options(parsed.values).cache == "off"
    assert exec_args.policy_from_options({}).cache == "workspace"  # narrowing: applied


@pytest.mark.parametrize("base,value,kept", [
    ("shared", "workspace", True), ("shared", "off", True), ("shared", "shared", True),
    ("workspace", "off", True), ("workspace", "shared", False),
    ("off", "workspace", False), ("off", "shared", False), ("off", "off", True),
])
def test_an_untrusted_file_may_only_narrow_the_cache(base, value, kept):
    narrowed, ignored = trust.only_narrowing({"cache": value}, Policy(cache=base))
    assert ("cache" in narrowed) is kept
    assert ignored == ([] if kept else ["cache"])


def test_read_only_makes_a_shared_cache_a_widening():
    _, ignored = trust.only_narrowing({"cache": "shared"}, Policy(preset="read-only"))
    assert ignored == ["cache"]


# ---------------------------------------------------------------- the variables

AREA = caches.Area("shared", "/c/nsbox/packages/shared", "/c/nsbox")


def test_every_variable_points_into_the_area():
    env = {"PATH": "/bin"}
    caches.apply_env(env, AREA)
    for name, rel in defaults.CACHE_ENV:
        assert env[name] == f"{AREA.path}/{rel}"
    assert env["UV_LINK_MODE"] == "copy"
    assert env["PATH"] == "/bin"  # the area is never put on PATH
    assert "CARGO_HOME" not in env and "GRADLE_USER_HOME" not in env


def test_the_callers_variables_are_replaced_but_setenv_wins():
    env = {"PIP_CACHE_DIR": "/home/me/.cache/pip", "NPM_CONFIG_CACHE": "/home/me/.npm",
           "UV_LINK_MODE": "symlink", "XDG_CACHE_HOME": "/mine"}
    caches.apply_env(env, AREA, chosen=["XDG_CACHE_HOME"])
    assert env["PIP_CACHE_DIR"] == AREA.path + "/cache/pip"
    assert "NPM_CONFIG_CACHE" not in env  # npm reads any letter case: one spelling only
    assert env["npm_config_cache"] == AREA.path + "/npm"
    assert env["UV_LINK_MODE"] == "symlink"  # not a place: the caller's choice stays
    assert env["XDG_CACHE_HOME"] == "/mine"


def test_setenv_of_any_spelling_of_npms_cache_wins():
    env = {"NPM_CONFIG_CACHE": "/mine"}
    caches.apply_env(env, AREA, chosen=["NPM_CONFIG_CACHE"])
    assert env["NPM_CONFIG_CACHE"] == "/mine" and "npm_config_cache" not in env


def test_off_sets_nothing():
    env = {"PIP_CACHE_DIR": "/x"}
    caches.apply_env(env, None)
    assert env == {"PIP_CACHE_DIR": "/x"}


def test_a_session_command_with_its_own_environment_gets_the_plans_variables():
    plan_env = {}
    caches.apply_env(plan_env, AREA)
    env = {"PIP_CACHE_DIR": "/home/me/.cache/pip", "TERM": "dumb"}
    caches.carry(env, plan_env)
    assert {n: env[n] for n in NAMES} == {n: plan_env[n] for n in NAMES}
    assert env["TERM"] == "dumb"
    untouched = {"PIP_CACHE_DIR": "/x"}
    caches.carry(untouched, {"PATH": "/bin"})  # a plan without a cache
    assert untouched == {"PIP_CACHE_DIR": "/x"}


# ---------------------------------------------------------------- the area on disk

@pytest.fixture
def own():
    base = os.path.realpath(tempfile.mkdtemp(prefix="nsbox-cache-", dir="/var/tmp"))
    dirs = protect.OwnDirs(state=f"{base}/state/nsbox", config=f"{base}/config/nsbox",
                           cache=f"{base}/cache/nsbox")
    yield dirs
    import shutil

    shutil.rmtree(base, ignore_errors=True)


def test_the_layout_keeps_each_leaf_apart(own):
    shared = caches.locate("shared", "/w/a", own)
    a = caches.locate("workspace", "/w/a", own)
    b = caches.locate("workspace", "/w/b", own)
    assert shared.path == f"{own.cache}/packages/shared"
    assert a.path == f"{own.cache}/packages/workspaces/{caches.workspace_key('/w/a')}"
    assert len(caches.workspace_key("/w/a")) == 16 and a.path != b.path
    assert a.path == caches.locate("workspace", "/w/a", own).path  # stable
    assert caches.locate("off", "/w/a", own) is None
    for area in (shared, a):  # no leaf holds another, nor nsbox's seccomp cache
        assert not f"{own.cache}/seccomp".startswith(area.path)
        assert not area.exists


def test_create_makes_private_directories_once(own):
    area = caches.locate("workspace", "/w/a", own)
    caches.create(area)
    path = area.path
    while path != os.path.dirname(own.cache):
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o700, path
        path = os.path.dirname(path)
    assert os.path.isdir(f"{area.path}/cache")
    again = caches.locate("workspace", "/w/a", own)
    assert again.exists
    caches.create(again)  # nothing to do


def test_a_leaf_opened_to_others_is_closed_again(own):
    area = caches.locate("shared", "/w", own)
    caches.create(area)
    os.chmod(area.path, 0o777)
    assert caches.locate("shared", "/w", own).exists
    assert stat.S_IMODE(os.stat(area.path).st_mode) == 0o700


@pytest.mark.parametrize("planted", ["packages", "packages/workspaces", "leaf"])
def test_a_planted_symlink_on_the_way_is_refused(own, planted):
    target = os.path.join(os.path.dirname(own.cache), "elsewhere")
    os.makedirs(target)
    leaf = caches.locate("workspace", "/w/a", own).path
    where = leaf if planted == "leaf" else os.path.join(own.cache, planted)
    os.makedirs(os.path.dirname(where), exist_ok=True)
    os.symlink(target, where)
    with pytest.raises(PolicyError, match="not a directory owned by you"):
        caches.locate("workspace", "/w/a", own)


def test_nsbox_state_inside_the_area_is_refused(own):
    inside = protect.OwnDirs(state=f"{own.cache}/packages/shared/state", config=own.config,
                             cache=own.cache)
    with pytest.raises(PolicyError, match="lies inside the package cache"):
        caches.locate("shared", "/w", inside)


# ---------------------------------------------------------------- the plan

@pytest.fixture
def home(monkeypatch):
    """nsbox's own environment: a fake home under /var/tmp, the default XDG places."""
    base = os.path.realpath(tempfile.mkdtemp(prefix="nsbox-cache-home-", dir="/var/tmp"))
    os.makedirs(f"{base}/ws/.git/hooks")
    for name in list(os.environ):
        if name.startswith("XDG_") or name in NAMES:
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", base)
    monkeypatch.setattr(state, "password_home", lambda: base)
    yield base
    import shutil

    shutil.rmtree(base, ignore_errors=True)


def compiled(home, isolation="full", **fields):
    policy = Policy(workspace=f"{home}/ws", isolation=isolation, **fields)
    return prepare.compile_plan(["true"], policy, env={"PATH": "/bin", "HOME": home},
                                host=literal_host())


def test_the_area_is_a_writable_bind_after_the_read_only_ones_and_before_the_masks(home):
    done = compiled(home)
    leaf = f"{home}/.cache/nsbox/packages/shared"
    kinds = [(s.kind, s.target) for s in done.plan.mounts]
    at = kinds.index(("bind_rw", leaf))
    assert all(k != "mask_dir" and k != "mask_file" for k, _ in kinds[:at])
    assert all(k not in ("bind_ro", "pin") for k, _ in kinds[at + 1:])
    assert leaf in done.plan.writable and done.cache.path == leaf
    assert done.roots == (f"{home}/ws",)  # not a project: no git scan, watch or broad check
    assert done.plan.env["npm_config_cache"] == f"{leaf}/npm"
    assert done.plan.env["XDG_CACHE_HOME"] == f"{leaf}/cache"
    assert not os.path.exists(leaf)  # compiling creates nothing; prepare does
    rules = {r.path for r in done.plan.landlock.paths}
    assert leaf in rules


def test_landlock_only_makes_the_area_a_landlock_root(home):
    done = compiled(home, isolation="landlock")
    leaf = f"{home}/.cache/nsbox/packages/shared"
    assert done.plan.mounts == () and leaf in done.plan.writable
    assert leaf in {r.path for r in done.plan.landlock.paths}


def test_off_mounts_and_sets_nothing(home):
    done = compiled(home, cache="off")
    assert done.cache is None
    assert not any("packages" in s.target for s in done.plan.mounts)
    assert not set(NAMES) & set(done.plan.env)
    assert done.plan.writable == (f"{home}/ws",)


def test_the_seccomp_cache_and_nsbox_state_stay_out_of_reach(home):
    done = compiled(home)
    for path in done.plan.writable:
        for mine in (f"{home}/.cache/nsbox", f"{home}/.cache/nsbox/seccomp",
                     f"{home}/.local/state/nsbox", f"{home}/.config/nsbox"):
            assert not mine.startswith(path.rstrip("/") + "/") and mine != path


def test_an_area_inside_a_writable_root_is_left_out(home):
    # The tools' own caches are writable there, and nsbox creates nothing in a root.
    os.makedirs(f"{home}/.cache/nsbox/seccomp")
    policy = Policy(workspace=f"{home}/.cache")
    done = prepare.compile_plan(["true"], policy, env={"PATH": "/bin"}, host=literal_host())
    assert done.cache is None and not set(NAMES) & set(done.plan.env)
    steps = [(s.kind, s.target) for s in done.plan.mounts]
    assert ("bind_ro", f"{home}/.cache/nsbox") in steps
    assert not any("/packages" in target for _, target in steps)


def test_an_area_under_a_hidden_path_is_left_out(home):
    os.makedirs(f"{home}/.cache")
    done = compiled(home, hidden=Policy().hidden + ("~/.cache",))
    assert done.cache is None and not set(NAMES) & set(done.plan.env)


def test_the_setenv_value_reaches_the_plan(home):
    done = compiled(home, extra_env=(("PIP_CACHE_DIR", "/mine"),))
    assert done.plan.env["PIP_CACHE_DIR"] == "/mine"
    assert done.plan.env["UV_CACHE_DIR"].startswith(f"{home}/.cache/nsbox/packages/")


def test_prepare_creates_the_area(home):
    plan = prepare.prepare(["true"], Policy(workspace=f"{home}/ws", cache="workspace"),
                           env={"PATH": "/bin"}, host=literal_host())
    leaf = [p for p in plan.writable if "/packages/workspaces/" in p]
    assert leaf and os.path.isdir(leaf[0])
    assert leaf[0].endswith(caches.workspace_key(f"{home}/ws"))


# ---------------------------------------------------------------- nsbox cache clear

def test_clear_empties_the_area_without_following_symlinks(own):
    from nsbox.cli import app

    area = caches.locate("shared", "/w", own)
    caches.create(area)
    outside = os.path.join(os.path.dirname(own.cache), "outside")
    os.makedirs(outside)
    with open(f"{outside}/keep", "w") as f:
        f.write("keep\n")
    os.makedirs(f"{area.path}/go/mod/example.com/m@v1")
    with open(f"{area.path}/go/mod/example.com/m@v1/go.mod", "w") as f:
        f.write("module m\n")
    for d in (f"{area.path}/go/mod/example.com/m@v1", f"{area.path}/go/mod/example.com"):
        os.chmod(d, 0o555)  # as Go leaves its module cache
    os.symlink(outside, f"{area.path}/link")
    os.symlink(outside, f"{area.path}/go/link")
    base = os.path.realpath(own.cache)
    assert app._clear_area(area.path, base) > 0
    assert os.listdir(area.path) == ["cache"]  # XDG_CACHE_HOME, made again
    assert os.listdir(outside) == ["keep"]
    with pytest.raises(PolicyError):
        app._clear_area(os.path.dirname(own.cache), base)
