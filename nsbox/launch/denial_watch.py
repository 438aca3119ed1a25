"""The supervisor of denial reporting: a thread of the sandbox's PID 1 that answers
the command's seccomp notifications and records what the walls stop.

See plan/denial_rules.py for the design. The command loads the reporting filter and
passes its listener to PID 1 over a socket pair, then closes it: the command never
holds it when it execs. PID 1 is an ancestor of every process in the sandbox and not
dumpable, so it may read their memory (the path arguments) and the command may not
read PID 1's. Every write-intent call is continued (the kernel decides), every call
the profile denies gets the profile's errno. Events go to the caller as JSON lines on
a pipe: {"new": event} as each distinct one appears, in a session {"more": [[key...,
repeats], ...]} when it is idle or a command ends, and {"final": [...], "dropped": N}
with the counts when PID 1 ends.
"""

import os
import posixpath

from nsbox.kernel import seccomp_notify
from nsbox.launch.denial_channel import FLUSH_MODE
from nsbox.plan import denial_rules
from nsbox.policy.denials import MAX_EVENTS, Denial

_AT_FDCWD = 0xFFFFFF9C  # -100 as the low 32 bits of an argument
_MEM_FDS_MAX = 64
_CACHE_MAX = 4096
_IDLE_MS = 50
# Calls in a row from one thread after which notifications stop switching CPUs.
_SERIAL_STREAK = 64


