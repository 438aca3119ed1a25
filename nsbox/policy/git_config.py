"""Which git config keys a sandbox may change in the user's repository, and the
merge that carries those changes, and only those, into the real config file.

A sandbox's git writes its config into a copy (plan/gitsync.py). After the run the
copy is compared with the config as it was when the run started, key by key; a
change to an allowed key is written into the real file, every other change is
refused and reported. Allowed is a list: a key nsbox does not know is refused.
Pure: bytes in, bytes out; nothing here reads a file or runs git.

The parser follows git's own (config.c): `[section]`, `[section "sub"]` (the sub-
section case-sensitive, `\\` escapes its next character), the older `[section.sub]`
(lower-cased), `name = value` or a bare `name` (true), values with `"` quoting,
`\\n \\t \\b \\\\ \\"` escapes, line continuations, `#`/`;` comments. Whitespace
outside quotes is kept as one space per character, leading and trailing dropped.
"""

from nsbox.record import Record

# Keys that may change, by section. A name in a set: that key of the section without
# a subsection; ("*", names): those keys of any subsection. Values are checked too
# where a key takes a command in some spellings (submodule.*.update, alias.*).
_PLAIN = {
    "user": {"name", "email", "useconfigonly"},
    "author": {"name", "email"},
    "committer": {"name", "email"},
    "core": {"repositoryformatversion", "filemode", "bare", "logallrefupdates", "ignorecase",
             "precomposeunicode", "symlinks", "autocrlf", "eol", "safecrlf", "quotepath",
             "abbrev", "sparsecheckout", "sparsecheckoutcone", "checkstat", "trustctime",
             "untrackedcache", "splitindex", "commitgraph", "multipackindex",
             "compression", "loosecompression", "bigfilethreshold", "preloadindex"},
    "extensions": {"worktreeconfig"},
    "index": {"sparse", "version"},
    "init": {"defaultbranch"},
    "remote": {"pushdefault"},
    "branch": {"autosetupmerge", "autosetuprebase", "sort"},
    "submodule": {"active", "recurse", "fetchjobs"},
    "pull": {"rebase", "ff"},  # not twohead/octopus: they name a merge program
    "push": {"default", "autosetupremote", "followtags", "recursesubmodules"},
    "fetch": {"prune", "prunetags", "recursesubmodules", "parallel", "writecommitgraph"},
    "merge": {"ff", "conflictstyle", "renames", "log", "stat"},
    "rebase": {"autosquash", "autostash", "updaterefs", "stat"},
    "rerere": {"enabled", "autoupdate"},
    "diff": {"algorithm", "renames", "renamelimit", "mnemonicprefix", "noprefix",
             "colormoved", "indentheuristic", "submodule", "ignoresubmodules"},
    "status": {"showuntrackedfiles", "submodulesummary", "short", "branch"},
    "log": {"date", "decorate", "follow", "abbrevcommit"},
    "gc": {"auto", "autodetach", "autopacklimit"},
    "color": {"ui", "diff", "status", "branch", "interactive"},
    "column": {"ui"},
    "advice": None,  # any advice.* switch: only silences hints
}
_SUBSECTIONED = {
    "remote": {"url", "pushurl", "fetch", "push", "mirror", "skipdefaultupdate",
               "skipfetchall", "tagopt", "prune", "prunetags"},
    "branch": {"remote", "pushremote", "merge", "rebase", "description"},
    "submodule": {"url", "path", "branch", "active", "shallow", "fetchrecursesubmodules",
                  "ignore", "update"},
}
# alias.NAME (no subsection) is checked by value: a `!` alias is a shell command.
# Only in a submodule's own config (modules/<name>/config), where `git submodule`
# writes the checkout's place; in the repository's config it would move the work tree.
_MODULE_ONLY = {("core", "worktree")}

