"""exec_remote for the Inspect provider: a command in the sample's Session whose output
arrives as events while it runs (no polling), and whose kill() ends the command and
every process below it.

The command runs under a small sh wrapper: on SIGTERM (what kill() sends to the
command's process group) it stops and then kills its whole tree, processes that left
the group (setsid) included, found through /proc/PID/task/*/children. The wrapper does
it from inside the command's own Landlock domain, where it may signal them.
"""

import asyncio
import codecs
import os
import signal

from inspect_ai.util import (
    ExecCompleted,
    ExecRemoteProcess,
    ExecRemoteStreamingOptions,
    ExecResult,
    ExecStderr,
    ExecStdout,
    SandboxEnvironmentLimits,
)

from nsbox.api import PIPE

# $@: the command. Runs it as a child, forwards its status, kills its tree on TERM.
_WRAPPER = r"""
tree() { for c in $(cat /proc/$1/task/*/children 2>/dev/null); do echo "$c"; tree "$c"; done; }
end() {
    pids="$child $(tree "$child")"
    kill -STOP $pids 2>/dev/null
    pids="$pids $(tree "$child")"
    kill -KILL $pids 2>/dev/null
    exit 137
}
trap end TERM
exec 3<&0  # an asynchronous command's stdin would be /dev/null
"$@" <&3 3<&- &
child=$!
exec 3<&-
wait "$child"
status=$?
exit "$status"
"""
WRAPPER = ["/bin/sh", "-c", _WRAPPER, "nsbox-exec-remote"]
_GRACE = 5  # seconds kill() waits for the wrapper before killing the process group


class NsboxRemoteProcess(ExecRemoteProcess):
    """Inspect's ExecRemoteProcess over an nsbox Popen: events as the output is read."""

    def __init__(self, sandbox, cmd: list, options, proc, stdin_open: bool):
        super().__init__(sandbox, cmd, options, 0)
        self._proc = proc
        self._pid = os.getpid()  # the sandbox's pid is not known here; nonzero: started
        self._stdin_open = stdin_open
        self._queue: asyncio.Queue = asyncio.Queue()
        self._open_streams = 0
        self._loop = asyncio.get_running_loop()
        for stream, event in ((proc.stdout, ExecStdout), (proc.stderr, ExecStderr)):
            fd = stream.fileno()
            os.set_blocking(fd, False)
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            self._loop.add_reader(fd, self._on_readable, fd, event, decoder)
            self._open_streams += 1

    def _on_readable(self, fd: int, event, decoder) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            text = decoder.decode(data)
            if text:
                self._queue.put_nowait(event(data=text))
            return
        self._loop.remove_reader(fd)
        tail = decoder.decode(b"", final=True)
        if tail:
            self._queue.put_nowait(event(data=tail))
        self._open_streams -= 1
        if self._open_streams == 0:
            self._queue.put_nowait(None)  # both streams ended: the exit status is next

    async def __anext__(self):
        if self._completed or (self._killed and self._queue.empty()):
            raise StopAsyncIteration
        try:
            item = await self._queue.get()
            if item is not None:
                return item
            returncode = await asyncio.to_thread(self._proc.wait)
        except BaseException:
            await self.kill()  # cancelled: the command must not run on unseen
            raise
        self._completed = True
        self._close_pipes()
        if self._killed:
            raise StopAsyncIteration
        return ExecCompleted(exit_code=returncode if returncode >= 0 else 128 - returncode)

    async def kill(self) -> None:
        if self._completed or self._killed:
            return
        self._killed = True
        self._proc.send_signal(signal.SIGTERM)  # the wrapper kills the tree
        try:
            await asyncio.wait_for(asyncio.to_thread(self._proc.wait), _GRACE)
        except asyncio.TimeoutError:
            self._proc.kill()
            await asyncio.to_thread(self._proc.wait)

    async def write_stdin(self, data: str | bytes) -> None:
        if not self._stdin_open or self._proc.stdin is None or self._proc.stdin.closed:
            raise RuntimeError("stdin is not open: pass ExecRemoteStreamingOptions("
                               "stdin_open=True), and write before close_stdin()")
        if self._completed or self._killed:
            raise RuntimeError("the process has ended")
        payload = data.encode() if isinstance(data, str) else data
        await asyncio.to_thread(_write_all, self._proc.stdin, payload)

    async def close_stdin(self) -> None:
        if not self._stdin_open:
            raise RuntimeError("stdin is not open: pass ExecRemoteStreamingOptions(stdin_open=True)")
        if self._proc.stdin is not None and not self._proc.stdin.closed:
            self._proc.stdin.close()

    def _close_pipes(self) -> None:
        for stream in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
            if stream is not None and not stream.closed:
                stream.close()


def _write_all(stream, data: bytes) -> None:
    stream.write(data)
    stream.flush()


async def start(sandbox, session, cmd: list, options, env: dict | None) -> NsboxRemoteProcess:
    """Start `cmd` in `session`; its initial input is written, and stdin then closed
    unless options.stdin_open."""
    stdin_open = isinstance(options, ExecRemoteStreamingOptions) and options.stdin_open
    proc = await asyncio.to_thread(
        session.popen, [*WRAPPER, *cmd], cwd=options.cwd, extra_env=env or None,
        stdin=PIPE, stdout=PIPE, stderr=PIPE)
    process = NsboxRemoteProcess(sandbox, cmd, options, proc, stdin_open)
    if options.input is not None:
        data = options.input.encode() if isinstance(options.input, str) else options.input
        await asyncio.to_thread(_write_all, proc.stdin, data)
    if not stdin_open:
        proc.stdin.close()
    return process


async def collect(process: NsboxRemoteProcess, timeout: float | None) -> ExecResult[str]:
    """stream=False: the whole result, keeping the last MAX_EXEC_OUTPUT_SIZE of each
    stream; TimeoutError (the process killed) after `timeout` seconds."""
    limit = SandboxEnvironmentLimits.MAX_EXEC_OUTPUT_SIZE
    out, err, code = "", "", None

    async def gather():
        nonlocal out, err, code
        async for event in process:
            if isinstance(event, ExecStdout):
                out = (out + event.data)[-limit:]
            elif isinstance(event, ExecStderr):
                err = (err + event.data)[-limit:]
            elif isinstance(event, ExecCompleted):
                code = event.exit_code

    try:
        await asyncio.wait_for(gather(), timeout)
    except asyncio.TimeoutError:
        await process.kill()
        raise TimeoutError(f"the command timed out after {timeout} seconds") from None
    return ExecResult(success=code == 0, returncode=code if code is not None else -1,
                      stdout=out, stderr=err)
