"""Control groups: find where this process may create a child group, create one,
write its limits, read its events, remove it. cgroup v2 first; v1 hierarchies
(hybrid hosts) where a controller lives only there.
"""

import errno
import os
import time
from collections import namedtuple

from nsbox.errors import SyscallError

V2 = "cgroup2"
V1 = "cgroup1"
KNOWN_CONTROLLERS = ("pids", "memory", "cpu")


# Where a controller can be used: our own cgroup in one hierarchy. `path` is our own
# cgroup's directory; `enable`: the controller must first be enabled in path's
# cgroup.subtree_control. A namedtuple: importing typing costs ~2 ms of start-up.
Place = namedtuple("Place", "version path enable")


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _cgroup_mounts(mountinfo: str = "/proc/self/mountinfo") -> list:
    """(version, mount point, mount root, controllers) for each cgroup mount."""
    found = []
    for line in _read(mountinfo).splitlines():
        fields = line.split()
        sep = fields.index("-")
        fstype = fields[sep + 1]
        if fstype == "cgroup2":
            found.append((V2, _unescape(fields[4]), fields[3], frozenset()))
        elif fstype == "cgroup":
            options = set(fields[sep + 3].split(","))
            found.append((V1, _unescape(fields[4]), fields[3],
                          frozenset(options.intersection(KNOWN_CONTROLLERS))))
    return found


def _unescape(field: str) -> str:
    return field.encode().decode("unicode_escape").encode("latin-1").decode(errors="surrogateescape")


def _own_groups(path: str = "/proc/self/cgroup") -> dict:
    """Hierarchy key (v2: "", v1: its controller list) -> our cgroup path in it."""
    groups = {}
    for line in _read(path).splitlines():
        _, controllers, group = line.split(":", 2)
        if controllers == "":
            groups[""] = group
        for name in controllers.split(","):
            groups[name] = group
    return groups


def _join(mount: str, mount_root: str, group: str):
    """The directory of `group` under a mount whose root is `mount_root`, or None."""
    root = mount_root.rstrip("/")
    if root and group != root and not group.startswith(root + "/"):
        return None  # our cgroup is outside what this mount shows
    return os.path.join(mount, group[len(root):].lstrip("/")).rstrip("/") or "/"


def find_places(wanted) -> dict:
    """Controller -> Place for each wanted controller this process can delegate to a child.

    A v2 controller is usable when our cgroup is writable, offers the controller, and
    either already enables it for children or is the hierarchy's root (the only
    cgroup that may both hold processes and enable controllers).
    """
    wanted = set(wanted)
    if not wanted:
        return {}
    places = {}
    try:
        mounts = _cgroup_mounts()
        own = _own_groups()
    except (OSError, ValueError):
        return {}
    for version, mount, mount_root, controllers in mounts:
        if version != V2 or "" not in own:
            continue
        path = _join(mount, mount_root, own[""])
        if path is None or not os.access(path, os.W_OK):
            continue
        try:
            offered = set(_read(f"{path}/cgroup.controllers").split())
            enabled = set(_read(f"{path}/cgroup.subtree_control").split())
        except OSError:
            continue
        is_root = not os.path.exists(f"{path}/cgroup.type")
        for name in wanted & offered:
            if name in enabled:
                places[name] = Place(V2, path, False)
            elif is_root and os.access(f"{path}/cgroup.subtree_control", os.W_OK):
                places[name] = Place(V2, path, True)
        break
    for version, mount, mount_root, controllers in mounts:
        if version != V1:
            continue
        for name in (wanted & controllers) - places.keys():
            path = _join(mount, mount_root, own.get(name, "/"))
            if path is not None and os.access(path, os.W_OK):
                places[name] = Place(V1, path, False)
    return places


