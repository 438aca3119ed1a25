"""Ray's BaseSandboxBackend on nsbox: one warm nsbox.Session per sandbox.

The image is the host's root filesystem, read-only ("host"). Each sandbox gets a
private workspace directory (its cwd and only writable path, besides its private
/tmp) that delete removes, unless `workdir` names a host directory to use instead.
"""

import os
import signal
import stat
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Dict, List, Optional, Union

from ray.experimental.sandbox.backend.base import BaseSandboxBackend, ExecResult, SandboxStatus
from ray.experimental.sandbox.config import SandboxConfig, parse_memory_bytes
from ray.experimental.sandbox.exceptions import (
    SandboxCreationError,
    SandboxError,
    SandboxExecError,
    SandboxNotFoundError,
    SandboxTimeoutError,
)
from ray.experimental.sandbox.image_manager import BaseImageManager

import nsbox
from nsbox import api as nsbox_api
from nsbox.errors import NsboxError, SandboxError as NsboxSandboxError
from nsbox.integrations.workspaces import remove_tree

HOST_IMAGE = "host"
# Ray's network modes nsbox has, plus nsbox's filtering proxy.
NETWORK_MODES = ("none", "host", "allowlist")
# Every command carries it, so a timeout can find the processes that left its group.
EXEC_MARKER = "NSBOX_RAY_EXEC"
_WRITE = 'mkdir -p -- "$(dirname -- "$1")" && cat {} "$1"'


@dataclass
class NsboxSandboxConfig(SandboxConfig):
    """Ray's SandboxConfig plus what only nsbox offers.

    allow_domains: names the sandbox may reach through nsbox's filtering proxy
        (network "allowlist"; implied when given with network "none").
    isolation: "auto" (the strongest this worker allows: full, else landlock-only),
        "full" or "landlock".
    policy: an nsbox.Policy to start from (hidden paths, extra writable roots, ...);
        the workspace, network, env and limits come from this config.
    inferred_limits: "cpu" and/or "memory" when they were not asked for but taken from
        the actor's Ray resources; dropped where nsbox cannot enforce them.
    """

    image: Optional[str] = HOST_IMAGE
    allow_domains: tuple = ()
    isolation: str = "auto"
    policy: Optional[object] = None
    inferred_limits: tuple = ()

    def __post_init__(self):
        if self.image is None:
            self.image = HOST_IMAGE
        self.allow_domains = tuple(self.allow_domains or ())
        if self.allow_domains and self.network in ("none", "allowlist"):
            self.network = "allowlist"
        network = self.network
        if network == "allowlist":  # Ray's check knows only its own modes
            self.network = "none"
        try:
            super().__post_init__()
        finally:
            self.network = network


class HostImageManager(BaseImageManager):
    """The one image nsbox has: the host's root filesystem, mounted read-only."""

    def pull_image(self, image: str, timeout_seconds: float = 120.0,
                   instance_id: Optional[str] = None) -> str:
        check_image(image)
        return "/"

    def get_image_dir(self, image: str) -> str:
        check_image(image)
        return "/"

    def get_image_config(self, image: str) -> dict:
        check_image(image)
        return {}

    def get_workdir(self, image: str) -> Optional[str]:
        return None

    def get_envs(self, image: str) -> List[str]:
        return []

    def create_oci_spec(self, image: str, *args, **kwargs) -> dict:
        raise SandboxCreationError("nsbox builds no OCI bundle: it runs on the host's root")

    def prepare_oci_bundle(self, root_dir: str, workdir_path: str, container_cwd: str,
                           image: str, *args, **kwargs) -> str:
        raise SandboxCreationError("nsbox builds no OCI bundle: it runs on the host's root")


def check_image(image) -> None:
    if image not in (None, "", HOST_IMAGE):
        raise SandboxCreationError(
            f"image {image!r}: the nsbox backend runs sandboxes on this node's own root "
            f"filesystem, read-only (image={HOST_IMAGE!r}); container images are not "
            "supported yet")


