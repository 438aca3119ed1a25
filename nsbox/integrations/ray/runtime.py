"""Ray's SandboxRuntime with nsbox as its backend: many sandboxes in one process.

For a Ray actor (or task) that manages sandboxes on its node itself, as Ray's
own SandboxRuntime is meant to be used; this is the fast path, with no actor
per sandbox.
"""

from typing import Dict, List, Optional, Union

from ray.experimental.sandbox import runtime as ray_runtime

from nsbox.integrations.ray.backend import (
    HOST_IMAGE,
    HostImageManager,
    NsboxSandboxBackend,
    NsboxSandboxConfig,
)


class SandboxRuntime(ray_runtime.SandboxRuntime):
    """Same methods as ray.experimental.sandbox.SandboxRuntime; create() also takes
    nsbox's allow_domains, isolation and policy (see NsboxSandboxConfig)."""

    def __init__(self, *, warm: int = 0):
        """warm: sandboxes to keep started ahead of demand (see backend.WarmPool)."""
        self._image_manager = HostImageManager()
        self._backend = NsboxSandboxBackend(image_manager=self._image_manager, warm=warm)
        self._ttl_timers = {}  # unused: the backend enforces ttl_seconds itself

    def create(
        self,
        image: Optional[str] = HOST_IMAGE,
        cpu: float = 0.0,
        memory: Union[str, int, float] = 0,
        env: Optional[Dict[str, str]] = None,
        workdir: Optional[str] = None,
        ttl_seconds: Optional[int] = None,
        timeout_seconds: float = 30.0,
        rootless: bool = True,
        network: str = "none",
        dns: Optional[List[str]] = None,
        capabilities: Optional[List[str]] = None,
        readonly: bool = True,
        _oci_spec_transform_fn=None,
        _ignore_cgroups: bool = False,
        **kwargs,
    ) -> str:
        """Start a sandbox on this node and return its id (see Ray's SandboxRuntime.create)."""
        config = NsboxSandboxConfig(
            image=image, cpu=cpu or 0.0, memory=memory or 0, env=env or {}, workdir=workdir,
            ttl_seconds=ttl_seconds, timeout_seconds=timeout_seconds, rootless=rootless,
            network=network, dns=dns, capabilities=capabilities, readonly=readonly,
            _oci_spec_transform_fn=_oci_spec_transform_fn, _ignore_cgroups=_ignore_cgroups,
            **kwargs)
        return self._backend.create_sandbox(config)

    def get_metadata(self, instance_id: str) -> dict:
        """nsbox's account of the sandbox: isolation achieved, workspace, network, limits."""
        return self._backend.get_metadata(instance_id)

    def delete_all(self) -> None:
        self._backend.delete_all()

    def close(self) -> None:
        """Delete every sandbox and drop the warm ones."""
        self._backend.close()
