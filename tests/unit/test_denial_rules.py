"""Denial reporting's pure half: which write the plan stops and why (plan/denial_rules.py),
the events' records and summary (policy/denials.py), and the supervisor's line format."""

import pytest

from nsbox.launch import denial_channel, denial_watch
from nsbox.plan import denial_rules
from nsbox.plan.denial_rules import OUTSIDE, Rules, classify, rules_for
from nsbox.policy import denials
from nsbox.policy.landlock_rules import PathRule, Ruleset
from nsbox.policy.netallow import Refusal
from nsbox.policy.plan import MountStep

WS = "/home/u/ws"
RULES = Rules(writable=("/tmp", WS, "/home/u/.cache/nsbox/packages", "/dev/null"),
              protected=(f"{WS}/.git/hooks", f"{WS}/.git/config", f"{WS}/.envrc"),
              pinned=(f"{WS}/.git",),
              hidden=("/home/u/.ssh", f"{WS}/.env"))


@pytest.mark.parametrize("operation, path", [
    ("write", f"{WS}/src/main.c"), ("create", f"{WS}/build"), ("delete", f"{WS}/a.o"),
    ("rename", f"{WS}/.git/index.lock"), ("write", f"{WS}/.git/objects/ab/cd"),
    ("write", "/tmp/x"), ("write", "/home/u/.cache/nsbox/packages/pip/wheel"),
    ("write", "/dev/null"), ("write", "/dev/tty"), ("write", "/dev/pts/0"),
    ("write", "/proc/self/fd/1"), ("write", "/proc/self/attr/current"), ("write", "/sys/x"),
    ("write", WS),
])
def test_allowed_work_is_no_event(operation, path):
    assert classify(operation, path, RULES) is None


@pytest.mark.parametrize("operation, path, expected", [
    ("write", "/etc/passwd", ("filesystem", OUTSIDE)),
    ("write", "/home/u/.bashrc", ("filesystem", OUTSIDE)),
    ("create", "/home/u/ws2/x", ("filesystem", OUTSIDE)),  # a sibling, not beneath
    ("write", f"{WS}/.git/hooks/pre-commit", ("filesystem", f"protected path {WS}/.git/hooks")),
    ("write", f"{WS}/.git/config", ("filesystem", f"protected path {WS}/.git/config")),
    ("delete", f"{WS}/.git", ("filesystem", f"protected path {WS}/.git")),
    ("rename", f"{WS}/.git", ("filesystem", f"protected path {WS}/.git")),
    ("write", "/home/u/.ssh/authorized_keys", ("hidden", "hidden path /home/u/.ssh")),
    ("write", f"{WS}/.env", ("hidden", f"hidden path {WS}/.env")),
])
def test_stopped_writes_name_their_rule(operation, path, expected):
    assert classify(operation, path, RULES) == expected


def test_a_writable_root_beneath_a_protected_path_wins():
    rules = Rules(writable=(WS, f"{WS}/.git/hooks/tmp"), protected=(f"{WS}/.git/hooks",))
    assert classify("write", f"{WS}/.git/hooks/tmp/x", rules) is None
    assert classify("write", f"{WS}/.git/hooks/x", rules) is not None


def test_rules_follow_landlock_grants_when_landlock_confines_the_filesystem():
    make_reg, write, read = 1 << 8, 1 << 1, 1 << 2
    ruleset = Ruleset(abi=5, handled_fs=(1 << 16) - 1, handled_net=0, scoped=0, paths=(
        PathRule("/", read), PathRule("/dev/null", read | write),
        PathRule("/tmp", make_reg | write), PathRule(WS, make_reg | write)))
    mounts = (MountStep("root_readonly", "/", "/"), MountStep("tmpfs", "/run"),
              MountStep("bind_rw", WS, WS), MountStep("pin", f"{WS}/.git", f"{WS}/.git"),
              MountStep("bind_ro", f"{WS}/.git/hooks", f"{WS}/.git/hooks"),
              MountStep("mask_dir", "/root/.ssh"))
    rules = rules_for(mounts, ruleset, (WS,))
    assert rules == Rules(writable=("/tmp", WS), protected=(f"{WS}/.git/hooks",),
                          pinned=(f"{WS}/.git",), hidden=("/root/.ssh",))
    # /run is a writable mount, but Landlock does not grant it: a write there is stopped.
    assert classify("write", "/run/x", rules) == ("filesystem", OUTSIDE)


def test_rules_follow_the_mounts_without_landlock():
    mounts = (MountStep("root_readonly", "/", "/"), MountStep("tmpfs", "/tmp"),
              MountStep("bind_rw", WS, WS))
    assert rules_for(mounts, None, (WS,)).writable == ("/tmp", WS)


def test_every_write_intent_call_is_described():
    for name, condition in denial_rules.WRITE_INTENT:
        operation, paths, _ = denial_rules.CALLS[name]
        assert operation and paths
        assert condition[0] in ("always", "flags", "nonzero", "equals")
    assert dict(denial_rules.WRITE_INTENT)["openat"] == ("flags", 2)
    # Calls on an open file are not notified; fchmod only as the session's flush mark.
    assert dict(denial_rules.WRITE_INTENT)["fchmod"] == ("equals", 1, denial_rules.FLUSH_MODE)
    assert "fchown" not in denial_rules.CALLS and "fsetxattr" not in denial_rules.CALLS
    assert denial_channel.FLUSH_MODE == denial_rules.FLUSH_MODE


