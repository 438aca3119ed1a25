"""The allowlist proxy process: outside the sandbox, in the host's network namespace.

It listens nowhere. The sandbox's forwarder accepts connections on the
sandbox's own loopback and hands each accepted socket over a unix socketpair
(SCM_RIGHTS); this process reads the request on it (HTTP CONNECT, plain HTTP,
or SOCKS5), resolves and connects only to allowed names, and relays bytes.
Every refusal is written to stderr as one line and kept for the run's report,
which the caller asks for by shutting down its end of the control socket.
A session's relay asks for the refusals since a time with a line
"since <monotonic seconds>" on it; the answer is one JSON line.
"""

import collections
import json
import os
import select
import signal
import socket
import struct
import threading
import time

from nsbox.kernel import caps, proc
from nsbox.netproxy import protocol
from nsbox.policy import netallow

MAX_CONNECTIONS = 512
HEAD_TIMEOUT = 30.0  # a client that connects and says nothing
CONNECT_TIMEOUT = 15.0
_CHUNK = 1 << 16
_MAX_FDS = 16
_RECENT = 4 * netallow.MAX_REPORTED  # timestamped refusals kept for a session's queries


def main(settings, channel_fd: int, control_fd: int, parent_pid: int) -> None:
    """Runs in a child forked by the caller before it unshares; never returns."""
    proc.set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(0)  # the caller died before we could watch it
    proc.set_name("nsbox-netproxy")
    # The terminal's Ctrl-C reaches the whole process group; the caller stops us.
    for sig in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    _keep_only_fds(channel_fd, control_fd)
    os.chdir("/")
    if os.geteuid() == 0:
        caps.drop_all(caps.last_cap())  # connecting out needs no capability
    proc.set_no_new_privs()
    Proxy(settings).serve(channel_fd, control_fd)
    os._exit(0)


