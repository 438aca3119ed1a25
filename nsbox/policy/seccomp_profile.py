"""seccomp profiles in the OCI runtime-spec / Docker JSON shape: parse, check, resolve.

Pure: takes the file's text and facts about the host (native architecture,
kernel version) as arguments; reads nothing itself.

Semantics, as runc applies them:
- several `args` in one entry are ANDed into one rule;
- two comparisons on the same index cannot be ANDed by libseccomp, so they
  become separate rules (ORed);
- for SCMP_CMP_MASKED_EQ, `value` is the mask and `valueTwo` the expected result;
- Docker's `includes`/`excludes` are resolved for a process with no capabilities
  (nsbox drops them all) on the native architecture and the running kernel;
- only the native architecture's entry points are allowed, whatever
  `architectures`/`archMap` list: compat (32-bit, x32) syscalls fail with ENOSYS.
"""

import json
import json.decoder
import json.scanner
from nsbox.record import Record, replace

from nsbox.errors import PolicyError

ACTIONS = ("SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP",
           "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG")
OPS = ("SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE",
       "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ")
ARCHES = ("SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_ARM",
          "SCMP_ARCH_AARCH64", "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64", "SCMP_ARCH_MIPS64N32",
          "SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64", "SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_PPC",
          "SCMP_ARCH_PPC64", "SCMP_ARCH_PPC64LE", "SCMP_ARCH_S390", "SCMP_ARCH_S390X",
          "SCMP_ARCH_PARISC", "SCMP_ARCH_PARISC64", "SCMP_ARCH_RISCV64")
# Names `includes`/`excludes` may use for the native architecture (Go's and libseccomp's).
NATIVE_ARCH_NAMES = {
    "x86_64": ("amd64", "x86_64", "SCMP_ARCH_X86_64"),
    "aarch64": ("arm64", "aarch64", "SCMP_ARCH_AARCH64"),
}
EPERM = 1
ENOSYS = 38
AF_INET = 2
AF_INET6 = 10
_LOW32 = 0xFFFFFFFF
_U64_MAX = (1 << 64) - 1
_TOP_KEYS = {"defaultAction", "defaultErrnoRet", "architectures", "archMap", "syscalls",
             "comment", "flags", "listenerPath", "listenerMetadata"}
_ENTRY_KEYS = {"names", "name", "action", "errnoRet", "args", "comment", "includes", "excludes"}
_ARG_KEYS = {"index", "value", "valueTwo", "op"}


class ArgCheck(Record):
    index: int
    op: str
    value: int
    value_two: int = 0


class Rule(Record):
    names: tuple
    action: str
    errno_ret: int | None = None
    args: tuple = ()  # ArgCheck, ANDed
    line: int = 0


class Profile(Record):
    default_action: str
    default_errno_ret: int | None
    rules: tuple
    comment: str = ""
    source: str = ""

    def with_rules(self, extra: tuple) -> "Profile":
        return replace(self, rules=self.rules + tuple(extra))

    def errno_for(self, rule: Rule) -> int:
        """The errno an SCMP_ACT_ERRNO rule returns: its own, the profile's, else EPERM."""
        if rule.errno_ret is not None:
            return rule.errno_ret
        return self.default_errno_ret if self.default_errno_ret is not None else EPERM


class ProfileError(PolicyError):
    """A profile is malformed; `problems` lists (line, message) pairs."""

    def __init__(self, source: str, problems: list):
        self.source = source
        self.problems = sorted(problems, key=lambda p: p[0])
        super().__init__("\n".join(f"{source}:{line}: {msg}" if line else f"{source}: {msg}"
                                   for line, msg in self.problems))


def network_off_rules() -> tuple:
    """With no network, AF_INET/AF_INET6 sockets fail fast (EPERM) instead of timing out.

    Only the low 32 bits are compared: the kernel truncates `int family`.
    """
    return tuple(
        Rule(("socket",), "SCMP_ACT_ERRNO", EPERM,
             (ArgCheck(0, "SCMP_CMP_MASKED_EQ", _LOW32, family),))
        for family in (AF_INET, AF_INET6))


