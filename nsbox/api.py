"""Sandboxed commands from Python, shaped like subprocess: run, Popen, run_async, Session.

Safe to call from many threads and from asyncio: the calling process never
forks a sandbox itself. A small single-threaded fork server (started on first
use, see nsbox.service.forkserver) does, and hands back the pipes; when the
calling process dies, the server and every sandbox die with it.

    import nsbox

    r = nsbox.run(["make", "test"], timeout=600)
    print(r.returncode, r.stdout.decode())

    with nsbox.Session(nsbox.Policy(workspace="repo")) as s:  # set up once
        s.run(["git", "status"])                              # fork + exec only

Isolation: where user namespaces are unavailable (typically inside a Docker or
Kubernetes container), Policy(isolation="landlock") runs commands under Landlock
and seccomp only, with a private TMPDIR (one per run, or one per Session shared
by its commands) and every process the command (or the Session) started killed
when it ends; isolation="auto" takes full isolation when it can and falls back
to that. Result.isolation (and Popen.isolation) says what the command got and
isolation_fallback why `auto` settled for less. Pre-warmed spares need full
isolation (landlock runs start fresh).

Errors: a bad policy raises nsbox.PolicyError before anything starts; a failed
setup step inside the sandbox raises nsbox.SetupFailed (both SandboxError). A
command that can't be executed is not an exception: like a shell (and `nsbox
exec`), its returncode is 127 (not found) or 126 (not executable) and run()
appends the reason to the captured stderr.
"""

import os
import select
import signal as _signals
import threading
import time
import weakref

from nsbox import errors, trace
from nsbox.errors import SandboxError, SetupFailed
from nsbox.launch import errorpipe
from nsbox.plan import host, prepare
from nsbox.record import Record
from nsbox.service import forkserver, relay, spares, wire

PIPE = -1
STDOUT = -2
DEVNULL = -3

_CHUNK = 1 << 20
_PIPE_SIZE = 1 << 20  # fewer wake-ups for large outputs; best effort
_F_SETPIPE_SZ = 1031


class Result(Record):
    """A finished command. returncode follows the shell: 128+N when signal N ended it."""

    args: tuple
    returncode: int
    stdout: bytes | None
    stderr: bytes | None
    signal: int | None = None  # the signal that ended the command, if one did
    timed_out: bool = False  # the timeout expired and the command was killed
    output_limited: bool = False  # a stream passed max_output: killed, output cut there
    duration_s: float = 0.0
    # network "allowlist": the requests the proxy refused (policy.netallow.Refusal records)
    network_blocked: tuple = ()
    # the resource limit that ended the command, e.g. {"limit": "memory", "value": "512M",
    # "reason": "OOM", "killed": True, "message": ...}; None when no limit did
    limit_hit: dict | None = None
    isolation: str = "full"  # what the command got: full | landlock (no namespaces)
    isolation_fallback: str = ""  # why isolation "auto" settled for landlock
    isolation_missing: tuple = ()  # protections left out under best_effort, in words
    # what the run changed where code runs later outside the sandbox (git hooks and
    # pointers, new repositories, editor and agent configs): launch.watch.Change records;
    # with workspace_mode "overlay", also what it changed in its copy-on-write workspace
    # (what: created | modified | deleted | mode | type changed, with kind, size, sha256,
    # mode, target), kept as run `run_id` for `nsbox apply` (None: nothing changed)
    changes: tuple = ()
    run_id: str | None = None
    # what the sandbox's walls stopped (policy.denials.Denial records, deduplicated with a
    # count): filesystem writes, seccomp-denied calls, allowlist refusals, the limit hit
    denials: tuple = ()

    def check_returncode(self) -> None:
        if self.returncode:
            import subprocess

            raise subprocess.CalledProcessError(self.returncode, self.args, self.stdout,
                                                self.stderr)


def run(args, *, policy=None, cwd=None, env=None, input: bytes | None = None,
        timeout: float | None = None, capture_output: bool = True,
        max_output: int | None = None, prewarm: bool = True, on_denial=None) -> Result:
    """Run one command in a fresh sandbox and wait for it.

    policy None is the default policy with the current directory as workspace.
    env None passes this process's environment (minus secret-looking names, per
    the policy). stdin is empty unless `input` is given. On timeout the whole
    sandbox is killed and the output so far is returned with timed_out=True.
    max_output caps each captured stream in bytes: past it the command is killed
    too (output_limited=True), so a runaway command can't fill this process's memory.

    Pre-warming: after a run, a spare sandbox for the same policy is built in the
    background, and the next run with the same resolved policy execs its command
    there (see set_prewarm); prewarm=False builds this run's sandbox from scratch
    and leaves no spare.

    on_denial(denial): called with each policy.denials.Denial as the sandbox's walls stop
    something (a write outside the writable roots, a call the seccomp profile denies),
    the first time each distinct operation happens; Result.denials has them all with
    counts, with the allowlist's refusals and the limit that ended the command.
    """
    proc = _popen_for_run(args, dict(policy=policy, cwd=cwd, env=env, on_denial=on_denial),
                          None, input, capture_output, prewarm=prewarm)
    result = _finish_sync(proc, input, timeout, max_output)
    proc._keep_spare()
    return result


async def run_async(args, *, policy=None, cwd=None, env=None, input: bytes | None = None,
                    timeout: float | None = None, capture_output: bool = True,
                    max_output: int | None = None, prewarm: bool = True,
                    on_denial=None) -> Result:
    """run() for asyncio: waits in the event loop, no thread per command. Cancelling kills."""
    proc = _popen_for_run(args, dict(policy=policy, cwd=cwd, env=env, on_denial=on_denial),
                          None, input, capture_output, started=False, prewarm=prewarm)
    result = await _finish_async(proc, input, timeout, max_output)
    proc._keep_spare()
    return result


