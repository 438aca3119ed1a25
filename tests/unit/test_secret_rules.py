"""Secrets hidden by default: the hidden list, its name patterns and variables, and the
environment's name and value rules. Pure, plus a temporary tree; no namespaces."""

import os

import pytest

from nsbox.plan import hidden_paths, protect
from nsbox.policy import defaults, env, hidden_entries
from nsbox.policy.model import Policy

# --- the hidden list ------------------------------------------------------------------

CATEGORIES = {
    "ssh and gpg": ("~/.ssh", "~/.gnupg"),
    "password managers": ("~/.password-store", "~/.config/op", "~/.config/Bitwarden CLI"),
    "keyrings": ("~/.local/share/keyrings", "~/.local/share/kwalletd", "~/.pki/nssdb"),
    "cloud CLIs": ("~/.aws", "~/.config/gcloud", "~/.azure", "~/.config/doctl/config.yaml",
                   "~/.oci", "~/.bluemix", "~/.config/linode-cli", "~/.config/hcloud",
                   "~/.fly/config.yml", "~/.netrc", "~/.local/share/com.vercel.cli/auth.json",
                   "~/.config/netlify/config.json", "~/.config/.wrangler/config",
                   "~/.terraform.d/credentials.tfrc.json", "~/.pulumi/credentials.json",
                   "~/.vault-token", "~/.kube", "~/.config/helm/registry/config.json"),
    "containers": ("~/.docker/config.json", "~/.config/containers/auth.json",
                   "$XDG_RUNTIME_DIR/containers/auth.json"),
    "python": ("~/.pypirc", "~/.config/pip/pip.conf", "~/.config/pypoetry/auth.toml",
               "~/.local/share/uv/credentials/credentials.toml", "~/.local/share/python_keyring"),
    "node": ("~/.npmrc", "~/.yarnrc", "~/.yarnrc.yml", "~/.config/pnpm/rc"),
    "rust": ("~/.cargo/credentials", "~/.cargo/credentials.toml", "$CARGO_HOME/credentials.toml"),
    "jvm": ("~/.gradle/gradle.properties", "~/.m2/settings.xml", "~/.m2/settings-security.xml"),
    "ruby": ("~/.gem/credentials", "~/.bundle/config"),
    "git": ("~/.git-credentials", "~/.config/git/credentials", "~/.config/gh",
            "~/.config/glab-cli"),
    "databases": ("~/.pgpass", "~/.my.cnf", "~/.mylogin.cnf", "~/.mongodb"),
    "agents": ("~/.claude/.credentials.json", "~/.claude.json", "~/.codex/auth.json",
               "~/.gemini/oauth_creds.json", "~/.config/github-copilot",
               "~/.config/cursor/auth.json", "~/.aider/oauth-keys.env"),
    "histories": ("~/.bash_history", "~/.zsh_history", "~/.python_history"),
    "names": ("~/*.pem", "~/*token*", "~/.config/*credential*", "~/id_ed25519"),
}


@pytest.mark.parametrize("category", sorted(CATEGORIES))
def test_the_default_hidden_list_covers_each_category(category):
    hidden = Policy().hidden
    missing = [e for e in CATEGORIES[category] if e not in hidden]
    assert not missing


def test_what_builds_need_stays_visible():
    hidden = Policy().hidden
    for kept in ("~/.gradle", "~/.m2", "~/.m2/repository", "~/.cargo", "~/.cargo/bin", "~/.npm",
                 "~/.cache", "~/.claude", "~/.codex", "~/.gemini", "~/.fly", "~/.pulumi",
                 "~/.terraformrc", "~/.nuget/NuGet/NuGet.Config", "~/.config", "~/.local/share"):
        assert kept not in hidden
    assert set(defaults.HIDDEN_READ_AS_EMPTY) <= set(hidden)
    assert Policy(preset="full-access").hidden == ()


# --- entries to paths -----------------------------------------------------------------

def test_home_entries_follow_every_home_and_the_xdg_variables():
    envs = ({"XDG_CONFIG_HOME": "/x/conf/", "XDG_DATA_HOME": "relative/not/used"},)
    assert hidden_entries.expand("~/.config/gh", ("/h1", "/h2"), envs) == [
        "/h1/.config/gh", "/h2/.config/gh", "/x/conf/gh"]
    assert hidden_entries.expand("~/.local/share/keyrings", ("/h",), envs) == [
        "/h/.local/share/keyrings"]
    assert hidden_entries.expand("~other/.ssh", ("/h",)) == []
    assert hidden_entries.expand(".env", ("/h",)) == [".env"]


