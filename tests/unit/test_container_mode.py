"""Container mode without root: the plan's mount points in an image, the image config's
rules, the member checks of image import, and the options."""

import os
import tarfile

import pytest

from nsbox.cli import exec_args
from nsbox.errors import PolicyError
from nsbox.plan import container, images
from nsbox.policy import image_config
from nsbox.policy import plan as policy_plan
from nsbox.policy.model import Policy


@pytest.fixture
def rootfs(tmp_path):
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "sh").write_text("")
    (root / "home").mkdir(mode=0o750)
    os.chmod(root / "home", 0o750)
    (root / "tmp").mkdir()
    os.symlink("/", root / "run")
    (root / "etc").write_text("not a directory")
    return root


def test_mount_points_lists_what_the_image_lacks_parents_first(rootfs):
    dirs = container.mount_points(str(rootfs), ("/tmp", "/home/u/ws", "/proc", "/srv/a/b"))
    # The image's own /home is listed too, with its mode: the scaffold layer shows it.
    assert dirs == (("home", 0o750), ("proc", 0o755), ("srv", 0o755), ("home/u", 0o755),
                    ("srv/a", 0o755), ("home/u/ws", 0o755), ("srv/a/b", 0o755))


@pytest.mark.parametrize("target, what", [("/run", "a symlink"), ("/etc/x", "not a directory")])
def test_mount_point_through_a_link_or_file_is_refused(rootfs, target, what):
    with pytest.raises(PolicyError, match=f"/{target.split('/')[1]} is {what}"):
        container.mount_points(str(rootfs), (target,))


def test_rootfs_checks(rootfs, tmp_path):
    assert container.check_rootfs(str(rootfs)) == str(rootfs)
    with pytest.raises(PolicyError, match="does not exist"):
        container.check_rootfs(str(tmp_path / "nope"))
    with pytest.raises(PolicyError, match="not a directory"):
        container.check_rootfs(str(rootfs / "bin" / "sh"))
    with pytest.raises(PolicyError, match="host's own root"):
        container.check_rootfs("/")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PolicyError, match="empty directory"):
        container.check_rootfs(str(tmp_path / "empty"))


def test_image_root_is_the_first_step():
    root = policy_plan.MountStep("root_image", "/", "/images/x", dirs=(("work", 0o755),))
    steps = policy_plan.mount_steps(Policy(), ("/work",), root=root)
    assert steps[0] == root
    assert [s.kind for s in steps] == ["root_image", "tmpfs", "tmpfs", "dev", "bind_rw", "proc"]


def test_hidden_paths_inside_the_image(rootfs):
    (rootfs / "home" / "u" / ".ssh").mkdir(parents=True)
    os.symlink("/etc/shadow", rootfs / "home" / "u" / ".netrc")
    host_hidden = (("/home/u/ws/.env", False), ("/home/u/.aws", True))
    found = container.hidden_inside(str(rootfs), ("~/.ssh", "~/.netrc", "~/.aws", "*.pem"),
                                    ("/home/u",), ("/home/u/ws",), host_hidden)
    # The host's hidden file in the bound workspace, the image's own ~/.ssh; not the
    # host's ~/.aws (not in the sandbox) nor the image's symlink.
    assert found == (("/home/u/ws/.env", False), ("/home/u/.ssh", True))


def test_rootfs_writable_needs_a_rootfs(tmp_path):
    from nsbox.plan import prepare

    with pytest.raises(PolicyError, match="needs a rootfs"):
        prepare.compile_plan(["true"], Policy(workspace=str(tmp_path), rootfs_writable=True))
    assert Policy(rootfs="/x", rootfs_writable=True, root_inside=True).root_inside


def test_exec_options():
    parsed = exec_args.parse(["--rootfs", "/img", "--rootfs-writable", "--root-inside",
                              "--image-config", "c.json", "--", "sh"])
    assert parsed.values == {"rootfs": "/img", "rootfs_writable": True, "root_inside": True,
                             "image_config": "c.json"}
    policy = exec_args.policy_from_options({k: v for k, v in parsed.values.items()})
    assert (policy.rootfs, policy.rootfs_writable, policy.root_inside) == ("/img", True, True)


