"""`nsbox exec --image NAME` / `--image-config FILE`: an imported image or an OCI config
file -> the policy's rootfs, the command, its environment and working directory."""


def resolve_image(values: dict):
    """--image NAME: set the `rootfs` option to its root (before the options become a
    policy); returns its OCI config, or None without --image."""
    from nsbox.errors import PolicyError

    name = values.get("image")
    if not name:
        return None
    if values.get("rootfs"):
        raise PolicyError("--image NAME already gives the root filesystem; leave out "
                          "--rootfs (or use --rootfs with --image-config)")
    from nsbox import state
    from nsbox.plan import images

    found = images.lookup(state.ensure_state_dir(), name)
    values["rootfs"] = found["root"]
    return found["config"]


def apply(values: dict, policy, command, config=None):
    """(policy, command, cwd, note); PolicyError naming what is wrong. `config`: the
    image's (resolve_image); --image-config replaces it."""
    import json

    from nsbox.errors import PolicyError
    from nsbox.policy import image_config

    config_file = values.get("image_config")
    if config_file:
        try:
            with open(config_file) as f:
                config = json.load(f)
        except OSError as err:
            raise PolicyError(f"cannot read --image-config {config_file}: {err.strerror}") from None
        except ValueError as err:
            raise PolicyError(f"--image-config {config_file} is not valid JSON: {err}") from None
    cwd = values.get("cwd")
    if config is None:
        return policy, command, cwd, ""
    if not policy.rootfs:
        raise PolicyError("--image-config applies to a container root: give --rootfs DIR "
                          "(or --image NAME) too")
    try:
        applied = image_config.apply(image_config.config_of(config), command)
    except ValueError as err:
        raise PolicyError(str(err)) from None
    policy = policy.with_changes(extra_env=applied.env + policy.extra_env,
                                 root_inside=policy.root_inside or applied.root_inside)
    return policy, list(applied.argv), cwd or applied.cwd, applied.note
