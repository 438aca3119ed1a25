"""The fork server's environment: what its interpreter needs, never the runner's keys."""

from nsbox.service import forkserver


def test_the_server_gets_only_what_python_and_nsbox_need():
    runner = {"OPENAI_API_KEY": "sk-x", "AWS_SECRET_ACCESS_KEY": "y", "GITHUB_TOKEN": "z",
              "SOME_HARMLESS_NAME": "also dropped", "PATH": "/usr/bin", "LANG": "C.UTF-8",
              "PYTHONPATH": "/opt/lib", "NSBOX_TRACE": "1"}
    env = forkserver.server_env(runner, "/src/nsbox-root")
    assert env == {"PATH": "/usr/bin", "LANG": "C.UTF-8", "NSBOX_TRACE": "1",
                   "PYTHONPATH": "/src/nsbox-root:/opt/lib"}


def test_nsbox_comes_first_on_the_path():
    assert forkserver.server_env({}, "/src") == {"PYTHONPATH": "/src"}
