"""PTY sessions for the Agents SDK client (pty_exec_start / pty_write_stdin): processes
in the sample's nsbox Session that keep running between calls, with a terminal of
their own (tty=True) or pipes.

The terminal is a pty made here, on the host (host_terminal): the sandbox gets only its
secondary end as stdin, stdout and stderr, and `setsid -c` makes it the command's controlling
terminal (so ^C and job control work). Nothing of the host's /dev/pts is
opened to the sandbox, so this works under landlock-only isolation too. Ending a
process closes its terminal (a hangup for everything on it) and kills the command's
process group; what is left ends with the nsbox Session.
"""

import asyncio
import collections
import os
import time
from contextlib import suppress

from agents.sandbox.session.pty_output import collect_pty_output
from agents.sandbox.session.pty_types import (
    PTY_PROCESSES_MAX,
    PtyExecUpdate,
    allocate_pty_process_id,
    clamp_pty_yield_time_ms,
    process_id_to_prune_from_meta,
    resolve_pty_write_yield_time_ms,
)

from nsbox.api import DEVNULL, PIPE
from nsbox.integrations import host_terminal

_CHUNK = 65536


class _Process:
    """One started process: its Popen, its output so far, whether it has ended."""

    def __init__(self, proc, primary: int | None):
        self.proc = proc
        self.primary = primary  # the pty's primary end (tty=True), else None
        self.chunks: collections.deque = collections.deque()
        self.lock = asyncio.Lock()
        self.notify = asyncio.Event()
        self.closed = asyncio.Event()
        self.last_used = time.monotonic()
        self.streams = 0
        self.returncode: int | None = None

    def watch(self, loop, fds) -> None:
        for fd in fds:
            os.set_blocking(fd, False)
            loop.add_reader(fd, self._readable, loop, fd)
            self.streams += 1

    def _readable(self, loop, fd: int) -> None:
        try:
            data = os.read(fd, _CHUNK)
        except BlockingIOError:
            return
        except OSError:  # EIO: every secondary end of the pty is closed
            data = b""
        if data:
            self.chunks.append(data)
            self.notify.set()
            return
        loop.remove_reader(fd)
        self.streams -= 1
        if self.streams == 0:
            asyncio.ensure_future(self._wait_exit())

    async def _wait_exit(self) -> None:
        code = await asyncio.to_thread(self.proc.wait)
        self.returncode = code if code >= 0 else 128 - code
        self.closed.set()
        self.notify.set()

    def end(self) -> None:
        if self.primary is not None:
            with suppress(OSError):
                asyncio.get_running_loop().remove_reader(self.primary)
            with suppress(OSError):
                os.close(self.primary)  # a hangup for what runs on the terminal
            self.primary = None
        if self.returncode is None:
            with suppress(OSError):
                self.proc.kill()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with suppress(OSError):
                    asyncio.get_running_loop().remove_reader(stream.fileno())
                stream.close()


class PtyProcesses:
    """The SDK session's PTY methods, for a session class with `_ensure_sandbox()` (an
    nsbox Session), `workspace` and `state.manifest`."""

    def _pty_state(self) -> tuple[dict, asyncio.Lock]:
        if not hasattr(self, "_ptys"):
            self._ptys: dict[int, _Process] = {}
            self._ptys_lock = asyncio.Lock()
        return self._ptys, self._ptys_lock

    def supports_pty(self) -> bool:
        return True

    async def pty_exec_start(self, *command, timeout=None, shell=True, user=None, tty=False,
                             yield_time_s=None, max_output_tokens=None) -> PtyExecUpdate:
        argv = self._prepare_exec_command(*command, shell=shell, user=user)
        argv = [str(part) for part in argv]
        sandbox = await self._ensure_sandbox()
        extra_env = await self.state.manifest.environment.resolve() or None
        loop = asyncio.get_running_loop()
        if tty:
            proc, primary = await asyncio.to_thread(
                host_terminal.start, sandbox, argv, cwd=self.workspace, extra_env=extra_env)
            process = _Process(proc, primary)
            process.watch(loop, [primary])
        else:
            proc = await asyncio.to_thread(sandbox.popen, argv, cwd=self.workspace,
                                           extra_env=extra_env, stdin=DEVNULL, stdout=PIPE,
                                           stderr=PIPE)
            process = _Process(proc, None)
            process.watch(loop, [proc.stdout.fileno(), proc.stderr.fileno()])
        ptys, lock = self._pty_state()
        pruned = None
        async with lock:
            if len(ptys) >= PTY_PROCESSES_MAX:
                oldest = process_id_to_prune_from_meta(
                    [(pid, p.last_used, p.closed.is_set()) for pid, p in ptys.items()])
                pruned = ptys.pop(oldest, None) if oldest is not None else None
            process_id = allocate_pty_process_id(set(ptys))
            ptys[process_id] = process
        if pruned is not None:
            pruned.end()
        wait_ms = 10_000 if yield_time_s is None else int(yield_time_s * 1000)
        return await self._pty_update(process_id, process, clamp_pty_yield_time_ms(wait_ms),
                                      max_output_tokens)

    async def pty_write_stdin(self, *, session_id: int, chars: str, yield_time_s=None,
                              max_output_tokens=None) -> PtyExecUpdate:
        ptys, lock = self._pty_state()
        async with lock:
            process = self._resolve_pty_session_entry(pty_processes=ptys, session_id=session_id)
        if chars:
            if process.primary is None:
                raise RuntimeError("stdin is not available for this process (start it with "
                                   "tty=True)")
            with suppress(BlockingIOError, BrokenPipeError, OSError):
                os.write(process.primary, chars.encode("utf-8"))
            await asyncio.sleep(0.1)
        wait_ms = 250 if yield_time_s is None else int(yield_time_s * 1000)
        process.last_used = time.monotonic()
        return await self._pty_update(
            session_id, process,
            resolve_pty_write_yield_time_ms(yield_time_ms=wait_ms, input_empty=chars == ""),
            max_output_tokens)

    async def pty_terminate_all(self) -> None:
        ptys, lock = self._pty_state()
        async with lock:
            ended = list(ptys.values())
            ptys.clear()
        for process in ended:
            process.end()

    async def _pty_update(self, process_id: int, process: _Process, wait_ms: int,
                          max_output_tokens) -> PtyExecUpdate:
        output, tokens, closed = await collect_pty_output(
            output_chunks=process.chunks, output_lock=process.lock,
            output_notify=process.notify, is_done=process.closed.is_set,
            yield_time_ms=wait_ms, max_output_tokens=max_output_tokens)
        exit_code = process.returncode if closed else None
        if exit_code is not None:
            ptys, lock = self._pty_state()
            async with lock:
                ptys.pop(process_id, None)
            process.end()
        return PtyExecUpdate(process_id=None if exit_code is not None else process_id,
                             output=output, exit_code=exit_code,
                             original_token_count=tokens)
