"""seccomp profile parsing and checking: pure, no root, no libseccomp."""

import json
import os
import random

import pytest

from nsbox.policy import seccomp_profile as sp
from nsbox.policy.seccomp_profile import ArgCheck, ProfileError, Rule

PROFILES = os.path.join(os.path.dirname(__file__), "..", "..", "seccomp_profiles")
MASK64 = (1 << 64) - 1


def shipped(name: str) -> sp.Profile:
    with open(os.path.join(PROFILES, name + ".json")) as f:
        return sp.parse(f.read(), name, "x86_64", (6, 1))


def denies(profile: sp.Profile, name: str, *args: int) -> int | None:
    """Evaluate the profile as the kernel would: the errno for this call, None if allowed."""
    values = list(args) + [0] * (6 - len(args))
    for rule in profile.rules:
        if name in rule.names and all(_holds(c, values[c.index]) for c in rule.args):
            if rule.action == "SCMP_ACT_ERRNO":
                return profile.errno_for(rule)
    return None


def _holds(check: ArgCheck, arg: int) -> bool:
    arg &= MASK64
    if check.op == "SCMP_CMP_MASKED_EQ":
        return arg & check.value == check.value_two
    return {"SCMP_CMP_NE": arg != check.value, "SCMP_CMP_LT": arg < check.value,
            "SCMP_CMP_LE": arg <= check.value, "SCMP_CMP_EQ": arg == check.value,
            "SCMP_CMP_GE": arg >= check.value, "SCMP_CMP_GT": arg > check.value}[check.op]


# --- the shipped profiles -----------------------------------------------------------------

DENIED_OUTRIGHT = (
    "mount", "umount2", "pivot_root", "move_mount", "fsopen", "fsmount", "fsconfig", "fspick",
    "open_tree", "mount_setattr", "setns", "unshare", "keyctl", "add_key", "request_key", "bpf",
    "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot",
    "swapon", "swapoff", "acct", "quotactl", "open_by_handle_at", "name_to_handle_at",
    "clock_settime", "settimeofday", "adjtimex", "syslog", "vhangup")


@pytest.mark.parametrize("name", ["default", "strict"])
def test_shipped_profile_denies_with_eperm_and_never_kills(name):
    profile = shipped(name)
    assert profile.default_action == "SCMP_ACT_ALLOW"
    assert profile.comment
    for call in DENIED_OUTRIGHT:
        assert denies(profile, call) == sp.EPERM, call
    assert {r.action for r in profile.rules} == {"SCMP_ACT_ERRNO"}
    assert denies(profile, "clone3") == sp.ENOSYS
    assert denies(profile, "read") is None and denies(profile, "execve") is None


@pytest.mark.parametrize("name", ["default", "strict"])
def test_clone_denied_only_with_namespace_flags(name):
    profile = shipped(name)
    sigchld = 17
    assert denies(profile, "clone", sigchld) is None
    assert denies(profile, "clone", 0x003D0F00) is None  # pthread_create's flags
    for flag in (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000,
                 0x40000000):
        assert denies(profile, "clone", flag | sigchld) == sp.EPERM, hex(flag)


def test_personality_only_default_and_query_allowed():
    profile = shipped("default")
    assert denies(profile, "personality", 0) is None
    assert denies(profile, "personality", 0xFFFFFFFF) is None
    samples = [1 << i for i in range(32)] + [0x0008, 0x0040000, 0x0400000, 0xFFFFFFFE, 0x7FFFFFFF]
    samples += random.Random(7).sample(range(1, 0xFFFFFFFF), 200)
    for persona in samples:
        assert denies(profile, "personality", persona) == sp.EPERM, hex(persona)


def test_terminal_injection_ioctls_compare_low_32_bits():
    profile = shipped("default")
    for request in (0x5412, 0x541C, 0xABCD_0000_5412, 0xFFFFFFFF_0000541C):
        assert denies(profile, "ioctl", 0, request) == sp.EPERM, hex(request)
    assert denies(profile, "ioctl", 0, 0x5413) is None  # TIOCGWINSZ


