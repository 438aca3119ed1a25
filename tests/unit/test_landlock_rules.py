"""Policy -> Landlock ruleset: pure data, no kernel."""

from nsbox.policy import landlock_rules as ll
from nsbox.policy.landlock_rules import PathRule

ALL_ABI7 = (1 << 16) - 1  # every filesystem right up to IOCTL_DEV


def test_rights_grow_with_the_abi():
    assert ll.fs_rights(1) == (1 << 13) - 1
    assert ll.fs_rights(2) & ll.FS_REFER and not ll.fs_rights(2) & ll.FS_TRUNCATE
    assert ll.fs_rights(4) == ll.fs_rights(3) | 0  # ABI 4 adds network rights only
    assert ll.fs_rights(7) == ALL_ABI7
    assert ll.fs_rights(9) == ALL_ABI7 | ll.FS_RESOLVE_UNIX
    assert ll.net_rights(3) == 0 and ll.net_rights(4) == ll.NET_BIND_TCP | ll.NET_CONNECT_TCP
    assert ll.scopes(5) == 0 and ll.scopes(6) == ll.SCOPE_SIGNAL | ll.SCOPE_ABSTRACT_UNIX_SOCKET


def test_no_landlock_means_no_ruleset():
    assert ll.build(0, writable=("/ws",)) is None


def test_default_ruleset_reads_everywhere_and_writes_only_where_allowed():
    rs = ll.build(7, writable=("/ws",), tmp=("/tmp", "/dev/shm"), network="none",
                  devices=("/dev/null", "/dev/pts"))
    assert rs.handled_fs == ALL_ABI7
    assert rs.handled_net == ll.NET_BIND_TCP | ll.NET_CONNECT_TCP
    assert rs.scoped == ll.SCOPE_SIGNAL | ll.SCOPE_ABSTRACT_UNIX_SOCKET
    assert rs.paths == (
        PathRule("/", ll.READ),
        PathRule("/dev/null", ll.READ | ll.DEVICE_RIGHTS),
        PathRule("/dev/pts", ll.READ | ll.DEVICE_RIGHTS),
        PathRule("/ws", ALL_ABI7),
        PathRule("/tmp", ALL_ABI7),
        PathRule("/dev/shm", ALL_ABI7),
    )
    assert rs.file_access == ll.FILE_RIGHTS & ALL_ABI7


def test_rights_the_kernel_lacks_are_never_asked_for():
    rs = ll.build(1, writable=("/ws",), network="none", devices=("/dev/null",))
    assert rs.handled_fs == ll.fs_rights(1)
    assert rs.handled_net == 0 and rs.scoped == 0
    assert all(rule.access & ~rs.handled_fs == 0 for rule in rs.paths)


def test_host_network_and_private_net_namespace_leave_tcp_alone():
    assert ll.build(7, network="host").handled_net == 0
    assert ll.build(7, network="none", net_namespace=True).handled_net == 0


def test_full_access_confines_no_files_but_keeps_scopes():
    rs = ll.build(7, writable=("/ws",), network="host", confine_fs=False)
    assert rs.handled_fs == 0 and rs.paths == ()
    assert rs.scoped
    assert ll.build(5, network="host", confine_fs=False) is None


def test_hidden_path_is_left_out_by_granting_its_siblings():
    listings = {"/": ("home", "usr"), "/home": ("u", "v"), "/home/u": (".ssh", "src", ".bashrc")}
    hidden = ("/home/u/.ssh/",)
    assert ll.dirs_to_list((), hidden) == ("/home/u", "/home", "/")
    rs = ll.build(7, hidden=hidden, listings=listings, devices=())
    assert rs.paths == (
        PathRule("/home/u/.bashrc", ll.READ),
        PathRule("/home/u/src", ll.READ),
        PathRule("/home/v", ll.READ),
        PathRule("/usr", ll.READ),
    )


def test_hidden_parents_can_stay_listable_but_not_readable():
    listings = {"/": ("home",), "/home": ("u",), "/home/u": (".ssh",)}
    rs = ll.build(7, hidden=("/home/u/.ssh",), listings=listings, devices=(),
                  list_hidden_parents=True)
    assert set(rs.paths) == {PathRule(d, ll.FS_READ_DIR) for d in ("/", "/home", "/home/u")}


def test_hidden_path_inside_a_writable_root_is_cut_out_of_it_too():
    listings = {"/": ("ws",), "/ws": ("src", ".env")}
    hidden = ("/ws/.env",)
    assert ll.dirs_to_list(("/ws",), hidden) == ("/ws", "/")
    rs = ll.build(7, writable=("/ws",), hidden=hidden, listings=listings, devices=())
    assert PathRule("/ws/src", ALL_ABI7) in rs.paths
    assert not [r for r in rs.paths if r.path in ("/ws", "/ws/.env")]


def test_explicit_writable_root_wins_over_a_hidden_ancestor():
    listings = {"/": ("home",), "/home": ("u",)}
    rs = ll.build(7, writable=("/home/u/ws",), hidden=("/home/u",), listings=listings,
                  devices=())
    assert PathRule("/home/u/ws", ALL_ABI7) in rs.paths
    assert not [r for r in rs.paths if r.path == "/home/u"]


def test_an_unlisted_directory_grants_nothing_beneath_it():
    rs = ll.build(7, hidden=("/home/u/.ssh",), listings={}, devices=())
    assert rs.paths == ()
