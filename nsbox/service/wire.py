"""Fixed records exchanged between a runner, the fork server and a sandbox.

Every channel is a unix SOCK_SEQPACKET socket, so one send is one record and
file descriptors ride along with SCM_RIGHTS. Towards the runner a status socket
carries, in order: STARTED or FAILED (once), then EXITED (once). Towards the
sandbox it carries signal numbers to deliver.
"""

import _socket as socket  # the C module: `socket` imports enum and selectors (bigger forks)
import os
import struct

from nsbox.launch import errorpipe

STARTED = b"S"
FAILED = b"F"  # + an errorpipe failure record
EXITED = b"X"  # + returncode, signal (0: none) as two native ints [+ NO_DENIALS]
NETWORK = b"N"  # + the allowlist proxy's report as JSON; just before EXITED
READY = b"R"  # a spare sandbox, on its control socket: send the command
PROBED = b"P"  # + why user namespaces cannot be made here (empty: they can)
LIMIT = b"L"  # + the resource limit that ended the command, as JSON; just before EXITED
# + one line of the denial supervisor (launch/denial_watch.py), as it comes; from a session
# runner, + a `since` (as NETWORK's query): the session's answer is DENIALS + {"since": [...]}
DENIALS = b"D"
_EXIT = struct.Struct("=ii")
_SIGNAL = struct.Struct("=i")
_SINCE = struct.Struct("=d")

MAX_RECORD = 1 << 18  # the socket buffer caps a record anyway
INLINE_MAX = 1 << 16  # a larger request goes in a memfd (send_request)
# A request's header when its bytes are in a memfd: NUL first, which neither a pickle
# (0x80) nor a command record (an absolute cwd) starts with.
LARGE = b"\0nsbox-large\0"
_SIZE = struct.Struct("=Q")
MAX_FDS = 8


def socketpair():
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def send(sock, record: bytes, fds=()) -> None:
    """One record; raises OSError (EPIPE etc.) if the other end is gone."""
    if fds:
        sock.sendmsg([record], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, _fd_array(fds))],
                      socket.MSG_NOSIGNAL)
    else:
        sock.send(record, socket.MSG_NOSIGNAL)