def test_socket_families():
    default, strict = shipped("default"), shipped("strict")
    allowed_default = {1, 2, 10, 16}
    for family in range(0, 64):
        expected = None if family in allowed_default else sp.EPERM
        assert denies(default, "socket", family) == expected, family
        expected = None if family in {1, 2, 10} else sp.EPERM
        assert denies(strict, "socket", family) == expected, family
    # The kernel truncates to int: high bits must not smuggle a family through.
    assert denies(default, "socket", (1 << 32) | 17) == sp.EPERM
    assert denies(default, "socket", -1) == sp.EPERM


def test_network_off_rules_deny_inet_families_by_low_32_bits():
    profile = shipped("default").with_rules(sp.network_off_rules())
    assert denies(profile, "socket", 2) == sp.EPERM
    assert denies(profile, "socket", 10) == sp.EPERM
    assert denies(profile, "socket", (1 << 32) | 2) == sp.EPERM
    assert denies(profile, "socket", 1) is None and denies(profile, "socket", 16) is None


def test_strict_denies_more_than_default():
    default, strict = shipped("default"), shipped("strict")
    for call in ("ptrace", "kcmp", "sethostname"):
        assert denies(default, call) is None
        assert denies(strict, call) == sp.EPERM


@pytest.mark.parametrize("name", ["default", "strict"])
def test_no_profile_lets_a_command_take_another_process_memory_or_fds(name):
    # The runner's helpers are out of ptrace's reach anyway; these need no ptrace at all.
    profile = shipped(name)
    for call in ("pidfd_getfd", "process_vm_readv", "process_vm_writev"):
        assert denies(profile, call) == sp.EPERM, call
    assert denies(profile, "pidfd_open") is None and denies(profile, "kill") is None


# --- the OCI / Docker shape --------------------------------------------------------------

def parse(doc, **kw) -> sp.Profile:
    return sp.parse(json.dumps(doc, indent=1), "p.json", kw.get("arch", "x86_64"),
                    kw.get("kernel", (6, 1)))


def test_several_args_in_one_entry_are_anded_into_one_rule():
    p = parse({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["socket"], "action": "SCMP_ACT_ERRNO",
         "args": [{"index": 0, "value": 2, "op": "SCMP_CMP_EQ"},
                  {"index": 1, "value": 3, "op": "SCMP_CMP_EQ"}]}]})
    assert len(p.rules) == 1 and len(p.rules[0].args) == 2
    assert denies(p, "socket", 2, 3) == sp.EPERM
    assert denies(p, "socket", 2, 1) is None


def test_two_checks_of_one_argument_become_separate_rules():
    p = parse({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["socket"], "action": "SCMP_ACT_ERRNO",
         "args": [{"index": 0, "value": 2, "op": "SCMP_CMP_EQ"},
                  {"index": 0, "value": 10, "op": "SCMP_CMP_EQ"},
                  {"index": 1, "value": 3, "op": "SCMP_CMP_EQ"}]}]})
    assert [[(a.index, a.value) for a in r.args] for r in p.rules] == [
        [(1, 3), (0, 2)], [(1, 3), (0, 10)]]


