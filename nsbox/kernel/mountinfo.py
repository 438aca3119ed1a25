"""Parse /proc/self/mountinfo, and find where else a mounted path is visible."""

import os

from nsbox import _ffi
from nsbox.record import Record

MOUNTINFO = "/proc/self/mountinfo"


class Mount(Record):
    mount_id: int
    parent_id: int
    mount_point: str
    options: str
    fstype: str
    root: str = "/"  # the directory of its filesystem shown at mount_point
    dev: str = ""  # "major:minor" of its filesystem


def unescape(field: bytes) -> str:
    """A path field of the table as a str."""
    # The kernel octal-escapes space, tab, newline and backslash.
    if b"\\" in field:
        field = field.decode("unicode_escape").encode("latin-1")
    return os.fsdecode(field)


def parse_line(line: bytes) -> Mount:
    fields = line.split()
    sep = fields.index(b"-")
    return Mount(int(fields[0]), int(fields[1]), unescape(fields[4]), fields[5].decode(),
                 fields[sep + 1].decode(), unescape(fields[3]), fields[2].decode())


def read_bytes(path: str = MOUNTINFO) -> bytes:
    """The whole table in one go (the kernel writes it as it is read: ~2 µs per mount)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


def read(path: str = MOUNTINFO) -> list:
    return [parse_line(line) for line in read_bytes(path).splitlines() if line]


def beneath(mounts: list, top: str) -> list:
    """Mount points at or below `top`, shallowest first."""
    top = top.rstrip("/") or "/"
    prefix = "/" if top == "/" else top + "/"
    found = [m.mount_point for m in mounts if m.mount_point == top or m.mount_point.startswith(prefix)]
    return sorted(set(found), key=lambda p: p.count("/"))


def find_fstype(fstype: str, path: str = MOUNTINFO):
    """The first mount point of the given filesystem type, or None."""
    for m in read(path):
        if m.fstype == fstype:
            return m.mount_point
    return None


def mounts_of_device(text: bytes, dev: str) -> int:
    """How many mounts show the filesystem `dev` ("major:minor"); 1 means no other place."""
    return text.count(f" {dev} ".encode())  # spaces inside fields are escaped


def by_id(text: bytes, mount_id: int):
    """The mount with this id, or None."""
    needle = f"{mount_id} ".encode()
    for line in text.splitlines():
        if line.startswith(needle):
            return parse_line(line)
    return None


AT_FDCWD = -100
STATX_MNT_ID = 0x1000  # Linux 5.8; the id mountinfo shows
_STX_MNT_ID_OFFSET = 144  # in struct statx (256 bytes), after the timestamps and devices


def mount_id_of(path: str) -> int:
    """The id of the mount `path` resolves into (statx; on kernels before 5.8, the
    fdinfo of an O_PATH fd)."""
    buf = _ffi.new("unsigned char[256]")
    _ffi.syscall("statx", AT_FDCWD, _ffi.cstr(path), 0, STATX_MNT_ID, buf,
                 detail=f"{path!r}, STATX_MNT_ID")
    data = bytes(_ffi.ffi.buffer(buf))
    if int.from_bytes(data[:4], "little") & STATX_MNT_ID:
        return int.from_bytes(data[_STX_MNT_ID_OFFSET:_STX_MNT_ID_OFFSET + 8], "little")
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        info = read_bytes(f"/proc/self/fdinfo/{fd}")
    finally:
        os.close(fd)
    for line in info.splitlines():
        if line.startswith(b"mnt_id:"):
            return int(line.split()[1])
    raise OSError(f"/proc/self/fdinfo names no mount for {path}")


def elsewhere(paths) -> list:
    """(alias, is_dir, original) for every other place where a (path, is_dir) of `paths`
    is visible from here: another mount of its filesystem shows it, or a part of it.
    OSError when the table or a path's mount cannot be read.

    The table is read once; it is only searched further for a path whose filesystem
    appears in more than one line, which on most hosts none does.
    """
    if not paths:
        return []
    text = read_bytes()
    targets, kinds = [], {}
    for path, is_dir in paths:
        try:
            if not _shared_filesystem(text, path, is_dir):
                continue
            mount = by_id(text, mount_id_of(path))
        except OSError:
            if not os.path.lexists(path):
                continue  # removed since it was resolved: nothing left to show
            raise
        if mount is None:
            raise OSError(f"the mount of {path} is missing from {MOUNTINFO}")
        targets.append((path, mount))
        kinds[path] = is_dir
    if not targets:
        return []
    from nsbox.kernel import mount_aliases  # only where a filesystem is mounted twice

    return mount_aliases.reachable(mount_aliases.aliases(text, targets), kinds)


def _shared_filesystem(text: bytes, path: str, is_dir: bool) -> bool:
    """False when `path`'s filesystem has no other mount. A file is checked with its
    directory too: on overlayfs a file reports the device of the layer it comes from,
    and a file bind-mounted alone has its own."""
    devices = {os.stat(path).st_dev}
    if not is_dir:
        devices.add(os.stat(os.path.dirname(path)).st_dev)
    return any(mounts_of_device(text, f"{os.major(d)}:{os.minor(d)}") != 1 for d in devices)
