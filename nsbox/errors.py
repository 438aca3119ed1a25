"""Exception types shared by every layer."""

import errno as _errno
import os


class NsboxError(Exception):
    """Base class for everything nsbox raises."""


class SandboxError(NsboxError):
    """The sandbox could not be set up; nothing was started."""


class PolicyError(SandboxError, ValueError):
    """A policy, a policy file or a seccomp profile is invalid."""


class UnsupportedKernel(SandboxError):
    """The running kernel (or its configuration) lacks a required feature."""


class SyscallError(SandboxError, OSError):
    """A system call failed; the message names the call and its key arguments."""

    def __init__(self, err: int, call: str, detail: str = "", hint: str = ""):
        self.call = call
        self.detail = detail
        self.hint = hint
        text = f"{call}({detail}): {_errno.errorcode.get(err, str(err))} ({os.strerror(err)})"
        if hint:
            text += f"; {hint}"
        OSError.__init__(self, err, text)

    def __str__(self) -> str:
        return self.strerror or ""


class SetupFailed(SandboxError):
    """A step of the launch sequence failed inside the new sandbox; the command never ran."""

    def __init__(self, step: str, err: int, message: str):
        super().__init__(f"sandbox setup failed at {step}: {message}")
        self.step = step
        self.errno = err