class Supervisor:
    def __init__(self, watch, channel, profile: str, session: bool = False):
        # channel: denial_channel.Channel
        self.syscalls = {nr: (name, errno) for nr, name, errno in watch.syscalls}
        self.rules = watch.rules
        self.profile = profile
        self.channel = channel
        self.seen = {}  # (wall, operation, target, rule) -> [Denial, count]
        self.dropped = 0
        self.verdicts = {}  # (operation, absolute path, follow) -> (wall, rule, target) | None
        self.mem_fds = {}  # pid -> /proc/PID/mem fd
        self.more = {}  # key -> repeats not yet told to the caller (sent when idle)
        self.fast = {}  # (syscall number, raw absolute path) -> event key | None
        self.last_raw = None  # the path the last one-path call named, for _remember
        self.session = session  # a session lives on: repeats are told when it is idle
        self.tally = 0  # denied calls seen, for a session's "anything since?" (flush)

    # --- the thread ---------------------------------------------------------------

    def run(self, listener: int) -> None:
        """Answer notifications until PID 1 ends (launch/denial_channel.py starts this)."""
        try:
            self._serve(listener)
        finally:
            os.close(listener)  # from now on every notified call fails with ENOSYS

    def _serve(self, listener: int) -> None:
        import select

        syscalls = self.syscalls
        poller = select.poll()
        poller.register(listener, select.POLLIN)
        single = {nr: _single_path(name) for nr, (name, errno) in syscalls.items() if not errno}
        dirfds = {nr: denial_rules.CALLS[name][1][0][0] for nr, (name, errno) in syscalls.items()
                  if not errno and single[nr] is not None}
        allowed = denial_rules.certainly_allowed(self.rules)
        fast, mem_fds = self.fast, self.mem_fds
        try:
            read_head = seccomp_notify.MemoryReader().head
        except (AttributeError, OSError):  # no process_vm_readv: every new process slow
            read_head = _unreadable
        seen, more, session = self.seen, self.more, self.session
        pread = os.pread
        channel = seccomp_notify.Channel(listener)
        receive, answer_continue = channel.receive, channel.answer_continue
        # Same-CPU wake-ups (SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP, Linux 6.6) make one
        # thread's calls in a row 3-4x cheaper (a loop of denied writes; `tar x`), and
        # calls from several processes at once (`make -j2`) slower, on a 2-CPU VM: on
        # only while one thread makes call after call.
        streak, serial_pid, synced = 0, 0, False
        set_sync_wake_up = seccomp_notify.set_sync_wake_up
        while True:
            if more and session and not poller.poll(_IDLE_MS):
                self._flush_more()  # quiet for a moment: the repeats so far, for sessions
                continue
            try:
                notif_id, pid, _, nr, _, _, *args = receive()
            except (InterruptedError, FileNotFoundError, ProcessLookupError):
                continue  # the caller went away before we took its call
            if pid == serial_pid:
                streak += 1
                if streak == _SERIAL_STREAK and not synced:
                    synced = set_sync_wake_up(listener, True)
            else:
                streak, serial_pid = 1, pid
                if synced:
                    synced = not set_sync_wake_up(listener, False)
            # The hot path, for a call naming one path: a path met before (a loop's
            # denied write) is a lookup; a plain one the plan certainly allows (a build's
            # writes) a prefix check. Each answers CONTINUE, nothing else.
            spec = single.get(nr)
            if spec is not None:
                address = args[spec]
                if address:
                    mem = mem_fds.get(pid)  # open once the slow path met this process
                    try:
                        head = pread(mem, 256 - address % 256, address) if mem is not None \
                            else read_head(pid, address)  # a new process (a build's steps)
                    except OSError:
                        head = b""
                    end = head.find(b"\0")
                    if end > 0:
                        raw = head[:end]
                        key = (nr, raw)
                        if key in fast:
                            verdict = fast[key]
                            if verdict is not None:
                                self.tally += 1
                                seen[verdict][1] += 1
                                if session:
                                    more[verdict] = more.get(verdict, 0) + 1
                            answer_continue(notif_id)
                            continue
                        # A plain path that no wall can stop (most of a build's writes):
                        # no event, so nothing to resolve. Anything else: the slow path.
                        if _plain(raw):
                            if raw[:1] != b"/":
                                base = _base(pid, args, dirfds[nr])
                                raw = base.rstrip(b"/") + b"/" + raw if base else b""
                            if raw and allowed(raw):
                                answer_continue(notif_id)
                                continue
            name, errno = syscalls.get(nr, ("", 0))
            if name == "fchmod" and args[0] & 0xFFFFFFFF == 0xFFFFFFFF and args[1] == FLUSH_MODE:
                if self.more:  # a session's command has ended
                    self._flush_more()
                seccomp_notify.answer_value(listener, notif_id, self.tally & 0x7FFFFFFF)
                continue
            if errno or not name:
                # A call the profile denies: its errno, never CONTINUE. Recorded before
                # the answer: once the command goes on, PID 1 may be about to report.
                try:
                    self._record("seccomp", "syscall", name or str(nr),
                                 f"seccomp profile {self.profile}", pid)
                except Exception:
                    pass  # a report is lost, never the answer
                seccomp_notify.answer_error(listener, notif_id, errno or 38)
                continue
            try:
                self.last_raw = None
                found = self._classify(name, pid, args, listener, notif_id)
                if found:
                    for wall, operation, target, rule in found:
                        self._record(wall, operation, target, rule, pid)
                if spec is not None and found is not None:
                    self._remember(nr, spec, pid, args, found)
            except Exception:
                pass  # a report is lost, never the call: it goes on regardless
            answer_continue(notif_id)

    def _remember(self, nr: int, spec: int, pid: int, args, found) -> None:
        """Keep the verdict on a one-path call by its raw absolute path, where sound:
        no `..` or `.` (see _judge), and a denial already recorded (its key counts)."""
        raw = self.last_raw
        if not raw or raw[:1] != b"/" or b"/.." in raw or b"/./" in raw or len(found) > 1:
            return
        if found:
            key = found[0]
            if key not in self.seen:
                return  # past MAX_EVENTS: counted as dropped on the slow path
            verdict = key
        else:
            verdict = None
        if len(self.fast) >= _CACHE_MAX:
            self.fast.clear()
        self.fast[(nr, raw)] = verdict

    # --- what a call names --------------------------------------------------------

    def _classify(self, name: str, pid: int, args, listener: int, notif_id: int):
        if name == "connect":
            return self._connect(pid, args, listener, notif_id)
        operation, paths, _ = denial_rules.CALLS[name]
        if name == "openat2" and not self._open_how_writes(pid, args[2]):
            return None
        found = []
        follow = operation in ("write", "chmod", "set times", "set xattr", "chown") \
            and not name.startswith("l")
        for dirfd_index, path_index in paths:
            if dirfd_index == "fd":
                path = self._fd_path(pid, args[path_index])
                verdict = self._judge(operation, path, True, cache=False) if path else None
            else:
                verdict = self._path_verdict(operation, pid, args, dirfd_index, path_index,
                                             follow)
            if verdict is not None:
                found.append((verdict[0], operation, verdict[2], verdict[1]))
        if found and _fails_otherwise(name, operation, args, found, self.rules):
            self.last_raw = None  # depends on the flags and on what exists: not kept
            return []
        if found and not seccomp_notify.still_waiting(listener, notif_id):
            return None  # the memory read may not have been this call's
        return found

    def _connect(self, pid: int, args, listener: int, notif_id: int):
        """A connect(2) that cannot reach what it names (plan/denial_rules.py)."""
        size = min(args[2] & 0xFFFFFFFF, 110)  # sizeof(struct sockaddr_un)
        data = self._read(pid, args[1], size) if args[1] else b""
        address = denial_rules.socket_address(data)
        if address is None:
            return None
        if address[0] == "unix" and not address[1].startswith("/"):
            cwd = self._cwd(pid)
            if not cwd:
                return None
            address = ("unix", posixpath.join(cwd, address[1]))
        verdict = denial_rules.classify_connect(address, self.rules, os.path.lexists)
        if verdict is None or not seccomp_notify.still_waiting(listener, notif_id):
            return None
        wall, target, rule = verdict
        return [(wall, "connect", target, rule)]

    def _path_verdict(self, operation, pid, args, dirfd_index, path_index, follow):
        address = args[path_index]
        if not address:  # utimensat(fd, NULL, ...): the fd itself
            path = self._fd_path(pid, args[dirfd_index]) if dirfd_index is not None else None
            return self._judge(operation, path, True, cache=False) if path else None
        raw = self.last_raw = self._read_path(pid, address)
        if raw is None:
            return None
        if raw.startswith(b"/"):
            path = os.fsdecode(raw)
        else:
            dirfd = args[dirfd_index] & 0xFFFFFFFF if dirfd_index is not None else _AT_FDCWD
            base = self._cwd(pid) if dirfd == _AT_FDCWD else self._fd_path(pid, dirfd)
            if not base or not base.startswith("/"):
                return None
            path = posixpath.join(base, os.fsdecode(raw)) if raw else base
        return self._judge(operation, path, follow)

    def _judge(self, operation: str, path: str, follow: bool, cache: bool = True):
        """(wall, rule, resolved target) or None; cached where a path's meaning cannot
        change: lexically inside the writable roots (allowed, no symlink resolved), or
        outside them, where nothing on the way can be changed by the sandbox."""
        key = (operation, path, follow)
        if key in self.verdicts:
            return self.verdicts[key]
        lexical = posixpath.normpath(path)
        cacheable = cache and "/.." not in path and "/./" not in path
        if denial_rules.classify(operation, lexical, self.rules) is None:
            verdict = None
        else:
            verdict = self._resolved_verdict(operation, path, follow)
        if cacheable:
            if len(self.verdicts) >= _CACHE_MAX:
                self.verdicts.clear()
            self.verdicts[key] = verdict
        return verdict

    def _resolved_verdict(self, operation: str, path: str, follow: bool):
        if follow:
            resolved = posixpath.realpath(path)
        else:
            head, tail = posixpath.split(path)
            resolved = posixpath.join(posixpath.realpath(head or "/"), tail) if tail \
                else posixpath.realpath(path)
        found = denial_rules.classify(operation, resolved, self.rules)
        if found is None:
            return None
        return found[0], found[1], resolved

    def _open_how_writes(self, pid: int, address: int) -> bool:
        data = self._read(pid, address, 8)
        if len(data) < 8:
            return True  # unknown: classify it
        return bool(int.from_bytes(data, "little") & denial_rules.WRITE_FLAGS)

    def _read_path(self, pid: int, address: int):
        return self._through_mem_fd(pid, lambda fd: seccomp_notify.read_path(fd, address))

    def _read(self, pid: int, address: int, size: int) -> bytes:
        """Up to `size` bytes of the process's memory at `address`; b"" if unreadable."""
        return self._through_mem_fd(
            pid, lambda fd: seccomp_notify.read_memory(fd, address, size) or None) or b""

    def _through_mem_fd(self, pid: int, read):
        """read(fd of /proc/PID/mem), None if it read nothing. A cached fd reads nothing
        once its process has run a new program (exec) or its pid is reused: open again."""
        for _ in range(2):
            fd = self._mem_fd(pid)
            if fd is None:
                return None
            found = read(fd)
            if found is not None:
                return found
            self._forget(pid)
        return None

    def _mem_fd(self, pid: int):
        fd = self.mem_fds.get(pid)
        if fd is None:
            if len(self.mem_fds) >= _MEM_FDS_MAX:
                for old in list(self.mem_fds):
                    self._forget(old)
            try:
                fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return None
            self.mem_fds[pid] = fd
        return fd

    def _forget(self, pid: int) -> None:
        fd = self.mem_fds.pop(pid, None)
        if fd is not None:
            os.close(fd)

    @staticmethod
    def _cwd(pid: int):
        try:
            return os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            return None

    @staticmethod
    def _fd_path(pid: int, fd: int):
        """The path an open file or directory has now; None for one without a path
        (a pipe, a memfd, a deleted file): no report beats a wrong one."""
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd & 0xFFFFFFFF}")
        except OSError:
            return None
        if link.endswith(" (deleted)") or link.startswith("/memfd:"):
            return None
        return link

    # --- events -------------------------------------------------------------------

    def _record(self, wall: str, operation: str, target: str, rule: str, pid: int) -> None:
        self.tally += 1
        key = (wall, operation, target, rule)
        entry = self.seen.get(key)
        if entry is not None:
            entry[1] += 1
            if self.session:
                self.more[key] = self.more.get(key, 0) + 1
            return
        if len(self.seen) >= MAX_EVENTS:
            self.dropped += 1
            return
        denial = Denial(wall, operation, target, rule, pid, _command_name(pid))
        self.seen[key] = [denial, 1]
        self._write({"new": denial.as_dict()})

    def _flush_more(self) -> None:
        more = dict(self.more)
        self.more.clear()  # in place: the serving loop holds it
        self._write({"more": [[*key, count] for key, count in more.items()]})

    def finish(self) -> None:
        """PID 1, before it exits: every event with its count."""
        events = []
        for denial, count in list(self.seen.values()):
            item = denial.as_dict()
            item["count"] = count
            events.append(item)
        self._write({"final": events, "dropped": self.dropped})

    def _write(self, message: dict) -> None:
        try:
            os.write(self.channel.events_w, json_line(message))
        except OSError:
            pass  # the pipe is full or its reader gone: the report is best effort


