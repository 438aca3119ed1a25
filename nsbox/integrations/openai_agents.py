"""OpenAI Agents SDK sandbox client: `SandboxRunConfig(client=NsboxSandboxClient())`.

Each SDK sandbox session is a warm nsbox Session over its own workspace directory,
made by the client (a fresh temporary directory when the manifest keeps the SDK's
default root) and removed by `client.delete()`. Commands, and the SDK's shell
fallbacks for ls/rm/mv/mkdir, run inside the sandbox. So do the harness's own file
reads and writes (`cat`, `head -c`, `cat >`): a link the agent planted resolves in
the sandbox's view, where `~/.ssh` is hidden and `$HOME` read-only, never the host's.
Workspace snapshots are tar streams made and unpacked by `tar` inside the sandbox;
the SDK's strict validator rejects members that would land outside the workspace
before anything is unpacked.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import os
import tempfile
import uuid
from pathlib import Path
from typing import Literal

from agents.sandbox.errors import (
    ExecTimeoutError,
    ExecTransportError,
    WorkspaceArchiveReadError,
    WorkspaceArchiveWriteError,
    WorkspaceReadNotFoundError,
    WorkspaceStartError,
)
from agents.sandbox.manifest import Manifest
from agents.sandbox.materialization import MaterializationResult
from agents.sandbox.session.base_sandbox_session import BaseSandboxSession
from agents.sandbox.session.dependencies import Dependencies
from agents.sandbox.session.manager import Instrumentation
from agents.sandbox.session.sandbox_client import BaseSandboxClient, BaseSandboxClientOptions
from agents.sandbox.session.sandbox_session import SandboxSession
from agents.sandbox.session.sandbox_session_state import SandboxSessionState
from agents.sandbox.session.workspace_payloads import coerce_write_payload
from agents.sandbox.snapshot import SnapshotBase, SnapshotSpec, resolve_snapshot
from agents.sandbox.types import ExecResult, User
from agents.sandbox.util.tar_utils import (
    UnsafeTarMemberError,
    strip_tar_member_prefix,
    validate_tarfile,
)

from nsbox.api import Session
from nsbox.errors import SandboxError
from nsbox.integrations.notes import denial_note
from nsbox.integrations.openai_agents_pty import PtyProcesses
from nsbox.integrations.workspaces import file_error, remove_tree

__all__ = ["NsboxSandboxClient", "NsboxSandboxClientOptions", "NsboxSandboxSession",
           "NsboxSandboxSessionState"]

logger = logging.getLogger("nsbox")

BACKEND_ID = "nsbox"
WORKSPACE_PREFIX = "nsbox-agents-"
DEFAULT_MAX_OUTPUT = 64 * 1024 * 1024  # per stream of one command
DEFAULT_MAX_ARCHIVE = 1024 * 1024 * 1024  # a persisted workspace
_DEFAULT_MANIFEST_ROOT = Manifest.model_fields["root"].default

# File I/O for the harness is done by a command inside the sandbox, with its rights.
FILE_TIMEOUT = 120  # seconds: a FIFO the agent planted must not hang the harness
_READ = ["cat", "--"]
_WRITE = ["sh", "-c", 'mkdir -p -- "$(dirname -- "$1")" && cat > "$1"', "nsbox-write-file"]


class NsboxSandboxSessionState(SandboxSessionState):
    type: Literal["nsbox"] = "nsbox"
    workspace_root_owned: bool = False


class NsboxSandboxClientOptions(BaseSandboxClientOptions):
    """Per-session options; the sandbox's policy is the client's (see NsboxSandboxClient),
    so a stored session state cannot change it."""

    type: Literal["nsbox"] = "nsbox"

    def __init__(self, *, type: Literal["nsbox"] = "nsbox") -> None:
        super().__init__(type=type)


@dataclasses.dataclass(frozen=True)
class _Config:
    policy: object  # None, a policy file path, or an nsbox Policy
    isolation: str | None
    max_output: int
    max_archive: int
    denial_note: bool = True

    def policy_for(self, workspace: str):
        """The nsbox Policy of a session over `workspace`."""
        from nsbox.policy.model import Policy

        if isinstance(self.policy, Policy):
            changes = {"workspace": workspace}
            if self.isolation is not None:
                changes["isolation"] = self.isolation
            values = {f.name: getattr(self.policy, f.name) for f in self.policy._fields}
            return Policy(**{**values, **changes})
        from nsbox.policy import files as policy_files

        flags = {"workspace": workspace}
        if self.isolation is not None:
            flags["isolation"] = self.isolation
        explicit = os.fspath(self.policy) if self.policy is not None else None
        policy, decision = policy_files.resolve(explicit, flags)
        if decision is not None:
            policy_files.log(decision)
        return policy


class NsboxSandboxSession(PtyProcesses, BaseSandboxSession):
    """One SDK sandbox session: an nsbox Session over the manifest's root directory.

    Commands run as the user running the SDK (no `user=` other than that one), with
    the environment nsbox passes on (secret-looking variables dropped) plus the
    manifest's environment.
    """

    state: NsboxSandboxSessionState

    def __init__(self, *, state: NsboxSandboxSessionState, config: _Config) -> None:
        self.state = state
        self._config = config
        self._sandbox: Session | None = None
        self._policy = None  # the sandbox's, for the denial note's hints
        self._running = False
        self._sandbox_lock = asyncio.Lock()

    # -- lifecycle

    @property
    def workspace(self) -> str:
        return self.state.manifest.root

    async def _ensure_backend_started(self) -> None:
        await self._ensure_sandbox()

    async def _ensure_sandbox(self) -> Session:
        async with self._sandbox_lock:
            if self._sandbox is None:
                root = Path(self.workspace)
                try:
                    await asyncio.to_thread(root.mkdir, mode=0o700, parents=True, exist_ok=True)
                except OSError as err:
                    raise WorkspaceStartError(path=root, cause=err) from err
                policy = await asyncio.to_thread(self._config.policy_for, self.workspace)
                self._sandbox = await asyncio.to_thread(Session, policy)
                self._policy = policy
            return self._sandbox

    async def _after_start(self) -> None:
        self._running = True

    async def _after_start_failed(self) -> None:
        self._running = False

    async def _shutdown_backend(self) -> None:
        await self._close_sandbox()

    async def _close_sandbox(self) -> None:
        self._running = False
        await self.pty_terminate_all()
        async with self._sandbox_lock:
            sandbox, self._sandbox = self._sandbox, None
        if sandbox is not None:
            await asyncio.to_thread(sandbox.close)

    async def running(self) -> bool:
        return self._running and self._sandbox is not None

    # -- manifest: no host accounts, no host path grants

    async def _apply_manifest(self, *, only_ephemeral: bool = False,
                              provision_accounts: bool = True) -> MaterializationResult:
        _check_manifest(self.state.manifest)
        return await super()._apply_manifest(only_ephemeral=only_ephemeral,
                                             provision_accounts=provision_accounts)

    async def provision_manifest_accounts(self) -> None:
        _check_manifest(self.state.manifest)

    # -- commands

    def _prepare_exec_command(self, *command, shell, user) -> list[str]:
        _check_user(user)
        return super()._prepare_exec_command(*command, shell=shell, user=None)

    async def _exec_internal(self, *command: str | Path, timeout: float | None = None,
                             ) -> ExecResult:
        argv = [str(part) for part in command]
        try:
            sandbox = await self._ensure_sandbox()
            extra_env = await self.state.manifest.environment.resolve()
            result = await sandbox.run_async(argv, cwd=self.workspace, extra_env=extra_env or None,
                                             timeout=timeout, max_output=self._config.max_output)
        except (SandboxError, OSError) as err:
            raise ExecTransportError(command=argv, cause=err) from err
        if result.timed_out:
            raise ExecTimeoutError(command=argv, timeout_s=timeout)
        stderr = result.stderr
        if result.output_limited:
            stderr += (f"\nnsbox: the command's output passed {self._config.max_output} bytes; "
                       "it was killed and its output cut there\n").encode()
        if self._config.denial_note and result.denials:
            if stderr and not stderr.endswith(b"\n"):
                stderr += b"\n"
            stderr += denial_note(result.denials, self._policy).encode()
        return ExecResult(stdout=result.stdout, stderr=stderr, exit_code=result.returncode)

    # -- files

    async def read(self, path: Path, *, user: str | User | None = None) -> io.IOBase:
        _check_user(user)
        return io.BytesIO(await self._read(path, None))

    async def _read_bounded(self, path: Path, *, max_bytes: int) -> bytes:
        return await self._read(path, max_bytes)

    async def _read(self, path: Path | str, max_bytes: int | None) -> bytes:
        target = self.normalize_path(path)
        argv = ([*_READ, str(target)] if max_bytes is None
                else ["head", "-c", str(max_bytes), "--", str(target)])
        result = await self._run_inside(argv, timeout=FILE_TIMEOUT)
        if result.returncode or result.timed_out:
            error = _file_error(str(target), result.stderr, result.timed_out)
            if isinstance(error, FileNotFoundError):
                raise WorkspaceReadNotFoundError(path=Path(path), cause=error)
            raise WorkspaceArchiveReadError(path=Path(path), cause=error)
        return result.stdout

    async def write(self, path: Path, data: io.IOBase, *,
                    user: str | User | None = None) -> None:
        _check_user(user)
        payload = coerce_write_payload(path=path, data=data)
        content = await asyncio.to_thread(_read_all, payload.stream)
        target = self.normalize_path(path, for_write=True)
        result = await self._run_inside([*_WRITE, str(target)], input=content,
                                        timeout=FILE_TIMEOUT)
        if result.returncode or result.timed_out:
            raise WorkspaceArchiveWriteError(
                path=target, cause=_file_error(str(target), result.stderr, result.timed_out))

    async def _run_inside(self, argv, *, input: bytes | None = None,
                          max_output: int | None = None, timeout: float | None = None):
        sandbox = await self._ensure_sandbox()
        try:
            return await sandbox.run_async(argv, cwd=self.workspace, input=input,
                                           max_output=max_output, timeout=timeout)
        except SandboxError as err:
            raise ExecTransportError(command=argv, cause=err) from err

    # -- workspace snapshots

    async def persist_workspace(self) -> io.IOBase:
        root = Path(self.workspace)
        parent, name = os.path.split(os.path.normpath(self.workspace))
        excludes = [f"--exclude={name}/{rel.as_posix()}"
                    for rel in sorted(self._persist_workspace_skip_relpaths())]
        # --hard-dereference: hard links as files, which the strict hydrate accepts.
        argv = ["tar", "-c", "-f", "-", "--hard-dereference", "--anchored", "--no-wildcards",
                *excludes,
                "-C", parent or "/", "--", name]
        result = await self._run_inside(argv, max_output=self._config.max_archive)
        if result.output_limited:
            raise WorkspaceArchiveReadError(path=root, context={
                "reason": "workspace_too_large", "max_bytes": self._config.max_archive})
        # GNU tar: 1 is "some files changed while being read" (a background process
        # writing a log); the archive is still complete.
        if result.returncode not in (0, 1) or not result.stdout:
            raise WorkspaceArchiveReadError(path=root, context={
                "reason": "tar_failed", "exit_code": result.returncode,
                "stderr": result.stderr.decode(errors="replace")[-2000:]})
        if result.returncode == 1:
            logger.warning("nsbox: files changed while persisting %s: %s", root,
                           result.stderr.decode(errors="replace").strip()[-500:])
        try:
            return await asyncio.to_thread(strip_tar_member_prefix, io.BytesIO(result.stdout),
                                           prefix=name, relativize_symlinks_under=self.workspace)
        except UnsafeTarMemberError as err:
            raise WorkspaceArchiveReadError(path=root, context={
                "reason": err.reason, "member": err.member}, cause=err) from err
        except (OSError, ValueError) as err:
            raise WorkspaceArchiveReadError(path=root, cause=err) from err

    async def hydrate_workspace(self, data: io.IOBase) -> None:
        root = Path(self.workspace)
        archive = await asyncio.to_thread(_read_all, data)
        try:
            await asyncio.to_thread(_validate_archive, archive)
        except UnsafeTarMemberError as err:
            raise WorkspaceArchiveWriteError(path=root, context={
                "reason": err.reason, "member": err.member}, cause=err) from err
        except (OSError, ValueError) as err:
            raise WorkspaceArchiveWriteError(path=root, cause=err) from err
        # Unpacked by tar inside the sandbox: whatever it does, it can only write where
        # the sandbox's commands could.
        argv = ["tar", "-x", "-f", "-", "--no-same-owner", "-C", self.workspace]
        result = await self._run_inside(argv, input=archive, max_output=1 << 20)
        if result.returncode:
            raise WorkspaceArchiveWriteError(path=root, context={
                "reason": "tar_failed", "exit_code": result.returncode,
                "stderr": result.stderr.decode(errors="replace")[-2000:]})


class NsboxSandboxClient(BaseSandboxClient[NsboxSandboxClientOptions | None]):
    """Sandbox sessions confined by nsbox: each in its own workspace and nsbox Session.

    policy: None (the policy file `nsbox exec` would use, if any), the path of an nsbox
    policy file (trusted or narrowed as for `nsbox exec`), or an nsbox Policy; its
    workspace is replaced by the session's. isolation: "auto" by default, so sessions
    work where user namespaces are blocked (Landlock only); None keeps the policy's.
    max_output: bytes per stream of one command before it is killed and its output cut.
    max_archive: bytes of a persisted workspace. denial_note: when the sandbox blocked
    something, end the command's stderr with `[nsbox] blocked by policy: ...` and a hint
    line per kind of denial.
    """

    backend_id = BACKEND_ID
    supports_default_options = True

    def __init__(self, *, policy=None, isolation: str | None = "auto",
                 max_output: int = DEFAULT_MAX_OUTPUT, max_archive: int = DEFAULT_MAX_ARCHIVE,
                 denial_note: bool = True, instrumentation: Instrumentation | None = None,
                 dependencies: Dependencies | None = None) -> None:
        self._config = _Config(policy, isolation, max_output, max_archive, denial_note)
        self._instrumentation = instrumentation or Instrumentation()
        self._dependencies = dependencies

    async def create(self, *, snapshot: SnapshotSpec | SnapshotBase | None = None,
                     manifest: Manifest | None = None,
                     options: NsboxSandboxClientOptions | None = None) -> SandboxSession:
        manifest = manifest if manifest is not None else Manifest()
        _check_manifest(manifest)
        self._validate_manifest_for_create(manifest)
        owned = manifest.root == _DEFAULT_MANIFEST_ROOT
        if owned:
            # The real path: the sandbox sees the workspace there, and so do paths it reports.
            root = os.path.realpath(tempfile.mkdtemp(prefix=WORKSPACE_PREFIX))
            manifest = manifest.model_copy(update={"root": root}, deep=True)
        session_id = uuid.uuid4()
        state = NsboxSandboxSessionState(
            session_id=session_id, manifest=manifest,
            snapshot=resolve_snapshot(snapshot, str(session_id)), workspace_root_owned=owned)
        inner = NsboxSandboxSession(state=state, config=self._config)
        return self._wrap_session(inner, instrumentation=self._instrumentation)

    async def delete(self, session: SandboxSession) -> SandboxSession:
        """Kill everything in the session's sandbox; remove the workspace the client made."""
        inner = getattr(session, "_inner", session)
        if not isinstance(inner, NsboxSandboxSession):
            raise TypeError("NsboxSandboxClient.delete expects a session it created")
        await inner._close_sandbox()
        if inner.state.workspace_root_owned and _made_by_us(inner.workspace):
            await asyncio.to_thread(remove_tree, inner.workspace, True)
        return session

    async def resume(self, state: SandboxSessionState) -> SandboxSession:
        if not isinstance(state, NsboxSandboxSessionState):
            raise TypeError("NsboxSandboxClient.resume expects an NsboxSandboxSessionState")
        state.assert_path_grants_rebound()
        _check_manifest(state.manifest)
        inner = NsboxSandboxSession(state=state, config=self._config)
        return self._wrap_session(inner, instrumentation=self._instrumentation)

    def deserialize_session_state(self, payload: dict[str, object]) -> SandboxSessionState:
        return self._deserialize_session_state_payload(payload, NsboxSandboxSessionState)


