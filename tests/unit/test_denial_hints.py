"""Hints naming the policy knob behind a denial, and the note integrations add to a
tool result: pure functions of the denial events (and the run's policy)."""

from nsbox.integrations.notes import denial_note, with_note
from nsbox.policy.denials import Denial
from nsbox.policy.hints import hints
from nsbox.policy.model import Policy

OUTSIDE = "outside the writable roots"


def fs(target: str, rule: str = OUTSIDE, operation: str = "write") -> Denial:
    return Denial("filesystem", operation, target, rule)


def refused(target: str, reason: str = "not in allowlist", method: str = "connect") -> Denial:
    return Denial("network", method, target, reason)


def test_nothing_blocked_says_nothing():
    assert hints(()) == []
    assert denial_note(()) == ""
    assert with_note("out\n", denial_note(())) == "out\n"


def test_a_write_outside_the_workspace_names_writable():
    [hint] = hints([fs("/etc/x"), fs("/home/u/.bashrc")])  # one hint per kind
    assert "--writable PATH" in hint and "[filesystem] writable" in hint
    [hint] = hints([fs("/w/p/x")], Policy(preset="read-only"))
    assert "--preset workspace-write" in hint


def test_package_manager_caches_name_the_cache_knob():
    for target in ("/home/u/.npm/_cacache", "/home/u/.cache/pip/http", "/root/.cache",
                   "~/.npm/_logs/x.log", "/home/u/.local/share/pipx/venvs"):
        [hint] = hints([fs(target, operation="mkdir")], Policy(cache="off"))
        assert "--cache shared" in hint and "[cache] mode" in hint, target
    # With the area on, the tool went around its variables.
    [hint] = hints([fs("/home/u/.npm/_cacache")], Policy())
    assert "ignored the cache variables" in hint and "--setenv" in hint
    # Without the policy: the knob still.
    assert "--cache shared" in hints([fs("/home/u/.cache/uv")])[0]
    # Not a home's cache: the ordinary writable hint.
    assert "--writable" in hints([fs("/srv/.cache/x")])[0]


def test_other_tools_directories_point_at_their_variables():
    [hint] = hints([fs("/home/u/.cargo/registry/index")])
    assert "CARGO_HOME" in hint and "--setenv" in hint


def test_protected_paths():
    [git] = hints([fs("/w/p/.git/hooks/pre-commit", "protected path /w/p/.git/hooks")])
    assert "git_protected" in git
    [other] = hints([fs("/w/p/.envrc", "protected path /w/p/.envrc")])
    assert "/w/p/.envrc is protected" in other and "[filesystem] protected" in other
    [modules] = hints([fs("/w/p/.gitmodules", "protected path /w/p/.gitmodules")])
    assert "[filesystem] protected" in modules
    [pinned] = hints([fs("/w/p/.git", "protected path /w/p/.git", "rename")])
    assert "git_protected" in pinned


def test_refused_names_are_gathered_into_one_allowlist_hint():
    [hint] = hints([refused("denied.test:443"), refused("other.test:80", method="GET"),
                    refused("denied.test:80", method="GET"), refused("[::1]:8080")])
    assert hint.startswith("not on the network allowlist: --allow-domain denied.test "
                           "--allow-domain other.test --allow-domain ::1")
    assert '[network] allow = ["denied.test", "other.test", "::1"]' in hint


def test_raw_addresses_and_private_resolutions():
    [raw] = hints([refused("10.0.0.1:80", "raw IP address not in allowlist")])
    assert "allowlists match names" in raw
    [private] = hints([refused("pypi.corp.test:443",
                               "resolves to non-public address 10.1.2.3")])
    assert "--allow-domain pypi.corp.test (not a wildcard)" in private
    assert "pypi.corp.test=ADDRESS" in private


