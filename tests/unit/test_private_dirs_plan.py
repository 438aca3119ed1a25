"""Policy.private_dirs and Policy.read_only_binds: checks, TOML, and the mount steps."""

import pytest

from conftest import literal_host
from nsbox.errors import PolicyError
from nsbox.plan import prepare
from nsbox.policy import loader
from nsbox.policy.model import Policy


@pytest.mark.parametrize("fields", [
    {"private_dirs": ("var/tmp",)}, {"private_dirs": ("/tmp",)}, {"private_dirs": ("/",)},
    {"private_dirs": "/var/tmp"}, {"read_only_binds": ("/a",)},
    {"read_only_binds": ("rel:/b",)}, {"read_only_binds": ("/a:/b:/c",)},
])
def test_bad_values_are_refused(fields):
    with pytest.raises(PolicyError):
        Policy(**fields)


def test_the_filesystem_table_takes_them():
    layer = loader.parse_toml('[filesystem]\nprivate = ["/var/tmp"]\n'
                              'bind_ro = ["/srv/t:/var/tmp/t"]\n', "p.toml")
    policy = loader.merge([layer])
    assert policy.private_dirs == ("/var/tmp",)
    assert policy.read_only_binds == ("/srv/t:/var/tmp/t",)


def _plan(tmp_path, isolation="full", **fields):
    workspace = tmp_path / "ws"
    workspace.mkdir(exist_ok=True)
    policy = Policy(workspace=str(workspace), isolation=isolation, **fields)
    return prepare.compile_plan(["true"], policy, env={"PATH": "/bin"},
                                host=literal_host()).plan


def test_a_private_tmpfs_before_the_writable_roots_and_the_binds_after_them(tmp_path):
    source = tmp_path / "tools"
    source.mkdir()
    plan = _plan(tmp_path, private_dirs=("/var/tmp",),
                 read_only_binds=(f"{source}:/var/tmp/tools",))
    kinds = [(s.kind, s.target) for s in plan.mounts]
    private = kinds.index(("tmpfs", "/var/tmp"))
    bind = kinds.index(("bind_ro_from", "/var/tmp/tools"))
    first_writable = next(i for i, k in enumerate(kinds) if k[0] in ("bind_rw", "overlay"))
    assert private < first_writable < bind
    assert plan.mounts[bind].source == str(source)
    assert "/var/tmp" in [rule.path for rule in plan.landlock.paths]  # writable, as /tmp


def test_a_bind_target_must_exist_or_lie_in_a_private_dir(tmp_path):
    source = tmp_path / "tools"
    source.mkdir()
    with pytest.raises(PolicyError, match="existing directory"):
        _plan(tmp_path, read_only_binds=(f"{source}:/var/tmp/nsbox-no-such-dir",))
    with pytest.raises(PolicyError, match="does not exist"):
        _plan(tmp_path, private_dirs=("/var/tmp",),
              read_only_binds=(f"{tmp_path}/missing:/var/tmp/tools",))


def test_landlock_only_isolation_refuses_them(tmp_path):
    with pytest.raises(PolicyError, match="need full isolation"):
        _plan(tmp_path, isolation="landlock", private_dirs=("/var/tmp",))