def set_prewarm(enabled: bool) -> None:
    """Turn pre-warmed sandboxes for run()/run_async() on (the default) or off.

    With pre-warming on, each run() leaves one spare sandbox for its resolved
    policy, built in the background up to the exec of the command (at most one
    per policy, for the 4 most recently used policies). The next run() with an
    equal policy sends its command there: it still gets a sandbox no other
    command has used (fresh /tmp, PID namespace, nothing left from earlier
    commands), and behaves exactly as with a fresh one. A spare is used only if
    what it was built from is unchanged: the resolved mounts, hidden and
    protected paths, Landlock rules (and the directory listings behind them),
    seccomp filter, and the identity of every writable root and masked or
    protected path. Runs with network "allowlist" or non-default resource limits
    never use spares. Spares die with this process. Off drops the existing
    spares; NSBOX_PREWARM=0 in the environment turns them off as well.
    """
    spares.pool().set_enabled(bool(enabled))


def prewarm_stats() -> dict:
    """Counters of the pre-warming pool: spares (kept now), built, used, dropped."""
    return spares.pool().stats()


def _prewarm_wanted() -> bool:
    return os.environ.get("NSBOX_PREWARM", "1") != "0" and spares.pool().enabled


class Popen:
    """A running sandboxed command, like subprocess.Popen.

    stdin/stdout/stderr: None (inherit this process's), PIPE, DEVNULL, STDOUT
    (stderr only), an fd or a file object. Returns once the command was exec'd;
    raises PolicyError / SetupFailed if the sandbox could not be built.
    send_signal() reaches the command (SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1,
    SIGUSR2, SIGWINCH are forwarded by the sandbox's init); kill() ends the
    whole sandbox. Dropping the object (or its process exiting) kills it too.
    With landlock isolation there is no sandbox init: signals go to the command
    itself, and when it exits every process it started is killed.
    isolation / isolation_fallback / isolation_missing: as in Result.
    """

    def __init__(self, args, *, policy=None, cwd=None, env=None, stdin=None, stdout=None,
                 stderr=None, on_denial=None, _session=None, _started=True, _prewarm=False,
                 _extra_env=None, _python=False):
        if isinstance(args, (str, bytes)):
            args = [args]
        self.args = tuple(args)
        self.returncode = None
        self._started = False
        self.signal = None
        self.timed_out = False
        self.exec_error = None  # why the command could not be executed (returncode 126/127)
        self.network_blocked = ()  # network "allowlist": requests the proxy refused
        self.limit_hit = None  # the resource limit that ended the command (see Result)
        self.denials = ()  # see Result.denials; known once the command has exited
        self._events = []  # the supervisor's denial events, as they arrive
        self._denial_lines = None  # launch.denial_watch.Collector, from the first line on
        self._on_denial = on_denial if on_denial is not None or _session is None \
            else _session._on_denial
        self.changes = ()  # see Result.changes; known once the command has exited
        self.run_id = None  # see Result.run_id; known once the command has exited
        self.duration_s = None
        self._session = _session
        self._failure = None
        self._status = None
        self._pump = None
        self._began = time.monotonic()
        self._plan = self._spare_key = None
        if _session is None:
            self._plan = plan = _prepare(self.args, policy, cwd, env)
            if _prewarm and _prewarm_wanted():
                self._spare_key = spares.key_of(plan)  # None unless full isolation
        else:
            plan = _session._plan
        self.isolation = plan.isolation
        self.isolation_fallback = plan.isolation_fallback
        self.isolation_missing = plan.isolation_missing
        child_fds, ours, to_close = _stdio(stdin, stdout, stderr)
        try:
            if _session is None:
                if self._spare_key is not None:
                    # Async callers don't wait for a spare still being built.
                    taken = spares.pool().start(self._spare_key, plan, child_fds,
                                                wait=_started, renew=_renew(plan))
                    if taken is not None:
                        self._status, built_from = taken
                        if plan.git_layers:  # what the spare's git layers hold is this run's
                            from nsbox.plan import gitsync

                            self._plan = gitsync.taken_over(plan, built_from)
                if self._status is None:
                    self._status = _submit_one_shot(plan, child_fds)
            else:
                with _session._lock:  # before it starts: Session._idle must see it
                    _session._commands.add(self)
                try:
                    # _python: args are Python source and its arguments, for nsbox's own
                    # work in the session (see service.session_server.run_python)
                    self._status = _session._submit(self.args, cwd, env, child_fds, _extra_env,
                                                    python=_python)
                except BaseException:
                    with _session._lock:
                        _session._commands.discard(self)
                    raise
        except BaseException:
            for fd in ours:
                if fd is not None:
                    os.close(fd)
            raise
        finally:
            for fd in to_close:
                os.close(fd)
        self.stdin = os.fdopen(ours[0], "wb") if ours[0] is not None else None
        self.stdout = os.fdopen(ours[1], "rb") if ours[1] is not None else None
        self.stderr = os.fdopen(ours[2], "rb") if ours[2] is not None else None
        if _started:
            while self._failure is None and not self._started:
                self._on_record(self._status.recv(wire.MAX_RECORD))
            self._raise_setup_failure()

    def poll(self):
        """The returncode if the command has ended, else None; never blocks."""
        while self.returncode is None and _readable(self._status, 0):
            self._on_record(self._status.recv(wire.MAX_RECORD))
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the command; raises subprocess.TimeoutExpired (it keeps running)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not _readable(self._status, left):
                import subprocess

                raise subprocess.TimeoutExpired(self.args, timeout)
            self._on_record(self._status.recv(wire.MAX_RECORD))
        return self.returncode

    def communicate(self, input: bytes | None = None, timeout: float | None = None):
        """Feed `input`, read stdout/stderr to the end, wait; (stdout, stderr) as bytes or None.

        On timeout raises subprocess.TimeoutExpired; call again to keep collecting.
        """
        if self._pump is None:
            self._pump = _Pump(self, input)
        if not _pump_sync(self._pump, timeout):
            import subprocess

            raise subprocess.TimeoutExpired(self.args, timeout)
        return self._pump.finish()

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            wire.send_quietly(self._status, wire.signal_request(sig))

    def terminate(self) -> None:
        self.send_signal(_signals.SIGTERM)

    def kill(self) -> None:
        self.send_signal(_signals.SIGKILL)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for f in (self.stdin, self.stdout, self.stderr):
            if f is not None:
                f.close()
        try:
            self.wait()
        finally:
            self._status.close()

    def _keep_spare(self) -> None:
        """After a run: a spare for the next run with this plan (best effort)."""
        if self._spare_key is None:
            return
        try:
            spares.pool().replenish(self._spare_key, self._plan, _renew(self._plan))
        except (SandboxError, OSError):
            pass  # only an optimisation: the next run starts fresh and reports any problem

    def _on_record(self, record: bytes) -> None:
        tag = record[:1]
        if tag == wire.STARTED:
            self._started = True
        elif tag == wire.FAILED:
            self._started = True
            self._failure = wire.parse_failed(record)
        elif tag == wire.NETWORK:
            from nsbox.policy.netallow import Refusal

            report = wire.parse_network_report(record)
            self.network_blocked = tuple(Refusal(**item) for item in report.get("blocked", ()))
        elif tag == wire.LIMIT:
            self.limit_hit = wire.parse_limit_report(record)
        elif tag == wire.DENIALS:
            self._take_denial_line(record[1:])
        elif tag == wire.EXITED:
            self._started = True
            self.returncode, self.signal = wire.parse_exited(record)
            if self._failure is not None and self._failure.step == errorpipe.EXEC_STEP:
                failure = self._failure
                self.returncode, self.signal = failure.exit_code, None
                self.exec_error = errorpipe.describe(failure, self.args[0])
            self.duration_s = time.monotonic() - self._began
            self.changes = self._review_changes()
            if self._session is None:
                _drop_rootfs_layer(self._plan)
            if self._session is not None:
                self.network_blocked = self._session._refusals_since(self._began)
                # Its events are asked for only if the supervisor saw any while it ran.
                self._events = () if wire.exited_without_denials(record) \
                    else self._session._denials_since(self._began)
                if self._on_denial is not None:
                    for denial in self._events:
                        self._on_denial(denial)
            elif self._denial_lines is not None:
                self._events = self._denial_lines.result()[0]
            self.denials = self._gather_denials()
        elif not record:
            raise SandboxError("the sandbox ended without reporting its exit status "
                               "(was the nsbox fork server killed?)")

    def _take_denial_line(self, line: bytes) -> None:
        """One line of the sandbox's denial supervisor; on_denial for a new event."""
        if self._denial_lines is None:
            from nsbox.launch import denial_watch

            self._denial_lines = denial_watch.Collector(self._on_denial)
        self._denial_lines.feed(line + b"\n")

    def _gather_denials(self) -> tuple:
        if not (self._events or self.network_blocked or self.limit_hit):
            return ()
        from nsbox.policy import denials

        return denials.gather(self.network_blocked, self.limit_hit, self._events)

    def _review_changes(self) -> tuple:
        if self._session is not None:
            return self._session._review_changes()
        if self._plan is None or self._plan.watch is None:
            return ()
        from nsbox.plan import watch

        found = watch.review(self._plan.watch)[0]
        if self._plan.git_layers:  # the git dirs' changes, applied now; found: the refused
            from nsbox.plan import gitsync

            held = gitsync.Held(self._plan.git_layers)
            if not gitsync.drop_if_unchanged(held):
                from nsbox.plan import gitapply

                found += gitapply.conclude(held)
        if self._plan.overlay is not None:
            from nsbox.plan import overlay

            ran = self._failure is None or self._failure.step == errorpipe.EXEC_STEP
            try:
                manifest, self.run_id = overlay.conclude(overlay.Held(self._plan.overlay), ran)
            except OSError:  # kept: `nsbox changes RUN` reads it again
                manifest, self.run_id = (), self._plan.overlay.id
            found += manifest
        return found

    def _raise_setup_failure(self) -> None:
        if self._failure is None or self._failure.step == errorpipe.EXEC_STEP:
            return
        if self._session is None:
            _drop_rootfs_layer(self._plan)
        failure = self._failure
        self._status.close()
        for f in (self.stdin, self.stdout, self.stderr):
            if f is not None:
                f.close()
        raise _setup_error(failure)


