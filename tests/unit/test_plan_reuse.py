"""A session plan moved to a new empty workspace is the plan compiled for that workspace.

nsbox.plan.reuse compiles once and rewrites the workspace's path; these tests compare
the rewritten plan with a fresh compile, field by field, and check that plans a move
could change are never offered for reuse, and that a template goes stale.
"""

import os
import shutil
import tempfile

import pytest

from conftest import literal_host
from nsbox.plan import prepare, reuse, watch
from nsbox.policy.model import Policy
from nsbox.record import fields

# /tmp is a tree the sandbox replaces with its own (the workspace is mounted into
# it); /var/tmp is one it shows as the host has it.
PARENTS = ("/tmp", "/var/tmp")


@pytest.fixture(params=PARENTS)
def parent(request):
    path = tempfile.mkdtemp(prefix="nsbox-reuse-", dir=request.param)
    yield os.path.realpath(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def secret():
    """A file to hide, where the sandbox shows the host's files (not under /tmp)."""
    where = tempfile.mkdtemp(prefix="nsbox-reuse-secret-", dir="/var/tmp")
    path = os.path.join(os.path.realpath(where), "secret.txt")
    with open(path, "w") as f:
        f.write("token")
    yield path
    shutil.rmtree(where, ignore_errors=True)


def policy_for(workspace, **changes):
    return Policy(clearenv=True, isolation="full", workspace=workspace, **changes)


def workspace_in(parent):
    return tempfile.mkdtemp(prefix="sbx-", dir=parent)


def compiled_fresh(policy, host):
    return prepare.compile_plan(("nsbox-session",), policy, None, None, session=True, host=host)


def assert_same_plan(moved, fresh_compile):
    fresh = fresh_compile.plan
    for field in fields(fresh):
        if field.name in ("watch", "limits"):
            continue
        assert getattr(moved, field.name) == getattr(fresh, field.name), field.name
    assert (moved.limits.limits, repr(moved.limits.enforcement), moved.limits.cgroups) == (
        fresh.limits.limits, repr(fresh.limits.enforcement), fresh.limits.cgroups)
    expected = watch.start(fresh_compile.roots, fresh_compile.guard.watched, (), ())
    assert (moved.watch.roots, moved.watch.paths) == (expected.roots, expected.paths)


def test_moved_plan_equals_a_fresh_compile(parent):
    host = literal_host()
    first, second = workspace_in(parent), workspace_in(parent)
    made = reuse.template(policy_for(first), host, max_age=5.0)
    assert made is not None
    assert reuse.fresh(made, max_age=5.0)
    moved = reuse.moved(made, policy_for(second), second)
    assert_same_plan(moved, compiled_fresh(policy_for(second), host))
    assert first not in repr(moved)
    # and back to its own workspace: the plan it was compiled as
    assert_same_plan(reuse.moved(made, policy_for(first), first),
                     compiled_fresh(policy_for(first), host))


def test_hidden_paths_stay_in_the_moved_plan(parent, secret):
    host = literal_host()
    first, second = workspace_in(parent), workspace_in(parent)
    made = reuse.template(policy_for(first, hidden=(secret,)), host, max_age=5.0)
    moved = reuse.moved(made, policy_for(second, hidden=(secret,)), second)
    assert any(step.target == secret for step in moved.mounts)
    assert_same_plan(moved, compiled_fresh(policy_for(second, hidden=(secret,)), host))


@pytest.mark.parametrize("changes, host_changes", [
    ({"isolation": "landlock"}, {}),  # a private TMPDIR each
    ({"isolation": "auto"}, {"userns_blocker": "user namespaces are disabled here"}),
    ({"network": "allowlist", "network_allow": ("example.com",)}, {}),  # a proxy each
    ({"limits": {"memory": 256 << 20}, "best_effort": True}, {}),  # limits of their own
])
def test_plans_a_move_would_change_are_not_offered(parent, changes, host_changes):
    policy = policy_for(workspace_in(parent)).with_changes(**changes)
    try:
        made = reuse.template(policy, literal_host(**host_changes), max_age=5.0)
    except Exception as err:  # this host cannot compile it at all: nothing to reuse either
        pytest.skip(f"not compiled here: {err}")
    assert made is None


def test_a_workspace_with_something_in_it_is_not_a_template(parent):
    workspace = workspace_in(parent)
    open(os.path.join(workspace, ".envrc"), "w").close()
    assert reuse.template(policy_for(workspace), literal_host(), max_age=5.0) is None


def test_moves_only_to_a_new_empty_workspace_beside_its_own_for_the_same_policy(parent):
    made = reuse.template(policy_for(workspace_in(parent)), literal_host(), max_age=5.0)
    elsewhere = tempfile.mkdtemp(prefix="nsbox-reuse-other-", dir="/var/tmp")
    try:
        with pytest.raises(ValueError):
            reuse.moved(made, policy_for(elsewhere), elsewhere)
    finally:
        os.rmdir(elsewhere)
    used = workspace_in(parent)
    open(os.path.join(used, "file"), "w").close()
    with pytest.raises(ValueError):
        reuse.moved(made, policy_for(used), used)
    other = workspace_in(parent)
    with pytest.raises(ValueError):
        reuse.moved(made, policy_for(other, network="host"), other)


def test_a_template_goes_stale_with_age_and_when_a_path_it_holds_is_replaced(parent, secret):
    host = literal_host()
    made = reuse.template(policy_for(workspace_in(parent), hidden=(secret,)), host, max_age=60)
    assert reuse.fresh(made, max_age=60)
    assert not reuse.fresh(made, max_age=0.0)
    replacement = os.path.join(os.path.dirname(secret), "new.txt")
    with open(replacement, "w") as f:
        f.write("other")
    os.replace(replacement, secret)  # same path, another file
    assert not reuse.fresh(made, max_age=60)


def test_no_reuse_with_max_age_zero(parent):
    assert reuse.template(policy_for(workspace_in(parent)), literal_host(), max_age=0) is None
