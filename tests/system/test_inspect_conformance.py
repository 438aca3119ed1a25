"""Inspect's own conformance checks for sandbox providers (inspect_ai.util._sandbox.
self_check), run against nsbox: a sample's sandbox, full and landlock-only isolation."""

import os
import tempfile

import pytest

pytest.importorskip("inspect_ai", reason="Inspect AI is not installed (pip install nsbox[inspect])")

from inspect_ai.util._sandbox.self_check import *  # noqa: E402,F401,F403
from conftest import LANDLOCK_ABI  # noqa: E402

from nsbox.integrations.inspect_sandbox import NsboxSandboxEnvironment  # noqa: E402

pytestmark = [pytest.mark.anyio, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

# Checks nsbox does not pass, and why (each is a deliberate difference, see README).
KNOWN_FAILURES = {
    "test_exec_as_user": "commands run as the user running Inspect: nsbox adds no accounts "
                         "(adduser) and switches to no other user",
}
if os.getuid() == 0:  # root's commands read and write files whatever their mode
    KNOWN_FAILURES.update(dict.fromkeys(
        ("test_read_file_not_allowed",
         "test_write_binary_file_without_permissions",
         "test_write_text_file_without_permissions"),
        "run as root, the command may read and write a file whatever its mode"))
ISOLATIONS = ["full"] + (["landlock"] if LANDLOCK_ABI >= 6 else [])


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(params=ISOLATIONS)
async def sandbox_env(request, tmp_path, monkeypatch):
    reason = KNOWN_FAILURES.get(request.node.originalname)
    if reason:
        request.node.add_marker(pytest.mark.xfail(reason=reason, strict=True))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    config = tmp_path / "policy.toml"
    config.write_text(f'isolation = "{request.param}"\n')
    envs = await NsboxSandboxEnvironment.sample_init("conformance", str(config), {})
    try:
        yield envs["default"]
    finally:
        await NsboxSandboxEnvironment.sample_cleanup("conformance", str(config), envs, False)
