"""Which part of an untrusted policy file's layer only narrows the policy. Pure.

A layer (see loader) is compared with `base`, the Policy the run would get
without the file. What would widen it is dropped and named as the user wrote
it in TOML (`network`, `filesystem.unhide`, `limits.memory`, ...). A key these
rules do not know counts as widening: new settings fail closed.
"""

from nsbox.policy import limit_values

# Most open first; a file may only move toward the end.
PRESET_ORDER = ("full-access", "workspace-write", "read-only")
NETWORK_ORDER = ("host", "allowlist", "none")
ISOLATION_ORDER = ("landlock", "auto", "full")
# A per-workspace cache shares nothing with other sandboxes; "off" writes nothing.
CACHE_ORDER = ("shared", "workspace", "off")
WORKSPACE_MODE_ORDER = ("direct", "overlay")

TOML_NAMES = {
    "network_allow": "network.allow",
    "writable": "filesystem.writable", "hide": "filesystem.hide",
    "unhide": "filesystem.unhide", "hidden": "filesystem.hidden",
    "protected": "filesystem.protected", "git_protected": "filesystem.git_protected",
    "env_keep": "env.keep", "clearenv": "env.clear", "extra_env": "env.set",
}
KEPT = ("extra_env", "hostname", "hide")  # neutral, or narrowing whatever the value
# Entries of these lists each widen; an empty list changes nothing.
WIDENING_LISTS = ("writable", "unhide", "env_keep", "network_allow")
# Replacement lists: they narrow only when they keep everything the base has.
REPLACED_LISTS = ("hidden", "protected", "git_protected")
# Switches that widen when turned on.
WIDENING_SWITCHES = ("best_effort", "allow_broad_workspace")


def only_narrowing(layer: dict, base) -> tuple:
    """(the layer without what widens `base`, the TOML names of what was dropped)."""
    kept, ignored = {}, []
    for key, value in layer.items():
        if key == "limits":
            narrower, widening = _limits(value, base.limits)
            if narrower:
                kept[key] = narrower
            ignored += widening
        elif _narrows(key, value, base):
            kept[key] = value
        else:
            ignored.append(TOML_NAMES.get(key, key))
    return kept, ignored


def _narrows(key: str, value, base) -> bool:
    if key in KEPT:
        return True
    if key in WIDENING_LISTS:
        return not value
    if key in REPLACED_LISTS:
        return set(value) >= set(getattr(base, key))
    if key in WIDENING_SWITCHES:
        return value is False
    if key == "clearenv":
        return value is True or value == base.clearenv
    if key == "preset":
        return _toward_end(PRESET_ORDER, value, base.preset)
    if key == "network":
        return _toward_end(NETWORK_ORDER, value, base.network)
    if key == "isolation":
        return _toward_end(ISOLATION_ORDER, value, base.isolation)
    if key == "workspace_mode":  # overlay keeps the real tree unchanged until `nsbox apply`
        return _toward_end(WORKSPACE_MODE_ORDER, value, base.workspace_mode)
    if key == "cache":
        return _toward_end(CACHE_ORDER, value, base.cache)
    if key == "seccomp":  # a path's content is anyone's guess
        same = value == base.seccomp and not _is_path(value)
        return same or (value == "strict" and base.seccomp == "default")
    return False  # `workspace`, and any key added after these rules


def _toward_end(order: tuple, value, current) -> bool:
    return value in order and current in order and order.index(value) >= order.index(current)


def _is_path(seccomp: str) -> bool:
    return "/" in seccomp or seccomp.endswith(".json")


def _limits(table: dict, base) -> tuple:
    """Each limit narrows when set where the base has none, or to at most the base's value."""
    narrower, widening = {}, []
    for name, raw in dict(table).items():
        value = limit_values.parse_value(name, raw)
        current = getattr(base, name)
        if current is None or (value is not None and value <= current):
            narrower[name] = raw
        else:
            widening.append(f"limits.{name}")
    return narrower, widening
