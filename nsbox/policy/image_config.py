"""An OCI image config (Env, WorkingDir, User, Entrypoint/Cmd) applied as container
runtimes apply it. Pure: the caller reads the JSON.

- command: Entrypoint + the command given, or Entrypoint + Cmd when none is given.
- Env: the image's variables go over the inherited environment (after the policy's
  filter of secret-looking names, which is for the host's variables, not the
  image's); --setenv still wins over them.
- WorkingDir: the working directory unless --cwd is given (made if the image lacks it).
- User: empty, "root" or "0" runs as uid 0 inside (as --root-inside: a runtime's
  default user is root); any other user cannot be mapped (only the caller's own id
  is) and the command runs as the caller, which `note` says.
"""

from nsbox.record import Record


class Applied(Record):
    argv: tuple
    env: tuple  # (NAME, value) pairs, to go before the policy's extra_env
    cwd: str | None
    root_inside: bool
    note: str = ""


def config_of(data) -> dict:
    """The `config` object of an image config document (or the document itself when it
    is already one, as `docker inspect`'s Config is)."""
    if not isinstance(data, dict):
        raise ValueError("an OCI image config must be a JSON object")
    inner = data.get("config", data.get("Config"))
    return inner if isinstance(inner, dict) else (data if "Env" in data or "Cmd" in data else {})


def apply(config: dict, argv) -> Applied:
    """ValueError when a field has the wrong type or there is no command at all."""
    entrypoint = _strings(config, "Entrypoint")
    cmd = _strings(config, "Cmd")
    command = entrypoint + (tuple(argv) if argv else cmd)
    if not command:
        raise ValueError("no command given and the image config has neither Entrypoint nor "
                         "Cmd: nsbox exec --image NAME -- CMD [ARGS...]")
    env = []
    for item in _strings(config, "Env"):
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise ValueError(f"image config Env entry {item!r} is not NAME=value")
        env.append((name, value))
    workdir = config.get("WorkingDir") or None
    if workdir is not None and (not isinstance(workdir, str) or not workdir.startswith("/")):
        raise ValueError(f"image config WorkingDir {workdir!r} is not an absolute path")
    user = config.get("User") or ""
    if not isinstance(user, str):
        raise ValueError(f"image config User {user!r} is not a string")
    name = user.partition(":")[0]
    root = name in ("", "root", "0")
    note = "" if root else (f"the image's user {user!r} cannot be mapped (only your own id "
                            "is); the command runs as you")
    return Applied(argv=command, env=tuple(env), cwd=workdir, root_inside=root, note=note)


def _strings(config: dict, key: str) -> tuple:
    value = config.get(key) or ()
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"image config {key} must be a list of strings, not {value!r}")
    return tuple(value)
