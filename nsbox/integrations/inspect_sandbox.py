"""Inspect AI sandbox provider: `sandbox="nsbox"` or `sandbox=("nsbox", "policy.toml")`.

Each sample gets a fresh directory, $TMPDIR/nsbox-inspect-sample-XXXXXXXX, with its
workspace in it (`workspace/`, where the sample's `files` are written) and a warm
nsbox Session over that; cleanup kills the session and removes the directory.
While its eval runs, the directory is flock()ed: `inspect sandbox cleanup nsbox`
(cli_cleanup) removes those of killed evals only.
Registered through the `inspect_ai` entry point in nsbox's package metadata.

Host-side file access never follows a link out of the workspace: paths in it are
resolved with openat2(RESOLVE_IN_ROOT); other paths (the sandbox's private /tmp,
say) are read and written by a command inside the sandbox, with its rights.
"""

import asyncio
import dataclasses
import errno
import fcntl
import os
import pwd
import stat
import tempfile
from typing import Literal, Union, overload

from inspect_ai.util import (
    ExecResult,
    OutputLimitExceededError,
    SandboxEnvironment,
    SandboxEnvironmentConfigType,
    SandboxEnvironmentLimits,
    SandboxUnavailableError,
    SandboxUserUnsupportedError,
    sandboxenv,
)
from pydantic import BaseModel, ConfigDict

from nsbox.api import Session, isolation_for
from nsbox.errors import SandboxError, SetupFailed, UnsupportedKernel
from nsbox.integrations.notes import denial_note, with_note
from nsbox.integrations import inspect_tools
from nsbox.integrations.workspaces import file_error, remove_tree
from nsbox.kernel import beneath

SAMPLE_PREFIX = "nsbox-inspect-sample-"  # a sample's directory, in tempfile.gettempdir()
# What cli_cleanup removes when no running eval holds it: sample directories, tool trees.
_LEFTOVERS = (SAMPLE_PREFIX, inspect_tools.TOOLS_PREFIX)

# Inside the sandbox, outside the workspace: let a command do the I/O.
_READ = ["cat", "--"]
_WRITE = ["sh", "-c", 'mkdir -p -- "$(dirname -- "$1")" && cat > "$1"', "nsbox-write-file"]


class NsboxSandboxConfig(BaseModel):
    """sandbox=SandboxEnvironmentSpec("nsbox", NsboxSandboxConfig(...)): a policy file
    path and options; a plain path string is the same as NsboxSandboxConfig(policy=path)."""

    model_config = ConfigDict(frozen=True)  # hashable: Inspect keys its sandboxes by spec
    policy: str | None = None
    """An nsbox policy file; None: the one `nsbox exec` would use."""
    denial_note: bool = True
    """When the sandbox blocked something, end the command's stderr (the tool result) with
    `[nsbox] blocked by policy: ...` and a hint line per kind of denial."""
    workspace_mode: str | None = None
    """"overlay": the sample's workspace is copy-on-write: its files and the agent's
    changes live in the sandbox's layer (read_file and the scorer see them), the host
    directory stays empty; "direct": the host directory itself. None: the policy's."""


