import pickle

import pytest

from nsbox.record import Record, fields, replace


class Point(Record):
    x: int
    y: int = 0
    label: str = "p"

    def __post_init__(self):
        if self.x < 0:
            raise ValueError("x must be >= 0")


def test_init_defaults_and_order():
    p = Point(1, label="a")
    assert (p.x, p.y, p.label) == (1, 0, "a")
    assert [f.name for f in fields(Point)] == ["x", "y", "label"]


def test_frozen():
    p = Point(1)
    with pytest.raises(AttributeError, match="frozen"):
        p.x = 2


def test_equality_hash_repr():
    assert Point(1, 2) == Point(1, 2)
    assert Point(1, 2) != Point(2, 1)
    assert hash(Point(1, 2)) == hash(Point(1, 2))
    assert repr(Point(1)) == "Point(x=1, y=0, label='p')"


def test_missing_and_unknown_arguments_are_named():
    with pytest.raises(TypeError, match="'x'"):
        Point()
    with pytest.raises(TypeError, match="'z'"):
        Point(1, z=3)


def test_replace_reruns_post_init():
    assert replace(Point(1), y=5) == Point(1, 5)
    with pytest.raises(ValueError):
        replace(Point(1), x=-1)


def test_subclass_inherits_fields():
    class Labelled(Point):
        colour: str = "red"

    assert [f.name for f in fields(Labelled)] == ["x", "y", "label", "colour"]


def test_pickles():
    assert pickle.loads(pickle.dumps(Point(3, 4))) == Point(3, 4)