class Session:
    """A warm sandbox: namespaces, mounts, Landlock and seccomp are set up once.

    Each run() forks and execs inside it. Commands share the session's /tmp and
    workspace view, as in one shell session; two sessions share nothing. env
    None means the environment at session creation; cwd defaults to the
    workspace (relative paths are taken from it). A timeout kills the command's
    process group. close() (or this process dying) kills everything inside.

    env is filtered as for nsbox.run() (secret-looking variables dropped, per the
    policy): it stands for an inherited environment. extra_env (run, run_async,
    popen) is for variables the caller chose for this one command, a harness's
    token say: set as given, unfiltered, over the (filtered) env, or over the
    session's environment when env is None. It never lets more of this process's
    own environment through; only what is named in it.
    Safe to use from several threads at once. With isolation "landlock" (or
    "auto" falling back to it) there are no namespaces: the commands share a
    private TMPDIR instead of /tmp, removed at close().
    With workspace_mode "overlay" the commands share one copy-on-write workspace:
    changes(), diff(), snapshot(), restore(), apply(), discard() (see each).
    snapshot(), restore() and discard() cover a writable image root too when its layer
    is on disk (Policy(rootfs_writable=True, rootfs_layer="disk")).
    """

    def __init__(self, policy=None, *, cwd=None, env=None, on_denial=None, _plan=None):
        import threading

        # on_denial(denial): as for nsbox.run(), for each command's events when it ends
        self._on_denial = on_denial
        # _plan: one already prepared for `policy` (see session_from_template)
        self._plan = _plan or _prepare(("nsbox-session",), policy, cwd, env, session=True)
        self.isolation = self._plan.isolation  # full | landlock, as Result.isolation
        # The commands' TMPDIR: /tmp, or with landlock isolation the session's private one.
        self.tmpdir = self._plan.env.get("TMPDIR", "/tmp")
        from nsbox.policy.landlock_rules import FS_RESOLVE_UNIX

        # Landlock-only isolation before Landlock ABI 9: commands can connect to the
        # host's named unix sockets, other sessions' included.
        ruleset = self._plan.landlock
        self.host_sockets_reachable = self.isolation != "full" and not (
            ruleset is not None and ruleset.handled_fs & FS_RESOLVE_UNIX)
        self._lock = threading.Lock()
        self._query_lock = threading.Lock()  # one network query on the status socket at a time
        self._watch = self._plan.watch  # compared after each command, then renewed
        self._closed = False
        # workspace_mode overlay: the run kept at close() (None: nothing changed)
        self.run_id = None
        self._commands = weakref.WeakSet()  # the Popens started here, to tell if one runs
        self._layers_busy = None  # the thread taking a snapshot, restoring or applying
        self._applied = {}  # path -> (inode, ctime) of what apply() wrote (see session_overlay)
        control, control_theirs = wire.socketpair()
        devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        try:
            self._status = _submit(relay.SESSION, self._plan,
                                   [devnull, devnull, devnull, control_theirs.fileno()])
        except BaseException:
            control.close()
            self._drop_layers()
            raise
        finally:
            os.close(devnull)
            control_theirs.close()
        self._control = control
        record = self._status.recv(wire.MAX_RECORD)
        if record[:1] != wire.STARTED:
            self._closed = True
            control.close()
            self._status.close()
            self._drop_layers()
            if record[:1] == wire.FAILED:
                raise _setup_error(wire.parse_failed(record))
            raise SandboxError("the session's sandbox ended before it was ready")
        self._git = None  # git dirs copy-on-write: applied after each command (gitapply)
        if self._plan.git_layers:
            from nsbox.plan import gitapply

            self._git = gitapply.Tracker(self._plan.git_layers)

    def run(self, args, *, cwd=None, env=None, input: bytes | None = None,
            timeout: float | None = None, capture_output: bool = True,
            max_output: int | None = None, extra_env: dict | None = None) -> Result:
        """Like nsbox.run(), inside this session; extra_env: see the class."""
        where = dict(cwd=cwd, env=env, _extra_env=extra_env)
        return _finish_sync(_popen_for_run(args, where, self, input, capture_output), input,
                            timeout, max_output)

    async def run_async(self, args, *, cwd=None, env=None, input: bytes | None = None,
                        timeout: float | None = None, capture_output: bool = True,
                        max_output: int | None = None, extra_env: dict | None = None) -> Result:
        proc = _popen_for_run(args, dict(cwd=cwd, env=env, _extra_env=extra_env), self, input,
                              capture_output, started=False)
        return await _finish_async(proc, input, timeout, max_output)

    def popen(self, args, *, cwd=None, env=None, stdin=None, stdout=None, stderr=None,
              extra_env: dict | None = None) -> Popen:
        """Like nsbox.Popen, inside this session; signals go to the command's process group.
        extra_env: see the class."""
        return Popen(args, cwd=cwd, env=env, stdin=stdin, stdout=stdout, stderr=stderr,
                     _session=self, _extra_env=extra_env)

    # --- workspace_mode "overlay": the copy-on-write workspace (plan/session_overlay.py)

    def changes(self) -> tuple:
        """What the session changed in its workspace so far: manifest entries (see
        Result.changes) with absolute paths."""
        from nsbox.plan import overlay

        run = self._overlay_run("changes")
        return tuple(overlay.absolute(overlay.recompute(run), run.workspace))

    def diff(self, path=None) -> str:
        """The changes as `nsbox diff` shows them: a unified diff per text file, a line
        for anything else; `path` (absolute, or relative to the workspace): only there."""
        from nsbox.plan import apply as applying
        from nsbox.plan import diff_text, overlay

        run = self._overlay_run("diff")
        wanted = applying._clean(run.manifest_path(path)) if path else ""
        return "".join(diff_text.run_diff(run, e)
                       for e in overlay.recompute(run) if applying._under(e.path, wanted))

    def snapshot(self) -> str:
        """Record the workspace, and a writable image root on disk (rootfs_layer "disk"),
        as the session sees them now; returns an id for restore(). Costs a copy of what
        changed, not of the workspace or image. Needs the session idle."""
        from nsbox.plan import session_overlay

        with self._idle("snapshot", layers=True) as runs:
            snapshot_id = ""
            for run in runs:
                snapshot_id = session_overlay.take(run, snapshot_id)
            return snapshot_id

    def restore(self, snapshot_id: str) -> None:
        """Make the workspace (and writable image root) what it was at
        snapshot(snapshot_id), while the sandbox keeps running (its /tmp and environment
        stay). Needs the session idle."""
        from nsbox.plan import session_overlay

        with self._idle("restore", check=False, layers=True) as runs:  # the restore checks
            try:
                targets = [session_overlay.load(run, snapshot_id) for run in runs]
            except LookupError as err:
                raise SandboxError(err.args[0]) from None
            for run, target in zip(runs, targets):
                self._rewrite(run, target)

    def discard(self) -> None:
        """Drop every change: the workspace (and writable image root) is the real tree
        (image) again. Needs the session idle."""
        from nsbox.plan import session_overlay

        with self._idle("discard", check=False, layers=True) as runs:
            for run in runs:
                self._rewrite(run, session_overlay.empty())

    def continue_run(self, run_id: str) -> None:
        """Take over what kept run `run_id` (of this workspace: an earlier session's, say,
        ended by a timeout) changed: the workspace shows it, and the run is removed.
        Needs the session idle."""
        from nsbox.plan import overlay, session_overlay

        with self._idle("continue a run", check=False) as run:
            try:
                kept = session_overlay.of_kept_run(
                    os.path.dirname(os.path.dirname(run.dir)), run_id, run.workspace,
                    run.roots)
            except (LookupError, ValueError) as err:
                raise SandboxError(err.args[0]) from None
            self._rewrite(run, kept)
            overlay.discard(overlay.Run(id=run_id, dir=kept.dir, workspace=run.workspace))

    def apply(self, paths=None, include_protected=False):
        """Write the session's changes (all, or those at or below `paths`) to the real
        tree, as `nsbox apply` does: nothing if a real path changed meanwhile, protected
        paths only when named in include_protected (or all with True). Returns
        plan.apply.Outcome (applied, skipped_protected, not_applicable); raises
        SandboxError. Needs the session idle."""
        from nsbox.plan import apply as applying
        from nsbox.plan import session_overlay

        if isinstance(paths, str):
            paths = [paths]
        with self._idle("apply") as run:
            relative = [run.manifest_path(p) for p in paths or ()]
            try:
                return session_overlay.apply_now(run, self._applied, relative,
                                                 include_protected)
            except applying.ApplyError as err:
                raise SandboxError(str(err)) from None

    def _overlay_run(self, what: str):
        if self._plan.overlay is None:
            raise SandboxError(f"Session.{what}() needs a session with workspace_mode "
                               "\"overlay\" (Policy(workspace_mode=\"overlay\"))")
        if self._closed:
            raise SandboxError("the session is closed")
        return self._plan.overlay

    def _layers(self, what: str) -> tuple:
        """The overlay workspace's run and the writable image root's layer (disk)."""
        from nsbox.plan import session_overlay

        try:
            runs = session_overlay.layers(self._plan)
        except ValueError as err:
            raise SandboxError(f"cannot {what}: {err}") from None
        if not runs:
            raise SandboxError(f"Session.{what}() needs a session with workspace_mode "
                               "\"overlay\" (Policy(workspace_mode=\"overlay\")) or a "
                               "writable image root (Policy(rootfs=..., rootfs_writable=True, "
                               "rootfs_layer=\"disk\"))")
        if self._closed:
            raise SandboxError("the session is closed")
        return runs

    def _idle(self, what: str, check: bool = True, layers: bool = False):
        """A context in which no command of this session runs or can start; it yields
        the overlay run (`layers`: every run, see _layers) once the sandbox's processes
        were checked (`check`)."""
        import contextlib

        @contextlib.contextmanager
        def idle():
            runs = self._layers(what) if layers else (self._overlay_run(what),)
            with self._lock:
                running = [p for p in self._commands if p.returncode is None]
                if self._layers_busy is not None or running:
                    raise SandboxError(
                        f"cannot {what} while a command of this session runs (or is not "
                        "waited for yet): wait for it, or kill it, first")
                self._layers_busy = threading.get_ident()
            try:
                if check:
                    self._in_sandbox(what, runs[0], "check", None)
                yield runs if layers else runs[0]
            finally:
                with self._lock:
                    self._layers_busy = None

        return idle()

    def _in_sandbox(self, what: str, run, mode: str, stream_fd) -> None:
        """Run plan.session_overlay.RESTORER in the sandbox (mode check | restore), in
        the layer's mount, by the session's server itself (the sandbox may hold no Python)."""
        from nsbox.plan import session_overlay

        if stream_fd is not None:
            os.lseek(stream_fd, 0, os.SEEK_SET)
        proc = Popen([session_overlay.RESTORER, mode], cwd=session_overlay.mount_of(run),
                     stdin=DEVNULL if stream_fd is None else stream_fd, stdout=PIPE,
                     stderr=PIPE, _session=self, _python=True)
        with self._lock:
            self._commands.discard(proc)
        out, err = proc.communicate()
        if proc.returncode == session_overlay.BUSY:
            raise SandboxError(f"cannot {what}: processes still run in the session "
                               f"({out.decode(errors='replace')}); wait for them or end them")
        if proc.returncode:
            raise SandboxError(f"{what} failed inside the sandbox (exit {proc.returncode}; "
                               "the workspace may be partly rewritten: restore again): "
                               f"{err.decode(errors='replace')[-2000:]}")

    def _rewrite(self, run, target) -> None:
        from nsbox.plan import session_overlay

        steps = session_overlay.actions(session_overlay.manifest(run), target.entries)
        if not steps:
            return
        import tempfile

        # What the sandbox cannot read of the real tree is never sent in.
        hidden = tuple(m.target for m in self._plan.mounts if m.kind.startswith("mask_"))
        with tempfile.TemporaryFile(dir=run.dir) as stream:
            session_overlay.write_stream(run, steps, target, stream, hidden)
            stream.flush()
            self._in_sandbox("restore", run, "restore", stream.fileno())

    def _drop_layers(self) -> None:
        """A session that never started keeps no overlay run."""
        if self._plan.overlay is not None:
            from nsbox.plan import overlay

            try:
                overlay.discard(self._plan.overlay)
            except OSError:
                pass

    def close(self, keep_changes: bool = True) -> None:
        """Kill everything in the session and wait until it is gone. workspace_mode
        "overlay": what it changed is kept as run `run_id` (None: nothing changed), as a
        one-shot run's is (`nsbox changes`, `nsbox apply`), unless keep_changes is False."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._control.close()
        with self._query_lock:  # a network query in flight gets its answer first
            wire.send_quietly(self._status, wire.signal_request(_signals.SIGKILL))
            deadline = time.monotonic() + 10
            while _readable(self._status, max(0.0, deadline - time.monotonic())):
                try:
                    record = self._status.recv(wire.MAX_RECORD)
                except ConnectionResetError:
                    break  # it exited (after its cleanup) before reading our SIGKILL request
                if not record or record[:1] == wire.EXITED:
                    break
            self._status.close()
        if self._git is not None:  # the sandbox is gone: a last apply, then its git layers go
            self._git.close()
        _drop_rootfs_layer(self._plan)  # the session's writable root lived as long as it
        if self._plan.overlay is not None:  # the sandbox is gone: its upper layer is still
            from nsbox.plan import overlay, session_overlay

            session_overlay.remove_all(self._plan.overlay)
            if not keep_changes:
                self._drop_layers()
                return
            try:
                self.run_id = overlay.conclude(overlay.Held(self._plan.overlay))[1]
            except OSError:  # kept: `nsbox changes RUN` reads its upper layer again
                self.run_id = self._plan.overlay.id

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _refusals_since(self, since: float) -> tuple:
        """Network "allowlist": what the proxy refused from `since` (time.monotonic()) on.

        Commands running at the same time share these: the proxy cannot tell them apart.
        """
        if self._plan.net_proxy is None:
            return ()
        from nsbox.policy.netallow import Refusal

        with self._query_lock:
            if self._closed:
                return ()
            try:
                wire.send(self._status, wire.network_query(since))
                while _readable(self._status, 10):
                    record = self._status.recv(wire.MAX_RECORD)
                    if record[:1] == wire.NETWORK:
                        report = wire.parse_network_report(record)
                        return tuple(Refusal(**item) for item in report.get("blocked", ()))
                    if not record or record[:1] == wire.EXITED:
                        break  # the session has ended
            except OSError:
                pass
        return ()

    def _denials_since(self, since: float) -> tuple:
        """What the walls stopped from `since` (time.monotonic()) on: policy.denials.Denial
        records with the repeats counted. Commands running at the same time share these."""
        if self._plan.denial_watch is None:
            return ()
        import json

        from nsbox.policy import denials

        with self._query_lock:
            if self._closed:
                return ()
            try:
                wire.send(self._status, wire.denials_query(since))
                while _readable(self._status, 10):
                    record = self._status.recv(wire.MAX_RECORD)
                    if record[:1] == wire.DENIALS:
                        found = json.loads(record[1:]).get("since", ())
                        return tuple(denials.from_dict(item) for item in found)
                    if not record or record[:1] == wire.EXITED:
                        break  # the session has ended
            except (OSError, ValueError):
                pass
        return ()

    def _review_changes(self) -> tuple:
        """What changed since the last command ended (background processes included)."""
        if self._watch is None:
            return ()
        from nsbox.plan import watch

        with self._lock:
            changes, self._watch = watch.review(self._watch)
        if self._git is not None:  # what the git dirs' apply left out
            changes += self._git.apply()
        return changes

    def _submit(self, args, cwd, env, fds, extra_env=None, python=False):
        if env is not None:
            from nsbox.plan import caches
            from nsbox.policy.env import sandbox_env

            env = sandbox_env(self._plan.policy, env, tmpdir=self._plan.env.get("TMPDIR", "/tmp"))
            caches.carry(env, self._plan.env, (name for name, _ in self._plan.policy.extra_env))
            if self._plan.net_proxy is not None:
                from nsbox.plan import proxy_settings

                proxy_settings.point_at_proxy(env, self._plan.policy, self._plan.net_proxy.port)
        if extra_env:
            # The caller's explicit choice, after the filter (it applies to inherited
            # variables only): as the policy's own extra_env is.
            env = dict(self._plan.env if env is None else env)
            for name, value in extra_env.items():
                if not isinstance(name, str) or not isinstance(value, str) or not name \
                        or "=" in name or "\0" in name or "\0" in value:
                    raise ValueError(f"extra_env: {name!r} is not a variable name with a string "
                                     "value (no NUL)")
                env[name] = value
        record = wire.encode_command(args, os.path.join(self._plan.cwd, cwd or ""), env,
                                     python=python)
        ours, theirs = wire.socketpair()
        try:
            with self._lock:
                if self._closed:
                    raise SandboxError("the session is closed")
                if self._layers_busy not in (None, threading.get_ident()):
                    raise SandboxError("the session is taking a snapshot, restoring one or "
                                       "applying its changes: start the command after that")
                wire.send_request(self._control, record, [theirs.fileno(), *fds])
        except OSError as err:
            ours.close()
            raise SandboxError(f"the session's sandbox has ended ({err})") from None
        finally:
            theirs.close()
        return ours


# --- starting ----------------------------------------------------------------------

def image(name: str, args=(), *, policy=None):
    """An image imported with `nsbox image import` as the library's inputs: (policy
    with rootfs set to the image's root, the command, the working directory or None),
    its OCI config applied as `nsbox exec --image NAME` applies it (Entrypoint + args,
    or + Cmd when args is empty; Env under the policy's extra_env; WorkingDir; User
    root -> root_inside). Pass them on: run(args, policy=policy, cwd=cwd)."""
    from nsbox.errors import PolicyError
    from nsbox.plan import images
    from nsbox.policy import image_config
    from nsbox.policy.model import Policy

    found = images.find(name)
    policy = (policy or Policy()).with_changes(rootfs=found["root"])
    try:
        applied = image_config.apply(image_config.config_of(found["config"]), tuple(args))
    except ValueError as err:
        raise PolicyError(f"image {name!r}: {err}") from None
    policy = policy.with_changes(extra_env=applied.env + policy.extra_env,
                                 root_inside=policy.root_inside or applied.root_inside)
    return policy, list(applied.argv), applied.cwd


def _drop_rootfs_layer(plan) -> None:
    """rootfs_writable: remove the sandbox's own layer once nothing runs on it."""
    if plan is not None and plan.rootfs_layer is not None:
        from nsbox.plan import container

        container.remove_layer(plan.rootfs_layer)