def test_errno_defaults():
    p = parse({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38, "syscalls": [
        {"names": ["a"], "action": "SCMP_ACT_ERRNO"},
        {"names": ["b"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]})
    assert [p.errno_for(r) for r in p.rules] == [38, 13]
    q = parse({"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["a"], "action": "SCMP_ACT_ERRNO"}]})
    assert q.errno_for(q.rules[0]) == sp.EPERM


def test_docker_extras_are_resolved():
    doc = {
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
        "archMap": [{"architecture": "SCMP_ARCH_X86_64",
                     "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]}],
        "syscalls": [
            {"names": ["read"], "action": "SCMP_ACT_ALLOW", "comment": "always"},
            {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW",
             "includes": {"arches": ["amd64", "x32"]}},
            {"names": ["s390_pci_mmio_read"], "action": "SCMP_ACT_ALLOW",
             "includes": {"arches": ["s390x"]}},
            {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["future_call"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "9.0"}},
            {"names": ["old_call"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4.8"}},
            {"names": ["not_here"], "action": "SCMP_ACT_ALLOW", "excludes": {"arches": ["amd64"]}},
        ]}
    names = sp.syscall_names(parse(doc))
    assert names == ("read", "arch_prctl", "clone", "old_call")
    assert "arch_prctl" not in sp.syscall_names(parse(doc, arch="aarch64"))


# --- errors, with line numbers -----------------------------------------------------------

def problems(text: str) -> list:
    with pytest.raises(ProfileError) as info:
        sp.parse(text, "p.json")
    return info.value.problems


def test_malformed_json_names_the_line():
    text = '{\n  "defaultAction": "SCMP_ACT_ALLOW",\n  "syscalls": [\n    {"names": ["a"] "action": 1}\n  ]\n}\n'
    [(line, message)] = problems(text)
    assert line == 4 and "malformed JSON" in message


def test_unknown_action_op_and_keys_are_reported_with_lines():
    text = ('{\n "defaultAction": "SCMP_ACT_ALLOW",\n "syscalls": [\n'
            '  {"names": ["a"], "action": "SCMP_ACT_DENY"},\n'
            '  {"names": ["b"], "action": "SCMP_ACT_ERRNO",\n'
            '   "args": [\n    {"index": 0, "value": 1, "op": "SCMP_CMP_ISH"}]},\n'
            '  {"names": ["c"], "action": "SCMP_ACT_ERRNO", "bogus": 1},\n'
            '  {"names": ["d"], "action": "SCMP_ACT_NOTIFY"},\n'
            '  {"names": [], "action": "SCMP_ACT_ERRNO"},\n'
            '  {"names": ["e"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 6, "op": "SCMP_CMP_EQ"}]}\n'
            ' ]\n}\n')
    found = problems(text)
    lines = {line for line, _ in found}
    text_of = " | ".join(m for _, m in found)
    assert (4, "unknown action 'SCMP_ACT_DENY'") in [(ln, m.split(";")[0]) for ln, m in found]
    assert 7 in lines and "unknown op 'SCMP_CMP_ISH'" in text_of
    assert 8 in lines and "unknown key 'bogus'" in text_of
    assert 9 in lines and "SCMP_ACT_NOTIFY" in text_of
    assert 10 in lines and "non-empty list" in text_of
    assert 11 in lines and "index must be 0..5" in text_of


def test_profile_error_message_has_file_and_line():
    with pytest.raises(ProfileError) as info:
        sp.parse('{"syscalls": []}', "/x/p.json")
    assert str(info.value) == "/x/p.json:1: defaultAction is missing"


def test_unknown_architecture_and_bad_values():
    found = problems(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_Z80"],
                                 "defaultErrnoRet": -1,
                                 "syscalls": [{"names": ["a"], "action": "SCMP_ACT_ERRNO", "args": [
                                     {"index": 0, "value": 1 << 64, "op": "SCMP_CMP_EQ"}]}]}))
    text = " | ".join(m for _, m in found)
    assert "SCMP_ARCH_Z80" in text and "defaultErrnoRet" in text and "2^64" in text


def test_name_line_points_at_the_name():
    text = '{\n "defaultAction": "SCMP_ACT_ALLOW",\n "syscalls": [\n  {"names": ["read",\n    "mountt"],\n   "action": "SCMP_ACT_ERRNO"}\n ]\n}\n'
    profile = sp.parse(text, "p.json")
    assert sp.name_line(text, profile.rules[0], "mountt") == 5
    assert isinstance(profile.rules[0], Rule)
