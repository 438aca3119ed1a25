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

from nsbox.api import Session
from nsbox.errors import SandboxError, SetupFailed, UnsupportedKernel
from nsbox.integrations.workspaces import file_error, remove_tree
from nsbox.kernel import beneath

SAMPLE_PREFIX = "nsbox-inspect-sample-"  # a sample's directory, in tempfile.gettempdir()

# Inside the sandbox, outside the workspace: let a command do the I/O.
_READ = ["cat", "--"]
_WRITE = ["sh", "-c", 'mkdir -p -- "$(dirname -- "$1")" && cat > "$1"', "nsbox-write-file"]


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
        return {"default": cls(workspace, session, root=root, lock=lock)}

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
        each. Only this user's nsbox-inspect-sample-* directories no running eval holds."""
        for line in cleanup_leftovers(id):
            print(line)

    @classmethod
    def config_deserialize(cls, config: dict):
        raise NotImplementedError("nsbox takes a policy file path as its sandbox config")

    def __init__(self, workspace: str, session: Session, *, root: str | None = None,
                 lock: int | None = None):
        super().__init__()
        self.workspace = workspace
        self.session = session
        self.root = root or workspace  # the sample's directory: removed by close()
        self._lock = lock

    async def close(self) -> None:
        await asyncio.to_thread(self.session.close)
        remove_tree(self.root)
        lock, self._lock = self._lock, None
        if lock is not None:
            os.close(lock)

    async def exec(self, cmd: list[str], input: str | bytes | None = None, cwd: str | None = None,
                   env: dict[str, str] | None = None, user: str | None = None,
                   timeout: int | None = None, timeout_retry: bool = True,
                   concurrency: bool = True) -> ExecResult[str]:
        if user is not None and not runs_as(user):
            raise SandboxUserUnsupportedError(
                f"nsbox runs commands as {pwd_name(os.getuid())!r} (the user running Inspect); "
                f"it cannot run them as {user!r}")
        if isinstance(input, str):
            input = input.encode()
        limit = SandboxEnvironmentLimits.MAX_EXEC_OUTPUT_SIZE
        try:
            result = await self.session.run_async(
                list(cmd), cwd=cwd, extra_env=env or None, input=input,
                timeout=timeout, max_output=limit)
        except SetupFailed as err:
            if err.step == "chdir" and err.errno:
                # Inspect's contract: a missing cwd is FileNotFoundError (and so on), the
                # sandbox itself is fine.
                raise OSError(err.errno, os.strerror(err.errno), cwd) from err
            raise SandboxUnavailableError(str(err)) from err
        except SandboxError as err:
            raise SandboxUnavailableError(str(err)) from err
        stdout = result.stdout.decode(errors="replace")
        if result.timed_out:
            raise TimeoutError(f"the command timed out after {timeout} seconds")
        if result.output_limited:
            raise OutputLimitExceededError(SandboxEnvironmentLimits.MAX_EXEC_OUTPUT_SIZE_STR,
                                           stdout)
        return ExecResult(success=result.returncode == 0, returncode=result.returncode,
                          stdout=stdout, stderr=result.stderr.decode(errors="replace"))

    async def write_file(self, file: str, contents: str | bytes) -> None:
        data = contents.encode() if isinstance(contents, str) else contents
        inside = self._in_workspace(file)
        if inside is not None:
            await asyncio.to_thread(beneath.write_file, self.workspace, inside, data)
            return
        result = await self.session.run_async([*_WRITE, file], input=data)
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
            result = await self.session.run_async([*_READ, file], max_output=limit)
            if result.output_limited:
                raise _too_large()
            if result.returncode:
                raise file_error(file, result.stderr)
            data = result.stdout
        return data.decode("utf-8") if text else data

    def _in_workspace(self, file: str) -> str | None:
        """`file` relative to the workspace, or None when it names a path elsewhere."""
        if not os.path.isabs(file):
            return file
        path = os.path.normpath(file)
        if path == self.workspace or path.startswith(self.workspace + "/"):
            return os.path.relpath(path, self.workspace)
        return None


def cleanup_leftovers(id: str | None = None) -> list[str]:
    """Remove the sample directories of evals that are gone; lines saying what was done."""
    parent = tempfile.gettempdir()
    if id:
        name = os.path.basename(os.path.normpath(id))
        if not name.startswith(SAMPLE_PREFIX) or (os.path.isabs(id) and os.path.realpath(
                os.path.dirname(os.path.normpath(id))) != os.path.realpath(parent)):
            return [f"nsbox: {id!r} is not an nsbox sample directory "
                    f"({os.path.join(parent, SAMPLE_PREFIX)}*)"]
        names = [name]
    else:
        try:
            names = sorted(n for n in os.listdir(parent) if n.startswith(SAMPLE_PREFIX))
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

    if config is not None and not isinstance(config, str):
        raise ValueError("the nsbox sandbox's config is the path of an nsbox policy file, "
                         f"not {type(config).__name__}")
    policy, decision = policy_files.resolve(config, {"workspace": workspace})
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