class Group:
    """A cgroup created for one sandbox: a directory per hierarchy it spans.

    Everything after creation goes through fds of the parent directories: once PID 1
    pivots into the new root, the caller shares that root and its read-only /sys.
    """

    def __init__(self, name: str):
        self.name = name
        self.dirs = []  # (version, fd of the parent directory)
        self.procs_fds = []  # open cgroup.procs files; a process joins by writing "0"

    def add(self, version: str, parent: str, enable: tuple, settings: tuple) -> None:
        for controller in enable:
            _write(f"{parent}/cgroup.subtree_control", f"+{controller}",
                   hint=f"enable the {controller} controller for child cgroups")
        parent_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.mkdir(self.name, 0o755, dir_fd=parent_fd)
        except OSError as err:
            os.close(parent_fd)
            raise SyscallError(err.errno, "mkdir", repr(f"{parent}/{self.name}"),
                               "cannot create a cgroup for the sandbox's limits") from None
        self.dirs.append((version, parent_fd))
        for filename, content, required in settings:
            try:
                _write(f"{self.name}/{filename}", content, dir_fd=parent_fd)
            except SyscallError as err:
                if required or err.errno != errno.ENOENT:
                    raise
        self.procs_fds.append(
            os.open(f"{self.name}/cgroup.procs", os.O_WRONLY | os.O_CLOEXEC, dir_fd=parent_fd))

    def join(self) -> None:
        """Move the calling process in; its future children start inside."""
        for fd in self.procs_fds:
            try:
                os.write(fd, b"0")
            except OSError as err:
                raise SyscallError(err.errno, "write", "cgroup.procs, 0",
                                   "cannot move the sandbox into its cgroup") from None

    def close_fds(self) -> None:
        """Drop every fd (PID 1 does this after joining: the sandbox keeps none)."""
        for fd in self.procs_fds + [fd for _, fd in self.dirs]:
            os.close(fd)
        self.procs_fds, self.dirs = [], []

    def counter(self, filename: str, key: str) -> int:
        """A `key value` line of a flat-keyed file such as memory.events, summed over dirs."""
        total = 0
        for _, parent_fd in self.dirs:
            try:
                text = _read_at(parent_fd, f"{self.name}/{filename}")
            except OSError:
                continue
            for line in text.splitlines():
                name, _, value = line.partition(" ")
                if name == key:
                    total += int(value)
        return total

    def remove(self, wait: float = 1.0) -> list:
        """Kill what is left and remove every directory; returns the versions left behind."""
        for fd in self.procs_fds:
            os.close(fd)
        self.procs_fds = []
        left = []
        for version, parent_fd in reversed(self.dirs):
            if not _remove_dir(version, parent_fd, self.name, wait):
                left.append(version)
            os.close(parent_fd)
        self.dirs = []
        return left


def sweep_stale(parent: str, prefix: str) -> None:
    """Remove empty groups named `prefix<pid>-...` whose creator `pid` is gone (it crashed)."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        if not name.startswith(prefix):
            continue
        try:
            os.kill(int(name[len(prefix):].split("-", 1)[0]), 0)
            continue  # its creator still runs
        except ProcessLookupError:
            pass
        except (ValueError, PermissionError):
            continue
        try:
            os.rmdir(f"{parent}/{name}")
        except OSError:
            pass  # still populated, or not ours to remove


def _read_at(dir_fd: int, path: str) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        return os.read(fd, 4096).decode()
    finally:
        os.close(fd)


def _remove_dir(version: str, parent_fd: int, name: str, wait: float) -> bool:
    deadline = time.monotonic() + wait
    killed = False
    while True:
        try:
            os.rmdir(name, dir_fd=parent_fd)
            return True
        except FileNotFoundError:
            return True
        except OSError as err:
            if err.errno != errno.EBUSY or time.monotonic() > deadline:
                return False
        # Still populated: exiting processes leave the group a moment after they
        # are reaped. Anything really alive is killed (only v2 has cgroup.kill).
        if version == V2 and not killed:
            try:
                _write(f"{name}/cgroup.kill", "1", dir_fd=parent_fd)
            except SyscallError:
                pass
            killed = True
        time.sleep(0.002)


def _write(path: str, content: str, hint: str = "", dir_fd=None) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as err:
        raise SyscallError(err.errno, "open", repr(path), hint) from None
    try:
        os.write(fd, content.encode())
    except OSError as err:
        raise SyscallError(err.errno, "write", f"{path!r}, {content!r}", hint) from None
    finally:
        os.close(fd)