def json_line(value) -> bytes:
    """`value` (dicts with str keys, lists, str, int, bool, None) as one line of ASCII
    JSON. PID 1 may have to import this module before the sandbox's root hides nsbox's
    files (an image as root): the json module would add 8 ms there (it imports re)."""
    return "".join(_json_parts(value, [])).encode() + b"\n"


def _json_parts(value, out: list) -> list:
    if isinstance(value, str):
        out.append(_json_string(value))
    elif value is None or isinstance(value, bool):
        out.append("null" if value is None else "true" if value else "false")
    elif isinstance(value, int):
        out.append(str(int(value)))
    elif isinstance(value, dict):
        out.append("{")
        for i, (key, item) in enumerate(value.items()):
            out.append(("," if i else "") + _json_string(str(key)) + ":")
            _json_parts(item, out)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _json_parts(item, out)
        out.append("]")
    else:
        raise TypeError(f"not encoded in a denial report: {type(value).__name__}")
    return out


_JSON_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t",
                 "\b": "\\b", "\f": "\\f"}


def _json_string(text: str) -> str:
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'  # most paths
    parts = []
    for char in text:
        code = ord(char)
        if char in _JSON_ESCAPES:
            parts.append(_JSON_ESCAPES[char])
        elif 0x20 <= code < 0x7F:
            parts.append(char)
        elif code > 0xFFFF:  # a surrogate pair, as json.dumps writes it
            code -= 0x10000
            parts.append(f"\\u{0xD800 | code >> 10:04x}\\u{0xDC00 | code & 0x3FF:04x}")
        else:
            parts.append(f"\\u{code:04x}")
    return '"' + "".join(parts) + '"'


