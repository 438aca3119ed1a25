"""The compiled BPF program, run through a small classic-BPF interpreter (no kernel needed).

This shows what the kernel would decide even where the kernel lacks an entry point
(e.g. x32 is often compiled out), so a bypass through it can't hide.
"""

import errno
import os
import platform
import struct

import pytest

pytest.importorskip("pyseccomp")

from nsbox.policy import profiles  # noqa: E402

from nsbox.plan import profile_compiler

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64", reason="x86_64 numbers")

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
X32_BIT = 0x40000000
ALLOW = 0x7FFF0000
ERRNO = 0x00050000


def compiled(name="default", network_off=True) -> bytes:
    path = profiles.find(name)
    return profile_compiler.compile_profile(profiles.read(path), path, network_off)


def run_bpf(program: bytes, nr: int, arch: int = AUDIT_ARCH_X86_64, args=()) -> int:
    """Evaluate a seccomp filter on struct seccomp_data; returns the SECCOMP_RET_* value."""
    values = list(args) + [0] * (6 - len(args))
    data = struct.pack("<iIQ6Q", nr, arch, 0, *[v & (2**64 - 1) for v in values])
    insns = [struct.unpack("<HBBI", program[i:i + 8]) for i in range(0, len(program), 8)]
    acc, x, pc, scratch = 0, 0, 0, [0] * 16
    while True:
        code, jt, jf, k = insns[pc]
        pc += 1
        if code == 0x20:  # ld [k]
            acc = struct.unpack_from("<I", data, k)[0]
        elif code == 0x00:  # ld #k
            acc = k
        elif code == 0x60:  # ld M[k]
            acc = scratch[k]
        elif code == 0x02:  # st M[k]
            scratch[k] = acc
        elif code == 0x54:  # and #k
            acc &= k
        elif code in (0x15, 0x25, 0x35, 0x45):  # jeq, jgt, jge, jset #k
            taken = {0x15: acc == k, 0x25: acc > k, 0x35: acc >= k, 0x45: bool(acc & k)}[code]
            pc += jt if taken else jf
        elif code == 0x05:  # ja
            pc += k
        elif code == 0x06:  # ret #k
            return k
        else:
            raise AssertionError(f"instruction {code:#x} not modelled")


def test_compat_entry_points_get_enosys():
    program = compiled()
    assert run_bpf(program, 39) == ALLOW  # getpid
    assert run_bpf(program, X32_BIT | 39) == ERRNO | errno.ENOSYS  # x32 getpid
    assert run_bpf(program, X32_BIT | 272, args=[0x10000000]) == ERRNO | errno.ENOSYS
    assert run_bpf(program, 20, arch=AUDIT_ARCH_I386) == ERRNO | errno.ENOSYS  # int 0x80
    assert run_bpf(program, 310, arch=AUDIT_ARCH_I386) == ERRNO | errno.ENOSYS  # i386 unshare


def test_denials_in_the_program():
    program = compiled()
    assert run_bpf(program, 272, args=[0]) == ERRNO | errno.EPERM  # unshare
    assert run_bpf(program, 435) == ERRNO | errno.ENOSYS  # clone3
    assert run_bpf(program, 56, args=[17]) == ALLOW  # clone(SIGCHLD)
    assert run_bpf(program, 56, args=[0x10000000 | 17]) == ERRNO | errno.EPERM
    assert run_bpf(program, 16, args=[0, 0x5412]) == ERRNO | errno.EPERM  # ioctl TIOCSTI
    assert run_bpf(program, 16, args=[0, (7 << 32) | 0x5412]) == ERRNO | errno.EPERM
    assert run_bpf(program, 16, args=[0, 0x5413]) == ALLOW
    assert run_bpf(program, 135, args=[0xFFFFFFFF]) == ALLOW  # personality query
    assert run_bpf(program, 135, args=[8]) == ERRNO | errno.EPERM


def test_network_rule_is_appended_only_when_network_is_off():
    off, on = compiled(network_off=True), compiled(network_off=False)
    for family, expect_off in ((1, ALLOW), (2, ERRNO | errno.EPERM), (10, ERRNO | errno.EPERM),
                               (16, ALLOW), (17, ERRNO | errno.EPERM)):
        assert run_bpf(off, 41, args=[family, 1]) == expect_off, family
    assert run_bpf(on, 41, args=[2, 1]) == ALLOW
    assert run_bpf(on, 41, args=[17, 1]) == ERRNO | errno.EPERM


def test_compile_is_deterministic():
    assert compiled() == compiled()
    assert os.path.basename(profiles.find("strict")) == "strict.json"
