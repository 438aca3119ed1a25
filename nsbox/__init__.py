"""nsbox: run commands in a Linux namespace sandbox (user, mount, PID, IPC, UTS, net)."""

__version__ = "0.1.0"

# Names are resolved lazily so `nsbox exec` imports only what it uses.
_LAZY = {
    "Policy": "nsbox.policy.model",
    "NsboxError": "nsbox.errors",
    "SandboxError": "nsbox.errors",
    "PolicyError": "nsbox.errors",
    "UnsupportedKernel": "nsbox.errors",
    "SyscallError": "nsbox.errors",
    "SetupFailed": "nsbox.errors",
    "run": "nsbox.api",
    "run_async": "nsbox.api",
    "set_prewarm": "nsbox.api",
    "Popen": "nsbox.api",
    "Session": "nsbox.api",
    "image": "nsbox.api",
    "Result": "nsbox.api",
    "PIPE": "nsbox.api",
    "STDOUT": "nsbox.api",
    "DEVNULL": "nsbox.api",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nsbox' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
