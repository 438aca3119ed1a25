"""Mount plan order, as data (no kernel involved)."""

from nsbox.policy import plan
from nsbox.policy.model import Policy


def kinds(steps):
    return [(s.kind, s.target) for s in steps]


def test_default_plan_starts_with_read_only_root_and_binds_workspace_after_tmp():
    steps = plan.mount_steps(Policy(), ("/tmp/ws",))
    order = kinds(steps)
    assert order[0] == ("root_readonly", "/")
    assert order.index(("bind_rw", "/tmp/ws")) > order.index(("tmpfs", "/tmp"))
    assert ("tmpfs", "/run") in order
    assert ("dev", "/dev") in order
    assert ("proc", "/proc") in order


def test_nested_writable_roots_are_mounted_parent_first():
    steps = plan.mount_steps(Policy(), ("/a/b/c", "/a"))
    binds = [s.target for s in steps if s.kind == "bind_rw"]
    assert binds.index("/a") < binds.index("/a/b/c")


def test_full_access_root_is_writable():
    steps = plan.mount_steps(Policy(preset="full-access", network="host"), ())
    assert steps[0].kind == "root_writable"


def test_read_only_preset_has_no_writable_workspace():
    roots = plan.writable_roots(Policy(preset="read-only"), "/ws", ())
    assert roots == ()


def test_network_none_adds_a_network_namespace():
    assert "net" in plan.namespaces(Policy())
    assert "net" not in plan.namespaces(Policy(network="host"))


def test_var_run_directory_follows_new_run():
    steps = plan.mount_steps(Policy(), (), var_run_is_dir=True)
    assert ("bind_new", "/var/run") in kinds(steps)
