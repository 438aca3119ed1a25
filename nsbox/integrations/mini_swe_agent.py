"""mini-swe-agent environment: each action runs in a warm nsbox sandbox over the workspace.

In a config file:

    environment:
      environment_class: nsbox.integrations.mini_swe_agent.NsboxEnvironment
      cwd: /path/to/repo          # the workspace too, unless `workspace` is set
      timeout: 60
      policy: /path/to/policy.toml  # optional nsbox policy file
      workspace_mode: overlay     # optional: the real tree stays unchanged (see below)

or `mini --environment-class nsbox.integrations.mini_swe_agent.NsboxEnvironment`.
Every action is a fresh `bash -c` (as with mini-swe-agent's local environment);
files in the workspace and the sandbox's private /tmp persist between actions.
A timeout ends the whole sandbox, background processes included; the next action
gets a new one (a new /tmp). With workspace_mode overlay the agent's changes live in
a copy-on-write layer (and carry over to that new sandbox); at cleanup they are kept
as an nsbox run to review and apply (`nsbox changes`, `nsbox apply`).
"""

import os
import platform
import subprocess
from typing import Any

from minisweagent.exceptions import Submitted
from minisweagent.utils.serialize import recursive_merge
from pydantic import BaseModel

from nsbox.api import DEVNULL, PIPE, STDOUT, Session
from nsbox.errors import SandboxError
from nsbox.integrations.notes import denial_note, with_note

SUBMIT_MARKER = "COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"


class NsboxEnvironmentConfig(BaseModel):
    cwd: str = ""
    """Where commands start; default: the workspace."""
    workspace: str = ""
    """The writable tree; default: cwd, else the current directory."""
    env: dict[str, str] = {}
    """Variables set for every command as given (even secret-looking ones: you chose them),
    over this process's own environment minus its secret-looking variables."""
    timeout: int = 30
    """Seconds before a command, and everything else in its sandbox, is killed."""
    policy: str = ""
    """An nsbox policy file (TOML); default: the one `nsbox exec` would use. Its workspace
    setting is replaced by the one above."""
    denial_note: bool = True
    """When the sandbox blocked something, end the observation's output with
    `[nsbox] blocked by policy: ...` and a hint line per kind of denial."""
    workspace_mode: str = ""
    """"overlay": the agent works on a copy-on-write view of the workspace and the real
    tree stays as it was; at cleanup its changes are kept as an nsbox run (`nsbox changes`,
    `nsbox apply`). "direct": it writes the real tree. Default: the policy's."""


class NsboxEnvironment:
    def __init__(self, *, config_class: type = NsboxEnvironmentConfig, **kwargs):
        """Extra keys other environments take (an image name, say) are ignored."""
        self.config = config_class(**kwargs)
        self.workspace = os.path.realpath(self.config.workspace or self.config.cwd or os.getcwd())
        self._policy = _policy(self.config.policy, self.workspace, self.config.env,
                               self.config.workspace_mode)
        self._session = None
        self._start()

    def execute(self, action: dict, cwd: str = "", *, timeout: int | None = None) -> dict[str, Any]:
        """Run action["command"] with bash; output is stdout and stderr merged."""
        command = action.get("command", "")
        timeout = timeout or self.config.timeout
        try:
            # stdin: /dev/null, never the agent's terminal or pipe.
            proc = self._start().popen(["bash", "-c", command], cwd=cwd or self.config.cwd or None,
                                       stdin=DEVNULL, stdout=PIPE, stderr=STDOUT)
        except SandboxError as err:
            return _failed("", err)
        try:
            raw, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as err:
            proc.kill()
            raw, _ = proc.communicate()
            kept = self._end()  # what the command left running in the background goes too
            output = raw.decode(errors="replace")
            if kept is not None:  # overlay: the next sandbox goes on from the agent's changes
                try:
                    self._start().continue_run(kept)
                except SandboxError as carry_err:
                    output += f"\n[nsbox] {carry_err}"
            err.output = output
            result = _failed(output, err)
        else:
            result = {"output": raw.decode(errors="replace"), "returncode": proc.returncode,
                      "exception_info": ""}
        self._check_finished(result)
        if self.config.denial_note:  # after: a submission is the command's output alone
            result["output"] = with_note(result["output"], denial_note(proc.denials,
                                                                       self._policy))
        return result

    def get_template_vars(self, **kwargs) -> dict[str, Any]:
        # The sandbox's uname: the host's kernel under the policy's hostname.
        system = platform.uname()._asdict() | {"node": self._policy.hostname}
        return recursive_merge(self.config.model_dump(), system, kwargs)

    def serialize(self) -> dict:
        return {
            "info": {
                "config": {
                    "environment": self.config.model_dump(mode="json"),
                    "environment_type": f"{self.__class__.__module__}.{self.__class__.__name__}",
                }
            }
        }

    def cleanup(self) -> None:
        """Kill everything in the sandbox; the workspace is left as it is."""
        self._end()

    def __del__(self):
        self._end()

    def _start(self) -> Session:
        if self._session is None:
            self._session = Session(self._policy)
        return self._session

    def _end(self):
        """The run id of the changes an overlay workspace kept, if any."""
        session, self._session = getattr(self, "_session", None), None
        if session is not None:
            session.close()
            return session.run_id
        return None

    def _check_finished(self, output: dict) -> None:
        lines = output.get("output", "").lstrip().splitlines(keepends=True)
        if lines and lines[0].strip() == SUBMIT_MARKER and output["returncode"] == 0:
            submission = "".join(lines[1:])
            raise Submitted({"role": "exit", "content": submission,
                             "extra": {"exit_status": "Submitted", "submission": submission}})


def _failed(output: str, err: Exception) -> dict:
    return {
        "output": output,
        "returncode": -1,
        "exception_info": f"An error occurred while executing the command: {err}",
        "extra": {"exception_type": type(err).__name__, "exception": str(err)},
    }


def _policy(path: str, workspace: str, env: dict, workspace_mode: str = ""):
    from nsbox.policy import files as policy_files

    # As `nsbox exec` finds and trusts the file. extra_env: the config's variables
    # are set even where their names look secret.
    flags = {"workspace": workspace, "extra_env": list(env.items())}
    if workspace_mode:
        flags["workspace_mode"] = workspace_mode
    policy, decision = policy_files.resolve(path or None, flags)
    if decision is not None:
        policy_files.log(decision)
    return policy
