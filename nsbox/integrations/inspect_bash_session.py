"""Inspect's bash_session() for nsbox samples, answered by the provider.

Inspect's own keeps each shell in its tools server, which listens on a unix socket that
under landlock-only isolation other samples could reach, and gives the shell a terminal
made inside the sandbox, which without a mount namespace would mean opening the
host's /dev/pts to it. Here the provider answers bash_session's requests itself, in
both modes: each shell is `bash -i` in the sample's Session on a terminal made on the
host (host_terminal); its output is collected here. The requests are those of one
sample's own tool calls (its provider object), so only they reach its shells; close()
ends them, and the Session's end kills whatever they started.

The answers follow Inspect's own: session names, waits (the first output within
wait_for_output, then until it is idle for idle_timeout or 4 KiB are in), the output's
bound (its tail) and its control characters removed, the restart's reply and the errors.
"""

import asyncio
import codecs
import json
import os
import re
import termios
from contextlib import suppress

from nsbox.integrations import host_terminal

SHELL = ["/bin/bash", "-i"]
SHELL_ENV = {"TERM": "dumb"}  # no colours, no cursor moves: the output is read as text
SESSION_NAME = "BashSession"  # the first; then BashSession_1, BashSession_2, ...
RESTARTED = "shell restarted successfully"
ENOUGH_OUTPUT = 4096  # this much output ends the wait at once
# A new shell is handed out once it reads its first command line (its rc files run, its
# prompt shown), so that a slow rc file does not cut a first command's output short.
READY_WITHIN = 10.0  # seconds at most
DEFAULT_OUTPUT_LIMIT = 10 * 1024 * 1024
INVALID_PARAMS = -32602
METHOD_NOT_FOUND = -32601
UNEXPECTED = -32098  # Inspect raises these as a RuntimeError (the sample fails)

# ANSI escape sequences: two-byte escapes, CSI (colours, cursor), OSC 8 links,
# character set choices; then control characters other than \t, \n and \r.
_ESCAPES = re.compile(r"\x1b(?:[@-Z\\\-_]|\[[0-9;]*[A-Za-z]|\]8;.*;|\([AB012])")
_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class RequestError(Exception):
    """A JSON-RPC error answer: its code and message."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


class BashSessions:
    """One sample's bash_session shells; `sandbox` is its nsbox Session and `may_run_as`
    says whether a user name is who the sandbox's commands run as."""

    def __init__(self, sandbox, may_run_as):
        self._sandbox = sandbox
        self._may_run_as = may_run_as
        self._shells: dict[str, _Shell] = {}
        self._creating = asyncio.Lock()
        self._closed = False

    async def answer(self, request: str) -> str:
        """The JSON-RPC response to one bash_session request."""
        message = json.loads(request)
        try:
            params = message.get("params") or {}
            method = message.get("method")
            if method == "bash_session_new_session":
                result = {"session_name": await self._new_session(params)}
            elif method == "bash_session":
                result = await self._bash_session(params)
            else:
                raise RequestError(METHOD_NOT_FOUND, "Method not found")
            reply = {"jsonrpc": "2.0", "result": result, "id": message.get("id")}
        except RequestError as err:
            reply = {"jsonrpc": "2.0", "id": message.get("id"),
                     "error": {"code": err.code, "message": str(err)}}
        return json.dumps(reply)

    async def close(self) -> None:
        """End every shell (the sample is over)."""
        self._closed = True
        shells, self._shells = list(self._shells.values()), {}
        await asyncio.gather(*(shell.end() for shell in shells))

    async def _new_session(self, params: dict) -> str:
        _check("NewSessionParams", params, {}, {"user": (str, None), "run_as": (dict, None)})
        user = params.get("user")
        # run_as names the sandbox's default user: who the shell runs as anyway.
        if user and not self._may_run_as(user):
            raise RequestError(UNEXPECTED, f"nsbox runs commands as the user running "
                               f"Inspect; it cannot run bash_session as {user!r}")
        async with self._creating:
            name = f"{SESSION_NAME}_{len(self._shells)}" if self._shells else SESSION_NAME
            self._shells[name] = await self._start()
        return name

    async def _bash_session(self, params: dict) -> str:
        not_interact = _problems("InteractParams", params,
                                 {"session_name": str, "wait_for_output": int,
                                  "idle_timeout": float},
                                 {"max_output_bytes": (int, None), "input": (str, None)})
        not_restart = _problems("RestartParams", params,
                                {"session_name": str, "restart": True}, {})
        if not_interact and not_restart:
            raise RequestError(INVALID_PARAMS, "Invalid parameters: "
                               + "\n".join(not_interact + not_restart))
        shell = self._shells.get(params["session_name"])
        if shell is None:
            raise RequestError(UNEXPECTED, repr(KeyError(params["session_name"])))
        if not_interact:  # a restart: the old shell ends while the new one starts
            name = params["session_name"]
            async with shell.lock:
                new, _ = await asyncio.gather(self._start(), shell.end())
                self._shells[name] = new
            return RESTARTED
        async with shell.lock:
            return await shell.interact(params.get("input"), params["wait_for_output"],
                                        params["idle_timeout"], params.get("max_output_bytes"))

    async def _start(self) -> "_Shell":
        if self._closed:
            raise RequestError(UNEXPECTED, "the sample's sandbox is closed")
        proc, primary = await asyncio.to_thread(
            host_terminal.start, self._sandbox, SHELL, extra_env=SHELL_ENV, plain=True)
        shell = _Shell(proc, primary)
        await shell.ready(READY_WITHIN)
        if self._closed:  # the sample ended while the shell started
            await shell.end()
            raise RequestError(UNEXPECTED, "the sample's sandbox is closed")
        return shell