def test_events_from_refusals_and_limits():
    refusal = Refusal("CONNECT", "denied.test", 443, "not in allowlist")
    assert denials.from_refusal(refusal) == denials.Denial(
        "network", "connect", "denied.test:443", "not in allowlist")
    assert denials.from_refusal(refusal.as_dict()) == denials.from_refusal(refusal)
    assert denials.from_refusal(Refusal("GET", "::1", 80, "raw IP")).target == "[::1]:80"
    hit = {"limit": "memory", "value": "512M", "reason": "OOM", "killed": True}
    assert denials.from_limit(hit) == denials.Denial("limit", "kill", "command (OOM)",
                                                     "limit memory=512M")


def test_gather_deduplicates_and_summary_names_the_first_ones():
    write = denials.Denial("filesystem", "write", "/etc/x", OUTSIDE, 2, "sh")
    found = denials.gather([Refusal("GET", "a.test", 80, "not in allowlist")], None,
                           [write, write])
    assert [d.count for d in found] == [2, 1]
    assert denials.summary_line(found) == (
        "nsbox: blocked 2 operations: write /etc/x (outside the writable roots) (2×); "
        "GET a.test:80 (not in allowlist)\n")
    assert denials.summary_line(()) == ""


def test_the_supervisor_lines_give_the_final_counts_or_what_was_seen():
    new = b'{"new": {"wall": "filesystem", "operation": "write", "target": "/etc/x", ' \
          b'"rule": "r", "pid": 2, "command": "sh", "count": 1}}\n'
    more = b'{"more": [["filesystem", "write", "/etc/x", "r", 4]]}\n'
    live = []
    collector = denial_watch.Collector(live.append)
    collector.feed(new[:30])  # a line may come in pieces
    collector.feed(new[30:] + more)
    events, dropped = collector.result()
    assert [(d.target, d.count, d.pid) for d in events] == [("/etc/x", 5, 2)] and dropped == 0
    assert len(live) == 1
    collector.feed(b'{"final": [{"wall": "filesystem", "operation": "write", "target": '
                   b'"/etc/x", "rule": "r", "pid": 2, "command": "sh", "count": 9}], '
                   b'"dropped": 3}\n')
    events, dropped = collector.result()
    assert [d.count for d in events] == [9] and dropped == 3


def _sockaddr(family: int, body: bytes) -> bytes:
    return family.to_bytes(2, "little") + body


@pytest.mark.parametrize("data, address", [
    (_sockaddr(1, b"/run/docker.sock\0junk"), ("unix", "/run/docker.sock")),
    (_sockaddr(1, b"rel.sock\0"), ("unix", "rel.sock")),
    (_sockaddr(1, b"\0abstract"), None), (_sockaddr(1, b""), None),
    (_sockaddr(2, (443).to_bytes(2, "big") + bytes([10, 0, 0, 7]) + bytes(8)),
     ("inet", "10.0.0.7", 443)),
    (_sockaddr(10, (53).to_bytes(2, "big") + bytes(4) + bytes.fromhex(
        "20010db8000000000000000000000001") + bytes(4)), ("inet", "2001:db8::1", 53)),
    (_sockaddr(10, (80).to_bytes(2, "big") + bytes(4) + bytes(10) + b"\xff\xff"
               + bytes([127, 0, 0, 1]) + bytes(4)), ("inet", "127.0.0.1", 80)),
    (_sockaddr(10, bytes(6) + bytes(15) + b"\x01" + bytes(4)), ("inet", "::1", 0)),
    (_sockaddr(10, bytes(6) + bytes.fromhex("00010000000000020000000000000003") + bytes(4)),
     ("inet", "1:0:0:2::3", 0)),
    (_sockaddr(2, b"\0"), None), (b"\x01", None), (_sockaddr(16, bytes(12)), None),
])
def test_socket_addresses_as_the_supervisor_reads_them(data, address):
    assert denial_rules.socket_address(data) == address


def test_connects_that_cannot_reach_what_they_name():
    full = Rules(network="none", private_run=True)
    absent, present = (lambda path: False), (lambda path: True)
    verdict = denial_rules.classify_connect
    assert verdict(("unix", "/run/./docker.sock"), full, absent) == (
        "hidden", "/run/docker.sock", denials.NOT_IN_PRIVATE_RUN)
    assert verdict(("unix", "/run/docker.sock"), full, present) is None  # bound inside
    assert verdict(("unix", "/tmp/x.sock"), full, absent) is None
    assert verdict(("unix", "/run/docker.sock"), Rules(), absent) is None  # the host's /run
    for probe in ("/var/run/nscd/socket", "/run/nscd/socket",
                  "/run/systemd/userdb/io.systemd.Multiplexer",
                  "/run/systemd/resolve/io.systemd.Resolve"):
        assert verdict(("unix", probe), full, absent) is None  # a name service's
    assert verdict(("unix", "/run/systemd/private"), full, absent)[0] == "hidden"
    assert verdict(("inet", "10.0.0.7", 443), full, absent) == (
        "network", "10.0.0.7:443", denials.NETWORK_CLOSED)
    assert verdict(("inet", "2001:db8::1", 443), full, absent)[1] == "[2001:db8::1]:443"
    for local in ("127.0.0.1", "127.1.2.3", "::1", "0.0.0.0", "::"):
        assert verdict(("inet", local, 80), full, absent) is None
    proxied = Rules(network="allowlist", private_run=True)
    assert verdict(("inet", "10.0.0.7", 443), proxied, absent)[2] == denials.DIRECT
    assert verdict(("inet", "10.0.0.7", 443), Rules(network="host"), absent) is None