def test_variable_entries_use_each_environment_and_list():
    envs = ({"KUBECONFIG": "/a/k1:relative:/b/k2", "CARGO_HOME": "/c/"}, {"CARGO_HOME": "/d"})
    assert hidden_entries.expand("$KUBECONFIG", (), envs) == ["/a/k1", "/b/k2"]
    assert hidden_entries.expand("$CARGO_HOME/credentials.toml", (), envs) == [
        "/c/credentials.toml", "/d/credentials.toml"]
    assert hidden_entries.expand("$UNSET_VARIABLE/x", ("/h",), envs) == []


def test_name_patterns_match_in_any_case():
    p = hidden_entries.NamePatterns(["*token*", "*.pem", "id_*", "a*b*c"])
    for name in ("api-TOKEN.txt", ".tokens", "AWS.PEM", "id_rsa", "axxbyyc", "abc"):
        assert p.match(name), name
    for name in ("notes.txt", "pem", "x.pem.txt", "my_id_rsa", "acb", "bashrc"):
        assert not p.match(name), name


def test_patterns_match_files_one_level_only_and_variables_only_files_or_dirs(tmp_path):
    home = tmp_path / "home"
    (home / ".config" / "app").mkdir(parents=True)
    (home / "secret-project").mkdir()
    for rel in ("prod.PEM", "notes.txt", ".config/Service-Token.json", ".config/app/secret.txt",
                "secret-project/main.py", ".gradle/gradle.properties"):
        (home / rel).parent.mkdir(parents=True, exist_ok=True)
        (home / rel).write_text("x")
    envs = ({"KUBECONFIG": "/dev/null", "GRADLE_USER_HOME": str(home / ".gradle")},)
    found, empty = hidden_paths.existing(Policy().hidden, str(tmp_path), (str(home),), envs)
    paths = {p for p, _ in found}
    assert str(home / "prod.PEM") in paths and str(home / ".config/Service-Token.json") in paths
    for visible in ("notes.txt", "secret-project", ".config/app/secret.txt"):
        assert str(home / visible) not in paths
    assert "/dev/null" not in paths
    assert empty == {str(home / ".gradle/gradle.properties")}


def test_symlinked_stores_are_hidden_at_their_real_path(tmp_path):
    home, dots = tmp_path / "home", tmp_path / "dotfiles"
    (dots / "config" / "gh").mkdir(parents=True)
    (dots / "netrc").write_text("machine x password y\n")
    home.mkdir()
    os.symlink(dots / "config", home / ".config")
    os.symlink(dots / "netrc", home / ".netrc")
    os.symlink(tmp_path / "nowhere", home / ".pgpass")  # dangling: nothing to hide
    found, _ = hidden_paths.existing(Policy().hidden, str(tmp_path), (str(home),))
    assert (str(dots / "config" / "gh"), True) in found
    assert (str(dots / "netrc"), False) in found
    assert not any("nowhere" in p or p.endswith(".pgpass") for p, _ in found)


def test_a_policy_may_add_patterns_and_variables_of_its_own(tmp_path):
    ws, elsewhere = tmp_path / "ws", tmp_path / "elsewhere"
    ws.mkdir()
    elsewhere.mkdir()
    for path in (ws / "db.BAK", ws / "notes.txt", elsewhere / "x.txt"):
        path.write_text("x")
    found, _ = hidden_paths.existing(("*.bak", "$SOME_DIR/x.txt"), str(ws), (),
                                     ({"SOME_DIR": str(elsewhere)},))
    assert sorted(p for p, _ in found) == [str(elsewhere / "x.txt"), str(ws / "db.BAK")]


def test_read_as_empty_files_get_the_mask_only_unless_landlock_is_all_there_is(var_tmp):
    home, ws = var_tmp / "home", var_tmp / "ws"
    (home / ".gradle").mkdir(parents=True)
    (home / ".gradle" / "gradle.properties").write_text("signing.password=x\n")
    (home / ".npmrc").write_text("//r/:_authToken=x\n")
    ws.mkdir()
    gradle, npmrc = str(home / ".gradle/gradle.properties"), str(home / ".npmrc")
    full = protect.resolve(Policy(), str(ws), (str(ws),), (str(home),), create=False)
    assert (gradle, False) in full.hidden and (npmrc, False) in full.hidden
    # With mounts the masks do it all: gradle's reads as empty, .npmrc's refuses access.
    assert full.landlock_hidden == ()
    assert gradle not in full.denied and npmrc in full.denied
    only = protect.resolve(Policy(), str(ws), (str(ws),), (str(home),), create=False,
                           landlock_only=True)
    assert gradle in only.landlock_hidden and npmrc in only.landlock_hidden


