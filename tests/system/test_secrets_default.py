"""Secrets hidden by default, against the real kernel: credential files of every kind under
a fake HOME, the name rule, variable-named stores, and the environment's rules.

The fake HOME lies under /var/tmp: the sandbox's /tmp is private, so files under /tmp
would be invisible anyway and prove nothing.
"""

import json
import os
import shutil
import sys
import tempfile

import pytest

from conftest import needs_landlock

PY = sys.executable
STARTED = "SANDBOX-STARTED"

# Each must be unreadable inside: denied, gone, or (READ_AS_EMPTY) empty.
SECRETS = (
    ".ssh/id_ed25519", ".aws/credentials", ".config/gcloud/credentials.db",
    ".config/doctl/config.yaml", ".kube/config", ".terraform.d/credentials.tfrc.json",
    ".docker/config.json", ".config/containers/auth.json",
    ".pypirc", ".config/pip/pip.conf", ".config/pypoetry/auth.toml", ".npmrc", ".yarnrc.yml",
    ".cargo/credentials.toml", ".gradle/gradle.properties", ".m2/settings.xml",
    ".m2/settings-security.xml", ".gem/credentials", ".bundle/config",
    ".git-credentials", ".config/git/credentials", ".config/gh/hosts.yml",
    ".pgpass", ".my.cnf", ".claude/.credentials.json", ".claude.json", ".codex/auth.json",
    ".gemini/oauth_creds.json", ".config/github-copilot/hosts.json",
    ".password-store/bank.gpg", ".config/op/config", ".local/share/keyrings/login.keyring",
    ".bash_history", ".cache/huggingface/token",
    "aws-prod.pem", "Deploy-Token.txt", ".config/api-credentials.json",  # the name rule
    "keys/service-account.json",  # named by $GOOGLE_APPLICATION_CREDENTIALS
    "xdg/gh/hosts.yml", "xdg/git/credentials",  # under $XDG_CONFIG_HOME
)
READ_AS_EMPTY = (".gradle/gradle.properties", ".bundle/config", ".yarnrc.yml",
                 ".config/pypoetry/auth.toml")
# Ordinary files next to them: still readable.
ORDINARY = (
    "notes.txt", ".config/user-dirs.dirs", ".config/containers/registries.conf",
    ".config/pypoetry/config.toml", ".cargo/config.toml", ".gradle/init.gradle",
    ".m2/repository/a/b.pom", ".config/git/ignore", ".claude/settings.json",
    ".codex/config.toml", ".gemini/settings.json", ".local/share/ordinary.txt",
    ".terraform.d/plugins/readme", ".cache/huggingface/hub/ref", "keys/README",
    "xdg/app/settings.ini",
    ".config/app/secret.txt",  # the name rule looks one level down only
    "secret-project/main.py",  # and at files, not directories
)

PROBE = r"""
import json, os, sys
print("%s", flush=True)
out = {}
for rel in sys.argv[1:]:
    try:
        with open(os.path.join(os.environ["HOME"], rel)) as f:
            out[rel] = f.read()
    except OSError as err:
        out[rel] = "<%%s>" %% type(err).__name__
print(json.dumps(out))
""" % STARTED