def test_hidden_paths_name_the_entry_to_unhide():
    policy = Policy()
    [ssh] = hints([Denial("hidden", "write", "/home/u/.ssh/id_rsa",
                          "hidden path /home/u/.ssh")], policy)
    assert "--unhide ~/.ssh " in ssh
    [pem] = hints([Denial("hidden", "read", "/root/server.pem", "hidden path")], policy)
    assert "--unhide ~/*.pem " in pem
    [token] = hints([Denial("hidden", "read", "/home/u/.config/gh-token", "hidden path")],
                    policy)
    assert "--unhide ~/.config/*token* " in token
    [unknown] = hints([Denial("hidden", "read", "/srv/x.pem", "hidden path")], policy)
    assert "--unhide PATH " in unknown


def test_the_private_run_is_explained_not_unhidden():
    for denial in (Denial("hidden", "connect", "/run/docker.sock", "hidden path"),
                   fs("/var/run/dbus/system_bus_socket")):
        [hint] = hints([denial])
        assert hint.startswith("/run inside the sandbox is its own empty directory")


def test_a_refused_socket_without_a_network_namespace_names_the_network():
    denial = Denial("seccomp", "syscall", "socket", "seccomp profile default")
    [hint] = hints([denial], Policy(isolation="landlock"))
    assert "--network host" in hint and "--seccomp FILE" in hint
    [hint] = hints([denial], Policy(isolation="full"))
    assert "--network" not in hint


def test_seccomp_and_limits():
    [sec] = hints([Denial("seccomp", "syscall", "keyctl", "seccomp profile strict")], Policy())
    assert sec.startswith("keyctl() is refused by the seccomp profile 'strict'")
    assert "--seccomp FILE" in sec
    [sec] = hints([Denial("seccomp", "syscall", "add_key", "denied")], Policy())
    assert sec.startswith("add_key() is refused by the seccomp profile 'default'")
    [limit] = hints([Denial("limit", "kill", "command (memory)", "limit memory=512M")])
    assert "--limit memory=VALUE" in limit and "[limits] memory" in limit


def test_hints_are_bounded():
    many = [Denial("seccomp", "syscall", f"call{i}", "seccomp profile default")
            for i in range(20)]
    assert len(hints(many)) == 4


def test_the_note_names_what_was_blocked_then_the_hints():
    denials = (fs("/home/u/.bashrc"), refused("denied.test:443"),
               fs("/etc/a"), fs("/etc/b"), fs("/etc/c"))
    note = denial_note(denials)
    lines = note.splitlines()
    assert note.endswith("\n")
    assert lines[0] == ("[nsbox] blocked by policy: write /home/u/.bashrc (outside the "
                        "writable roots); connect denied.test:443 (not in allowlist); "
                        "write /etc/a (outside the writable roots); and 2 more")
    assert lines[1].startswith("[nsbox] hint: writes outside the workspace")
    assert lines[2].startswith("[nsbox] hint: not on the network allowlist: "
                               "--allow-domain denied.test")
    assert len(lines) == 3
    assert denial_note(denials, with_hints=False) == lines[0] + "\n"
    assert with_note("partial", note) == "partial\n" + note
    assert with_note("", note) == note


def test_the_note_names_each_wall_before_repeating_one():
    noise = tuple(fs(f"/home/u/.pyenv/shims/{i}", operation="create") for i in range(4))
    note = denial_note(noise + (refused("denied.test:80", method="GET"),), with_hints=False)
    assert note == ("[nsbox] blocked by policy: create /home/u/.pyenv/shims/0 (outside the "
                    "writable roots); create /home/u/.pyenv/shims/1 (outside the writable "
                    "roots); GET denied.test:80 (not in allowlist); and 2 more\n")


def test_connections_name_the_network_mode_or_the_proxy():
    from nsbox.policy.denials import DIRECT, NETWORK_CLOSED, NOT_IN_PRIVATE_RUN

    [closed] = hints([Denial("network", "connect", "10.0.0.7:53", NETWORK_CLOSED)])
    assert closed.startswith("the network is closed: --network allowlist")
    [direct] = hints([Denial("network", "connect", "10.0.0.7:443", DIRECT)])
    assert direct.startswith("10.0.0.7:443 was connected to directly") and "HTTPS_PROXY" in direct
    [run] = hints([Denial("hidden", "connect", "/var/run/docker.sock", NOT_IN_PRIVATE_RUN)])
    assert run.startswith("/run inside the sandbox is its own empty directory")