def _keep_only_fds(*keep: int) -> None:
    """stdin and stdout become /dev/null (a pipe held open would delay someone's EOF);
    stderr stays for the refusal lines; every other fd is closed."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for target in (0, 1):
        os.dup2(devnull, target)
    os.close(devnull)
    start = 3
    for fd in sorted(keep):
        os.closerange(start, fd)
        start = fd + 1
    os.closerange(start, os.sysconf("SC_OPEN_MAX"))


class Proxy:
    def __init__(self, settings: netallow.ProxySettings):
        self.allow = settings.allow
        self.overrides = settings.overrides
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.refusals = []
        self.refused_total = 0
        self.recent = collections.deque(maxlen=_RECENT)  # (time.monotonic(), Refusal)

    # --- the control loop -----------------------------------------------------------

    def serve(self, channel_fd: int, control_fd: int) -> None:
        """Take sockets from the forwarder until the caller asks for the report."""
        channel = socket.socket(fileno=channel_fd)
        poller = select.poll()
        poller.register(channel_fd, select.POLLIN)
        poller.register(control_fd, select.POLLIN)
        pending = b""
        while True:
            for fd, _ in poller.poll():
                if fd == control_fd:
                    data = _read_quietly(control_fd)
                    if not data:
                        self._send_report(control_fd)
                        return
                    pending += data
                    while b"\n" in pending:
                        line, _, pending = pending.partition(b"\n")
                        self._answer_query(control_fd, line)
                elif not self._take_connections(channel):
                    poller.unregister(channel_fd)  # the sandbox is gone

    def _take_connections(self, channel) -> bool:
        try:
            data, ancdata, _, _ = channel.recvmsg(16, socket.CMSG_SPACE(_MAX_FDS * 4),
                                                  socket.MSG_CMSG_CLOEXEC)
        except InterruptedError:
            return True
        except OSError:
            return False
        fds = []
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                count = len(payload) // 4
                fds.extend(struct.unpack(f"={count}i", payload[:count * 4]))
        for fd in fds:
            conn = socket.socket(fileno=fd)
            if not self._slots.acquire(blocking=False):
                conn.close()  # too many at once: the client sees a reset
                continue
            try:
                threading.Thread(target=self._handle, args=(conn,), daemon=True).start()
            except RuntimeError:  # no thread to be had: drop this one, keep serving
                conn.close()
                self._slots.release()
        return bool(data)

    def _send_report(self, control_fd: int) -> None:
        with self._lock:
            report = {"blocked": [r.as_dict() for r in self.refusals],
                      "blocked_total": self.refused_total}
        _write_all(control_fd, json.dumps(report).encode())

    def _answer_query(self, control_fd: int, line: bytes) -> None:
        try:
            since = float(line.split(b" ", 1)[1])
        except (IndexError, ValueError):
            since = float("inf")
        with self._lock:
            found = [r for t, r in self.recent if t >= since]
        report = {"blocked": [r.as_dict() for r in found[:netallow.MAX_REPORTED]],
                  "blocked_total": len(found)}
        _write_all(control_fd, json.dumps(report).encode() + b"\n")

    def refuse(self, method: str, host: str, port: int, reason: str) -> netallow.Refusal:
        refusal = netallow.Refusal(method, netallow.normalize(host), port, reason)
        with self._lock:
            self.recent.append((time.monotonic(), refusal))
            self.refused_total += 1
            if len(self.refusals) < netallow.MAX_REPORTED:
                self.refusals.append(refusal)
            try:
                os.write(2, netallow.stderr_line(refusal).encode(errors="replace"))
            except OSError:
                pass
        return refusal

    # --- one connection -------------------------------------------------------------

    def _handle(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(HEAD_TIMEOUT)
            first = conn.recv(1, socket.MSG_PEEK)
            if first == bytes((protocol.SOCKS_VERSION,)):
                self._socks(conn)
            elif first:
                self._http(conn)
        except (OSError, ValueError):
            pass
        finally:
            conn.close()
            self._slots.release()

    def _http(self, conn: socket.socket) -> None:
        try:
            head, rest = _read_head(conn)
            request = protocol.parse_head(head)
        except protocol.BadRequest as err:
            conn.sendall(protocol.http_response(400, "Bad Request", f"nsbox proxy: {err}\n"))
            return
        label = request.method
        reason = netallow.refusal_reason(request.host, self.allow)
        upstream = failure = None
        if reason is not None:
            self.refuse(label, request.host, request.port, reason)
        else:
            upstream, reason, failure = self._connect(label, request.host, request.port)
        if reason is not None:
            refusal = netallow.Refusal(label, request.host, request.port, reason)
            conn.sendall(protocol.http_response(
                403, "Forbidden", netallow.stderr_line(refusal),
                f'error=http_request_denied; details="{reason}"'))
            return
        if upstream is None:
            status, text, kind = failure
            conn.sendall(protocol.http_response(
                status, "Bad Gateway" if status == 502 else "Gateway Timeout",
                f"nsbox proxy: {text}\n", f'error={kind}; details="{text}"'))
            return
        with upstream:
            if request.method == "CONNECT":
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                if rest:
                    upstream.sendall(rest)
            else:
                upstream.sendall(protocol.origin_head(request) + rest)
            _relay(conn, upstream)

    def _socks(self, conn: socket.socket) -> None:
        _, count = _recv_exact(conn, 2)
        methods = _recv_exact(conn, count)
        if protocol.SOCKS_NO_AUTH not in methods:
            conn.sendall(bytes((protocol.SOCKS_VERSION, protocol.SOCKS_NO_METHOD)))
            return
        conn.sendall(bytes((protocol.SOCKS_VERSION, protocol.SOCKS_NO_AUTH)))
        _, command, _, kind = _recv_exact(conn, 4)
        if kind == 1:
            host = socket.inet_ntop(socket.AF_INET, _recv_exact(conn, 4))
        elif kind == 4:
            host = socket.inet_ntop(socket.AF_INET6, _recv_exact(conn, 16))
        elif kind == 3:
            host = _recv_exact(conn, _recv_exact(conn, 1)[0]).decode("ascii", "replace")
        else:
            conn.sendall(protocol.socks_reply(protocol.SOCKS_BAD_ADDRESS))
            return
        port = struct.unpack("!H", _recv_exact(conn, 2))[0]
        if command != protocol.SOCKS_CONNECT:
            conn.sendall(protocol.socks_reply(protocol.SOCKS_BAD_COMMAND))
            return
        reason = netallow.refusal_reason(host, self.allow)
        upstream = failure = None
        if reason is not None:
            self.refuse("SOCKS", host, port, reason)
        else:
            upstream, reason, failure = self._connect("SOCKS", host, port)
        if reason is not None:
            conn.sendall(protocol.socks_reply(protocol.SOCKS_NOT_ALLOWED))
            return
        if upstream is None:
            conn.sendall(protocol.socks_reply(failure[3]))
            return
        with upstream:
            conn.sendall(protocol.socks_reply(protocol.SOCKS_OK))
            _relay(conn, upstream)

    def _connect(self, label: str, host: str, port: int):
        """(socket, None, None), or (None, refusal reason, None), or (None, None, failure).

        A failure (status, text, Proxy-Status error, SOCKS code) is the site's
        problem, not the policy's, and is not recorded as a refusal.
        """
        if port == 0:
            return None, None, (502, "port 0", "destination_not_found", protocol.SOCKS_FAILURE)
        override = netallow.resolve_override(self.overrides, host, port)  # tests only
        pinned = netallow.pinned_address(host, self.allow)
        if override is not None:
            addresses = [override]
        elif pinned is not None:
            addresses = [(pinned, port)]
        else:
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except (socket.gaierror, UnicodeError) as err:
                text = f"cannot resolve {host}: {getattr(err, 'strerror', None) or err}"
                return None, None, (502, text, "dns_error", protocol.SOCKS_HOST_UNREACHABLE)
            addresses = [info[4][:2] for info in infos]
        candidates, refused = [], None
        for address in addresses:
            why = netallow.address_refusal(address[0], self.allow, host)
            if why is None:
                candidates.append(address)
            else:
                refused = why
        if not candidates:
            self.refuse(label, host, port, refused)
            return None, refused, None
        error = None
        for address in candidates:
            family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.settimeout(CONNECT_TIMEOUT)
            try:
                sock.connect(address)
            except OSError as err:
                sock.close()
                error = err
                continue
            sock.settimeout(None)
            return sock, None, None
        where = netallow.format_hostport(host, port)
        if isinstance(error, TimeoutError):
            return None, None, (504, f"connecting to {where} timed out", "connection_timeout",
                                protocol.SOCKS_TTL_EXPIRED)
        text = f"cannot connect to {where}: {getattr(error, 'strerror', None) or error}"
        code = (protocol.SOCKS_REFUSED if isinstance(error, ConnectionRefusedError)
                else protocol.SOCKS_HOST_UNREACHABLE)
        return None, None, (502, text, "connection_refused" if code == protocol.SOCKS_REFUSED
                            else "destination_unavailable", code)


def _read_head(conn: socket.socket):
    """(head without the blank line, bytes already read past it)."""
    data = b""
    while True:
        end = data.find(b"\r\n\r\n")
        if end >= 0:
            return data[:end], data[end + 4:]
        if len(data) > protocol.MAX_HEAD:
            raise protocol.BadRequest("request head too large")
        chunk = conn.recv(_CHUNK)
        if not chunk:
            raise ConnectionError("closed before the request head ended")
        data += chunk


def _recv_exact(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed mid-message")
        data += chunk
    return data


def _relay(a: socket.socket, b: socket.socket) -> None:
    """Copy both ways until both sides have finished sending; half-closes pass through."""
    a.settimeout(None)
    b.settimeout(None)
    peer = {a.fileno(): (a, b), b.fileno(): (b, a)}
    poller = select.poll()
    for fd in peer:
        poller.register(fd, select.POLLIN)
    while peer:
        for fd, _ in poller.poll():
            if fd not in peer:
                continue
            src, dst = peer[fd]
            try:
                data = src.recv(_CHUNK)
                if data:
                    dst.sendall(data)
                    continue
            except OSError:
                return  # a reset on either side ends both directions
            poller.unregister(fd)
            del peer[fd]
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass


def _write_all(fd: int, data: bytes) -> None:
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:
        pass


def _read_quietly(fd: int) -> bytes:
    try:
        return os.read(fd, 64)
    except OSError:
        return b""