@pytest.fixture
def secret_home():
    home = tempfile.mkdtemp(prefix="nsbox-secrets-", dir="/var/tmp")
    for rel in SECRETS + ORDINARY:
        path = os.path.join(home, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(f"{'SECRET' if rel in SECRETS else 'ordinary'}:{rel}\n")
    yield home
    shutil.rmtree(home, ignore_errors=True)


def home_env(home, **extra):
    env = dict(os.environ, HOME=home, XDG_CONFIG_HOME=f"{home}/xdg",
               GOOGLE_APPLICATION_CREDENTIALS=f"{home}/keys/service-account.json")
    env.update(extra)
    return env


def probe(nsbox_exec, home, *opts):
    r = nsbox_exec([PY, "-c", PROBE, *SECRETS, *ORDINARY], *opts, env=home_env(home))
    lines = r.stdout.decode().splitlines()
    assert r.returncode == 0 and lines[:1] == [STARTED], r.stderr.decode()
    return json.loads(lines[1]), r.stdout


def test_credential_files_of_every_kind_are_unreadable(nsbox_exec, secret_home):
    seen, stdout = probe(nsbox_exec, secret_home)
    assert b"SECRET" not in stdout
    for rel in SECRETS:
        expected = "" if rel in READ_AS_EMPTY else seen[rel]
        assert seen[rel] == expected and not seen[rel].startswith("SECRET"), rel
        if rel not in READ_AS_EMPTY:
            assert seen[rel].startswith("<"), (rel, seen[rel])  # an error, not content
    for rel in ORDINARY:
        assert seen[rel] == f"ordinary:{rel}\n", (rel, seen[rel])


@needs_landlock(1)
def test_landlock_only_denies_the_same_files(nsbox_exec, secret_home):
    seen, stdout = probe(nsbox_exec, secret_home, "--isolation", "landlock")
    assert b"SECRET" not in stdout
    for rel in SECRETS:  # no mounts here: even the read-as-empty files are denied
        assert seen[rel] in ("<PermissionError>", "<FileNotFoundError>"), (rel, seen[rel])
    for rel in ORDINARY:
        assert seen[rel] == f"ordinary:{rel}\n", (rel, seen[rel])


def test_a_hidden_name_pattern_can_be_unhidden(nsbox_exec, secret_home):
    r = nsbox_exec([PY, "-c", PROBE, "aws-prod.pem", "Deploy-Token.txt"], "--unhide", "~/*.pem",
                   env=home_env(secret_home))
    seen = json.loads(r.stdout.decode().splitlines()[1])
    assert seen["aws-prod.pem"] == "SECRET:aws-prod.pem\n"
    assert seen["Deploy-Token.txt"].startswith("<")


# --- environment ----------------------------------------------------------------------

TOKEN = "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
SECRET_VARS = {
    "MYSQL_PWD": "pw-by-name", "GITHUB_PAT": "pat-by-name", "REDISCLI_AUTH": "auth-by-name",
    "SENTRY_DSN": "dsn-by-name", "SSH_AUTH_SOCK": "/run/user/1/agent.sock",
    "DEPLOY_PRIVATE": "private-by-name", "BUNDLE_GEMS__EXAMPLE__COM": "user:gem-by-name",
    "DATABASE_URL": "postgres://app:url-password@db:5432/app",
    "BUILD_HELPER": "ghp_" + TOKEN, "SOME_SETTING": "x-access-token:ghs_" + TOKEN,
    "NOTIFY_URL": "https://hooks.slack.com/services/T0/B0/webhook-secret",
    "DB_CONN": "host=db user=app password=conn-password",
    "SIGNED": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJqd3QifQ.c2lnbmF0dXJlLXNpZ25hdHVyZQ",
}
ORDINARY_VARS = {
    "PWD": "/var/tmp", "OLDPWD": "/", "XAUTHORITY": "/nonexistent/.Xauthority",
    "KEYTIMEOUT": "1", "TOKENIZERS_PARALLELISM": "false", "GIT_AUTHOR_NAME": "A U Thor",
    "GOPRIVATE": "example.com/*", "PIP_INDEX_URL": "https://pypi.org/simple",
    "TEST_DATABASE_URL": "postgres://app@localhost/test", "LC_ALL": "C.UTF-8",
    "GITHUB_WORKSPACE": "/w", "RUNNER_TEMP": "/r", "UV_KEYRING_PROVIDER": "subprocess",
}
ENV_PROBE = "import json, os; print(json.dumps(dict(os.environ)))"


def test_secret_names_and_shapes_are_dropped_and_ordinary_variables_pass(nsbox_exec):
    r = nsbox_exec([PY, "-c", ENV_PROBE], env=dict(os.environ, **SECRET_VARS, **ORDINARY_VARS))
    assert r.returncode == 0, r.stderr
    inside = json.loads(r.stdout)
    for name, value in SECRET_VARS.items():
        assert name not in inside and value.encode() not in r.stdout, name
    for name, value in ORDINARY_VARS.items():
        assert inside.get(name) == value, name


def test_env_keep_brings_back_a_dropped_variable(nsbox_exec):
    r = nsbox_exec([PY, "-c", ENV_PROBE], "--env-keep", "GITHUB_PAT", "--env-keep", "BUILD_HELPER",
                   env=dict(os.environ, **SECRET_VARS))
    inside = json.loads(r.stdout)
    assert inside["GITHUB_PAT"] == "pat-by-name" and inside["BUILD_HELPER"] == "ghp_" + TOKEN
    assert "MYSQL_PWD" not in inside
