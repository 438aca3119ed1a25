"""Ray's sandbox API (ray.experimental.sandbox) with nsbox as the backend.

    # from ray.experimental.sandbox import create
    from nsbox.integrations.ray import create

    sb = create("host", env={"MODE": "test"}, ttl_seconds=600)
    print(ray.get(sb.exec.remote("echo hi")).stdout)

create() starts a Sandbox actor with the methods of Ray's (exec, write_file,
read_file, upload_file, download_file, get_status, delete, ...). SandboxRuntime
runs many sandboxes inside one actor of yours, as Ray's SandboxRuntime does, and
NsboxSandboxBackend is the BaseSandboxBackend under both. Errors are Ray's own
types (SandboxCreationError, SandboxTimeoutError, ...), re-exported here.
Needs `pip install 'nsbox[ray]'`.
"""

from ray.experimental.sandbox.backend.base import ExecResult, ExecutionResult, SandboxStatus
from ray.experimental.sandbox.exceptions import (
    SandboxCreationError,
    SandboxError,
    SandboxExecError,
    SandboxNotFoundError,
    SandboxTimeoutError,
)

from nsbox.integrations.ray.backend import (
    HOST_IMAGE,
    HostImageManager,
    NsboxSandboxBackend,
    NsboxSandboxConfig,
)
from nsbox.integrations.ray.runtime import SandboxRuntime
from nsbox.integrations.ray.actor import Sandbox, create

__all__ = [
    "create", "Sandbox", "SandboxRuntime", "NsboxSandboxBackend", "NsboxSandboxConfig",
    "HostImageManager", "HOST_IMAGE", "ExecResult", "ExecutionResult", "SandboxStatus",
    "SandboxError", "SandboxCreationError", "SandboxTimeoutError", "SandboxExecError",
    "SandboxNotFoundError",
]
