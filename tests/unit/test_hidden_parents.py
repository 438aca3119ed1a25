"""Policy.hidden_parents: hidden but for the writable roots inside (a directory holding
many sandboxes' workspaces). Checks, mount order, Landlock rules and plan reuse."""

import os
import shutil
import tempfile

import pytest

from conftest import literal_host
from nsbox.errors import PolicyError
from nsbox.plan import prepare, reuse, summary
from nsbox.policy import landlock_rules
from nsbox.policy import plan as policy_plan
from nsbox.policy.model import Policy


@pytest.fixture
def parent():
    """A directory the sandbox would show as the host has it (not under /tmp)."""
    path = os.path.realpath(tempfile.mkdtemp(prefix="nsbox-hidden-parent-", dir="/var/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _compile(workspace, isolation="full", **fields):
    policy = Policy(clearenv=True, workspace=workspace, isolation=isolation, **fields)
    return prepare.compile_plan(("nsbox-session",), policy, None, {"PATH": "/bin"},
                                session=True, host=literal_host())


@pytest.mark.parametrize("value", [("var/tmp",), ("/",), "/var/tmp"])
def test_bad_values_are_refused(value):
    with pytest.raises(PolicyError, match="hidden_parents"):
        Policy(hidden_parents=value)


def test_full_isolation_an_empty_tmpfs_under_the_roots_inside_and_over_those_above():
    steps = policy_plan.mount_steps(Policy(), ("/srv/all/a", "/srv", "/srv/all/b/c"),
                                    hidden_parents=("/srv/all",))
    order = [(s.kind, s.target) for s in steps if s.target.startswith("/srv")]
    assert order == [("bind_rw", "/srv"), ("tmpfs", "/srv/all"), ("bind_rw", "/srv/all/a"),
                     ("bind_rw", "/srv/all/b/c")]
    tmpfs = next(s for s in steps if s.target == "/srv/all")
    assert (tmpfs.mode, tmpfs.size) == (0o755, policy_plan.HIDDEN_PARENT_SIZE)


def test_full_isolation_plan(parent):
    workspace = tempfile.mkdtemp(dir=parent)
    plan = _compile(workspace, hidden_parents=(parent,)).plan
    kinds = [(s.kind, s.target) for s in plan.mounts]
    assert kinds.index(("tmpfs", parent)) < kinds.index(("bind_rw", workspace))
    # Landlock adds no write right there: the tmpfs is read-only but for the workspace.
    assert parent not in [rule.path for rule in plan.landlock.paths]
    shown = summary.protections(plan)
    assert shown["hidden_parents"] == [parent] and "private_dirs" not in shown


def test_under_tmp_full_isolation_needs_no_mount(parent):
    inside_tmp = os.path.realpath(tempfile.mkdtemp(prefix="nsbox-hidden-parent-", dir="/tmp"))
    try:
        workspace = tempfile.mkdtemp(dir=inside_tmp)
        plan = _compile(workspace, hidden_parents=(inside_tmp,)).plan
        assert not [s for s in plan.mounts if s.target == inside_tmp]  # /tmp is private
    finally:
        shutil.rmtree(inside_tmp)


def test_landlock_only_denies_the_parent_and_grants_the_roots_inside(parent):
    mine, theirs = tempfile.mkdtemp(dir=parent), tempfile.mkdtemp(dir=parent)
    try:
        plan = _compile(mine, isolation="landlock", hidden_parents=(parent,)).plan
    except Exception as err:  # no Landlock here: nothing to compile
        pytest.skip(f"landlock-only isolation not available: {err}")
    rules = {rule.path: rule.access for rule in plan.landlock.paths}
    assert parent in plan.hidden
    assert not any(policy_plan.under(parent, p) or policy_plan.under(theirs, p)
                   for p in rules if p != mine), rules
    assert rules[mine] & landlock_rules.FS_READ_FILE
    assert os.path.dirname(parent) not in rules  # its siblings are granted one by one


def test_landlock_rules_grant_a_root_inside_a_hidden_directory():
    ruleset = landlock_rules.build(
        1, writable=("/srv/all/a",), hidden=("/srv/all",),
        listings={"/": ("srv", "usr"), "/srv": ("all", "other")}, devices=())
    paths = [rule.path for rule in ruleset.paths]
    assert paths == ["/srv/other", "/usr", "/srv/all/a"]


def test_one_inside_a_writable_root_is_refused(parent):
    workspace = tempfile.mkdtemp(dir=parent)
    inner = os.path.join(workspace, "inner")
    os.mkdir(inner)
    with pytest.raises(PolicyError, match="lies inside writable root"):
        _compile(workspace, hidden_parents=(inner,))


def test_a_missing_one_hides_nothing(parent):
    workspace = tempfile.mkdtemp(dir=parent)
    plan = _compile(workspace, hidden_parents=(parent + "/missing",)).plan
    assert not [s for s in plan.mounts if s.target.startswith(parent + "/missing")]


def test_a_moved_plan_keeps_hiding_the_parent(parent):
    first, second = tempfile.mkdtemp(dir=parent), tempfile.mkdtemp(dir=parent)

    def policy(workspace):
        return Policy(clearenv=True, isolation="full", workspace=workspace,
                      hidden_parents=(parent,))

    made = reuse.template(policy(first), literal_host(), max_age=5.0)
    assert made is not None
    moved = reuse.moved(made, policy(second), second)
    fresh = _compile(second, hidden_parents=(parent,)).plan
    assert moved.mounts == fresh.mounts and moved.landlock == fresh.landlock
    assert ("tmpfs", parent) in [(s.kind, s.target) for s in moved.mounts]
    assert first not in repr(moved.mounts)
