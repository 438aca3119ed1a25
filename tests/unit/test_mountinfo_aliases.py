"""Finding other mounts of a hidden path in a recorded /proc/self/mountinfo (no mounts made)."""

from nsbox.kernel import mount_aliases, mountinfo

# A host with its root disk (254:0) mounted again in several ways, and ~/.ssh of
# /home/me visible through some of them.
RECORDED = b"""\
22 27 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:5 - proc proc rw
24 27 0:6 / /dev rw,nosuid,relatime shared:2 - devtmpfs udev rw,size=4015780k,mode=755
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
60 27 254:0 /home/me /var/tmp/alias rw,relatime shared:1 - ext4 /dev/vda rw,discard
61 27 254:0 /home/me/.ssh /srv/keys ro,relatime shared:1 - ext4 /dev/vda rw,discard
62 27 254:0 /home/me/.ssh/sub /srv/sub rw,relatime shared:1 - ext4 /dev/vda rw,discard
63 27 254:0 /home/other /mnt/other rw,relatime shared:1 - ext4 /dev/vda rw,discard
64 27 254:0 / /mnt/disk rw,relatime shared:1 - ext4 /dev/vda rw,discard
65 27 0:50 / /home/me/.cache rw,nosuid,nodev,relatime - tmpfs tmpfs rw,size=1024k
66 27 254:0 /home/me/my\\040files /mnt/with\\040space rw,relatime - ext4 /dev/vda rw
67 27 254:0 /home/me/.ssh\\040old /mnt/old rw,relatime - ext4 /dev/vda rw
68 60 0:51 / /var/tmp/alias/.aws rw,relatime - tmpfs tmpfs rw
69 60 0:52 / /mnt/fake rw,relatime - tmpfs 0:51 rw
"""


def mount(mount_id: int) -> mountinfo.Mount:
    return mountinfo.by_id(RECORDED, mount_id)


def aliases(path: str, on: int) -> list:
    return sorted(alias[:3] for alias in mount_aliases.aliases(RECORDED, [(path, mount(on))]))


def test_lines_parse_into_mounts_with_their_root_and_device():
    alias = mount(60)
    assert (alias.mount_point, alias.root, alias.dev, alias.fstype) == (
        "/var/tmp/alias", "/home/me", "254:0", "ext4")
    spaced = mount(66)
    assert (spaced.mount_point, spaced.root) == ("/mnt/with space", "/home/me/my files")
    assert mount(99) is None


def test_counting_mounts_of_a_device_needs_no_parsing():
    assert mountinfo.mounts_of_device(RECORDED, "254:0") == 8
    assert mountinfo.mounts_of_device(RECORDED, "0:50") == 1
    assert mountinfo.mounts_of_device(RECORDED, "0:5") == 0
    # A source field that reads like a device only ever adds to the count (never hides one).
    assert mountinfo.mounts_of_device(RECORDED, "0:51") == 2


def test_every_other_mount_that_shows_the_hidden_directory_is_found():
    assert aliases("/home/me/.ssh", on=27) == [
        ("/mnt/disk/home/me/.ssh", 64, False),  # the whole disk mounted again
        ("/srv/keys", 61, False),  # .ssh itself bound elsewhere
        ("/srv/sub", 62, True),  # a part of .ssh: the whole mount is hidden
        ("/var/tmp/alias/.ssh", 60, False),  # the home directory bound at a second path
    ]


def test_aliases_are_found_from_a_path_on_a_bind_mount_too():
    """The same question asked about the path under /var/tmp/alias: its location on
    the disk comes from the mount's root, and the original path is an alias of it."""
    found = aliases("/var/tmp/alias/.ssh", on=60)
    assert ("/home/me/.ssh", 27, False) in found and ("/srv/keys", 61, False) in found
    assert [a for a in found if a[1] == 60] == []  # not itself


def test_unrelated_mounts_and_look_alike_names_are_not_aliases():
    assert not [a for a in aliases("/home/me/.ssh", on=27) if a[1] in (63, 66, 67)]
    # A file: only mounts whose root holds it (or is it).
    assert aliases("/home/me/.netrc", on=27) == [("/mnt/disk/home/me/.netrc", 64, False),
                                                  ("/var/tmp/alias/.netrc", 60, False)]
    # A name with a space is matched as mountinfo escapes it.
    assert aliases("/home/me/my files/a", on=27) == [
        ("/mnt/disk/home/me/my files/a", 64, False), ("/mnt/with space/a", 66, False),
        ("/var/tmp/alias/my files/a", 60, False)]


def test_a_path_on_its_own_filesystem_has_aliases_only_there():
    assert aliases("/home/me/.cache/x", on=65) == []
    # The 0:51 in mount 69's source field is no device of its.
    assert aliases("/var/tmp/alias/.aws/x", on=68) == []


def test_several_paths_are_answered_in_one_pass():
    found = mount_aliases.aliases(RECORDED, [("/home/me/.ssh", mount(27)),
                                             ("/home/other/x", mount(27))])
    assert ("/mnt/other/x", 63, False, "/home/other/x") in found
    assert ("/srv/keys", 61, False, "/home/me/.ssh") in found