# Why the commonest refused keys are refused: the message the report shows.
_RUNS = "runs a command"
_REASONS = {
    ("core", "fsmonitor"): _RUNS, ("core", "hookspath"): "chooses the hooks git runs",
    ("core", "sshcommand"): _RUNS, ("core", "pager"): _RUNS, ("core", "editor"): _RUNS,
    ("core", "askpass"): _RUNS, ("core", "gitproxy"): _RUNS,
    ("core", "alternaterefscommand"): _RUNS, ("core", "worktree"): "moves the work tree",
    ("sequence", "editor"): _RUNS, ("gpg", "program"): _RUNS,
    ("diff", "external"): _RUNS, ("diff", "tool"): "chooses a command git runs",
    ("merge", "tool"): "chooses a command git runs",
    ("uploadpack", None): _RUNS, ("receivepack", None): _RUNS,
}
_SECTION_REASONS = {
    "include": "loads another config file", "includeif": "loads another config file",
    "filter": _RUNS, "credential": "runs a command and handles credentials",
    "pager": _RUNS, "gpg": _RUNS, "difftool": _RUNS, "mergetool": _RUNS,
    "sendemail": _RUNS, "http": "changes where and how git connects",
    "url": "rewrites where git connects", "protocol": "allows transports that run commands",
    "uploadpack": _RUNS, "receivepack": _RUNS, "safe": "trusts other directories",
    "trace2": "writes traces where it names", "lfs": "configures a helper that runs",
    "maintenance": "schedules commands", "hook": _RUNS,
}
_SUBMODULE_UPDATES = {"checkout", "rebase", "merge", "none"}
_SUBKEY_REASONS = {"uploadpack": _RUNS, "receivepack": _RUNS, "vcs": "runs a remote helper",
                   "proxy": "changes where git connects", "textconv": _RUNS, "command": _RUNS,
                   "driver": _RUNS, "program": _RUNS, "cmd": _RUNS, "helper": _RUNS,
                   "mergeoptions": "chooses a merge strategy program"}


class Entry(Record):
    section: str  # lower case
    subsection: str | None  # as written (case-sensitive), None without one
    name: str  # lower case
    value: str | None  # None: the bare form (boolean true)
    first: int  # its lines: first..last, 0-based
    last: int
    spelled: str = ""  # the name as written
    on_header: bool = False  # written on its section's header line

    @property
    def key(self) -> tuple:
        return (self.section, self.subsection, self.name)


class Header(Record):
    section: str
    subsection: str | None
    line: int
    text: str  # the header itself, `[...]`, as written


class Parsed(Record):
    lines: tuple  # the file's lines, each with its line ending
    headers: tuple
    entries: tuple


class Outcome(Record):
    text: bytes | None  # the merged file; None when nothing changes in it
    applied: tuple  # dotted names of the keys changed in the real file
    refused: tuple  # (dotted name, why) of the sandbox's changes left out


class ConfigSyntaxError(ValueError):
    pass


def dotted(key: tuple) -> str:
    section, subsection, name = key
    return f"{section}.{subsection}.{name}" if subsection is not None else f"{section}.{name}"


def refusal(key: tuple, values: tuple, in_module: bool = False) -> str:
    """'' when a sandbox may set `key` to `values` (() for removing it); else why not."""
    section, subsection, name = key
    if (section, name) in _MODULE_ONLY:
        return "" if in_module and subsection is None else _REASONS.get((section, name), "")
    if section == "alias" and subsection is None:
        return next((_RUNS for v in values if _alias_runs(v)), "")
    if subsection is None:
        allowed = _PLAIN.get(section, set())
        if allowed is None or name in allowed:
            return ""
    else:
        allowed = _SUBSECTIONED.get(section, set())
        if allowed is not None and name in allowed:
            if section == "submodule" and name == "update":
                if any((v or "").strip().lower() not in _SUBMODULE_UPDATES for v in values):
                    return "runs a command (only checkout, rebase, merge or none)"
            if name in ("url", "pushurl") and any(
                    (v or "").strip().lower().startswith("ext::") for v in values):
                return "an ext:: URL runs a command"
            return ""
    if section in _SECTION_REASONS:
        return _SECTION_REASONS[section]
    why = _REASONS.get((section, name)) or _REASONS.get((section, None))
    if why:
        return why
    if subsection is not None and name in _SUBKEY_REASONS:
        return _SUBKEY_REASONS[name]
    return "not a key nsbox lets a sandbox set"


def _alias_runs(value) -> bool:
    # `!cmd` is a shell command; an alias starting with an option could change how git runs.
    text = (value or "").lstrip()
    return not text or text[0] in "!-"


# --- parsing ---------------------------------------------------------------------

