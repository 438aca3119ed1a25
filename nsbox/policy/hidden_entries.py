"""Hidden-list entries -> the paths they stand for, and their "*" name patterns. Pure.

`~` is each home directory; `~/.config/X` is also `$XDG_CONFIG_HOME/X` and
`~/.local/share/X` `$XDG_DATA_HOME/X`; `$NAME` or `$NAME/rest` uses that variable
of each given environment (a ":" list gives one path per entry). Relative
entries are left to the caller (they are relative to the workspace). A `*` in
the last component makes the entry a name pattern, matched in any letter case.
"""

_XDG = (("~/.config/", "XDG_CONFIG_HOME"), ("~/.local/share/", "XDG_DATA_HOME"))


def expand(entry: str, homes: tuple, envs: tuple = ()) -> list:
    """The absolute (or workspace-relative) paths `entry` names; [] when none applies."""
    if entry == "~" or entry.startswith("~/"):
        out = [home.rstrip("/") + entry[1:] for home in homes]
        for prefix, name in _XDG:
            if entry.startswith(prefix) or entry == prefix[:-1]:
                out += _from_variable(name, entry[len(prefix) - 1:], envs)
        return list(dict.fromkeys(out))
    if entry.startswith("~"):
        return []  # another user's home
    if entry.startswith("$"):
        name, slash, rest = entry[1:].partition("/")
        return list(dict.fromkeys(_from_variable(name, slash + rest, envs)))
    return [entry]


def from_variable(entry: str) -> bool:
    return entry.startswith("$")


def _from_variable(name: str, rest: str, envs: tuple) -> list:
    out = []
    for env in envs:
        for value in env.get(name, "").split(":"):
            if value.startswith("/") and (value.rstrip("/") or rest):  # never "/" itself
                out.append(value.rstrip("/") + rest)
    return out


class NamePatterns:
    """`*` patterns for names in one directory, checked with a few string calls per name."""

    def __init__(self, patterns):
        self.contains, self.prefixes, self.suffixes, self.other = [], [], [], []
        for pattern in patterns:
            low = pattern.lower()
            inner = low.strip("*")
            if "*" in inner:
                self.other.append(low.split("*"))
            elif low.startswith("*") and low.endswith("*"):
                self.contains.append(inner)
            elif low.startswith("*"):
                self.suffixes.append(inner)
            else:
                self.prefixes.append(inner)
        self.prefixes, self.suffixes = tuple(self.prefixes), tuple(self.suffixes)

    def match(self, name: str) -> bool:
        low = name.lower()
        if low.endswith(self.suffixes) or low.startswith(self.prefixes):
            return True
        for word in self.contains:
            if word in low:
                return True
        return bool(self.other) and any(_glob(pieces, low) for pieces in self.other)


def _glob(pieces: list, name: str) -> bool:
    """`name` matches the pattern that `pieces` (split at "*") came from."""
    first, last = pieces[0], pieces[-1]
    if len(name) < len(first) + len(last) or not (name.startswith(first) and name.endswith(last)):
        return False
    pos, end = len(first), len(name) - len(last)
    for piece in pieces[1:-1]:
        pos = name.find(piece, pos, end)
        if pos < 0:
            return False
        pos += len(piece)
    return True
