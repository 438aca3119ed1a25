"""create() and the Sandbox actor: ray.experimental.sandbox's, on nsbox."""

from typing import Dict, List, Optional, Union

import ray
from ray.actor import ActorHandle
from ray.experimental.sandbox.backend.base import ExecResult, SandboxStatus
from ray.experimental.sandbox.config import SandboxConfig, parse_memory_bytes

from nsbox.integrations.ray.backend import HOST_IMAGE
from nsbox.integrations.ray.runtime import SandboxRuntime


@ray.remote
class Sandbox:
    """One sandbox per actor, with the methods of ray.experimental.sandbox.Sandbox
    (plus get_metadata). The sandbox dies with the actor's worker process."""

    def __init__(
        self,
        image: Optional[str] = HOST_IMAGE,
        cpu: Optional[float] = None,
        memory: Optional[Union[str, int, float]] = None,
        env: Optional[Dict[str, str]] = None,
        workdir: Optional[str] = None,
        ttl_seconds: Optional[int] = None,
        timeout_seconds: float = 30.0,
        rootless: bool = True,
        network: str = "none",
        dns: Optional[List[str]] = None,
        capabilities: Optional[List[str]] = None,
        readonly: bool = True,
        **kwargs,
    ):
        # As Ray's actor does, limits default to the resources Ray assigned it; those
        # are dropped (and get_metadata says so) where nsbox cannot enforce them.
        inferred = []
        try:
            assigned = ray.get_runtime_context().get_assigned_resources()
            if (cpu is None or cpu <= 0) and assigned.get("CPU", 0) > 0:
                cpu = float(assigned["CPU"])
                inferred.append("cpu")
            if memory is None and assigned.get("memory", 0) > 0:
                memory = int(assigned["memory"])
                inferred.append("memory")
        except Exception:
            pass
        kwargs.setdefault("inferred_limits", tuple(inferred))
        self.runtime = SandboxRuntime()
        self.instance_id = self.runtime.create(
            image=image, cpu=cpu, memory=memory, env=env, workdir=workdir,
            ttl_seconds=ttl_seconds, timeout_seconds=timeout_seconds, rootless=rootless,
            network=network, dns=dns, capabilities=capabilities, readonly=readonly, **kwargs)

    def __del__(self):
        try:
            self.delete()
        except Exception:
            pass

    def get_instance_id(self) -> str:
        return self.instance_id

    def get_config(self) -> SandboxConfig:
        return self.runtime.backend.get_config(self.instance_id)

    def get_metadata(self) -> dict:
        """nsbox's account of the sandbox (isolation achieved, workspace, network,
        limits) and the Ray node it runs on."""
        return {**self.runtime.get_metadata(self.instance_id),
                "node_id": ray.get_runtime_context().get_node_id()}

    def exec(self, command: Union[str, List[str]], timeout: Optional[float] = None,
             cwd: Optional[str] = None, env: Optional[Dict[str, str]] = None,
             shell: Optional[str] = None) -> ExecResult:
        return self.runtime.exec(self.instance_id, command, timeout=timeout, cwd=cwd, env=env,
                                 shell=shell)

    def upload_file(self, local_path: str, remote_path: str) -> None:
        self.runtime.upload_file(self.instance_id, local_path, remote_path)

    def download_file(self, remote_path: str, local_path: str) -> None:
        self.runtime.download_file(self.instance_id, remote_path, local_path)

    def write_file(self, path: str, content: Union[str, bytes]) -> None:
        self.runtime.write_file(self.instance_id, path, content)

    def read_file(self, path: str) -> bytes:
        return self.runtime.read_file(self.instance_id, path)

    def get_status(self) -> SandboxStatus:
        return self.runtime.get_status(self.instance_id)

    def delete(self) -> None:
        self.runtime.delete(self.instance_id)

    def terminate(self) -> None:
        self.delete()


def create(
    image: Optional[str] = HOST_IMAGE,
    cpu: Optional[float] = None,
    memory: Optional[Union[str, int, float]] = None,
    env: Optional[Dict[str, str]] = None,
    workdir: Optional[str] = None,
    ttl_seconds: Optional[int] = None,
    timeout_seconds: float = 30.0,
    rootless: bool = True,
    network: str = "none",
    dns: Optional[List[str]] = None,
    capabilities: Optional[List[str]] = None,
    resources: Optional[Dict[str, float]] = None,
    readonly: bool = True,
    **kwargs,
) -> ActorHandle:
    """ray.experimental.sandbox.create on nsbox: a Sandbox actor somewhere on the cluster.

    image: "host" (or None), this node's root filesystem read-only. Also takes
    nsbox's allow_domains, isolation and policy (see NsboxSandboxConfig).
    """
    actor_opts = {}
    if cpu is not None and cpu >= 0:
        actor_opts["num_cpus"] = cpu
    if memory is not None:
        parsed = parse_memory_bytes(memory)
        if parsed is not None and parsed > 0:
            actor_opts["memory"] = parsed
    if resources:
        actor_opts["resources"] = resources
    return Sandbox.options(**actor_opts).remote(
        image=image, cpu=cpu, memory=memory, env=env, workdir=workdir, ttl_seconds=ttl_seconds,
        timeout_seconds=timeout_seconds, rootless=rootless, network=network, dns=dns,
        capabilities=capabilities, readonly=readonly, **kwargs)
