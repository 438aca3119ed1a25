"""Parse /proc/self/mountinfo."""

from nsbox.record import Record


class Mount(Record):
    mount_id: int
    parent_id: int
    mount_point: str
    options: str
    fstype: str


def _unescape(field: str) -> str:
    # The kernel octal-escapes space, tab, newline and backslash.
    return field.encode().decode("unicode_escape").encode("latin-1").decode(errors="surrogateescape")


def read(path: str = "/proc/self/mountinfo") -> list:
    mounts = []
    with open(path) as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            mounts.append(Mount(int(fields[0]), int(fields[1]), _unescape(fields[4]),
                                fields[5], fields[sep + 1]))
    return mounts


def beneath(mounts: list, top: str) -> list:
    """Mount points at or below `top`, shallowest first."""
    top = top.rstrip("/") or "/"
    prefix = "/" if top == "/" else top + "/"
    found = [m.mount_point for m in mounts if m.mount_point == top or m.mount_point.startswith(prefix)]
    return sorted(set(found), key=lambda p: p.count("/"))


def find_fstype(fstype: str, path: str = "/proc/self/mountinfo"):
    """The first mount point of the given filesystem type, or None."""
    for m in read(path):
        if m.fstype == fstype:
            return m.mount_point
    return None
