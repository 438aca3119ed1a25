"""Which entries of a directory match hidden-name patterns, remembered while the
directory is unchanged: a large home then costs one stat per run, not a listing.

A directory's ctime moves whenever an entry is added, removed or renamed, and no
process can set it, so the same (device, inode, ctime) means the same names as the
listing that was remembered. Only listings older than SETTLED_NS are kept (ctime
ticks are coarse: a name added within the same tick would be missed). Kept in this
process, and in nsbox's state directory, which no sandbox can write.
"""

import os
import time

FILE = "hidden-name-matches"
SETTLED_NS = 2_000_000_000
MAX_KEPT = 64

_memory = {}  # (directory, patterns) -> ((dev, ino, ctime_ns), names)
_loaded = set()  # state directories read into _memory
_dirty = []  # state directories whose file is behind _memory


def matches(directory: str, patterns: tuple, match, state_dir: str = ""):
    """(names of the files in `directory` that `match`, the listing if one was made
    else None); (None, None) when the directory cannot be listed."""
    if state_dir and state_dir not in _loaded:
        _load(state_dir)
    try:
        before = os.stat(directory)
    except OSError:
        return None, None
    identity = (before.st_dev, before.st_ino, before.st_ctime_ns)
    key = (directory, patterns)
    known = _memory.get(key)
    if known is not None and known[0] == identity:
        return known[1], None
    try:
        with os.scandir(directory) as entries:
            listing = {e.name: e for e in entries}
    except OSError:
        return None, None
    names = tuple(name for name, e in listing.items() if e.is_file() and match(name))
    try:
        after = os.stat(directory)
    except OSError:
        return names, listing
    settled = time.time_ns() - after.st_ctime_ns > SETTLED_NS
    if settled and (after.st_dev, after.st_ino, after.st_ctime_ns) == identity:
        _memory[key] = (identity, names)
        while len(_memory) > MAX_KEPT:
            del _memory[next(iter(_memory))]
        if state_dir and state_dir not in _dirty:
            _dirty.append(state_dir)
    return names, listing


def save() -> None:
    """Write what was learnt to the state directories it belongs to (best effort)."""
    while _dirty:
        state_dir = _dirty.pop()
        fields = []
        for (directory, patterns), ((dev, ino, ctime), names) in _memory.items():
            fields += [directory, str(len(patterns)), *patterns, str(dev), str(ino),
                       str(ctime), str(len(names)), *names]
        data = "\0".join(fields).encode("utf-8", "surrogateescape")
        tmp = os.path.join(state_dir, f".{FILE}.{os.getpid()}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            os.replace(tmp, os.path.join(state_dir, FILE))
        except OSError:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _load(state_dir: str) -> None:
    _loaded.add(state_dir)
    try:
        fd = os.open(os.path.join(state_dir, FILE), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    finally:
        os.close(fd)
    fields = b"".join(chunks).decode("utf-8", "surrogateescape").split("\0")
    try:
        i = 0
        while i < len(fields) - 1:
            directory, count = fields[i], int(fields[i + 1])
            patterns = tuple(fields[i + 2:i + 2 + count])
            i += 2 + count
            identity = (int(fields[i]), int(fields[i + 1]), int(fields[i + 2]))
            count = int(fields[i + 3])
            names = tuple(fields[i + 4:i + 4 + count])
            i += 4 + count
            _memory.setdefault((directory, patterns), (identity, names))
    except (ValueError, IndexError):
        pass  # a damaged file: what was read stays, the rest is listed again
