"""The layering rules (README, "How it is built"): each room imports only the rooms
below it, so a lower layer never reaches a higher one."""

import ast
import pathlib

import nsbox

ROOT = pathlib.Path(nsbox.__file__).parent

LEAVES = {"errors", "record", "trace"}
# room -> the rooms it may import (besides itself and the leaves)
MAY_IMPORT = {
    "errors": set(),
    "record": set(),
    "trace": set(),
    "_libc": set(),
    "_ffi": {"_libc"},
    "_ffi_build": set(),
    "kernel": {"_ffi", "_libc"},
    "state": set(),
    "trust_store": {"state"},
    "policy": set(),
    "plan.types": {"policy"},
    "plan": {"plan.types", "policy", "kernel", "state", "trust_store"},
    "netproxy": {"kernel", "policy"},
    "launch": {"plan.types", "netproxy", "kernel", "policy"},
    "service": {"launch", "plan.types", "kernel", "policy"},
    "api": {"service", "launch", "plan", "plan.types", "policy"},
    "cli": {"nsbox", "api", "launch", "plan", "plan.types", "policy", "state", "trust_store"},
    "integrations": {"api", "nsbox", "policy"},
    "__main__": {"cli"},
    "nsbox": set(),  # the package's __init__: public names, resolved lazily
}
# Narrow exceptions, each for a stated reason.
ALSO = {
    # Reading policy files: where nsbox's state (the trust store) lives.
    "nsbox.policy.file_trust": {"state", "trust_store"},
    # Copying files in and out of a workspace without following its symlinks.
    "nsbox.integrations.inspect_sandbox": {"kernel"},
    # PID 1's denial supervisor classifies with the plan's own pure rules, so that a
    # report agrees with how the plan decides writability.
    "nsbox.launch.denial_watch": {"plan"},  # plan.denial_rules only
}


def room_of(module: str):
    parts = module.split(".")
    if parts[0] != "nsbox":
        return None
    if len(parts) == 1:
        return "nsbox"
    if parts[1] == "plan" and len(parts) > 2 and parts[2] == "types":
        return "plan.types"
    return parts[1]


def imports_of(path: pathlib.Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from a.b import c`: c may be the module a.b.c, which decides the room.
            for alias in node.names:
                dunder = alias.name.startswith("__")
                yield node.module if dunder else f"{node.module}.{alias.name}"


def modules():
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(("nsbox",) + parts), path


def test_every_room_is_known():
    assert {room_of(m) for m, _ in modules()} - set(MAY_IMPORT) == set()


def test_no_module_imports_a_higher_layer():
    violations = []
    for module, path in modules():
        own = room_of(module)
        allowed = MAY_IMPORT[own] | LEAVES | {own} | ALSO.get(module, set())
        for imported in imports_of(path):
            other = room_of(imported)
            if other is None or other in allowed:
                continue
            if own == "nsbox":
                continue
            violations.append(f"{module} imports {imported}")
    assert violations == []


def test_plan_never_forks():
    for path in (ROOT / "plan").rglob("*.py"):
        text = path.read_text()
        for call in ("os.fork(", "os.posix_spawn", "subprocess", "unshare("):
            assert call not in text, f"{path.name} calls {call}"


def test_policy_layer_makes_no_kernel_calls():
    for path in (ROOT / "policy").rglob("*.py"):
        for imported in imports_of(path):
            assert not imported.startswith(("nsbox.kernel", "nsbox._ffi", "cffi", "ctypes")), \
                f"{path.name} imports {imported}"
