"""Compile a parsed seccomp profile to a BPF program with libseccomp (pyseccomp).

Imported only when the on-disk cache misses: loading libseccomp costs start-up time.
The profile is duck-typed (see nsbox.policy.seccomp_profile): this layer does not
import the policy layer.
"""

import errno
import tempfile

import pyseccomp

_OPS = {
    "SCMP_CMP_NE": pyseccomp.NE, "SCMP_CMP_LT": pyseccomp.LT, "SCMP_CMP_LE": pyseccomp.LE,
    "SCMP_CMP_EQ": pyseccomp.EQ, "SCMP_CMP_GE": pyseccomp.GE, "SCMP_CMP_GT": pyseccomp.GT,
    "SCMP_CMP_MASKED_EQ": pyseccomp.MASKED_EQ,
}
_NR_SCMP_ERROR = -1
# Compat entry points return ENOSYS, as on a kernel without them. A filter for
# x86_64 alone checks the audit arch (32-bit int 0x80 reports AUDIT_ARCH_I386) and,
# since x32 shares x86_64's audit arch, sends syscall numbers with the x32 bit
# (0x40000000) to this action too.
_BAD_ARCH_ACTION = pyseccomp.ERRNO(errno.ENOSYS)


def unknown_syscalls(names) -> list:
    """Names libseccomp knows on no architecture (typos). Other arches' names are fine."""
    return [n for n in names
            if pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, n) == _NR_SCMP_ERROR]


def compile_bpf(profile, report=None):
    """The profile as a native-architecture-only BPF program, ready for seccomp(2).

    report: the reporting variant, for a supervisor holding the filter's listener:
    ((syscall name, condition), ...) of the write-intent calls to notify, a condition
    being ("always",), ("flags", index of open flags: any write flag set), ("nonzero",
    index) or ("equals", index, value), and every call the profile denies with one errno (not ENOSYS: that one means
    "fall back", as for clone3) is notified instead of failed. Returns (program,
    {number: (name, errno)}) then: errno 0 marks a write-intent call, to be continued.
    """
    if report is None:
        return _compile(profile, None)
    table = {}
    return _compile(profile, (report, table)), table


_WRITE_FLAGS = (0o1, 0o2, 0o100, 0o1000)  # O_WRONLY, O_RDWR, O_CREAT, O_TRUNC


def _reportable(profile, write_names) -> dict:
    """name -> errno for the calls whose every denying rule returns the same errno."""
    errnos, other = {}, set()
    for rule in profile.rules:
        if rule.action == "SCMP_ACT_ALLOW":
            continue
        for name in rule.names:
            if rule.action == "SCMP_ACT_ERRNO":
                errnos.setdefault(name, set()).add(profile.errno_for(rule))
            else:
                other.add(name)
    return {name: next(iter(found)) for name, found in errnos.items()
            if len(found) == 1 and errno.ENOSYS not in found and name not in other
            and name not in write_names}


def _compile(profile, report) -> bytes:
    default_errno = profile.default_errno_ret
    default = _action(profile.default_action,
                      errno.EPERM if default_errno is None else default_errno)
    sfilter = pyseccomp.SyscallFilter(default)
    sfilter.set_attr(pyseccomp.Attr.ACT_BADARCH, _BAD_ARCH_ACTION)
    # nsbox sets no_new_privs itself, in the launch sequence.
    sfilter.set_attr(pyseccomp.Attr.CTL_NNP, 0)
    try:
        sfilter.set_attr(pyseccomp.Attr.CTL_OPTIMIZE, 2)  # binary tree: libseccomp >= 2.5
    except OSError:
        pass
    reportable, table = {}, None
    if report is not None:
        write_intent, table = report
        reportable = _reportable(profile, {name for name, _ in write_intent})
        if profile.default_action == "SCMP_ACT_ALLOW":
            _notify_write_intent(sfilter, profile, write_intent, table)
    for rule in profile.rules:
        action = _action(rule.action, profile.errno_for(rule))
        if action == default:
            continue  # libseccomp refuses rules that repeat the default
        checks = [pyseccomp.Arg(a.index, _OPS[a.op], *_operands(a)) for a in rule.args]
        for name in rule.names:
            number = pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name)
            if number == _NR_SCMP_ERROR:
                raise ValueError(f"unknown syscall {name!r}")
            rule_action = action
            if name in reportable and rule.action == "SCMP_ACT_ERRNO":
                rule_action = pyseccomp.NOTIFY
                table[number] = (name, reportable[name])
            try:
                sfilter.add_rule(rule_action, number, *checks)
            except OSError as err:
                raise ValueError(f"libseccomp rejected the rule for {name!r} "
                                 f"(line {rule.line}): {err.strerror}") from None
    with tempfile.TemporaryFile() as out:
        sfilter.export_bpf(out)
        out.seek(0)
        return out.read()


def _notify_write_intent(sfilter, profile, write_intent, table: dict) -> None:
    """Notify the write-intent calls the profile leaves allowed (opens only with a write
    flag set: any of them, as separate rules ORed together)."""
    touched = {name for rule in profile.rules if rule.action != "SCMP_ACT_ALLOW"
               for name in rule.names}
    for name, condition in write_intent:
        number = pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name)
        if number == _NR_SCMP_ERROR or name in touched:
            continue  # not on this architecture, or the profile decides it
        kind = condition[0]
        if kind == "always":
            sfilter.add_rule(pyseccomp.NOTIFY, number)
        elif kind == "flags":
            for bit in _WRITE_FLAGS:
                sfilter.add_rule(pyseccomp.NOTIFY, number,
                                 pyseccomp.Arg(condition[1], pyseccomp.MASKED_EQ, bit, bit))
        elif kind == "nonzero":
            sfilter.add_rule(pyseccomp.NOTIFY, number, pyseccomp.Arg(condition[1], pyseccomp.NE, 0))
        elif kind == "equals":
            sfilter.add_rule(pyseccomp.NOTIFY, number,
                             pyseccomp.Arg(condition[1], pyseccomp.EQ, condition[2]))
        else:
            raise ValueError(f"unknown notification condition {condition!r}")
        table[number] = (name, 0)


def _operands(check) -> tuple:
    if check.op == "SCMP_CMP_MASKED_EQ":
        return check.value, check.value_two  # mask, expected
    return check.value, 0


def _action(name: str, errno_ret: int) -> int:
    if name == "SCMP_ACT_ALLOW":
        return pyseccomp.ALLOW
    if name == "SCMP_ACT_ERRNO":
        return pyseccomp.ERRNO(errno_ret)
    if name == "SCMP_ACT_TRACE":
        return pyseccomp.TRACE(errno_ret)
    if name in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD"):
        return pyseccomp.KILL_THREAD
    if name == "SCMP_ACT_KILL_PROCESS":
        return pyseccomp.KILL_PROCESS
    if name == "SCMP_ACT_TRAP":
        return pyseccomp.TRAP
    if name == "SCMP_ACT_LOG":
        return pyseccomp.LOG
    raise ValueError(f"unsupported action {name!r}")
