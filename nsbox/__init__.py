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
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nsbox' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