def parse(data: bytes) -> Parsed:
    """The headers and entries of a config file; ConfigSyntaxError where git would refuse
    the file too (or where nsbox would not be sure how git reads it)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigSyntaxError("not UTF-8") from None
    if "\0" in text:
        raise ConfigSyntaxError("contains a NUL byte")
    if text.startswith("\ufeff"):
        text = text[1:]  # git skips a UTF-8 byte-order mark
    lines = tuple(text.splitlines(keepends=True))
    headers, entries = [], []
    section, subsection = None, None
    i = 0
    while i < len(lines):
        line = lines[i].rstrip("\r\n")
        pos = _skip_space(line, 0)
        header_here = False
        if pos < len(line) and line[pos] == "[":
            section, subsection, end = _header(line, pos, i)
            headers.append(Header(section, subsection, i, line[pos:end]))
            header_here = True
            pos = _skip_space(line, end)
        if pos >= len(line) or line[pos] in "#;":
            i += 1
            continue
        if not line[pos].isascii() or not line[pos].isalpha():
            raise ConfigSyntaxError(f"line {i + 1}: expected a key name")
        if section is None:
            raise ConfigSyntaxError(f"line {i + 1}: a key before any section")
        start = pos
        while pos < len(line) and line[pos].isascii() and (line[pos].isalnum() or line[pos] == "-"):
            pos += 1
        spelled = line[start:pos]
        pos = _skip_space(line, pos)
        first = i
        if pos >= len(line) or line[pos] in "#;":
            value = None
        elif line[pos] == "=":
            value, i = _value(lines, i, pos + 1)
        else:
            raise ConfigSyntaxError(f"line {i + 1}: expected '=' after {spelled!r}")
        entries.append(Entry(section, subsection, spelled.lower(), value, first, i,
                             spelled, header_here))
        i += 1
    return Parsed(lines, tuple(headers), tuple(entries))


def _skip_space(line: str, pos: int) -> int:
    while pos < len(line) and line[pos] in " \t\v\f":
        pos += 1
    return pos


def _header(line: str, pos: int, number: int) -> tuple:
    """(section, subsection, index after `]`) of the header starting at `pos`."""
    pos += 1
    start = pos
    while pos < len(line) and line[pos].isascii() and (line[pos].isalnum() or line[pos] in "-."):
        pos += 1
    name = line[start:pos].lower()
    if not name:
        raise ConfigSyntaxError(f"line {number + 1}: empty section name")
    if pos < len(line) and line[pos] == "]":
        if "." in name:  # the older [section.sub] form
            section, _, sub = name.partition(".")
            if not section or not sub:
                raise ConfigSyntaxError(f"line {number + 1}: bad section name")
            return section, sub, pos + 1
        return name, None, pos + 1
    if "." in name:
        raise ConfigSyntaxError(f"line {number + 1}: bad section name")
    pos = _skip_space(line, pos)
    if pos >= len(line) or line[pos] != '"':
        raise ConfigSyntaxError(f"line {number + 1}: bad section header")
    pos += 1
    sub = []
    while True:
        if pos >= len(line):
            raise ConfigSyntaxError(f"line {number + 1}: unterminated subsection")
        ch = line[pos]
        if ch == '"':
            break
        if ch == "\\":
            pos += 1
            if pos >= len(line):
                raise ConfigSyntaxError(f"line {number + 1}: unterminated subsection")
            ch = line[pos]
        sub.append(ch)
        pos += 1
    if pos + 1 >= len(line) or line[pos + 1] != "]":
        raise ConfigSyntaxError(f"line {number + 1}: expected ']' after the subsection")
    return name, "".join(sub), pos + 2


def _value(lines: tuple, i: int, pos: int) -> tuple:
    """(value, index of its last line), as git's parse_value reads it."""
    out, quoted, space = [], False, 0
    line = lines[i].rstrip("\r\n")
    while True:
        if pos >= len(line):
            if quoted:
                raise ConfigSyntaxError(f"line {i + 1}: unterminated quote")
            return "".join(out), i
        ch = line[pos]
        pos += 1
        if ch in " \t\v\f\r" and not quoted:
            if out:
                space += 1
            continue
        if not quoted and ch in "#;":
            return "".join(out), i
        out.append(" " * space)
        space = 0
        if ch == "\\":
            if pos >= len(line):  # a continuation: the value goes on on the next line
                i += 1
                if i >= len(lines):
                    return "".join(out), i - 1
                line, pos = lines[i].rstrip("\r\n"), 0
                continue
            esc = line[pos]
            pos += 1
            if esc not in 'tbn\\"':
                raise ConfigSyntaxError(f"line {i + 1}: unknown escape \\{esc}")
            out.append({"t": "\t", "b": "\b", "n": "\n"}.get(esc, esc))
            continue
        if ch == '"':
            quoted = not quoted
            continue
        out.append(ch)


# --- merging ---------------------------------------------------------------------

def values_by_key(entries) -> dict:
    out = {}
    for entry in entries:
        out.setdefault(entry.key, []).append(entry.value)
    return {key: tuple(values) for key, values in out.items()}


