"""Policy layers (a TOML file, command-line flags) merged into one Policy. Pure.

A layer is a dict keyed by Policy field names, plus the additive keys below.
Later layers win for single values and add to lists; `unhide` removes what
earlier layers hid. The order is: preset defaults < policy file < flags.
"""

from nsbox.record import fields

from nsbox.errors import PolicyError
from nsbox.policy.model import Policy

# Keys that add to what earlier layers said instead of replacing it.
ADDITIVE = ("writable", "env_keep", "hide", "unhide", "extra_env", "network_allow")


def _policy_fields() -> dict:
    return {f.name: f for f in fields(Policy)}


def merge(layers: list) -> Policy:
    """One Policy from layers, lowest first; raises PolicyError naming the layer on bad input."""
    known = _policy_fields()
    single, added = {}, {key: [] for key in ADDITIVE}
    hidden_ops = []  # ("set" | "hide" | "unhide", paths), in layer order
    for layer in layers:
        for key, value in layer.items():
            if key in ("hide", "unhide"):
                hidden_ops.append((key, list(value)))
            elif key == "hidden":
                hidden_ops.append(("set", list(value)))
            elif key in ADDITIVE:
                added[key].extend(value)
            elif key == "limits":  # per limit: a later layer overrides only the limits it names
                single[key] = {**single.get(key, {}), **dict(value)}
            elif key in known and key != "hidden":
                single[key] = value
            else:
                raise PolicyError(f"unknown policy setting {key!r}")
    kwargs = dict(single)
    kwargs["writable"] = tuple(dict.fromkeys(added["writable"]))
    kwargs["env_keep"] = tuple(dict.fromkeys(added["env_keep"]))
    kwargs["network_allow"] = tuple(dict.fromkeys(added["network_allow"]))
    kwargs["extra_env"] = tuple(dict(added["extra_env"]).items())  # the last value of a name wins
    policy = Policy(**kwargs)
    hidden = list(policy.hidden)
    for op, paths in hidden_ops:
        if op == "set":
            hidden = paths
        elif op == "hide":
            hidden += [p for p in paths if p not in hidden]
        else:
            gone = {_strip(p) for p in paths}
            hidden = [p for p in hidden if _strip(p) not in gone]
    return policy.with_changes(hidden=tuple(hidden))


def _strip(path: str) -> str:
    return path.rstrip("/") or "/"


def parse_setenv(items) -> list:
    """["K=V", ...] -> [(K, V), ...]."""
    pairs = []
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise PolicyError(f"--setenv needs NAME=VALUE, got {item!r}")
        pairs.append((name, value))
    return pairs


def parse_toml(text: str, source: str, base: str | None = None) -> dict:
    """A policy file's text -> a layer (nsbox.policy.policy_toml: only policy files need it)."""
    from nsbox.policy import policy_toml

    return policy_toml.parse_toml(text, source, base)