class _Built:
    """A started session and what it was built from."""

    def __init__(self, session, workspace, owned, policy, limits_dropped, fallback, reused):
        self.session = session
        self.plan_reused = reused  # started on a plan compiled for an earlier sandbox
        self.workspace = workspace
        self.owned = owned  # directories made for it (removed at delete)
        self.policy = policy
        self.limits_dropped = limits_dropped
        self.isolation_fallback = fallback
        self.built_at = time.monotonic()

    def discard(self) -> None:
        self.session.close()
        _remove_dirs(self.owned)


class _Box:
    """One sandbox: its session, workspace and what get_metadata reports."""

    def __init__(self, sandbox_id, config, built: _Built):
        self.id = sandbox_id
        self.config = config
        self.session = built.session
        self.workspace = built.workspace
        self.owned = built.owned
        self.policy = built.policy
        self.limits_dropped = built.limits_dropped
        # how long it stood ready before this create: about 0 unless from the warm pool
        self.warm_for_s = time.monotonic() - built.built_at
        self.created = time.time()
        self.expires = (self.created + config.ttl_seconds
                        if config.ttl_seconds and config.ttl_seconds > 0 else None)
        self.status = SandboxStatus.RUNNING
        self.deleting = False  # delete_sandbox under way
        self.isolation = None  # known after its first command
        self.isolation_fallback = built.isolation_fallback
        self.plan_reused = built.plan_reused
        self.isolation_missing = ()
        self.tmpdir = None