def _renew(plan):
    """What gives each spare for `plan` parts of its own (spares.Pool.replenish)."""
    if not plan.git_layers:
        return None
    from nsbox.plan import gitsync

    return gitsync.for_spare


def _prepare(args, policy, cwd, env, session=False):
    """The launch plan, or PolicyError / UnsupportedKernel before anything starts."""
    return prepare.prepare(args, policy, cwd, env, session=session, host=_host_facts(policy))


def session_template(policy, max_age: float):
    """A session plan for `policy` (its workspace a new empty directory) that sessions
    in other new empty directories beside it can reuse for `max_age` seconds, or None
    when such a plan cannot be moved (see nsbox.plan.reuse)."""
    from nsbox.plan import reuse

    return reuse.template(policy, _host_facts(policy), max_age)


def session_from_template(template, policy, max_age: float):
    """Session(policy) on `template`'s plan moved to policy.workspace, or None when the
    template is too old or a host path it holds changed (then start one afresh)."""
    from nsbox.plan import reuse

    if not reuse.fresh(template, max_age):
        return None
    return Session(policy, _plan=reuse.moved(template, policy, policy.workspace))


def isolation_for(policy) -> str:
    """The isolation `policy` gets on this host: "full" or "landlock" (what "auto" picks)."""
    if policy is None or policy.isolation != "auto":
        return "full" if policy is None else policy.isolation
    return "landlock" if _host_facts(policy).userns_blocker else "full"