def syscall_names(profile: Profile) -> tuple:
    seen = []
    for rule in profile.rules:
        seen.extend(n for n in rule.names if n not in seen)
    return tuple(seen)


def name_line(text: str, rule: Rule, name: str) -> int:
    """Line where `name` is written in a rule (for error messages); the rule's line if not found."""
    offset = _offset_of_line(text, rule.line)
    at = text.find(json.dumps(name), offset)
    return text.count("\n", 0, at) + 1 if at >= 0 else rule.line


def parse(text: str, source: str = "<profile>", native_arch: str = "x86_64",
          kernel: tuple = (0, 0)) -> Profile:
    """Parse and check a profile; Docker's extras are resolved. Raises ProfileError."""
    try:
        doc = _decode(text)
    except json.JSONDecodeError as err:
        raise ProfileError(source, [(err.lineno, f"malformed JSON: {err.msg} (column {err.colno})")])
    problems = []
    if not isinstance(doc, dict):
        raise ProfileError(source, [(1, "a profile is a JSON object")])
    for key in doc:
        if key not in _TOP_KEYS:
            problems.append((_line(doc), f"unknown key {key!r}"))
    default_action = doc.get("defaultAction")
    if default_action is None:
        problems.append((_line(doc), "defaultAction is missing"))
    else:
        _check_action(default_action, _line(doc), problems)
    default_errno = _optional_errno(doc.get("defaultErrnoRet"), _line(doc), problems,
                                    "defaultErrnoRet")
    _check_arches(doc, problems)
    rules = []
    entries = doc.get("syscalls", [])
    if not isinstance(entries, list):
        problems.append((_line(doc), "syscalls must be a list"))
        entries = []
    for entry in entries:
        if not isinstance(entry, dict):
            problems.append((_line(doc), "each syscalls entry must be an object"))
            continue
        rule = _parse_entry(entry, problems)
        if rule is not None and _applies(entry, native_arch, kernel):
            rules.extend(_split_same_index(rule))
    if problems:
        raise ProfileError(source, problems)
    comment = doc.get("comment", "")
    return Profile(default_action, default_errno, tuple(rules),
                   comment if isinstance(comment, str) else "", source)


def _parse_entry(entry: dict, problems: list):
    line = _line(entry)
    for key in entry:
        if key not in _ENTRY_KEYS:
            problems.append((line, f"unknown key {key!r} in a syscalls entry"))
    names = entry.get("names")
    if names is None and "name" in entry:  # the older single-name form
        names = [entry["name"]]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n
                                                             for n in names):
        problems.append((line, "names must be a non-empty list of syscall names"))
        return None
    action = entry.get("action")
    if action is None:
        problems.append((line, "action is missing"))
        return None
    if not _check_action(action, line, problems):
        return None
    errno_ret = _optional_errno(entry.get("errnoRet"), line, problems, "errnoRet")
    args = []
    raw_args = entry.get("args") or []
    if not isinstance(raw_args, list):
        problems.append((line, "args must be a list"))
        return None
    for raw in raw_args:
        check = _parse_arg(raw, line, problems)
        if check is None:
            return None
        args.append(check)
    return Rule(tuple(names), action, errno_ret, tuple(args), line)


