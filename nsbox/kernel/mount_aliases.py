"""Where else a mounted path is visible: the other mounts of its filesystem in the
mountinfo table (see mountinfo.elsewhere, which imports this only for a path whose
filesystem is mounted more than once).
"""

import os

from nsbox.kernel.mountinfo import mount_id_of, unescape


def reachable(candidates: list, kinds: dict) -> list:
    """The candidates a process can reach by name (not covered by another mount), as
    (alias, is_dir, original)."""
    originals, out = {}, []
    for alias, mount_id, whole, path in candidates:
        try:
            if whole:  # that mount shows a part of the hidden tree: all of it goes
                if mount_id_of(alias) == mount_id:
                    out.append((alias, os.path.isdir(alias), path))
                continue
            if path not in originals:
                st = os.stat(path)
                originals[path] = st.st_dev, st.st_ino
            st = os.stat(alias)
            if (st.st_dev, st.st_ino) == originals[path]:
                out.append((alias, kinds[path], path))
        except OSError:
            continue  # unreachable from here, so from a process with these credentials
    return out


def aliases(text: bytes, targets) -> list:
    """Where else each (path, mount) of `targets` is visible (`path` lies on `mount`):
    (alias, mount_id, whole, path) for each other mount of the same filesystem, in one
    pass over the table that splits only that filesystem's lines.

    whole=False: that mount shows `path`'s location at `alias`. whole=True: the mount
    at `alias` shows a part of what lies beneath `path`. Whether `alias` is reachable
    (not covered by another mount) is for the caller to check.
    """
    by_device = {}
    for path, mount in targets:
        location = _join(mount.root, _beneath(path, mount.mount_point))
        escaped = _escape(location)
        by_device.setdefault(mount.dev.encode(), []).append(
            (path, mount.mount_id, location, escaped, _as_dir(escaped)))
    needles = [b" " + dev + b" " for dev in by_device]
    found = []
    for line in text.splitlines():
        for needle in needles:
            if needle in line:
                break
        else:
            continue
        fields = line.split(None, 5)
        root = fields[3]
        root_dir = _as_dir(root)
        for path, mount_id, location, escaped, escaped_dir in by_device.get(fields[2], ()):
            if escaped == root or escaped.startswith(root_dir):  # shows the location
                alias = _join(unescape(fields[4]), _beneath(location, unescape(root)))
                whole = False
            elif root.startswith(escaped_dir):  # shows a part of it
                alias, whole = unescape(fields[4]), True
            else:
                continue
            if int(fields[0]) != mount_id:
                found.append((alias, int(fields[0]), whole, path))
    return found


def _escape(path: str) -> bytes:
    """`path` as mountinfo writes it."""
    return (os.fsencode(path).replace(b"\\", b"\\134").replace(b" ", b"\\040")
            .replace(b"\t", b"\\011").replace(b"\n", b"\\012"))


def _as_dir(path: bytes) -> bytes:
    """`path` with one trailing slash: what every path beneath it starts with."""
    return path.rstrip(b"/") + b"/"


def _beneath(path: str, top: str) -> str:
    """`path` relative to `top` (which contains it), "" for `top` itself."""
    return path[len(top.rstrip("/")):].lstrip("/")


def _join(top: str, rest: str) -> str:
    return top.rstrip("/") + "/" + rest if rest else top