_O_ACCMODE, _O_TRUNC = 0o3, 0o1000
_OPEN_FLAGS = {"open": 1, "openat": 2}


def _fails_otherwise(name: str, operation: str, args, found, rules) -> bool:
    """The call would not be stopped by a wall: creating what already exists fails
    with EEXIST first (`mkdir -p /etc`), an O_CREAT open of an existing file that
    neither writes nor truncates is a read, and under Landlock alone deleting what
    does not exist fails with ENOENT (`rm -f /etc/missing`)."""
    if operation == "delete" and rules.landlock_alone:
        return not any(os.path.lexists(target) for _, _, target, _ in found)
    index = _OPEN_FLAGS.get(name)
    if index is not None:
        flags = args[index]
        if flags & _O_ACCMODE or flags & _O_TRUNC:
            return False
    elif operation != "create":
        return False
    return all(os.path.lexists(target) for _, _, target, _ in found)


def _unreadable(pid: int, address: int) -> bytes:
    return b""


def _plain(raw: bytes) -> bool:
    """No `.`, `..` or empty component: the path means what it says, lexically."""
    if b"//" in raw or raw[-1:] == b"/":
        return False
    if b"." in raw:
        for part in raw.split(b"/"):
            if part == b"." or part == b"..":
                return False
    return True