def _parse_arg(raw, entry_line: int, problems: list):
    line = _line(raw) if isinstance(raw, dict) else entry_line
    if not isinstance(raw, dict):
        problems.append((line, "each args item must be an object"))
        return None
    for key in raw:
        if key not in _ARG_KEYS:
            problems.append((line, f"unknown key {key!r} in args"))
    index, op = raw.get("index"), raw.get("op")
    value, value_two = raw.get("value", 0), raw.get("valueTwo", 0)
    ok = True
    if not _is_int(index) or not 0 <= index <= 5:
        problems.append((line, f"args index must be 0..5; got {index!r}"))
        ok = False
    if op not in OPS:
        problems.append((line, f"unknown op {op!r}; expected one of {', '.join(OPS)}"))
        ok = False
    for key, number in (("value", value), ("valueTwo", value_two)):
        if not _is_int(number) or not 0 <= number <= _U64_MAX:
            problems.append((line, f"args {key} must be an integer in 0..2^64-1; got {number!r}"))
            ok = False
    return ArgCheck(index, op, value, value_two) if ok else None


def _split_same_index(rule: Rule) -> list:
    """libseccomp cannot AND two checks of one argument: one rule per such check (runc's way)."""
    indexes = [a.index for a in rule.args]
    if len(set(indexes)) == len(indexes):
        return [rule]
    unique = [a for a in rule.args if indexes.count(a.index) == 1]
    repeated = [a for a in rule.args if indexes.count(a.index) > 1]
    return [replace(rule, args=tuple(unique) + (check,)) for check in repeated]


def _applies(entry: dict, native_arch: str, kernel: tuple) -> bool:
    """Resolve Docker's includes/excludes for this host and a process without capabilities."""
    natives = NATIVE_ARCH_NAMES.get(native_arch, (native_arch,))
    includes = entry.get("includes") or {}
    excludes = entry.get("excludes") or {}
    if includes.get("caps"):
        return False
    if includes.get("arches") and not set(includes["arches"]) & set(natives):
        return False
    if excludes.get("arches") and set(excludes["arches"]) & set(natives):
        return False
    minimum = includes.get("minKernel")
    if minimum and _version(minimum) > tuple(kernel[:2]):
        return False
    return True


def _version(text) -> tuple:
    parts = str(text).split(".")
    try:
        return tuple(int(p) for p in parts[:2])
    except ValueError:
        return (0, 0)


def _check_action(action, line: int, problems: list) -> bool:
    if action == "SCMP_ACT_NOTIFY":
        problems.append((line, "SCMP_ACT_NOTIFY needs a supervisor process; nsbox has none"))
        return False
    if action not in ACTIONS:
        problems.append((line, f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}"))
        return False
    return True


def _check_arches(doc: dict, problems: list) -> None:
    named = list(doc.get("architectures") or [])
    for item in doc.get("archMap") or []:
        if isinstance(item, dict):
            named.append(item.get("architecture"))
            named.extend(item.get("subArchitectures") or [])
    for arch in named:
        if arch not in ARCHES:
            problems.append((_line(doc), f"unknown architecture {arch!r}"))


def _optional_errno(value, line: int, problems: list, what: str):
    if value is None:
        return None
    if not _is_int(value) or not 0 <= value <= 0xFFFF:
        problems.append((line, f"{what} must be an errno number 0..65535; got {value!r}"))
        return None
    return value


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --- JSON with line numbers -----------------------------------------------------------

class _Located(dict):
    """A JSON object that remembers the line its `{` is on."""

    line = 0


def _line(obj) -> int:
    return getattr(obj, "line", 0)


def _decode(text: str):
    decoder = json.JSONDecoder()

    def parse_object(s_and_end, *rest):
        text_, end = s_and_end
        pairs, new_end = json.decoder.JSONObject(s_and_end, *rest)
        located = _Located(pairs)
        located.line = text_.count("\n", 0, end) + 1
        return located, new_end

    decoder.parse_object = parse_object
    # The C scanner ignores parse_object; the pure-Python one honours it.
    decoder.scan_once = json.scanner.py_make_scanner(decoder)
    return decoder.decode(text)


def _offset_of_line(text: str, line: int) -> int:
    offset = 0
    for _ in range(max(line - 1, 0)):
        nxt = text.find("\n", offset)
        if nxt < 0:
            return offset
        offset = nxt + 1
    return offset
