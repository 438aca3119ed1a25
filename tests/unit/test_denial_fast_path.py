"""The denial supervisor's fast path (launch/denial_watch.py): a plain path that
plan/denial_rules.certainly_allowed passes is answered at once, without an event. It
may only ever say "allowed" where classify says so for every operation."""

import pytest

from nsbox.launch.denial_watch import _plain
from nsbox.plan.denial_rules import Rules, certainly_allowed, classify

WS = "/home/u/ws"
RULES = Rules(writable=("/tmp", WS, "/dev/null"),
              protected=(f"{WS}/.git/hooks", f"{WS}/.git/config", f"{WS}/.envrc"),
              pinned=(f"{WS}/.git", f"{WS}/mnt"),
              hidden=("/home/u/.ssh", f"{WS}/.env", f"{WS}/secrets"))
OPERATIONS = ("write", "create", "delete", "rename", "chmod", "chown", "set times", "set xattr")
PATHS = [
    f"{WS}/src/main.c", f"{WS}/a.o", f"{WS}/.git/index.lock", f"{WS}/.git/objects/ab/cd",
    f"{WS}/.git/hooks", f"{WS}/.git/hooks/pre-commit", f"{WS}/.git/config",
    f"{WS}/.git/config.lock", f"{WS}/.git", f"{WS}/mnt", f"{WS}/mnt/file", f"{WS}/.env",
    f"{WS}/.env.local", f"{WS}/secrets/key", f"{WS}/.envrc", WS, "/home/u/ws2/x",
    "/home/u/.ssh/id", "/home/u/.bashrc", "/tmp/cc1.s", "/tmp", "/etc/passwd", "/",
    "/dev/null", "/dev/tty", "/proc/self/fd/1", "/sys/kernel/x", "/proc", "/devx/y",
]


@pytest.mark.parametrize("path", PATHS)
def test_it_never_allows_what_classify_stops(path):
    if certainly_allowed(RULES)(path.encode()):
        for operation in OPERATIONS:
            assert classify(operation, path, RULES) is None, (operation, path)


@pytest.mark.parametrize("path, expected", [
    (f"{WS}/src/main.c", True), (f"{WS}/.git/objects/ab/cd", True), ("/tmp/cc1.s", True),
    ("/dev/null", True), ("/proc/self/fd/1", True),
    # Stopped, or near what is: the slow path decides.
    (f"{WS}/.git/hooks/pre-commit", False), (f"{WS}/.git/hooks", False),
    (f"{WS}/.git", False), (f"{WS}/mnt", False), (f"{WS}/.env", False),
    (f"{WS}/secrets/key", False), (WS, False), ("/home/u/ws2/x", False),
    ("/etc/passwd", False), ("/", False), ("/devx/y", False),
])
def test_what_it_allows(path, expected):
    assert certainly_allowed(RULES)(path.encode()) is expected


def test_a_root_of_slash_allows_every_path_but_the_fenced():
    allowed = certainly_allowed(Rules(writable=("/",), protected=("/w/.git/hooks",)))
    assert allowed(b"/etc/x") and allowed(b"/w/a")
    assert not allowed(b"/w/.git/hooks/x")


@pytest.mark.parametrize("raw, expected", [
    (b"/home/u/ws/a.o", True), (b"a.o", True), (b"sub/dir/file.txt", True),
    (b".hidden/x", True), (b"x..y", True), (b"/a/b.", True),
    (b"../x", False), (b"./x", False), (b".", False), (b"..", False), (b"a/../b", False),
    (b"a/./b", False), (b"/a/..", False), (b"a//b", False), (b"dir/", False),
])
def test_plain_paths_have_no_dot_or_empty_component(raw, expected):
    assert _plain(raw) is expected


def test_a_session_exit_record_says_when_nothing_was_stopped():
    from nsbox.service import wire

    quiet = wire.exited_from_status(3 << 8, no_denials=True)
    plain = wire.exited_from_status(3 << 8)
    assert wire.parse_exited(quiet) == wire.parse_exited(plain) == (3, None)
    assert wire.exited_without_denials(quiet) and not wire.exited_without_denials(plain)
    assert not wire.exited_without_denials(wire.exited(1, None))