def _base(pid: int, args, dirfd_index) -> bytes:
    """The directory a relative path starts from (the dirfd's, else the cwd); b"" if it
    has no path (a pipe, a deleted directory)."""
    dirfd = args[dirfd_index] & 0xFFFFFFFF if dirfd_index is not None else _AT_FDCWD
    link = b"/proc/%d/cwd" % pid if dirfd == _AT_FDCWD else b"/proc/%d/fd/%d" % (pid, dirfd)
    try:
        base = os.readlink(link)
    except OSError:
        return b""
    return base if base[:1] == b"/" and not base.endswith(b" (deleted)") else b""


def _single_path(name: str):
    """The index of the path argument of a call that names one path from the current
    directory or absolutely (open, creat, mkdir, ...), else None."""
    if name not in denial_rules.CALLS:
        return None  # connect: an address, not a path
    _, paths, _ = denial_rules.CALLS[name]
    if name == "openat2":
        return None  # its flags are in memory: a read-only open must not count
    if len(paths) == 1 and paths[0][0] != "fd":
        return paths[0][1]
    return None


def _command_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            return f.read().decode(errors="replace").strip()
    except OSError:
        return ""


def drain(fd: int) -> bytes:
    """Everything in the (non-blocking) pipe now."""
    data = b""
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    return data


class Collector:
    """Reads the supervisor's lines, in pieces as they arrive."""

    def __init__(self, on_new=None):
        from nsbox.policy import denials

        self.log = denials.DenialLog()
        self.final = None
        self.dropped = 0
        self.on_new = on_new
        self.partial = b""

    def feed(self, data: bytes) -> list:
        """Take bytes from the pipe; the complete lines in them, parsed."""
        import json

        from nsbox.policy import denials

        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        messages = []
        for line in lines:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            messages.append(message)
            if "new" in message:
                denial = denials.from_dict(message["new"])
                self.log.add(denial)
                if self.on_new is not None:
                    self.on_new(denial)
            elif "more" in message:
                for wall, operation, target, rule, count in message["more"]:
                    self.log.add(denials.Denial(wall, operation, target, rule, count=count))
            elif "final" in message:
                self.final = tuple(denials.from_dict(item) for item in message["final"])
                self.dropped = int(message.get("dropped", 0))
        return messages

    def result(self) -> tuple:
        if self.final is not None:
            return self.final, self.dropped
        return self.log.events(), self.log.dropped
