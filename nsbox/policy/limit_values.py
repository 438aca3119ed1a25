"""Limit values as people write them: `512M`, `30s`, `1.5`, `none`, parsed and checked
(see nsbox.policy.limits, whose Limits they become), and sizes written back. Pure.
"""

import math

from nsbox.errors import PolicyError
from nsbox.policy.limits import NAMES

_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_DURATION_UNITS = {"": 1, "s": 1, "ms": 0.001, "m": 60, "h": 3600}
_OFF = ("none", "unlimited", "off", "max")


def parse_options(items) -> dict:
    """`--limit NAME=VALUE` options -> {name: value}, each checked; the last of a name wins."""
    chosen = {}
    for text in items:
        name, eq, value = text.partition("=")
        name = name.strip()
        if not eq or not value.strip():
            _raise(f"--limit expects NAME=VALUE (e.g. memory=512M); got {text!r}")
        chosen[name] = parse_value(name, value)
    return chosen


def parse_value(name: str, value):
    """Parse one limit's value; `none`/`unlimited` turns the limit off."""
    if name not in NAMES:
        _raise(f"unknown limit {name!r}; known limits: {', '.join(NAMES)}")
    if value is None or (isinstance(value, str) and value.strip().lower() in _OFF):
        return None
    if name in ("memory", "tmp", "fsize"):
        return parse_size(value, name)
    if name == "wall":
        return parse_duration(value, name)
    if name == "cpu":
        return _parse_number(value, name, "cores, e.g. 1.5")
    return _parse_count(value, name)


def parse_size(value, what: str = "size") -> int:
    """`512M`, `1G`, `1GiB`, `64k`, `4096`: binary units, as tmpfs and ulimit use."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip().lower().removesuffix("b").removesuffix("i")
    scaled = _with_unit(text, _SIZE_UNITS)
    if scaled is None:
        _raise(f"limit {what}: {value!r} is not a size; use e.g. 512M, 1G or a byte count")
    return int(scaled)


def parse_duration(value, what: str = "duration") -> float:
    """`30`, `30s`, `500ms`, `2m`, `1h` -> seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    scaled = _with_unit(str(value).strip().lower(), _DURATION_UNITS)
    if scaled is None:
        _raise(f"limit {what}: {value!r} is not a duration; use e.g. 30, 30s, 500ms, 2m or 1h")
    return scaled


def _with_unit(text: str, units: dict):
    """A positive finite number followed by one of `units` (a suffix -> scale), scaled; else None."""
    digits = text.rstrip("".join(set("".join(units))))
    unit = text[len(digits):]
    try:
        number = float(digits)
    except ValueError:
        return None
    if unit not in units or not number > 0 or math.isinf(number):  # NaN fails `> 0`
        return None
    return number * units[unit]


def format_size(size: int) -> str:
    for unit in ("T", "G", "M", "K"):
        if size >= _SIZE_UNITS[unit.lower()] and size % _SIZE_UNITS[unit.lower()] == 0:
            return f"{size // _SIZE_UNITS[unit.lower()]}{unit}"
    return f"{size}B"


def _parse_number(value, name: str, hint: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1
    if not number > 0 or math.isinf(number):
        _raise(f"limit {name}: {value!r} is not a positive number ({hint})")
    return number


def _parse_count(value, name: str) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        number = 0
    if number < 1:
        _raise(f"limit {name}: {value!r} is not a positive whole number")
    return number


def _raise(message: str):
    raise PolicyError(message)