# --- the image config --------------------------------------------------------------------

def test_config_command_env_workdir_user():
    config = {"Entrypoint": ["/entry"], "Cmd": ["default"], "Env": ["PATH=/bin", "A=b=c"],
              "WorkingDir": "/srv", "User": ""}
    applied = image_config.apply(config, ())
    assert applied.argv == ("/entry", "default")
    assert applied.env == (("PATH", "/bin"), ("A", "b=c"))
    assert (applied.cwd, applied.root_inside, applied.note) == ("/srv", True, "")
    assert image_config.apply(config, ["given"]).argv == ("/entry", "given")  # Cmd replaced
    other = image_config.apply({"Cmd": ["x"], "User": "app:app"}, ())
    assert not other.root_inside and "cannot be mapped" in other.note


@pytest.mark.parametrize("config, message", [
    ({}, "neither Entrypoint nor Cmd"), ({"Cmd": "sh"}, "list of strings"),
    ({"Cmd": ["sh"], "Env": ["NOEQUALS"]}, "not NAME=value"),
    ({"Cmd": ["sh"], "WorkingDir": "rel"}, "not an absolute path"),
])
def test_config_errors(config, message):
    with pytest.raises(ValueError, match=message):
        image_config.apply(config, ())


def test_config_document_or_bare_config():
    assert image_config.config_of({"config": {"Cmd": ["a"]}}) == {"Cmd": ["a"]}
    assert image_config.config_of({"Cmd": ["a"]}) == {"Cmd": ["a"]}


# --- image import's member checks ----------------------------------------------------------

def _member(name, kind=tarfile.REGTYPE, linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


@pytest.mark.parametrize("member, message", [
    (_member("/etc/passwd"), "absolute path"),
    (_member("a/../../b"), "climbs out"),
    (_member("dev/sda", tarfile.BLKTYPE), "device node"),
    (_member("dev/null", tarfile.CHRTYPE), "device node"),
    (_member("fifo", tarfile.FIFOTYPE), "special file"),
    (_member("h", tarfile.LNKTYPE, "/etc/shadow"), "outside the layer"),
    (_member("h", tarfile.LNKTYPE, "../x"), "outside the layer"),
])
def test_hostile_members_are_refused(member, message):
    with pytest.raises(images.ImageError, match=message):
        images.check_member(member, "abc")


def test_plain_members():
    assert images.check_member(_member("./usr/bin/x"), "abc") == "usr/bin/x"
    assert images.check_member(_member("./", tarfile.DIRTYPE), "abc") is None
    assert images.check_member(_member("l", tarfile.SYMTYPE, "/etc/passwd"), "abc") == "l"


@pytest.mark.parametrize("name", ["", ".hidden", "-x", "a/b", "a b", "x" * 129])
def test_bad_image_names(name):
    with pytest.raises(images.ImageError):
        images.check_name(name)


def test_rootfs_layer_choices_and_plan_steps(tmp_path):
    with pytest.raises(PolicyError, match="rootfs_layer must be one of memory, disk"):
        Policy(rootfs="/x", rootfs_writable=True, rootfs_layer="swap")
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    policy = Policy(rootfs=str(root), rootfs_writable=True)
    memory = container.plan_root(policy, (), (), (), (), (), str(tmp_path / "state"))
    assert memory.layer is None and memory.steps[0].kind == "overlay"
    assert memory.steps[0].upper == "" and memory.steps[0].volatile
    disk = container.plan_root(policy.with_changes(rootfs_layer="disk"), (), (), (), (), (),
                               str(tmp_path / "state"))
    assert disk.steps[0].upper == disk.layer.upper
    assert disk.layer.dir.startswith(str(tmp_path / "state" / "rootfs") + "/")
    assert not os.path.exists(disk.layer.dir)  # planned, not made