def _check_manifest(manifest: Manifest) -> None:
    if manifest.users or manifest.groups:
        raise ValueError("the nsbox sandbox client does not support manifest users or groups: "
                         "commands run as the user running the agent")
    for grant in manifest.extra_path_grants:
        if grant.host_path is not None:
            raise ValueError(f"the nsbox sandbox client does not support host_path in path "
                             f"grants ({grant.path!r}): the sandbox sees host paths as they are")


def _check_user(user) -> None:
    if user is None:
        return
    name = user.name if isinstance(user, User) else str(user)
    import pwd

    try:
        uid = int(name) if name.isdecimal() else pwd.getpwnam(name).pw_uid
    except KeyError:
        uid = None
    if uid != os.getuid():
        raise ValueError(f"the nsbox sandbox runs commands as uid {os.getuid()} (the user "
                         f"running the agent), not as {name!r}")


def _made_by_us(root: str) -> bool:
    """Whether `root` is a workspace this client made: a state payload claiming to own
    some other directory must not get it removed."""
    parent, name = os.path.split(os.path.normpath(root))
    return (name.startswith(WORKSPACE_PREFIX)
            and parent == os.path.realpath(tempfile.gettempdir()))


def _read_all(stream) -> bytes:
    chunks = []
    while True:
        chunk = stream.read(1 << 20)
        if not chunk:
            break
        chunks.append(chunk.encode() if isinstance(chunk, str) else bytes(chunk))
    return b"".join(chunks)


def _validate_archive(archive: bytes) -> None:
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
        validate_tarfile(tar, allow_external_symlink_targets=False)
        for member in tar.getmembers():
            if not (member.isreg() or member.isdir() or member.issym()):
                raise UnsafeTarMemberError(member=member.name,
                                           reason="only files, directories and symlinks")


def _file_error(file: str, stderr: bytes, timed_out: bool = False) -> OSError:
    if timed_out:
        return TimeoutError(f"{file}: not read or written within {FILE_TIMEOUT} seconds")
    return file_error(file, stderr)
