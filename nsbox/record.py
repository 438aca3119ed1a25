"""Frozen records: the part of dataclasses nsbox uses, without its import cost.

`import dataclasses` pulls in inspect, ast and dis (~10 ms), and each frozen
dataclass is compiled at import (~0.7 ms): together most of `nsbox exec`'s
start-up. A Record subclass declares fields as annotated class attributes.
"""

MISSING = object()


class Field:
    __slots__ = ("name", "default")

    def __init__(self, name: str, default):
        self.name, self.default = name, default

    def __repr__(self) -> str:
        return f"Field({self.name!r})"


class Record:
    """Immutable value type: keyword/positional init, equality, hash, repr, `__post_init__`."""

    _fields: tuple = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        by_name = {f.name: f for f in cls._fields}
        for name in cls.__dict__.get("__annotations__", {}):
            by_name[name] = Field(name, cls.__dict__.get(name, MISSING))
        cls._fields = tuple(by_name.values())

    def __init__(self, *args, **kwargs):
        fields = self._fields
        if len(args) > len(fields):
            raise TypeError(f"{type(self).__name__}() takes at most {len(fields)} arguments")
        values = dict(zip((f.name for f in fields), args))
        for name, value in kwargs.items():
            if name in values:
                raise TypeError(f"{type(self).__name__}() got multiple values for {name!r}")
            values[name] = value
        setter = object.__setattr__
        for f in fields:
            value = values.pop(f.name, f.default)
            if value is MISSING:
                raise TypeError(f"{type(self).__name__}() missing required argument {f.name!r}")
            setter(self, f.name, value)
        if values:
            raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument "
                            f"{next(iter(values))!r}")
        post_init = getattr(self, "__post_init__", None)
        if post_init is not None:
            post_init()

    def __setattr__(self, name, value):
        raise AttributeError(f"cannot assign to {name!r}: {type(self).__name__} is frozen")

    def __delattr__(self, name):
        raise AttributeError(f"cannot delete {name!r}: {type(self).__name__} is frozen")

    def _values(self) -> tuple:
        return tuple(getattr(self, f.name) for f in self._fields)

    def __eq__(self, other):
        if other is self:
            return True
        if type(other) is not type(self):
            return NotImplemented
        # The attribute dicts, compared in C: spare sandboxes' keys compare whole plans.
        mine, theirs = self.__dict__, other.__dict__
        if ("_hash" in mine) == ("_hash" in theirs):
            return mine == theirs
        return self._values() == other._values()

    def __hash__(self):
        # Kept after the first call: spare sandboxes' keys hash whole plans repeatedly.
        cached = self.__dict__.get("_hash")
        if cached is None:
            cached = hash((type(self).__name__,) + self._values())
            object.__setattr__(self, "_hash", cached)
        return cached

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_hash", None)  # string hashes differ between processes
        return state

    def __repr__(self) -> str:
        inner = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in self._fields)
        return f"{type(self).__name__}({inner})"


def fields(record) -> tuple:
    """The Field objects of a Record class or instance, in declaration order."""
    return record._fields


def replace(record, **changes):
    """A copy of `record` with `changes` applied (and `__post_init__` run again)."""
    values = {f.name: getattr(record, f.name) for f in record._fields}
    values.update(changes)
    return type(record)(**values)


def is_record(value) -> bool:
    return isinstance(value, Record)