def _host_facts(policy):
    # `auto` needs to know whether user namespaces work: the fork server probes that,
    # once per process, so that this (threaded) process never forks.
    if policy is None or policy.isolation != "auto":
        return host.facts()
    return host.facts(userns_blocker=forkserver.userns_blocker())


def _submit(kind: str, plan, fds):
    trace.mark("submit")
    return forkserver.submit(kind, plan, fds)


def _submit_one_shot(plan, fds):
    return _submit(relay.ONE_SHOT, plan, fds)


def _popen_for_run(args, where: dict, session, input, capture_output, started=True,
                   prewarm=True) -> Popen:
    out = PIPE if capture_output else None
    return Popen(args, stdin=DEVNULL if input is None else PIPE, stdout=out, stderr=out,
                 _session=session, _started=started, _prewarm=prewarm and session is None,
                 **where)


def _stdio(stdin, stdout, stderr):
    """(fds for the command, our ends or None, fds to close once sent)."""
    to_close, ours, child = [], [None, None, None], [None, None, None]
    for i, spec in enumerate((stdin, stdout, stderr)):
        if spec is None:
            child[i] = i
        elif spec == PIPE:
            r, w = os.pipe2(os.O_CLOEXEC)
            if i == 0:
                ours[i], child[i] = w, r
            else:
                ours[i], child[i] = r, w
                try:
                    import fcntl

                    fcntl.fcntl(r, _F_SETPIPE_SZ, _PIPE_SIZE)
                except OSError:
                    pass
            to_close.append(child[i])
        elif spec == DEVNULL:
            child[i] = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            to_close.append(child[i])
        elif spec == STDOUT and i == 2:
            child[i] = child[1]
        elif isinstance(spec, int) and spec >= 0:
            child[i] = spec
        elif hasattr(spec, "fileno"):
            child[i] = spec.fileno()
        else:
            for fd in to_close + [fd for fd in ours if fd is not None]:
                os.close(fd)
            raise ValueError(f"unsupported stdio value {spec!r}")
    return child, ours, to_close


