"""Inspect AI sandbox provider: `sandbox="nsbox"` or `sandbox=("nsbox", "policy.toml")`.

Each sample gets a fresh workspace directory (its `files` written there) and a
warm nsbox Session over it; cleanup kills the session and removes the directory.
Registered through the `inspect_ai` entry point in nsbox's package metadata.

Host-side file access never follows a link out of the workspace: paths in it are
resolved with openat2(RESOLVE_IN_ROOT); other paths (the sandbox's private /tmp,
say) are read and written by a command inside the sandbox, with its rights.
"""

import asyncio
import os
import pwd
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
from nsbox.errors import SandboxError
from nsbox.integrations.workspaces import remove_tree
from nsbox.kernel import beneath

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
        workspace = os.path.realpath(tempfile.mkdtemp(prefix="nsbox-inspect-"))
        try:
            session = await asyncio.to_thread(Session, policy_for(config, workspace, report=False))
        except BaseException:
            remove_tree(workspace)
            raise
        return {"default": cls(workspace, session)}

    @classmethod
    async def sample_cleanup(cls, task_name: str, config: SandboxEnvironmentConfigType | None,
                             environments: dict[str, SandboxEnvironment],
                             interrupted: bool) -> None:
        for environment in environments.values():
            await environment.as_type(cls).close()

    @classmethod
    def config_deserialize(cls, config: dict):
        raise NotImplementedError("nsbox takes a policy file path as its sandbox config")

    def __init__(self, workspace: str, session: Session):
        super().__init__()
        self.workspace = workspace
        self.session = session

    async def close(self) -> None:
        await asyncio.to_thread(self.session.close)
        remove_tree(self.workspace)

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
                list(cmd), cwd=cwd, env={**os.environ, **env} if env else None, input=input,
                timeout=timeout, max_output=limit)
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
            raise _file_error(file, result.stderr)

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
                raise _file_error(file, result.stderr)
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


def _file_error(file: str, stderr: bytes) -> OSError:
    message = stderr.decode(errors="replace").strip()
    for text, kind in (("No such file", FileNotFoundError), ("Is a directory", IsADirectoryError),
                       ("Permission denied", PermissionError),
                       ("Read-only file system", PermissionError)):
        if text in message:
            return kind(f"{file}: {message}")
    return OSError(f"{file}: {message}")