@sandboxenv(name="nsbox")
class NsboxSandboxEnvironment(SandboxEnvironment):
    """One sample's sandbox: a workspace directory and a Session over it."""

    @classmethod
    async def task_init(cls, task_name: str, config: SandboxEnvironmentConfigType | None) -> None:
        # A bad policy file fails the task up front. Its trust decision is logged once, here,
        # against a stand-in for a sample's fresh workspace.
        policy_for(config, os.path.join(tempfile.gettempdir(), "nsbox-inspect-task"), report=True)

    @classmethod
    async def sample_init(cls, task_name: str, config: SandboxEnvironmentConfigType | None,
                          metadata: dict[str, str]) -> dict[str, SandboxEnvironment]:
        # The real path: the sandbox sees the workspace there, and so do paths it reports.
        root = os.path.realpath(tempfile.mkdtemp(prefix=SAMPLE_PREFIX))
        lock = None
        try:
            lock = _lock(root, wait=False)  # ours: just made, private (0700)
            workspace = os.path.join(root, "workspace")
            os.mkdir(workspace, 0o700)
            policy = policy_for(config, workspace, report=False)
            note = not isinstance(config, NsboxSandboxConfig) or config.denial_note
            tools = await inspect_tools.tree()
            if tools is not None and isolation_for(policy) == "full" and not policy.rootfs:
                policy = inspect_tools.policy_showing(policy, tools)
            try:
                session = await asyncio.to_thread(Session, policy)
            except UnsupportedKernel as err:
                if policy.isolation != "full":
                    raise
                raise UnsupportedKernel(
                    f"{err}. To run here without user namespaces (in a container, say), set "
                    'isolation = "auto" in the sandbox\'s nsbox policy file and pass it as '
                    'sandbox=("nsbox", "policy.toml"): it falls back to Landlock-only '
                    "isolation where namespaces are unavailable") from err
        except BaseException:
            remove_tree(root)
            if lock is not None:
                os.close(lock)
            raise
        return {"default": cls(workspace, session, root=root, lock=lock,
                               denial_note=note, policy=policy, tools=tools)}

    @classmethod
    async def sample_cleanup(cls, task_name: str, config: SandboxEnvironmentConfigType | None,
                             environments: dict[str, SandboxEnvironment],
                             interrupted: bool) -> None:
        for environment in environments.values():
            await environment.as_type(cls).close()

    @classmethod
    async def cli_cleanup(cls, id: str | None) -> None:
        """`inspect sandbox cleanup nsbox [ID]`: remove the sample directories that killed
        evals left in tempfile.gettempdir() (ID: one of them, by name or path), printing
        each. Only this user's nsbox-inspect-sample-* directories (and nsbox-inspect-tools-*
        helper trees) that no running eval holds."""
        for line in cleanup_leftovers(id):
            print(line)

    @classmethod
    def config_deserialize(cls, config: dict) -> NsboxSandboxConfig:
        return NsboxSandboxConfig.model_validate(config)

    def __init__(self, workspace: str, session: Session, *, root: str | None = None,
                 lock: int | None = None, denial_note: bool = True, policy=None,
                 tools: str | None = None):
        super().__init__()
        self._tools = tools  # Inspect's sandbox tools, unpacked on the host (inspect_tools)
        self._editor = None  # text_editor(), answered here (inspect_editor)
        self._shells = None  # bash_session(), answered here (inspect_bash_session)
        self.denial_note = denial_note  # see NsboxSandboxConfig
        self._policy = policy  # the session's, for exact hints
        self.workspace = workspace
        self.session = session
        self.root = root or workspace  # the sample's directory: removed by close()
        self._lock = lock

    async def close(self) -> None:
        if self._shells is not None:
            await self._shells.close()
        # An overlay's changes die with the sample's directory: no run is kept for them.
        await asyncio.to_thread(self.session.close, keep_changes=False)
        remove_tree(self.root)
        lock, self._lock = self._lock, None
        if lock is not None:
            os.close(lock)

    async def exec(self, cmd: list[str], input: str | bytes | None = None, cwd: str | None = None,
                   env: dict[str, str] | None = None, user: str | None = None,
                   timeout: int | None = None, timeout_retry: bool = True,
                   concurrency: bool = True) -> ExecResult[str]:
        self._check_user(user)
        if isinstance(input, str):
            input = input.encode()
        answered = await self._answer_here(list(cmd), input, timeout)
        if answered is not None:
            return answered
        env = inspect_tools.tools_env(cmd, env, self.session.tmpdir)
        cmd = self._host_argv(cmd)
        for seconds in attempt_timeouts(timeout, timeout_retry):
            result = await self._run(cmd, self._tmp_path(cwd), env, input, seconds)
            if not result.timed_out:
                break
        else:
            raise TimeoutError(f"the command timed out after {timeout} seconds"
                               + (" (and on each retry)" if timeout_retry else ""))
        stdout = result.stdout.decode(errors="replace")
        if result.returncode == 126 and _not_executable(result.stderr, cmd[0]):
            # Inspect's contract: a command the user may not run is PermissionError.
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), cmd[0])
        if result.output_limited:
            raise OutputLimitExceededError(SandboxEnvironmentLimits.MAX_EXEC_OUTPUT_SIZE_STR,
                                           stdout)
        stderr = result.stderr.decode(errors="replace")
        if self.denial_note:
            stderr = with_note(stderr, denial_note(result.denials, self._policy))
        return ExecResult(success=result.returncode == 0, returncode=result.returncode,
                          stdout=stdout, stderr=stderr)

    async def exec_remote(self, cmd: list[str], options=None, *, stream: bool = True):
        """Output events as the command writes them, from the Session itself (Inspect's
        default polls its tools' server); kill() ends the command's whole tree. Inspect's
        recording proxy (sandbox() in an eval) keeps its own exec_remote: this one is
        reached through sandbox().as_type(NsboxSandboxEnvironment)."""
        from inspect_ai.util import ExecRemoteAwaitableOptions, ExecRemoteStreamingOptions

        from nsbox.integrations import inspect_remote

        if options is None:
            options = ExecRemoteStreamingOptions() if stream else ExecRemoteAwaitableOptions()
        self._check_user(options.user)
        if options.cwd:
            options = dataclasses.replace(options, cwd=self._tmp_path(options.cwd))
        try:
            process = await inspect_remote.start(self, self.session, self._host_argv(cmd),
                                                 options, options.env)
        except (SetupFailed, SandboxError) as err:
            raise _unavailable(err, options.cwd) from err
        if stream:
            return process
        return await inspect_remote.collect(process, getattr(options, "timeout", None))

    def _check_user(self, user: str | None) -> None:
        if user is not None and not runs_as(user):
            raise SandboxUserUnsupportedError(
                f"nsbox runs commands as {pwd_name(os.getuid())!r} (the user running Inspect); "
                f"it cannot run them as {user!r}")

    async def _answer_here(self, cmd: list, input, timeout) -> ExecResult[str] | None:
        """The tools requests the provider answers itself (text_editor: Inspect's keeps
        its history under /tmp, beneath a / it refuses when a user namespace shows it as
        an unmapped uid's; bash_session: on terminals made on the host), or, with
        landlock-only isolation, refuses with the reason (the tools server where other
        samples could reach its socket); None for the others."""
        method = inspect_tools.tools_method(cmd, input)
        if method in inspect_tools.BASH_SESSION_METHODS:
            return await self._answer_bash_session(input, timeout)
        if method != "text_editor":
            if self.session.isolation == "full":
                return None
            refused = inspect_tools.landlock_refusal(cmd, self.session.host_sockets_reachable)
            if refused:
                return ExecResult(success=False, returncode=1, stdout="", stderr=refused)
            return None
        if self._editor is None:
            from nsbox.integrations.inspect_editor import Editor

            limit = SandboxEnvironmentLimits.MAX_READ_FILE_SIZE
            self._editor = Editor(lambda argv, data: self.session.run_async(
                argv, input=data, max_output=limit))
        answer = await self._editor.answer(input.decode() if isinstance(input, bytes) else input)
        return ExecResult(success=True, returncode=0, stdout=answer, stderr="")

    async def _answer_bash_session(self, input, timeout) -> ExecResult[str]:
        if self._shells is None:
            from nsbox.integrations.inspect_bash_session import BashSessions

            self._shells = BashSessions(self.session, runs_as)
        request = input.decode() if isinstance(input, bytes) else input
        try:
            # A shell too busy to take what is typed times out as a command would.
            answer = await asyncio.wait_for(self._shells.answer(request), timeout)
        except (SetupFailed, SandboxError) as err:
            raise _unavailable(err, None) from err
        except asyncio.TimeoutError:
            raise TimeoutError(f"bash_session did not answer within {timeout} seconds") \
                from None
        return ExecResult(success=True, returncode=0, stdout=answer, stderr="")

    async def _run(self, cmd: list, cwd, env, input, timeout):
        try:
            return await self.session.run_async(
                cmd, cwd=cwd, extra_env=env or None, input=input, timeout=timeout,
                max_output=SandboxEnvironmentLimits.MAX_EXEC_OUTPUT_SIZE)
        except (SetupFailed, SandboxError) as err:
            raise _unavailable(err, cwd) from err

    def _host_argv(self, cmd) -> list:
        """The command as it runs: with landlock-only isolation, the paths Inspect means
        inside the sandbox (its tools, /tmp) mapped to the host's."""
        if self.session.isolation == "full":
            return list(cmd)
        return inspect_tools.host_argv(list(cmd), self._tools, self.session.tmpdir)

    def _tmp_path(self, path):
        """Landlock-only isolation: a harness path in /tmp -> the same name in the
        session's private TMPDIR (the host's /tmp is not the sandbox's)."""
        if self.session.isolation == "full":
            return path
        return inspect_tools.in_tmpdir(path, self.session.tmpdir)

    async def write_file(self, file: str, contents: str | bytes) -> None:
        data = contents.encode() if isinstance(contents, str) else contents
        inside = self._in_workspace(file)
        if inside is not None:
            await asyncio.to_thread(beneath.write_file, self.workspace, inside, data)
            return
        result = await self.session.run_async([*_WRITE, self._tmp_path(file)], input=data)
        if result.returncode:
            raise file_error(file, result.stderr)

    @overload
    async def read_file(self, file: str, text: Literal[True] = True) -> str: ...

    @overload
    async def read_file(self, file: str, text: Literal[False]) -> bytes: ...

    async def read_file(self, file: str, text: bool = True) -> Union[str, bytes]:
        limit = SandboxEnvironmentLimits.MAX_READ_FILE_SIZE
        inside = self._in_workspace(file)
        if inside is not None:
            try:
                data = await asyncio.to_thread(beneath.read_file, self.workspace, inside, limit)
            except beneath.FileTooLarge:
                raise _too_large() from None
        else:
            result = await self.session.run_async([*_READ, self._tmp_path(file)],
                                                  max_output=limit)
            if result.output_limited:
                raise _too_large()
            if result.returncode:
                raise file_error(file, result.stderr)
            data = result.stdout
        return data.decode("utf-8") if text else data

    def _in_workspace(self, file: str) -> str | None:
        """`file` relative to the workspace, or None when it names a path elsewhere."""
        if self._policy is not None and self._policy.workspace_mode == "overlay":
            return None  # the sandbox's view is the workspace: a command reads and writes it
        if not os.path.isabs(file):
            return file
        path = os.path.normpath(file)
        if path == self.workspace or path.startswith(self.workspace + "/"):
            return os.path.relpath(path, self.workspace)
        return None


