"""A policy's hidden list -> the existing host paths to hide. Runs in the parent before fork.

About 180 entries for each home, looked up by directory, shallow first; a directory
missing from its listed parent costs nothing more. `*` entries match the names of
one directory (one level; nothing deeper is ever read), listed only when it changed
since the last time (name_matches).
"""

import os
import stat

from nsbox.plan import name_matches
from nsbox.policy import defaults, hidden_entries


def existing(entries, workspace: str, homes: tuple, envs: tuple = (),
             state_dir: str = "") -> tuple:
    """([(real path, is_dir)], {real paths that read as empty under full isolation}).

    Each name is looked up on its own and a directory is listed only for its `*`
    patterns, and then only when it changed since the last listing (name_matches,
    remembered under `state_dir`): the cost does not grow with a directory's size.
    """
    names, patterns = _directories(tuple(entries), workspace, homes, envs)
    wanted = sorted({*names, *patterns}, key=lambda d: (d.count("/"), d))
    listings, found, read_as_empty = {}, [], set()
    for directory in wanted:
        if _known_missing(directory, listings):
            continue
        listing = matched = None
        if directory in patterns:
            matcher = _matcher(patterns[directory])
            matched, listing = name_matches.matches(directory, matcher.key, matcher.match,
                                                    state_dir)
            if matched is None:
                listings[directory] = None  # unlistable: nothing to hide beneath
                continue
            if listing is not None:
                listings[directory] = listing
        real_dir = []  # os.path.realpath(directory), once it is needed
        for name, entry in names.get(directory, ()):
            hit = _existing(directory, name, listing, hidden_entries.from_variable(entry),
                            real_dir)
            if hit:
                found.append(hit)
                if entry in defaults.HIDDEN_READ_AS_EMPTY:
                    read_as_empty.add(hit[0])
        for name in matched or ():
            hit = _existing(directory, name, listing, False, real_dir)
            if hit and not hit[1]:  # a pattern matches files only
                found.append(hit)
    name_matches.save()
    return list(dict.fromkeys(found)), read_as_empty


_MATCHERS: dict = {}


def _matcher(patterns) -> "hidden_entries.NamePatterns":
    key = tuple(patterns)
    matcher = _MATCHERS.get(key)
    if matcher is None:
        matcher = _MATCHERS[key] = hidden_entries.NamePatterns(key)
        matcher.key = key
    return matcher


# Expanding the entries is pure string work (~0.4 ms for the defaults): a library
# process preparing run after run does it once per distinct input. Only the
# filesystem is looked at anew each time.
_EXPANDED: dict = {}
_VARIABLES: dict = {}  # entries -> the environment variables they depend on
_XDG_VARIABLES = ("XDG_CONFIG_HOME", "XDG_DATA_HOME")


def _directories(entries: tuple, workspace: str, homes: tuple, envs: tuple) -> tuple:
    variables = _VARIABLES.get(entries)
    if variables is None:
        if len(_VARIABLES) > 64:
            _VARIABLES.clear()
        variables = _VARIABLES[entries] = _XDG_VARIABLES + tuple(
            e[1:].partition("/")[0] for e in entries if e.startswith("$"))
    key = (entries, workspace, homes,
           tuple(env.get(name) for env in envs for name in variables))
    found = _EXPANDED.get(key)
    if found is None:
        if len(_EXPANDED) > 64:
            _EXPANDED.clear()
        found = _EXPANDED[key] = _by_directory(entries, workspace, homes, envs)
    return found


def _by_directory(entries, workspace: str, homes: tuple, envs: tuple) -> tuple:
    """({directory: [(name, entry)]}, {directory: [pattern]}), expanding each distinct
    directory part of the entries once."""
    heads = {}
    for entry in entries:
        entry = entry.rstrip("/") or "/"
        if entry.startswith(("~", "$")) and "/" not in entry:
            head, name = entry, ""  # a home or a variable on its own
        else:
            head, _, name = entry.rpartition("/")
            if not entry.startswith(("/", "~", "$")):
                head = os.path.join(workspace, head) if head else workspace
        heads.setdefault(head or "/", []).append((name, entry))
    names, patterns = {}, {}
    for head, items in heads.items():
        plain = [(name, entry) for name, entry in items if name and "*" not in name]
        globs = [name for name, _ in items if "*" in name]
        whole = [entry for name, entry in items if not name]  # the head's own path
        for base in hidden_entries.expand(head, homes, envs) if head[0] in "~$" else (head,):
            base = base.rstrip("/") or "/"
            if plain:
                names.setdefault(base, []).extend(plain)
            if globs:
                patterns.setdefault(base, []).extend(globs)
            parent, _, name = base.rpartition("/")
            if whole and name:  # "/" itself is never hidden this way
                names.setdefault(parent or "/", []).extend((name, entry) for entry in whole)
    return names, patterns


def _known_missing(directory: str, listings: dict) -> bool:
    """True when the nearest listed ancestor shows `directory` cannot exist."""
    top = directory
    while top != "/":
        top = top.rpartition("/")[0] or "/"
        if top in listings:
            listing = listings[top]
            first = directory[len(top):].lstrip("/").partition("/")[0]
            return listing is None or first not in listing
    return False


def _existing(directory: str, name: str, listing, from_variable: bool, real_dir: list):
    if listing is not None:
        entry = listing.get(name)
        if entry is None:
            return None
        if not entry.is_symlink():
            if from_variable and not (entry.is_file() or entry.is_dir()):
                return None
            if not real_dir:
                real_dir.append(os.path.realpath(directory).rstrip("/"))
            return f"{real_dir[0]}/{name}", entry.is_dir()
    path = f"{directory.rstrip('/')}/{name}"
    if listing is None and not os.path.lexists(path):
        return None
    real = os.path.realpath(path)
    try:
        mode = os.stat(real).st_mode
    except OSError:
        return None
    # A variable may name anything (KUBECONFIG=/dev/null): only files and directories count.
    if from_variable and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return None
    return real, stat.S_ISDIR(mode)