def _setup_error(failure: errorpipe.Failure) -> SandboxError:
    """A setup failure as the exception it was (a PolicyError, UnsupportedKernel ...), else
    SetupFailed naming the step."""
    cls = getattr(errors, failure.kind, None) if failure.kind else None
    if isinstance(cls, type) and issubclass(cls, SandboxError) and cls not in (
            errors.SyscallError, SetupFailed):
        return cls(failure.message)
    return SetupFailed(failure.step, failure.errno, failure.message)


def _readable(sock, timeout) -> bool:
    """Wait up to `timeout` seconds (None: for ever) for a record or EOF."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(None if timeout is None else timeout * 1000))


# --- collecting --------------------------------------------------------------------

class _Pump:
    """Moves input in and output out without deadlock; one step per ready fd."""

    def __init__(self, proc: Popen, input, max_output: int | None = None):
        self.proc = proc
        self.max_output = max_output
        self.sizes = {}
        self.output_limited = False
        self.chunks = {}
        self.stdin_fd = None
        self.input = memoryview(input or b"")
        self.offset = 0
        for f in (proc.stdout, proc.stderr):
            if f is not None:
                os.set_blocking(f.fileno(), False)
                self.chunks[f.fileno()] = []
        if proc.stdin is not None:
            if self.input:
                self.stdin_fd = proc.stdin.fileno()
                os.set_blocking(self.stdin_fd, False)
            else:
                proc.stdin.close()

    def watched(self):
        """(fd, wants to write) pairs still of interest."""
        fds = [(fd, False) for fd in self.chunks]
        if self.stdin_fd is not None:
            fds.append((self.stdin_fd, True))
        if self.proc.returncode is None:
            fds.append((self.proc._status.fileno(), False))
        return fds

    @property
    def done(self) -> bool:
        return self.proc.returncode is not None

    def step(self, fd: int) -> bool:
        """Handle one ready fd; True if that fd needs no more watching."""
        if fd == self.stdin_fd:
            return self._write()
        if fd in self.chunks:
            return not self._read(fd)
        self.proc._on_record(self.proc._status.recv(wire.MAX_RECORD))
        return self.proc.returncode is not None

    def _read(self, fd: int) -> bool:
        """False at EOF."""
        try:
            data = os.read(fd, _CHUNK)
        except BlockingIOError:
            return True
        if data:
            self.chunks[fd].append(data)
            return not self._over_limit(fd, len(data))
        return False

    def _over_limit(self, fd: int, added: int) -> bool:
        """Past max_output: kill the command and stop reading this stream."""
        self.sizes[fd] = self.sizes.get(fd, 0) + added
        if self.max_output is None or self.sizes[fd] <= self.max_output:
            return False
        if not self.output_limited:
            self.output_limited = True
            self.proc.kill()
        return True

    def _write(self) -> bool:
        try:
            self.offset += os.write(self.stdin_fd, self.input[self.offset:self.offset + _CHUNK])
        except BlockingIOError:
            return False
        except (BrokenPipeError, ConnectionResetError):
            self.offset = len(self.input)  # the command stopped reading; as subprocess does
        if self.offset < len(self.input):
            return False
        self.proc.stdin.close()
        self.stdin_fd = None
        return True

    def finish(self):
        """After the exit: what is left in the pipes (the command wrote it before exiting).

        Not waiting for EOF: a background process may hold the pipe open for ever.
        """
        outputs = []
        for f in (self.proc.stdout, self.proc.stderr):
            if f is None:
                outputs.append(None)
                continue
            fd = f.fileno()
            while self.max_output is None or self.sizes.get(fd, 0) <= self.max_output:
                try:
                    data = os.read(fd, _CHUNK)
                except BlockingIOError:
                    break
                if not data:
                    break
                self.chunks[fd].append(data)
                self._over_limit(fd, len(data))
            output = b"".join(self.chunks.pop(fd))
            outputs.append(output if self.max_output is None else output[:self.max_output])
            f.close()
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc._status.close()
        return tuple(outputs)


def _pump_sync(pump: _Pump, timeout) -> bool:
    """Run the pump until the command exits; False if the timeout came first."""
    deadline = None if timeout is None else time.monotonic() + timeout
    poller = select.poll()
    for fd, writing in pump.watched():
        poller.register(fd, select.POLLOUT if writing else select.POLLIN)
    while not pump.done:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        events = poller.poll(None if left is None else left * 1000)
        if not events and deadline is not None and time.monotonic() >= deadline:
            return False
        for fd, _ in events:
            if pump.step(fd):
                poller.unregister(fd)
    return True


def _finish_sync(proc: Popen, input, timeout, max_output=None) -> Result:
    pump = _Pump(proc, input, max_output)
    if not _pump_sync(pump, timeout):
        proc.kill()
        proc.timed_out = True
        _pump_sync(pump, None)
    return _result(proc, pump)


async def _finish_async(proc: Popen, input, timeout, max_output=None) -> Result:
    import asyncio

    loop = asyncio.get_running_loop()
    pump = _Pump(proc, input, max_output)
    done = loop.create_future()
    watching = {}

    def ready(fd):
        try:
            if pump.step(fd):
                _unwatch(fd)
        except BaseException as err:
            if not done.done():
                done.set_exception(err)
            return
        if pump.done and not done.done():
            done.set_result(None)

    def _unwatch(fd):
        writing = watching.pop(fd, None)
        if writing is not None:
            (loop.remove_writer if writing else loop.remove_reader)(fd)

    try:
        for fd, writing in pump.watched():
            watching[fd] = writing
            (loop.add_writer if writing else loop.add_reader)(fd, ready, fd)
        await asyncio.wait((done,), timeout=timeout)
        if not done.done():
            proc.kill()
            proc.timed_out = True
        await done
    finally:
        for fd in list(watching):
            _unwatch(fd)
        if not pump.done:
            proc.kill()  # cancelled: the sandbox must not run on unseen
            proc._status.close()
    return _result(proc, pump)


def _result(proc: Popen, pump: _Pump) -> Result:
    stdout, stderr = pump.finish()
    proc._raise_setup_failure()
    if proc.exec_error is not None and stderr is not None:
        stderr += f"nsbox: {proc.exec_error}\n".encode()
    return Result(args=proc.args, returncode=proc.returncode, stdout=stdout, stderr=stderr,
                  signal=proc.signal, timed_out=proc.timed_out, duration_s=proc.duration_s,
                  output_limited=pump.output_limited, network_blocked=proc.network_blocked,
                  limit_hit=proc.limit_hit, changes=proc.changes, run_id=proc.run_id,
                  denials=proc.denials,
                  isolation=proc.isolation, isolation_fallback=proc.isolation_fallback,
                  isolation_missing=proc.isolation_missing)
