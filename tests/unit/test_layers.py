"""The layering rule: a lower layer never imports a higher one."""

import ast
import pathlib

import nsbox

ROOT = pathlib.Path(nsbox.__file__).parent
# Lower number = lower layer. Modules not listed are entry points (cli, api, ...).
LAYERS = {"_ffi": 0, "_libc": 0, "errors": 0, "record": 0, "kernel": 1, "state": 1,
          "trust_store": 1, "policy": 2, "launch": 3, "netproxy": 3}


def layer_of(module: str):
    parts = module.split(".")
    if parts[0] != "nsbox" or len(parts) < 2:
        return None
    return LAYERS.get(parts[1])


def imports_of(path: pathlib.Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            for alias in node.names:
                yield f"{node.module}.{alias.name}"


def test_no_module_imports_a_higher_layer():
    violations = []
    for path in ROOT.rglob("*.py"):
        module = "nsbox." + ".".join(path.relative_to(ROOT).with_suffix("").parts)
        own = layer_of(module)
        if own is None:
            continue
        for imported in imports_of(path):
            other = layer_of(imported)
            if other is not None and other > own:
                violations.append(f"{module} imports {imported}")
    assert violations == []


def test_policy_layer_makes_no_kernel_calls():
    for path in (ROOT / "policy").rglob("*.py"):
        for imported in imports_of(path):
            assert not imported.startswith(("nsbox.kernel", "nsbox._ffi", "nsbox.state",
                                            "nsbox.trust_store", "cffi", "ctypes")), \
                f"{path.name} imports {imported}"