class NsboxSandboxBackend(BaseSandboxBackend):
    """Sandboxes on this node as nsbox sessions; safe to use from many threads."""

    def __init__(self, image_manager: Optional[BaseImageManager] = None, *, warm: int = 0,
                 warm_max_age: float = 60.0):
        """warm: keep that many sandboxes started ahead, for configs like the last one
        created without a workdir (see WarmPool); 0 starts each on demand."""
        super().__init__(image_manager=image_manager or HostImageManager())
        self._boxes: Dict[str, _Box] = {}
        # Shaped like the gVisor backend's, which Ray's Sandbox.get_config reads.
        self._sandbox_metadata: Dict[str, Dict] = {}
        self._lock = threading.Lock()
        self._ttl_wakeup = threading.Condition(self._lock)
        self._ttl_thread = None
        self._root = None  # this process's directory for workspaces, while it has any
        self._creating = 0
        # What isolation "auto" came to here (its probe forks: done once per process).
        self._auto = None  # (mode, why it fell back)
        self._pool = WarmPool(self, warm, warm_max_age) if warm > 0 else None
        self._plans = SessionPlans()

    # --- lifecycle ---------------------------------------------------------------

    def create_sandbox(self, config: SandboxConfig) -> str:
        check_image(config.image)
        _check_supported(config)
        deadline = time.monotonic() + (config.timeout_seconds or 30.0)
        sandbox_id = f"nsbox-sandbox-{uuid.uuid4().hex[:12]}"
        with self._lock:
            self._creating += 1
        try:
            built = self._pool.take(config) if self._pool else None
            if built is None:
                built = self._build(config, deadline)
        finally:
            with self._lock:
                self._creating -= 1
            self._drop_root_if_unused()
        box = _Box(sandbox_id, config, built)
        with self._lock:
            self._boxes[sandbox_id] = box
            self._sandbox_metadata[sandbox_id] = {
                "config": config, "workdir": box.workspace, "cwd": box.workspace,
                "status": box.status}
            if box.expires is not None:
                self._start_ttl_thread()
                self._ttl_wakeup.notify()
        return sandbox_id

    def _build(self, config, deadline) -> "_Built":
        """A started session for `config`, with its workspace."""
        workspace, owned = self._workspace(config)
        dropped = {}
        isolation = getattr(config, "isolation", "auto")
        auto = self._auto if isolation == "auto" else None
        key = _pool_key(config) if owned == [workspace] else None  # a new empty workspace
        try:
            # Every sandbox's workspace lies under this base: each sees only its own.
            hide = _workspaces_base()
            policy = _policy(config, workspace, auto[0] if auto else isolation, hide)
            try:
                session, reused = _open_session(self._plans, key, policy, deadline)
            except SandboxCreationError as err:
                inferred = tuple(getattr(config, "inferred_limits", ()))
                if not inferred:
                    raise
                policy = _policy(config, workspace, policy.isolation, hide, without=inferred)
                session, reused = _open_session(self._plans, key, policy, deadline)
                dropped = {name: str(err) for name in inferred}
        except BaseException:
            _remove_dirs(owned)
            raise
        return _Built(session, workspace, owned, policy, dropped, auto[1] if auto else "", reused)

    def close(self) -> None:
        """Delete every sandbox and drop the warm ones."""
        pool, self._pool = self._pool, None
        if pool:
            pool.close()
        self.delete_all()
        self._drop_root_if_unused()

    def delete_sandbox(self, sandbox_id: str) -> None:
        with self._lock:
            box = self._boxes.get(sandbox_id)
            if box is None or box.deleting:
                return
            box.deleting = True
        # TERMINATED only once nothing of it is left: processes, then directories.
        box.session.close()
        _remove_dirs(box.owned)
        box.status = SandboxStatus.TERMINATED
        with self._lock:
            self._boxes.pop(sandbox_id, None)
            self._sandbox_metadata.pop(sandbox_id, None)
        self._drop_root_if_unused()

    def delete_all(self) -> None:
        for sandbox_id in list(self._boxes):
            self.delete_sandbox(sandbox_id)

    def get_status(self, sandbox_id: str) -> SandboxStatus:
        """RUNNING once a probe command ran; TERMINATED when deleted; ERROR when its
        sandbox died under it."""
        box = self._boxes.get(sandbox_id)
        if box is None:
            return SandboxStatus.TERMINATED
        if box.status == SandboxStatus.RUNNING and not box.deleting:
            try:
                self._note(box, box.session.run(["true"], timeout=10))
            except NsboxSandboxError:
                box.status = SandboxStatus.ERROR
        return box.status

    def get_metadata(self, sandbox_id: str) -> dict:
        """What this sandbox got: isolation (full, or landlock without user namespaces),
        workspace, private temp dir, network, limits."""
        box = self._box(sandbox_id)
        if box.tmpdir is None and box.status == SandboxStatus.RUNNING:
            try:
                result = box.session.run(["printenv", "TMPDIR"], timeout=10)
                self._note(box, result)
                box.tmpdir = result.stdout.decode().strip() or None
            except NsboxSandboxError:
                box.status = SandboxStatus.ERROR
        policy = box.policy
        return {
            "sandbox_id": box.id, "backend": "nsbox", "nsbox_version": nsbox.__version__,
            "image": HOST_IMAGE, "status": box.status.value,
            "isolation": box.isolation, "isolation_fallback": box.isolation_fallback,
            "isolation_missing": list(box.isolation_missing),
            "workspace": box.workspace, "workspace_removed_at_delete": bool(box.owned),
            # private to the sandbox: /tmp with full isolation, a directory of its own
            # (the host's /tmp stays read-only) with landlock-only
            "tmpdir": box.tmpdir,
            "network": policy.network, "allow_domains": list(policy.network_allow),
            "limits": {k: v for k, v in policy.as_dict()["limits"].items() if v is not None},
            # limits taken from the actor's Ray resources that nsbox could not enforce here
            "limits_dropped": dict(box.limits_dropped),
            "policy_digest": policy.digest(), "created_at": box.created,
            "expires_at": box.expires, "pid": os.getpid(),
            "warm_for_s": round(box.warm_for_s, 3),
            # its plan was compiled for an earlier sandbox (see SessionPlans)
            "plan_reused": box.plan_reused,
        }

    def get_config(self, sandbox_id: str) -> SandboxConfig:
        return self._box(sandbox_id).config

    # --- commands and files ------------------------------------------------------

    def exec_command(self, sandbox_id: str, command: Union[str, List[str]],
                     timeout: Optional[float] = None, cwd: Optional[str] = None,
                     env: Optional[Dict[str, str]] = None, shell: Optional[str] = None,
                     user: Optional[str] = None) -> ExecResult:
        box = self._box(sandbox_id)
        if user is not None and not runs_as(user):
            raise SandboxExecError(
                f"nsbox runs commands as the Ray worker's own user (uid {os.getuid()}); "
                f"it cannot run them as {user!r}")
        if isinstance(command, str):
            argv = [shell or box.config.shell, "-c", command]
        else:
            argv = [str(a) for a in command]
            if not argv:
                raise SandboxExecError("empty command")
        if env:
            argv = ["env", "--", *_assignments(env), *argv]
        result = self._run(box, argv, cwd=cwd, timeout=timeout)
        return ExecResult(exit_code=result.returncode,
                          stdout=result.stdout.decode("utf-8", errors="replace"),
                          stderr=result.stderr.decode("utf-8", errors="replace"),
                          duration_seconds=result.duration_s)

    def write_file(self, sandbox_id: str, path: str, content: Union[str, bytes],
                   append: bool = False) -> None:
        """Written by a command inside the sandbox, with its rights and its view of `path`."""
        data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
        script = _WRITE.format(">>" if append else ">")
        result = self._run(self._box(sandbox_id), ["sh", "-c", script, "sh", path], input=data)
        if result.returncode:
            raise SandboxError(f"Failed to write file '{path}': "
                               f"{result.stderr.decode('utf-8', errors='replace').strip()}")

    def read_file(self, sandbox_id: str, path: str) -> bytes:
        result = self._run(self._box(sandbox_id), ["cat", "--", path])
        if result.returncode:
            raise SandboxError(
                f"File not found or read error '{path}' inside sandbox '{sandbox_id}': "
                f"{result.stderr.decode('utf-8', errors='replace').strip()}")
        return result.stdout

    # --- internals -----------------------------------------------------------------

    def _box(self, sandbox_id: str) -> _Box:
        box = self._boxes.get(sandbox_id)
        if box is None:
            raise SandboxNotFoundError(f"Sandbox ID '{sandbox_id}' not found.")
        return box

    def _run(self, box: _Box, argv, cwd=None, timeout=None, input=None):
        marker = uuid.uuid4().hex
        try:
            # env None: the session's own, filtered once when it started
            result = box.session.run(argv, cwd=cwd, timeout=timeout, input=input,
                                     extra_env={EXEC_MARKER: marker})
        except NsboxSandboxError as err:
            if box.status == SandboxStatus.TERMINATED:
                raise SandboxNotFoundError(f"Sandbox ID '{box.id}' was deleted.") from None
            raise SandboxExecError(f"nsbox: {err}") from err
        self._note(box, result)
        if result.timed_out:
            # nsbox killed the command's process group; this takes what left it too.
            _kill_marked(f"{EXEC_MARKER}={marker}".encode())
            raise SandboxTimeoutError(
                f"nsbox exec command timed out after {timeout} seconds; "
                "the command and every process it started were killed.")
        return result

    def _note(self, box: _Box, result) -> None:
        if box.isolation is None:
            box.isolation = result.isolation
            box.isolation_fallback = result.isolation_fallback or box.isolation_fallback
            box.isolation_missing = tuple(result.isolation_missing)
            if box.policy.isolation == "auto":
                self._auto = (result.isolation, result.isolation_fallback)

    def _workspace(self, config: SandboxConfig):
        """(workspace, directories created for it)."""
        if config.workdir is None:
            path = tempfile.mkdtemp(prefix="sbx-", dir=self._owner_dir())
            return path, [path]
        if not os.path.isabs(config.workdir):
            raise SandboxCreationError(
                f"workdir {config.workdir!r}: nsbox needs an absolute host path (the "
                "sandbox sees the host's root, so the path is the same inside and out)")
        path = os.path.normpath(config.workdir)
        missing = []
        probe = path
        while not os.path.lexists(probe):
            missing.append(probe)
            probe = os.path.dirname(probe)
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
        except OSError as err:
            raise SandboxCreationError(f"workdir {path!r}: {err}") from None
        if not os.path.isdir(path):
            raise SandboxCreationError(f"workdir {path!r} is not a directory")
        return os.path.realpath(path), missing[-1:]

    def _drop_root_if_unused(self) -> None:
        with self._lock:
            if self._root is None or self._boxes or self._creating or self._pool:
                return
            try:
                os.rmdir(self._root)
            except OSError:
                return  # not empty
            self._root = None

    def _owner_dir(self) -> str:
        """This process's directory for workspaces; those of dead processes are removed.
        Called with self._creating raised, so it is not removed meanwhile."""
        with self._lock:
            if self._root is not None:
                return self._root
        base = _workspaces_base()
        _sweep_dead_owners(base)
        own = os.path.join(base, _process_key(os.getpid()))
        with self._lock:
            os.makedirs(own, mode=0o700, exist_ok=True)
            self._root = own
        return own

    def _start_ttl_thread(self) -> None:
        if self._ttl_thread is None:
            self._ttl_thread = threading.Thread(target=self._expire_loop, daemon=True,
                                                name="nsbox-ray-ttl")
            self._ttl_thread.start()

    def _expire_loop(self) -> None:
        while True:
            with self._lock:
                now = time.time()
                live = [b for b in self._boxes.values() if b.expires and not b.deleting]
                due = [b.id for b in live if b.expires <= now]
                if not due:
                    waits = [b.expires - now for b in live]
                    self._ttl_wakeup.wait(min(waits) if waits else None)
                    continue
            for sandbox_id in due:
                try:
                    self.delete_sandbox(sandbox_id)
                except Exception:
                    pass  # best effort, as Ray's runtime does