def send_request(sock, record: bytes, fds=()) -> None:
    """A request of any size: one larger than INLINE_MAX travels in a sealed memfd,
    sent as the first fd after a LARGE header (a socket record is bounded by its buffer)."""
    if len(record) <= INLINE_MAX:
        send(sock, record, fds)
        return
    memfd = os.memfd_create("nsbox-request", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        view = memoryview(record)
        while view:
            view = view[os.write(memfd, view):]
        _seal(memfd)
        send(sock, LARGE + _SIZE.pack(len(record)), [memfd, *fds])
    finally:
        os.close(memfd)


def _seal(fd: int) -> None:
    # F_ADD_SEALS with F_SEAL_SEAL|SHRINK|GROW|WRITE: the reader gets exactly these bytes.
    import fcntl

    fcntl.fcntl(fd, 1033, 0x1 | 0x2 | 0x4 | 0x8)


def send_quietly(sock, record: bytes) -> None:
    """For reports whose reader may already have gone away."""
    try:
        sock.send(record, socket.MSG_NOSIGNAL)
    except OSError:
        pass


def receive(sock, size: int = MAX_RECORD):
    """(record, fds) with the fds close-on-exec; b"" means the other end closed. A large
    request (send_request) comes back whole, its memfd read and closed."""
    record, ancdata, _, _ = sock.recvmsg(size, socket.CMSG_SPACE(MAX_FDS * 4),
                                         socket.MSG_CMSG_CLOEXEC)
    fds = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.extend(_int_array(data))
    if record[:len(LARGE)] == LARGE and len(record) == len(LARGE) + _SIZE.size and fds:
        memfd = fds.pop(0)
        try:
            record = _read_all(memfd, _SIZE.unpack(record[len(LARGE):])[0])
        finally:
            os.close(memfd)
    return record, fds


def _read_all(fd: int, size: int) -> bytes:
    chunks, offset = [], 0
    while offset < size:
        chunk = os.pread(fd, min(size - offset, 1 << 20), offset)
        if not chunk:
            raise EOFError("a large request ended early")
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _fd_array(fds):
    return struct.pack(f"={len(fds)}i", *fds)


def _int_array(data: bytes):
    count = len(data) // 4
    return struct.unpack(f"={count}i", data[:count * 4])


def failed(failure: errorpipe.Failure) -> bytes:
    """The child's failure record, passed on unchanged."""
    return FAILED + errorpipe.encode(failure)


def parse_failed(record: bytes) -> errorpipe.Failure:
    return errorpipe.decode(record[1:])


def exited(returncode: int, signal: int | None, no_denials: bool = False) -> bytes:
    """no_denials: a session's command that the denial supervisor saw stopped nowhere
    (its runner need not ask for its events)."""
    return EXITED + _EXIT.pack(returncode, signal or 0) + (NO_DENIALS if no_denials else b"")


NO_DENIALS = b"0"


def exited_from_status(status: int, no_denials: bool = False) -> bytes:
    """From a raw wait status: shell-style 128+N for a signal, and N itself."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return exited(128 + sig, sig, no_denials)
    return exited(os.waitstatus_to_exitcode(status), None, no_denials)


def parse_exited(record: bytes):
    returncode, sig = _EXIT.unpack_from(record, 1)
    return returncode, sig or None


def exited_without_denials(record: bytes) -> bool:
    return record[1 + _EXIT.size:] == NO_DENIALS


def network_report(report: dict) -> bytes:
    import json

    return NETWORK + json.dumps(report).encode()


def parse_network_report(record: bytes) -> dict:
    import json

    return json.loads(record[1:])


def limit_report(hit: dict) -> bytes:
    import json

    return LIMIT + json.dumps(hit).encode()


def parse_limit_report(record: bytes) -> dict:
    import json

    return json.loads(record[1:])


def network_query(since: float) -> bytes:
    """A session's runner, to its relay: the proxy's refusals since `since` (monotonic)."""
    return NETWORK + _SINCE.pack(since)


def parse_network_query(record: bytes):
    """`since` of a network query, or None if `record` is a signal request."""
    if len(record) == 1 + _SINCE.size and record[:1] == NETWORK:
        return _SINCE.unpack(record[1:])[0]
    return None


def denials_query(since: float) -> bytes:
    """A session's runner, to its relay: what the walls stopped since `since` (monotonic)."""
    return DENIALS + _SINCE.pack(since)


def parse_denials_query(record: bytes):
    """`since` of a denials query, or None."""
    if len(record) == 1 + _SINCE.size and record[:1] == DENIALS:
        return _SINCE.unpack(record[1:])[0]
    return None


def signal_request(sig: int) -> bytes:
    return _SIGNAL.pack(sig)


def parse_signal(record: bytes) -> int:
    return _SIGNAL.unpack(record)[0]


# First byte of a request whose argv is Python source and its arguments, run by the
# session's server in a fork of its own (see session_server.run_python); a command's
# request starts with its cwd, an absolute path.
PYTHON = b"\x01"


def encode_command(argv, cwd: str, env, python: bool = False) -> bytes:
    """cwd NUL argc NUL envc NUL argv... NUL NAME=value...; envc -1: the session's env.
    `python`: argv[0] is Python source (the record then starts with PYTHON).

    NUL can't occur inside execve's strings, so it is a safe separator.
    """
    fields = [os.fsencode(cwd), b"%d" % len(argv), b"%d" % (-1 if env is None else len(env))]
    fields.extend(os.fsencode(a) for a in argv)
    if env is not None:
        fields.extend(os.fsencode(k) + b"=" + os.fsencode(v) for k, v in env.items())
    return (PYTHON if python else b"") + b"\0".join(fields)


def decode_command(record: bytes):
    """(argv, cwd, env or None), str throughout."""
    fields = record.split(b"\0")
    argc, envc = int(fields[1]), int(fields[2])
    argv = [os.fsdecode(a) for a in fields[3:3 + argc]]
    env = None
    if envc >= 0:
        env = {}
        for item in fields[3 + argc:3 + argc + envc]:
            name, _, value = item.partition(b"=")
            env[os.fsdecode(name)] = os.fsdecode(value)
    return argv, os.fsdecode(fields[0]), env