def merge(base: bytes, real: bytes, sandbox: bytes, in_module: bool = False,
          revert: bool = False) -> Outcome:
    """The real config with the sandbox's allowed changes (sandbox vs base, key by key)
    written in. A key the host changed meanwhile and the sandbox changed too takes the
    sandbox's values (the last writer wins, as with two git processes). `revert`: the
    sandbox wrote the real file itself (no copy to merge from); its refused changes are
    undone there, back to the base's values. ConfigSyntaxError when any of the three
    cannot be read as git would."""
    base_values = values_by_key(parse(base).entries)
    sandbox_values = values_by_key(parse(sandbox).entries)
    real_parsed = parse(real)
    real_values = values_by_key(real_parsed.entries)
    applied, refused, wanted = [], [], {}
    keys = list(dict.fromkeys(list(base_values) + list(sandbox_values)))
    for key in keys:
        new = sandbox_values.get(key, ())
        if new == base_values.get(key, ()):
            continue
        why = refusal(key, new, in_module)
        if why:
            refused.append((dotted(key), why))
            if revert and real_values.get(key, ()) != base_values.get(key, ()):
                wanted[key] = base_values.get(key, ())
        elif real_values.get(key, ()) != new:
            wanted[key] = new
            applied.append(dotted(key))
    if not wanted:
        return Outcome(None, (), tuple(refused))
    spelled = {e.key: e.spelled for e in parse(base).entries + parse(sandbox).entries}
    return Outcome(_rewrite(real_parsed, wanted, spelled).encode("utf-8"), tuple(applied),
                   tuple(refused))


def _rewrite(parsed: Parsed, wanted: dict, spelled: dict) -> str:
    """`parsed` with each key of `wanted` holding exactly its values: old lines removed,
    new ones where the first old one was, or at the end of its section, or in a new
    section at the end. Everything else (comments, order, spacing) stays."""
    lines = list(parsed.lines)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    removed, header_only = set(), set()
    after = {}  # line index -> new lines written after it (-1: before the first line)
    at_end = {}  # (section, subsection) -> new lines in a new section at the end
    last_line = {}  # (section, subsection) -> the last line of its last block
    blocks = sorted(parsed.headers, key=lambda h: h.line)
    for n, header in enumerate(blocks):
        end = blocks[n + 1].line - 1 if n + 1 < len(blocks) else len(lines) - 1
        last = max([e.last for e in parsed.entries if header.line <= e.first <= end],
                   default=header.line)
        last_line[(header.section, header.subsection)] = last
    for key, values in wanted.items():
        old = [e for e in parsed.entries if e.key == key]
        new_lines = [_line(spelled.get(key, key[2]), v) for v in values]
        for entry in old:
            if entry.on_header:
                header_only.add(entry.first)
                removed.update(range(entry.first + 1, entry.last + 1))
            else:
                removed.update(range(entry.first, entry.last + 1))
        if old:
            after.setdefault(old[0].first - (0 if old[0].on_header else 1), []).extend(new_lines)
        elif key[:2] in last_line:
            after.setdefault(last_line[key[:2]], []).extend(new_lines)
        elif new_lines:
            at_end.setdefault(key[:2], []).extend(new_lines)
    out = list(after.get(-1, []))
    headers = {h.line: h for h in parsed.headers}
    for i, line in enumerate(lines):
        if i in header_only:
            out.append(headers[i].text + "\n")
        elif i not in removed:
            out.append(line)
        out.extend(after.get(i, []))
    for (section, subsection), new_lines in at_end.items():
        out.append(header_text(section, subsection) + "\n")
        out.extend(new_lines)
    return "".join(out)


def header_text(section: str, subsection: str | None) -> str:
    if subsection is None:
        return f"[{section}]"
    if "\n" in subsection:
        raise ConfigSyntaxError("a subsection name with a newline")
    escaped = subsection.replace("\\", "\\\\").replace('"', '\\"')
    return f'[{section} "{escaped}"]'


def _line(name: str, value) -> str:
    if value is None:
        return f"\t{name}\n"
    return f"\t{name} = {quote(value)}\n"


def quote(value: str) -> str:
    """A value as git reads it back unchanged."""
    if any(c in value for c in "\r\v\f\0"):
        raise ConfigSyntaxError("a value with a carriage return or form feed")
    escaped = (value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
               .replace("\t", "\\t").replace("\b", "\\b"))
    if value != value.strip(" ") or any(c in value for c in "#;") or "  " in value:
        return f'"{escaped}"'
    return escaped