def test_paths_under_private_trees_get_no_landlock_rule_with_mounts(var_tmp):
    """Under full isolation /proc, /run, /tmp are the sandbox's own: a rule for a host path
    there would only take the sandbox's own directory away."""
    ws = var_tmp / "ws"
    ws.mkdir()
    runtime = var_tmp / "run-user"
    (runtime / "containers").mkdir(parents=True)
    (runtime / "containers" / "auth.json").write_text("{}")
    policy = Policy(hidden=("$XDG_RUNTIME_DIR/containers/auth.json", "/proc/version"))
    envs = ({"XDG_RUNTIME_DIR": str(runtime)},)
    full = protect.resolve(policy, str(ws), (str(ws),), (), create=False, envs=envs)
    assert full.landlock_hidden == ()
    assert full.denied == (str(runtime / "containers" / "auth.json"),)
    only = protect.resolve(policy, str(ws), (str(ws),), (), create=False, envs=envs,
                           landlock_only=True)
    assert "/proc/version" in only.landlock_hidden


# --- environment: names ---------------------------------------------------------------

SECRET_NAMES = (
    "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "GITHUB_TOKEN", "github_token", "NGROK_AUTHTOKEN", "TS_AUTHKEY", "DB_PASSWORD", "PGPASSWORD",
    "GPG_PASSPHRASE", "GOOGLE_APPLICATION_CREDENTIALS", "SLACK_WEBHOOK_URL",
    "AZURE_STORAGE_CONNECTION_STRING", "KEYRING_PASSWORD", "PASSWORD_STORE_DIR",
    # parts
    "MYSQL_PWD", "GITHUB_PAT", "AZURE_DEVOPS_EXT_PAT", "SMTP_PASS", "REDISCLI_AUTH",
    "COMPOSER_AUTH", "npm_config__auth", "SSH_AUTH_SOCK", "SENTRY_DSN", "DEPLOY_PRIVATE",
    "CI_JOB_JWT", "SESSION_COOKIE",
    # per-host credentials
    "BUNDLE_GEMS__CONTRIBSYS__COM",
)
ORDINARY_NAMES = (
    "PATH", "HOME", "PWD", "OLDPWD", "TERM", "COLORTERM", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE",
    "TZ", "USER", "LOGNAME", "SHELL", "SHLVL", "HOSTNAME", "EDITOR", "VISUAL", "PAGER", "LESS",
    "DISPLAY", "WAYLAND_DISPLAY", "XAUTHORITY", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME",
    "XDG_SESSION_TYPE", "DBUS_SESSION_BUS_ADDRESS", "TMPDIR", "HISTFILE", "HISTSIZE", "PS1",
    "PROMPT_COMMAND", "MANPATH", "LD_LIBRARY_PATH", "PKG_CONFIG_PATH", "PYTHONPATH",
    "PYTHONUNBUFFERED", "VIRTUAL_ENV", "CONDA_PREFIX", "PIP_INDEX_URL", "PIP_FIND_LINKS",
    "CARGO_HOME", "RUSTUP_HOME", "GOPATH", "GOPRIVATE", "GOFLAGS", "GOPROXY", "JAVA_HOME",
    "GRADLE_USER_HOME", "NODE_OPTIONS", "NVM_DIR", "BUNDLE_PATH", "BUNDLE_JOBS", "DATABASE_URL",
    "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "CURL_CA_BUNDLE",
    "DEBIAN_FRONTEND", "DOCKER_HOST", "KUBECONFIG", "AWS_REGION", "AWS_PROFILE",
    "GOOGLE_CLOUD_PROJECT", "HF_HOME", "TF_CLI_CONFIG_FILE", "OTP_VERSION", "CI",
    "GITHUB_ACTIONS", "GITHUB_WORKSPACE", "GITHUB_REPOSITORY", "RUNNER_OS", "RUNNER_TEMP",
    "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_ASKPASS", "SSH_ASKPASS",
    "KEYTIMEOUT", "LESSKEY", "LESSKEYIN", "PYTHON_KEYRING_BACKEND", "UV_KEYRING_PROVIDER",
    "TOKENIZERS_PARALLELISM", "KEYBOARD_LAYOUT",
)


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_secret_names_are_dropped(name):
    assert env.looks_secret(name)


@pytest.mark.parametrize("name", ORDINARY_NAMES)
def test_ordinary_names_pass(name):
    assert not env.looks_secret(name)


# --- environment: values --------------------------------------------------------------