class WarmPool:
    """Sandboxes started ahead of demand, as nsbox.run() keeps pre-warmed spares.

    Warms the configuration of the last sandbox created without a workdir; a create
    with an equal configuration (image, cpu, memory, env, network, isolation, policy)
    takes a warm one and a background thread starts the next. Each is used once. A
    warm sandbox is a session started up to `max_age` seconds earlier, so it sees the
    host as a session of that age does; older ones are dropped. Costs, per warm
    sandbox, its idle memory and the CPU of starting it. Refills wait until creates
    pause for SETTLE_S, so a burst's commands do not compete with starting the next.
    """

    SETTLE_S = 0.05

    def __init__(self, backend, size: int, max_age: float):
        self._backend = backend
        self._size = size
        self._max_age = max_age
        self._key = None
        self._config = None
        self._ready = []  # _Built, oldest first
        self._last_take = 0.0
        self._closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._fill, daemon=True, name="nsbox-ray-warm")
        self._thread.start()

    def __bool__(self) -> bool:
        return True

    def take(self, config):
        key = _pool_key(config)
        if key is None:
            return None
        stale = []
        with self._cond:
            if key != self._key:
                stale, self._ready = self._ready, []
                self._key, self._config = key, config
            built = self._ready.pop(0) if self._ready else None
            self._last_take = time.monotonic()
            self._cond.notify()
        for old in stale:
            old.discard()
        return built

    def close(self) -> None:
        with self._cond:
            self._closed = True
            ready, self._ready = self._ready, []
            self._cond.notify()
        for built in ready:
            built.discard()
        self._thread.join(70)  # a start under way is bounded by its deadline

    def _fill(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (self._key is None or len(self._ready) >= self._size):
                    self._cond.wait(self._max_age / 2 if self._ready else None)
                    self._drop_old()
                if self._closed:
                    return
                quiet = self._last_take + self.SETTLE_S - time.monotonic()
                if quiet > 0:
                    self._cond.wait(quiet)
                    continue
                key, config = self._key, self._config
            try:
                built = self._backend._build(config, time.monotonic() + 60)
            except Exception:
                time.sleep(1.0)  # the next create reports the problem itself
                continue
            with self._cond:
                if key == self._key and not self._closed:
                    self._ready.append(built)
                    built = None
            if built is not None:
                built.discard()
                self._backend._drop_root_if_unused()

    def _drop_old(self) -> None:
        limit = time.monotonic() - self._max_age
        old = [b for b in self._ready if b.built_at < limit]
        self._ready = [b for b in self._ready if b.built_at >= limit]
        for built in old:
            built.discard()


def _pool_key(config):
    """What a warm sandbox must match; None for configs that are never warmed."""
    if config.workdir is not None:
        return None
    return (config.image, config.cpu, str(config.memory), tuple(sorted((config.env or {}).items())),
            config.network, tuple(getattr(config, "allow_domains", ())),
            getattr(config, "isolation", "auto"), repr(getattr(config, "policy", None)),
            tuple(getattr(config, "inferred_limits", ())))


# --- config to policy ----------------------------------------------------------------

def _check_supported(config: SandboxConfig) -> None:
    problems = []
    if config.network not in NETWORK_MODES:
        problems.append(
            f"network={config.network!r}: nsbox offers 'none' (an empty network namespace), "
            "'host' (the node's network) and 'allowlist' (allow_domains=[...] through a "
            "filtering proxy)")
    if config.dns is not None:
        problems.append("dns: nsbox uses the node's resolver configuration")
    if config.capabilities:
        problems.append("capabilities: nsbox commands run with no capabilities")
    if not config.rootless:
        problems.append("rootless=False: nsbox sandboxes always run as the Ray worker's user")
    if not config.readonly:
        problems.append("readonly=False: nsbox mounts the host's root read-only (no "
                        "copy-on-write layer); write to the workdir or /tmp")
    if getattr(config, "_oci_spec_transform_fn", None) is not None:
        problems.append("_oci_spec_transform_fn: nsbox builds no OCI spec")
    if problems:
        raise SandboxCreationError("not supported by the nsbox backend: " + "; ".join(problems))


def _workspaces_base() -> str:
    """The directory of every workspace this user's Ray workers make (one directory
    per process inside), created private if missing."""
    base = os.path.join(os.path.realpath(tempfile.gettempdir()), f"nsbox-ray-{os.getuid()}")
    try:
        os.mkdir(base, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(base)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise SandboxCreationError(f"{base} is not a private directory of this user")
    return base


def _policy(config: SandboxConfig, workspace: str, isolation: str, hide: str, without=()):
    """`hide`: the workspaces' base, hidden but for this sandbox's own workspace."""
    base = getattr(config, "policy", None) or nsbox.Policy(clearenv=True)
    wanted = {}
    memory = parse_memory_bytes(config.memory) if config.memory else None
    if memory and memory > 0 and "memory" not in without:
        wanted["memory"] = memory
    if config.cpu and config.cpu > 0 and "cpu" not in without:
        wanted["cpu"] = float(config.cpu)
    changes = {}
    if wanted:
        changes["limits"] = {**base.as_dict()["limits"], **wanted}
    allow = tuple(getattr(config, "allow_domains", ()) or ())
    try:
        return base.with_changes(
            workspace=workspace, network=config.network, network_allow=allow,
            isolation=isolation, env_keep=tuple(dict.fromkeys(base.env_keep + (EXEC_MARKER,))),
            extra_env=base.extra_env + tuple(_pairs(config.env or {})),
            hidden_parents=tuple(dict.fromkeys(base.hidden_parents + (hide,))), **changes)
    except NsboxError as err:
        raise SandboxCreationError(f"nsbox: {err}") from None


class SessionPlans:
    """Session plans compiled once per sandbox config and moved to each new sandbox's
    workspace (nsbox.api.session_template): a plan reused up to MAX_AGE seconds after
    it was compiled, while the host paths it holds are unchanged. Sandboxes started
    back to back then skip reading the host (hidden paths, protected names), most of
    a create's CPU; each still has its own namespaces, /tmp and workspace."""

    MAX_AGE = 2.0  # 0: compile every sandbox's plan afresh
    MAX_CONFIGS = 8

    def __init__(self):
        self._lock = threading.Lock()
        self._templates = {}  # key -> (template or None when not movable, when made)

    def session(self, key, policy):
        """(nsbox.Session(policy), whether its plan was compiled for an earlier sandbox),
        on a reused plan when `key` (a config's) allows."""
        if key is None or self.MAX_AGE <= 0:
            return nsbox.Session(policy), False
        key = (key, policy.isolation)
        with self._lock:
            made, at = self._templates.get(key, (None, None))
        if made is not None:
            session = _from_template(made, policy, self.MAX_AGE)
            if session is not None:
                return session, True
        elif at is not None and time.monotonic() - at < self.MAX_AGE:
            return nsbox.Session(policy), False  # recently found not movable
        made = nsbox_api.session_template(policy, self.MAX_AGE)
        with self._lock:
            self._templates.pop(key, None)
            while len(self._templates) >= self.MAX_CONFIGS:
                self._templates.pop(next(iter(self._templates)))
            self._templates[key] = (made, time.monotonic())
        if made is not None:
            session = _from_template(made, policy, self.MAX_AGE)
            if session is not None:
                return session, False  # compiled for this one
        return nsbox.Session(policy), False


def _from_template(made, policy, max_age: float):
    """A session on `made`'s plan, or None when it is stale or not for this policy's
    workspace (a fresh compile then decides)."""
    try:
        return nsbox_api.session_from_template(made, policy, max_age)
    except ValueError:
        return None


def _open_session(plans: SessionPlans, key, policy, deadline: float):
    """(session, plan reused) for `policy` within the deadline, or SandboxTimeoutError
    (a session that turns up later is closed)."""
    box = {}
    lock = threading.Lock()
    done = threading.Event()

    def start():
        try:
            started = plans.session(key, policy)
        except BaseException as err:
            box["error"] = err
        else:
            with lock:
                if box.get("abandoned"):
                    started[0].close()
                else:
                    box["session"] = started
        done.set()

    threading.Thread(target=start, daemon=True, name="nsbox-ray-create").start()
    done.wait(max(0.0, deadline - time.monotonic()))
    with lock:
        if "session" in box:
            return box["session"]
        if not done.is_set():
            box["abandoned"] = True
            raise SandboxTimeoutError("the nsbox sandbox did not start within timeout_seconds")
    err = box["error"]
    if isinstance(err, NsboxError):
        raise SandboxCreationError(f"nsbox: {err}") from None
    raise SandboxCreationError(f"nsbox could not start the sandbox: {err!r}") from err


def _pairs(env: dict):
    for name, value in env.items():
        if not isinstance(name, str) or not name or "=" in name:
            raise SandboxCreationError(f"env: invalid variable name {name!r}")
        yield name, str(value)


def _assignments(env: dict) -> list:
    out = []
    for name, value in env.items():
        if not isinstance(name, str) or not name or "=" in name:
            raise SandboxExecError(f"env: invalid variable name {name!r}")
        out.append(f"{name}={value}")
    return out


def runs_as(user: str) -> bool:
    """Whether `user` (uid, name, optionally ":group") is who commands run as here."""
    import grp
    import pwd

    name, _, group = str(user).partition(":")
    try:
        uid = int(name) if name.isdecimal() else pwd.getpwnam(name).pw_uid
        gid = None if not group else int(group) if group.isdecimal() else grp.getgrnam(group).gr_gid
    except KeyError:
        return False
    return uid == os.getuid() and gid in (None, os.getgid())


# --- processes and directories -------------------------------------------------------

def _kill_marked(marker: bytes) -> None:
    """SIGKILL this user's processes whose environment holds `marker`, until none is left."""
    uid = os.getuid()
    for _ in range(3):
        found = False
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.stat(f"/proc/{entry}").st_uid != uid:
                    continue
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if marker not in f.read().split(b"\0"):
                        continue
                os.kill(int(entry), signal.SIGKILL)
                found = True
            except OSError:
                continue
        if not found:
            return


def _process_key(pid: int) -> str:
    """PID namespace, pid and start time: unique across pid reuse."""
    with open(f"/proc/{pid}/stat") as f:
        start = f.read().rsplit(")", 1)[1].split()[19]
    return f"{_pid_namespace()}-{pid}-{start}"


def _pid_namespace() -> str:
    return os.readlink("/proc/self/ns/pid").strip("pid:[]")


def _sweep_dead_owners(base: str) -> None:
    """Remove the workspaces of processes that died without deleting their sandboxes
    (only of processes in this PID namespace: others' pids cannot be checked here)."""
    ours = _pid_namespace() + "-"
    for name in os.listdir(base):
        if not name.startswith(ours):
            continue
        pid = name[len(ours):].partition("-")[0]
        try:
            alive = pid.isdigit() and _process_key(int(pid)) == name
        except OSError:
            alive = False
        if not alive:
            _remove_dirs([os.path.join(base, name)])


def _remove_dirs(paths) -> None:
    for path in paths:
        remove_tree(path, ignore_errors=True)
