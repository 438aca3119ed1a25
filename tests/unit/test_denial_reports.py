"""The supervisor's reports to the caller (launch/denial_watch.json_line): JSON lines
written without the json module, read back by the caller with it."""

import json
import os

import pytest

from nsbox.launch import denial_watch


@pytest.mark.parametrize("value", [
    {"new": {"wall": "filesystem", "target": "/etc/x", "pid": 12, "count": 1}},
    {"final": [], "dropped": 0},
    {"more": [["hidden", "read", "/home/u/.ssh/id_rsa", "hidden path", 100000]]},
    {"odd": ['quote " backslash \\ tab \t newline \n nul \0 del \x7f',
             "é ü 日本 \U0001F600", os.fsdecode(b"/tmp/\xff\xfe-bad-utf8"),
             None, True, False, -3, (1, 2)]},
])
def test_supervisor_reports_read_back_as_json(value):
    line = denial_watch.json_line(value)
    assert line.endswith(b"\n") and line.count(b"\n") == 1 and line.isascii()
    assert json.loads(line) == json.loads(json.dumps(value))


def test_supervisor_reports_refuse_what_they_cannot_encode():
    with pytest.raises(TypeError):
        denial_watch.json_line({"x": 1.5})
