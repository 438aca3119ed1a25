"""Parse, check and compile a seccomp profile to BPF: what nsbox.plan.seccomp_filter
does on a cache miss, and what `nsbox profiles` uses to check a profile.
"""

import os

from nsbox.errors import UnsupportedKernel


def load_profile(data: bytes, source: str, network_off: bool = False):
    """Parse and check a profile fully, unknown syscall names included."""
    from nsbox.policy import seccomp_profile  # JSON parsing: only on a cache miss

    try:
        text = data.decode()
    except UnicodeDecodeError as err:
        raise seccomp_profile.ProfileError(source, [(1, f"not UTF-8 text: {err.reason}")]) from None
    profile = seccomp_profile.parse(text, source, os.uname().machine, kernel_version())
    if network_off:
        profile = profile.with_rules(seccomp_profile.network_off_rules())
    compiler = _compiler()
    problems = []
    for rule in profile.rules:
        for name in compiler.unknown_syscalls(rule.names):
            problems.append((seccomp_profile.name_line(text, rule, name),
                             f"unknown syscall {name!r}"))
    if problems:
        raise seccomp_profile.ProfileError(source, sorted(set(problems)))
    return profile


def compile_profile(data: bytes, source: str, network_off: bool, report=None):
    from nsbox.policy import seccomp_profile

    profile = load_profile(data, source, network_off)
    try:
        return _compiler().compile_bpf(profile, report)
    except (ValueError, OSError) as err:
        raise seccomp_profile.ProfileError(source, [(0, str(err))]) from None


def _compiler():
    try:
        from nsbox.kernel import seccomp_compile
    except (ImportError, RuntimeError, OSError) as err:
        raise UnsupportedKernel(
            f"cannot compile the seccomp profile: libseccomp is unavailable ({err}). "
            "Fix: install libseccomp2 (Debian/Ubuntu) or libseccomp (Fedora)") from None
    return seccomp_compile


def kernel_version() -> tuple:
    release = os.uname().release.split("-")[0].split(".")
    try:
        return tuple(int(p) for p in release[:2])
    except ValueError:
        return (0, 0)
