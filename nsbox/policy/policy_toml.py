"""A policy file's TOML text -> a policy layer (see nsbox.policy.loader), with errors
that name the file, the key, its table and its line. Pure; only policy files need it.
"""

import posixpath

from nsbox.errors import PolicyError
from nsbox.policy.model import Policy
from nsbox.record import MISSING, fields

# Keys of the [filesystem] and [env] tables -> layer keys.
FILESYSTEM_KEYS = {"writable": "writable", "hide": "hide", "unhide": "unhide",
                   "hidden": "hidden", "protected": "protected", "git_protected": "git_protected",
                   "private": "private_dirs", "bind_ro": "read_only_binds"}
ENV_KEYS = {"keep": "env_keep", "set": "extra_env", "clear": "clearenv"}
# Keys of the [network] table; `network = "MODE"` at the top level works too.
NETWORK_KEYS = {"mode": "network", "allow": "network_allow"}
# Keys of the [cache] table; `cache = "MODE"` at the top level works too.
CACHE_KEYS = {"mode": "cache"}
# Path lists whose relative entries are relative to the workspace.
_PATH_KEYS = ("writable",)


def parse_toml(text: str, source: str, base: str | None = None) -> dict:
    """A policy file's text -> a layer. Errors name `source`, the key, its table and line."""
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise PolicyError(f"{source}: invalid TOML: {err}") from None
    where = _Locator(text, source)
    known = {f.name: f for f in fields(Policy)}
    layer = {}
    for key, value in data.items():
        if key == "filesystem":
            _table(layer, value, "filesystem", FILESYSTEM_KEYS, where)
        elif key == "env":
            _table(layer, value, "env", ENV_KEYS, where)
        elif key == "network" and isinstance(value, dict):
            _table(layer, value, "network", NETWORK_KEYS, where)
            for table_key, target in NETWORK_KEYS.items():
                if target in layer:
                    try:
                        Policy(**{target: layer[target]})
                    except PolicyError as err:
                        raise where.error(table_key, "network", str(err)) from None
        elif key == "cache" and isinstance(value, dict):
            _table(layer, value, "cache", CACHE_KEYS, where)
            if "cache" in layer:
                try:
                    Policy(cache=layer["cache"])
                except PolicyError as err:
                    raise where.error("mode", "cache", str(err)) from None
        elif key in known and key not in ("hidden", "protected", "git_protected", "writable",
                                          "env_keep", "extra_env", "clearenv", "network_allow"):
            layer[key] = _check(key, value, known[key], where, "")
        else:
            hint = ""
            if key in FILESYSTEM_KEYS:
                hint = "; it belongs in the [filesystem] table"
            elif key in ("env_keep", "clearenv", "extra_env"):
                hint = "; use the [env] table (keep, set, clear)"
            elif key == "network_allow":
                hint = "; use the [network] table: allow = [...]"
            raise where.error(key, "", f"unknown key {key!r}{hint}")
    if base:
        for key in _PATH_KEYS:
            if key in layer:
                layer[key] = [p if p.startswith(("/", "~")) else posixpath.join(base, p)
                              for p in layer[key]]
    return layer


def _table(layer: dict, value, table: str, keys: dict, where) -> None:
    if not isinstance(value, dict):
        raise where.error(table, "", f"{table} must be a table ([{table}])")
    for key, item in value.items():
        target = keys.get(key)
        if target is None:
            raise where.error(key, table, f"unknown key {key!r} in [{table}]; "
                                          f"known: {', '.join(keys)}")
        if target == "extra_env":
            if not isinstance(item, dict) or not all(isinstance(v, str) for v in item.values()):
                raise where.error(key, table, f"[{table}] {key} must be a table of strings, "
                                              "e.g. set = {{ NAME = \"value\" }}")
            layer[target] = list(item.items())
        elif target in ("network", "cache"):
            if not isinstance(item, str):
                raise where.error(key, table, f"[{table}] {key} must be a string")
            layer[target] = item
        elif target == "clearenv":
            if not isinstance(item, bool):
                raise where.error(key, table, f"[{table}] {key} must be true or false")
            layer[target] = item
        else:
            if not isinstance(item, list) or not all(isinstance(v, str) for v in item):
                raise where.error(key, table, f"[{table}] {key} must be a list of strings")
            layer[target] = item


def _check(key: str, value, field, where, table: str):
    """Type-check a top-level value against the Policy field, then let Policy validate it."""
    default = field.default
    if isinstance(default, bool):
        ok, expected = isinstance(value, bool), "true or false"
    elif isinstance(default, (int, float)):
        ok, expected = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    elif isinstance(default, str) or key in ("network", "workspace", "cache"):
        ok, expected = isinstance(value, str), "a string"
    elif default is None or default is MISSING:
        ok, expected = True, ""
    else:
        ok, expected = isinstance(value, dict), f"a table ([{key}])"
    if not ok:
        raise where.error(key, table, f"{key} must be {expected}, not {value!r}")
    try:
        Policy(**{key: value})
    except PolicyError as err:
        raise where.error(key, table, str(err)) from None
    except (TypeError, ValueError) as err:
        raise where.error(key, table, f"bad value for {key}: {err}") from None
    return value


class _Locator:
    """Finds the line a key sits on, for error messages."""

    def __init__(self, text: str, source: str):
        self.lines = text.splitlines()
        self.source = source

    def line_of(self, key: str, table: str):
        import re

        current = ""
        pattern = re.compile(r'\s*["\']?' + re.escape(key) + r'["\']?\s*=')
        header = re.compile(r"\s*\[+\s*([^\]]+?)\s*\]+")
        for number, line in enumerate(self.lines, 1):
            found = header.match(line)
            if found:
                current = found.group(1)
                if current == key and not table:
                    return number
                continue
            if current == table and pattern.match(line):
                return number
            if table and not current and pattern.match(line.replace(f"{table}.", "", 1)):
                return number  # dotted key: filesystem.hide = [...]
        return None

    def error(self, key: str, table: str, message: str) -> PolicyError:
        line = self.line_of(key, table)
        at = f"line {line}: " if line else ""
        return PolicyError(f"{self.source}: {at}{message}")