T = "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"  # 36 token characters
SECRET_VALUES = {
    "openai": "sk-proj-" + T, "anthropic": "sk-ant-api03-" + T, "github": "ghp_" + T,
    "github fine-grained": "github_pat_" + T, "github app": "ghs_" + T, "gitlab": "glpat-" + T,
    "slack bot": "xoxb-123456-" + T, "aws key id": "AKIAIOSFODNN7EXAMPLE",
    "aws session key id": "ASIAIOSFODNN7EXAMPLE", "google": "AIza" + T[:35],
    "hugging face": "hf_" + T, "npm": "npm_" + T, "pypi": "pypi-AgEIcHlwaS5vcmc" + T,
    "digitalocean": "dop_v1_" + T, "sendgrid": "SG." + T[:22] + "." + T,
    "stripe": "sk_live_" + T, "stripe restricted": "rk_live_" + T,
    "token after user": "x-access-token:ghs_" + T, "token after space": "token ghp_" + T,
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlLXNpZ25hdHVyZQ",
    "bearer": "Bearer abc.def.ghi",
    "pem": "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=\n-----END OPENSSH PRIVATE KEY-----",
    "url password": "postgres://app:s3cret@db.internal:5432/app",
    "url password, no user": "redis://:s3cret@cache:6379/0",
    "url token as user": "https://ghp_" + T + "@github.com/org/repo.git",
    "url second of two": "https://pypi.org/simple https://u:pw@private.example/simple",
    "url query token": "https://api.example.com/v1?project=x&access_token=abc123",
    "azure sas": "https://acct.blob.core.windows.net/c?sv=2022-11-02&sig=abcDEF%3D",
    "slack webhook": "https://hooks.slack.com/services/T000/B000/XXXXXXXX",
    "discord webhook": "https://discord.com/api/webhooks/1/abc",
    "dsn": "host=db user=app password=s3cret dbname=app",
    "odbc": "Driver={ODBC};Server=db;Uid=app;Pwd=s3cret;",
    "azure connection string": "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=abc==;",
    "git extra header": "AUTHORIZATION: basic eC1hY2Nlc3MtdG9rZW46Z2hzXzEyMzQ=",
}
ORDINARY_VALUES = (
    "", "1", "true", "xterm-256color", "en_US.UTF-8", "sk-SK", "/usr/local/bin:/usr/bin:/bin",
    "/home/me/.ssh/id_rsa", "https://pypi.org/simple", "ssh://git@github.com/org/repo.git",
    "git@github.com:org/repo.git", "postgres://localhost/test", "postgres://app@localhost/test",
    "https://me@dev.azure.com/org/project", "http://127.0.0.1:3128", "socks5h://127.0.0.1:3128",
    "--max-old-space-size=4096", "rs=0:di=01;34:ln=01;36:*.tar=01;31", "ghp_short",
    "sk-ant-", "AKIA", "AKIAIOSFODNN7EXAMPL", "hf_transfer", "eyJhbGciOiJIUzI1NiJ9",
    "123e4567-e89b-12d3-a456-426614174000", "da39a3ee5e6b4b0d3255bfef95601890afd80709",
    "cd /x; OLDPWD=/y", "https://example.com/search?q=keyboard&page=2",
    "/etc/ssl/certs/ca-certificates.crt", "printf '\\033]0;%s\\007' \"$PWD\"",
    "npm_config_cache_directory", "hf_transfer_enabled_by_default", "sk-learn-intelex-patching",
)


@pytest.mark.parametrize("kind", sorted(SECRET_VALUES))
def test_secret_shaped_values_are_dropped(kind):
    assert env.looks_secret_value(SECRET_VALUES[kind])


@pytest.mark.parametrize("value", ORDINARY_VALUES)
def test_ordinary_values_pass(value):
    assert not env.looks_secret_value(value)


def test_env_keep_brings_back_whatever_rule_dropped_it():
    host = {"PATH": "/bin", "MYSQL_PWD": "pw", "INNOCENT": "ghp_" + T, "EDITOR": "vi"}
    out = env.sandbox_env(Policy(), host)
    assert set(out) == {"PATH", "EDITOR", "TMPDIR"}
    assert env.dropped_names(Policy(), host) == ["INNOCENT", "MYSQL_PWD"]
    kept = env.sandbox_env(Policy(env_keep=("MYSQL_PWD", "INNOCENT")), host)
    assert kept["MYSQL_PWD"] == "pw" and kept["INNOCENT"] == "ghp_" + T


def test_this_machines_environment_passes_unless_it_holds_a_secret_shape():
    """A sanity check on a real environment: every variable dropped is named for a secret."""
    dropped = env.dropped_names(Policy(), dict(os.environ))
    assert all(env.looks_secret(n) or env.looks_secret_value(os.environ[n]) for n in dropped)
    for name in ("PATH", "HOME", "PWD", "LANG", "TERM"):
        assert name not in dropped