class _Shell:
    """One `bash -i` on a terminal made here, and what it wrote since the last answer."""

    def __init__(self, proc, primary: int):
        self.proc = proc
        self.primary = primary
        self.lock = asyncio.Lock()  # one request at a time
        self._loop = asyncio.get_running_loop()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._output = bytearray()
        self._dropped = 0  # bytes dropped from the front to keep within the limit
        self._limit = DEFAULT_OUTPUT_LIMIT
        self._idle = 0.0
        self._ready = asyncio.Event()
        self._timer = None
        self._reading = True  # until the terminal is left empty (the shell ended)
        os.set_blocking(primary, False)
        self._loop.add_reader(primary, self._readable)

    async def interact(self, text, wait: float, idle: float, limit) -> str:
        """Type `text` (if any), then the output: once it came and went idle for `idle`
        seconds, or `wait` seconds passed without any, or enough of it came."""
        self._clear()
        self._limit = limit if limit and limit > 0 else DEFAULT_OUTPUT_LIMIT
        self._trim()
        self._idle = idle
        if text:
            await self._type(text.encode("utf-8"))
        self._arm(idle if self._output else wait)
        await self._ready.wait()
        self._clear()
        answer = _printable(bounded(bytes(self._output), self._dropped, self._limit))
        self._output.clear()
        self._dropped = 0
        return answer

    async def ready(self, within: float) -> None:
        """Wait until the shell reads a command line: readline then has the terminal
        stop turning CR into NL (ICRNL off). At most `within` seconds, or until it ended."""
        deadline = self._loop.time() + within
        while self._loop.time() < deadline and self.primary is not None and self._reading:
            try:
                if not termios.tcgetattr(self.primary)[0] & termios.ICRNL:
                    return
            except OSError:
                return
            await asyncio.sleep(0.02)

    async def end(self) -> None:
        """Hang its terminal up (bash exits, its jobs get SIGHUP) and kill the `setsid`
        wrapper's process group; what is left ends with the Session."""
        self._clear()
        if self.primary is not None:
            with suppress(ValueError, RuntimeError, OSError):
                self._loop.remove_reader(self.primary)
            with suppress(OSError):
                os.close(self.primary)
            self.primary = None
        self.proc.kill()
        with suppress(Exception):
            await asyncio.to_thread(self.proc.wait, 10)

    def _readable(self) -> None:
        try:
            data = os.read(self.primary, 65536)
        except BlockingIOError:
            return
        except OSError:  # EIO: nothing is left on the terminal (the shell exited)
            data = b""
        if not data:
            # As Inspect's: later requests wait out their time and answer "".
            self._loop.remove_reader(self.primary)
            self._reading = False
            return
        self._output += self._decoder.decode(data).encode("utf-8")
        self._trim()
        if self._dropped or len(self._output) >= ENOUGH_OUTPUT:
            self._ready.set()
        else:
            self._arm(self._idle)

    async def _type(self, data: bytes) -> None:
        while data and self.primary is not None:
            try:
                data = data[os.write(self.primary, data):]
            except BlockingIOError:  # the terminal's input is full: the shell is busy
                await asyncio.sleep(0.05)
            except OSError:  # nothing reads the terminal any more
                return

    def _arm(self, seconds: float) -> None:
        self._clear()
        self._timer = self._loop.call_later(seconds, self._ready.set)

    def _clear(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._ready.clear()

    def _trim(self) -> None:
        over = len(self._output) - self._limit
        if over > 0:
            del self._output[:over]
            self._dropped += over


def bounded(output: bytes, dropped: int, limit: int) -> str:
    """`output` (the last bytes of what came, `dropped` bytes before it were dropped) as
    text of at most `limit` bytes: past the limit, a line saying so and the tail."""
    if not dropped:
        return output.decode("utf-8", errors="replace")
    omitted = dropped
    for _ in range(10):  # the line's length depends on the count it shows
        notice = (f"\n[bash_session output exceeded {_size(limit)}; showing the tail; "
                  f"{omitted} bytes omitted]\n")
        room = limit - len(notice.encode())
        if room <= 0:
            return f"[{dropped + len(output)} bytes omitted]\n"[:limit]
        tail = output[-room:].decode("utf-8", errors="ignore")
        counted = dropped + len(output) - len(tail.encode("utf-8"))
        if counted == omitted:
            break
        omitted = counted
    return notice + tail


def _printable(text: str) -> str:
    return _CONTROLS.sub("", _ESCAPES.sub("", text))


def _size(count: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= size and count % size == 0:
            return f"{count // size} {unit}"
    return f"{count} bytes"


def _problems(model: str, params: dict, required: dict, optional: dict) -> list:
    """What keeps `params` from being a `model` request, in the words of Inspect's
    validation ('Model.field' and the problem), or []."""
    problems = []
    for name, kind in required.items():
        if name not in params:
            problems.append(f"'{model}.{name}' Field required")
        elif not _is(params[name], kind):
            problems.append(f"'{model}.{name}' {_expected(kind)}")
    for name, kinds in optional.items():
        if name in params and not any(_is(params[name], kind) for kind in kinds):
            problems.append(f"'{model}.{name}' {_expected(kinds[0])}")
    for name in params:
        if name not in required and name not in optional:
            problems.append(f"'{model}.{name}' Extra inputs are not permitted")
    return problems


def _check(model: str, params: dict, required: dict, optional: dict) -> None:
    problems = _problems(model, params, required, optional)
    if problems:
        raise RequestError(INVALID_PARAMS, "Invalid parameters: " + "\n".join(problems))


def _is(value, kind) -> bool:
    if kind is None:
        return value is None
    if kind is True:
        return value is True
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _expected(kind) -> str:
    return {str: "Input should be a valid string", int: "Input should be a valid integer",
            float: "Input should be a valid number", dict: "Input should be a valid dictionary",
            True: "Input should be True"}.get(kind, "Input is not valid")
