"""The command's environment, from the caller's and the policy. Pure functions.

On the start-up path of every run: plain string checks, no `re`.
"""

from nsbox.policy import defaults
from nsbox.policy.model import Policy

_SECRET_PARTS = frozenset(defaults.SECRET_ENV_PARTS)
_URL_PARAMS = frozenset(defaults.SECRET_URL_PARAMS)
# Deleting these from a string leaves "" when it is all token characters.
_TOKEN_CHARS = str.maketrans("", "", "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                             "0123456789-_.+/=")
_MIN_TOKEN_TAIL = 16  # characters after a provider's prefix


def looks_secret(name: str) -> bool:
    """True when the variable's name says it holds a secret."""
    upper = name.upper()
    if upper in defaults.ORDINARY_ENV_NAMES:
        return False
    for word in defaults.ORDINARY_ENV_WORDS:
        if word in upper:
            upper = upper.replace(word, "_")
    for word in defaults.SECRET_ENV_WORDS:
        if word in upper:
            return True
    if not _SECRET_PARTS.isdisjoint(upper.split("_")):
        return True
    for prefix in defaults.SECRET_ENV_HOST_PREFIXES:
        if upper.startswith(prefix) and "__" in upper[len(prefix):]:
            return True
    return False


def looks_secret_value(value: str) -> bool:
    """True when the value has a secret's shape: a provider's token, a JWT, a private key,
    a URL with a password or a secret parameter, a webhook URL, a password= pair."""
    if len(value) < 8:
        return False
    if "-----BEGIN" in value and "PRIVATE KEY" in value:
        return True
    if value.startswith(("Bearer ", "bearer ", "BEARER ", "Basic ", "basic ", "BASIC ")):
        return True
    if "://" in value and _secret_url(value):
        return True
    for candidate in _tails(value):
        if _token_shaped(candidate):
            return True
    if "=" in value or ":" in value:
        return _has_secret_key(value.lower())
    return False


def _tails(value: str) -> list:
    """The value and what follows its last " ", ":" and "=": where a token may start."""
    out = [value]
    for sep in " :=":
        i = value.rfind(sep)
        if i >= 0:
            out.append(value[i + 1:])
    return out


def _token_shaped(text: str) -> bool:
    if text.startswith(defaults.SECRET_VALUE_PREFIXES):
        for prefix in defaults.SECRET_VALUE_PREFIXES:
            if text.startswith(prefix):
                rest = text[len(prefix):]
                if (len(rest) >= _MIN_TOKEN_TAIL and not rest.translate(_TOKEN_CHARS)
                        and _mixed(rest)):
                    return True
    if text.startswith(defaults.SECRET_VALUE_AWS_PREFIXES):
        return len(text) == 20 and text.isalnum() and text.isupper()
    if text.startswith("eyJ"):  # JWT: base64url of '{"' in header and payload
        parts = text.split(".")
        return (len(parts) >= 3 and parts[1].startswith("eyJ")
                and not text.translate(_TOKEN_CHARS))
    return False


def _mixed(text: str) -> bool:
    """Two of lower case, upper case and digits, as random tokens have (not "npm_config_x")."""
    kinds = (any(c.islower() for c in text), any(c.isupper() for c in text),
             any(c.isdigit() for c in text))
    return sum(kinds) >= 2


def _secret_url(value: str) -> bool:
    low = value.lower()
    for marker in defaults.SECRET_VALUE_URLS:
        if marker in low:
            return True
    start = value.find("://")
    while start >= 0:
        rest = value[start + 3:].split(None, 1)
        url = rest[0] if rest else ""
        authority = url.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
        if "@" in authority:
            user, _, password = authority.rpartition("@")[0].partition(":")
            if password or len(user) >= 20:  # a password, or a token as the user name
                return True
        query = url.partition("?")[2].partition("#")[0]
        for pair in query.replace(";", "&").split("&"):
            if pair.partition("=")[0].lower() in _URL_PARAMS:
                return True
        start = value.find("://", start + 3)
    return False


def _has_secret_key(low: str) -> bool:
    """A "password=" (or the like) that starts a word: in a DSN, not in "oldpwd=" """
    for key in defaults.SECRET_VALUE_KEYS:
        i = low.find(key)
        while i >= 0:
            if i == 0 or not low[i - 1].isalnum():
                return True
            i = low.find(key, i + 1)
    return False


# A library process filters much the same environment run after run: remember the
# verdicts (a pure function of the pair), a bounded number of them; the oldest go
# first, so an environment bigger than the bound still finds most of its verdicts.
_VERDICTS: dict = {}
MAX_VERDICTS = 1 << 15


def _is_secret(name: str, value: str) -> bool:
    verdict = _VERDICTS.get((name, value))
    if verdict is None:
        if len(_VERDICTS) >= MAX_VERDICTS:
            for key in list(_VERDICTS)[:MAX_VERDICTS // 4]:
                del _VERDICTS[key]
        verdict = _VERDICTS[(name, value)] = looks_secret(name) or looks_secret_value(value)
    return verdict


def sandbox_env(policy: Policy, host_env: dict, tmpdir: str = "/tmp") -> dict:
    """What the command sees: host variables minus secrets (or a minimal set), then --setenv."""
    keep = set(policy.env_keep)
    if policy.clearenv:
        keep |= set(defaults.MINIMAL_ENV)
        env = {k: v for k, v in host_env.items() if k in keep}
        env.setdefault("PATH", defaults.DEFAULT_PATH)
    else:
        env = {k: v for k, v in host_env.items() if k in keep or not _is_secret(k, v)}
    env["TMPDIR"] = tmpdir  # the host's TMPDIR is not visible inside
    env.update(policy.extra_env)
    return env


def dropped_names(policy: Policy, host_env: dict) -> list:
    """Names of the caller's variables the command will not see, for review."""
    kept = sandbox_env(policy, host_env)
    return sorted(k for k in host_env if k not in kept)