def _not_executable(stderr: bytes, command: str) -> bool:
    """nsbox's own line for a command it could not exec for lack of permission."""
    last = stderr.decode(errors="replace").rstrip("\n").rpartition("\n")[2]
    return (last.startswith(f"nsbox: {command}: cannot execute")
            and "ermission denied" in last)


def _unavailable(err: Exception, cwd) -> Exception:
    """Inspect's contract: a missing cwd is FileNotFoundError (and so on), the sandbox
    itself being fine; anything else means the sandbox is unavailable."""
    if isinstance(err, SetupFailed) and err.step == "chdir" and err.errno:
        return OSError(err.errno, os.strerror(err.errno), cwd)
    return SandboxUnavailableError(str(err))


def attempt_timeouts(timeout: int | None, retry: bool) -> list:
    """The timeout of each attempt: Inspect's `timeout_retry` runs a command that timed
    out up to twice more, for at most 60 and then 30 seconds."""
    if timeout is None or not retry:
        return [timeout]
    return [timeout, max(min(timeout, 60), 1), max(min(timeout, 60) // 2, 1)]


def cleanup_leftovers(id: str | None = None) -> list[str]:
    """Remove the sample directories of evals that are gone; lines saying what was done."""
    parent = tempfile.gettempdir()
    if id:
        name = os.path.basename(os.path.normpath(id))
        if not name.startswith(_LEFTOVERS) or (os.path.isabs(id) and os.path.realpath(
                os.path.dirname(os.path.normpath(id))) != os.path.realpath(parent)):
            return [f"nsbox: {id!r} is not an nsbox sample directory "
                    f"({os.path.join(parent, SAMPLE_PREFIX)}*)"]
        names = [name]
    else:
        try:
            names = sorted(n for n in os.listdir(parent) if n.startswith(_LEFTOVERS))
        except OSError as err:
            return [f"nsbox: cannot list {parent}: {err}"]
    lines = []
    for name in names:
        path = os.path.join(parent, name)
        try:
            info = os.lstat(path)
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
                continue  # not ours: another user's, or not a directory we made
            lock = _lock(path, wait=False)
            if os.fstat(lock).st_uid != os.getuid():  # changed since the lstat
                os.close(lock)
                continue
        except FileNotFoundError:
            continue
        except BlockingIOError:
            lines.append(f"nsbox: kept {path} (a running eval uses it)")
            continue
        except OSError as err:
            lines.append(f"nsbox: could not check {path}: {err}")
            continue
        try:
            remove_tree(path)
            lines.append(f"nsbox: removed {path}")
        except OSError as err:
            lines.append(f"nsbox: could not remove {path}: {err}")
        finally:
            os.close(lock)
    if not lines:
        lines.append(f"nsbox: no leftover sample directories in {parent}")
    return lines


def _lock(path: str, wait: bool) -> int:
    """An fd of the directory `path` (not a link to one), flock()ed exclusively; raises
    BlockingIOError when another process holds it and not `wait`."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BaseException:
        os.close(fd)
        raise
    return fd


def policy_for(config, workspace: str, report: bool = True):
    """The sample's Policy: the policy file (the config's, else the one `nsbox exec` would
    find: the user's), trusted or narrowed as for `nsbox exec`, with `workspace` as the
    workspace. `report`: log the file's trust decision to the "nsbox" logger."""
    from nsbox.policy import files as policy_files

    flags = {"workspace": workspace}
    if isinstance(config, NsboxSandboxConfig):
        if config.workspace_mode:
            flags["workspace_mode"] = config.workspace_mode
        config = config.policy
    if config is not None and not isinstance(config, str):
        raise ValueError("the nsbox sandbox's config is the path of an nsbox policy file or "
                         f"an NsboxSandboxConfig, not {type(config).__name__}")
    policy, decision = policy_files.resolve(config, flags)
    if decision is not None and report:
        policy_files.log(decision)
    return policy


def runs_as(user: str) -> bool:
    """Whether `user` (a name or a uid) is who commands run as inside the sandbox."""
    try:
        uid = int(user) if user.isdecimal() else pwd.getpwnam(user).pw_uid
    except KeyError:
        return False
    return uid == os.getuid()


def pwd_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _too_large() -> OutputLimitExceededError:
    return OutputLimitExceededError(SandboxEnvironmentLimits.MAX_READ_FILE_SIZE_STR, None)


