"""Network mode "allowlist": named hosts only, through the filtering proxy.

Everything stays on this machine: two servers on the host's 127.0.0.1 (plain
HTTP and TLS) are reached under made-up names through the proxy's test
resolver (NSBOX_TEST_RESOLVE); nothing resolves or connects anywhere else.
"""

import json
import os
import shutil
import ssl
import sys
import subprocess
import uuid

import pytest

import nsbox
from conftest import (LANDLOCK_ABI, LoopbackHTTPServer, assert_denied, nsbox_cmd,
                      processes_with)
from nsbox.policy.model import Policy

pytestmark = pytest.mark.skipif(not (shutil.which("curl") and shutil.which("openssl")),
                                reason="needs curl and openssl (tests/setup.sh packages)")

BLOCKED_DENIED = "nsbox: network: blocked GET denied.test:80 (not in allowlist)"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tls")
    os.chmod(directory, 0o755)
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=allowed.test", "-keyout", str(key), "-out", str(cert),
                    "-addext", "subjectAltName=DNS:allowed.test,DNS:denied.test"],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture(scope="module")
def servers(certificate):
    cert, key = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    plain, tls = LoopbackHTTPServer(), LoopbackHTTPServer(context)
    yield plain, tls
    plain.close()
    tls.close()


@pytest.fixture
def resolve_env(servers):
    """The environment that maps allowed.test and denied.test to the two local servers."""
    plain, tls = servers
    plain.seen.clear()
    tls.seen.clear()
    mapping = ",".join(f"{name}:{port}=127.0.0.1:{server.port}"
                       for name in ("allowed.test", "denied.test")
                       for port, server in ((80, plain), (443, tls)))
    return dict(os.environ, NSBOX_TEST_RESOLVE=mapping, NSBOX_TEST_MARK=uuid.uuid4().hex)


def marked_processes(resolve_env) -> list:
    """Live processes (proxy, forwarder, ...) whose environment holds this test's mark."""
    return processes_with(f"NSBOX_TEST_MARK={resolve_env['NSBOX_TEST_MARK']}", environ=True)


def processes_named(*names: str) -> list:
    """Live processes of this user with one of these names."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/status") as f:
                status = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
        except OSError:
            continue
        uid = int(status.get("Uid", "-1 0").split()[1])
        if status.get("Name", "").strip() in names and uid == os.geteuid() \
                and status.get("State", "").split()[0:1] != ["Z"]:
            found.append(int(entry))
    return found


URLLIB_PROBE = r"""
import ssl, sys, urllib.error, urllib.request
context = ssl.create_default_context(cafile=sys.argv[1])
for url in sys.argv[2:]:
    try:
        with urllib.request.urlopen(url, context=context, timeout=20) as r:
            print(url, r.status, r.read().decode().strip())
    except urllib.error.HTTPError as err:
        print(url, err.code)
    except urllib.error.URLError as err:
        print(url, "error", err.reason)
"""


def test_allowed_names_pass_and_the_rest_is_refused_and_reported(
        nsbox_exec, workspace, servers, certificate, resolve_env):
    plain, tls = servers
    cert = workspace / "ca.pem"  # the host's /tmp is not visible inside
    shutil.copy(certificate[0], cert)
    script = f"""
    curl -sS http://allowed.test/curl-plain
    curl -sS --cacert {cert} https://allowed.test/curl-tls
    curl -sS -o /dev/null -w 'denied-plain %{{http_code}}\\n' http://denied.test/no
    curl -sS --cacert {cert} https://denied.test/no || echo "denied-tls exit $?"
    python3 -c '{URLLIB_PROBE}' {cert} http://allowed.test/py-plain https://allowed.test/py-tls \
        http://denied.test/no
    """
    status = workspace / "status.json"
    r = nsbox_exec(script, "--allow-domain", "allowed.test", "--json-status", str(status),
                   env=resolve_env)
    out, err = r.stdout.decode(), r.stderr.decode()
    assert r.returncode == 0, err
    assert "hello /curl-plain" in out and "hello /curl-tls" in out
    assert "denied-plain 403" in out
    assert "denied-tls exit 56" in out  # curl: the CONNECT tunnel was refused
    assert "http://allowed.test/py-plain 200 hello /py-plain" in out
    assert "https://allowed.test/py-tls 200 hello /py-tls" in out
    assert "http://denied.test/no 403" in out
    # What the servers saw: the allowed requests, nothing for denied.test.
    assert sorted(path for _, path in plain.seen) == ["/curl-plain", "/py-plain"]
    assert sorted(path for _, path in tls.seen) == ["/curl-tls", "/py-tls"]
    assert all(host.startswith("allowed.test") for host, _ in plain.seen + tls.seen)
    # One stderr line per refusal, and the same in the run record.
    assert err.count(BLOCKED_DENIED) == 2
    assert err.count("nsbox: network: blocked CONNECT denied.test:443 (not in allowlist)") == 1
    network = json.loads(status.read_text())["network"]
    assert network["mode"] == "allowlist" and network["allow"] == ["allowed.test"]
    assert network["blocked_total"] == 3
    assert {"method": "CONNECT", "host": "denied.test", "port": 443,
            "reason": "not in allowlist"} in network["blocked"]
    # The proxy and the forwarder ended with the run.
    assert marked_processes(resolve_env) == []


def test_no_direct_route_and_raw_ips_refused(nsbox_exec, servers, resolve_env):
    plain, _ = servers
    script = f"""
    python3 -c '
import socket
try:
    socket.create_connection(("127.0.0.1", {plain.port}), timeout=5)
    print("direct connected")
except OSError as err:
    print("direct failed", err.errno)
'
    curl -sS --noproxy "" -x http://127.0.0.1:3128 -o /dev/null -w 'raw %{{http_code}}\\n' \
        http://127.0.0.1:{plain.port}/raw
    curl -sS --noproxy "" -x socks5h://127.0.0.1:3128 http://127.0.0.1:{plain.port}/socks \
        || echo "socks exit $?"
    """
    r = nsbox_exec(script, "--allow-domain", "allowed.test", env=resolve_env)
    out, err = r.stdout.decode(), r.stderr.decode()
    assert "direct failed 111" in out  # ECONNREFUSED: the sandbox's own, empty loopback
    assert "raw 403" in out
    assert "socks exit 97" in out  # curl: the SOCKS5 server refused the connection
    assert (f"nsbox: network: blocked GET 127.0.0.1:{plain.port} "
            "(raw IP address not in allowlist)") in err
    assert (f"nsbox: network: blocked SOCKS 127.0.0.1:{plain.port} "
            "(raw IP address not in allowlist)") in err
    assert plain.seen == []
    assert marked_processes(resolve_env) == []


def test_an_explicitly_allowed_address_is_reachable(nsbox_exec, servers, resolve_env):
    plain, _ = servers
    r = nsbox_exec(f'curl -sS --noproxy "" -x http://127.0.0.1:3128 '
                   f'http://127.0.0.1:{plain.port}/by-ip',
                   "--allow-domain", "127.0.0.1", env=resolve_env)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode() == "hello /by-ip\n"
    assert plain.seen == [(f"127.0.0.1:{plain.port}", "/by-ip")]


def test_an_exact_name_may_resolve_to_a_private_address_but_not_its_raw_ip(
        nsbox_exec, servers, resolve_env):
    # As behind an egress gateway: allowed.test resolves to a non-public address.
    plain, _ = servers
    script = f"""
    echo sandbox-started
    curl -sS http://allowed.test/gateway
    curl -sS --noproxy "" -x http://127.0.0.1:3128 -o /dev/null -w 'raw %{{http_code}}\\n' \
        http://127.0.0.1:{plain.port}/raw
    """
    r = nsbox_exec(script, "--allow-domain", "allowed.test", env=resolve_env)
    out, err = r.stdout.decode(), r.stderr.decode()
    assert out == "sandbox-started\nhello /gateway\nraw 403\n", err
    assert (f"nsbox: network: blocked GET 127.0.0.1:{plain.port} "
            "(raw IP address not in allowlist)") in err
    assert plain.seen == [("allowed.test", "/gateway")]


def test_a_wildcard_name_resolving_to_loopback_stays_refused(nsbox_exec, servers, resolve_env):
    plain, tls = servers
    script = """
    echo sandbox-started
    curl -sS -o /dev/null -w 'wild %{http_code}\\n' http://denied.test/wild
    curl -sS https://denied.test/wild || echo "wild-tls exit $?"
    """
    r = nsbox_exec(script, "--allow-domain", "*.test", env=resolve_env)
    out, err = r.stdout.decode(), r.stderr.decode()
    assert out == "sandbox-started\nwild 403\nwild-tls exit 56\n", err
    assert ("nsbox: network: blocked GET denied.test:80 "
            "(resolves to non-public address 127.0.0.1)") in err
    assert ("nsbox: network: blocked CONNECT denied.test:443 "
            "(resolves to non-public address 127.0.0.1)") in err
    assert plain.seen == [] and tls.seen == []


def test_a_pinned_name_is_reached_at_its_address(nsbox_exec, servers, resolve_env):
    plain, _ = servers  # pinned.test has no test mapping: only the pin resolves it
    script = f"""
    echo sandbox-started
    curl -sS http://pinned.test:{plain.port}/pinned
    curl -sS --noproxy "" -x http://127.0.0.1:3128 -o /dev/null -w 'raw %{{http_code}}\\n' \
        http://127.0.0.1:{plain.port}/raw
    """
    r = nsbox_exec(script, "--allow-domain", "pinned.test=127.0.0.1", env=resolve_env)
    out, err = r.stdout.decode(), r.stderr.decode()
    assert out == "sandbox-started\nhello /pinned\nraw 403\n", err
    assert plain.seen == [(f"pinned.test:{plain.port}", "/pinned")]


def test_policy_file_network_table(nsbox_exec, workspace, servers, resolve_env, tmp_path):
    (workspace / ".nsbox").mkdir()
    (workspace / ".nsbox" / "policy.toml").write_text('[network]\nallow = ["denied.test"]\n')
    env = dict(resolve_env, XDG_STATE_HOME=str(tmp_path / "state"))
    # A workspace file that widens the network needs the user's trust first.
    r = nsbox_exec("echo started; curl -sS http://denied.test/wild", env=env)
    assert_denied(r, expect="Could not resolve host: denied.test", started_marker="started")
    assert b"widening keys ignored: network.allow" in r.stderr
    assert servers[0].seen == []
    trust = subprocess.run(nsbox_cmd("trust", str(workspace / ".nsbox" / "policy.toml")),
                           env=env, capture_output=True)
    assert trust.returncode == 0, trust.stderr
    r = nsbox_exec("curl -sS http://denied.test/wild", env=env)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode() == "hello /wild\n"


def test_the_forwarder_is_confined(nsbox_exec, resolve_env):
    # The forwarder is the other process PID 1 started: no capabilities, no_new_privs,
    # and (Landlock ABI 6+) out of the command's reach for signals.
    script = r"""
for s in /proc/[0-9]*/status; do
  if grep -q '^Name:.nsbox-netfwd' "$s"; then
    grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs)' "$s"
    pid=$(basename $(dirname "$s"))
    kill -0 "$pid" 2>/dev/null && echo "signal reached" || echo "signal refused"
  fi
done
"""
    r = nsbox_exec(script, "--allow-domain", "allowed.test", env=resolve_env)
    out = r.stdout.decode()
    assert "CapEff:\t0000000000000000" in out
    assert "CapPrm:\t0000000000000000" in out
    assert "CapBnd:\t0000000000000000" in out
    assert "NoNewPrivs:\t1" in out
    if LANDLOCK_ABI >= 6:
        assert "signal refused" in out


def test_landlock_only_isolation_refuses_allowlist(nsbox_exec):
    r = nsbox_exec("true", "--isolation", "landlock", "--allow-domain", "allowed.test")
    assert r.returncode == 125
    assert "network 'allowlist' needs the sandbox's own network namespace" in r.stderr.decode()


def test_library_result_lists_refusals(workspace, servers, resolve_env):
    plain, _ = servers
    r = nsbox.run(["sh", "-c", "curl -sS http://allowed.test/lib; "
                   "curl -sS -o /dev/null -w '%{http_code}' http://denied.test/lib"],
                  policy=Policy(workspace=str(workspace), network_allow=("allowed.test",)),
                  env=resolve_env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"hello /lib\n403"
    assert BLOCKED_DENIED.encode() in r.stderr
    assert [x.as_dict() for x in r.network_blocked] == [
        {"method": "GET", "host": "denied.test", "port": 80, "reason": "not in allowlist"}]
    assert plain.seen == [("allowed.test", "/lib")]
    # The fork server's children do not carry this test's environment: look for names.
    assert processes_named("nsbox-netproxy", "nsbox-netfwd") == []


def test_default_network_mode_starts_no_proxy(nsbox_exec, resolve_env):
    r = nsbox_exec("echo ${HTTP_PROXY:-unset}; cat /proc/[0-9]*/comm", env=resolve_env)
    out = r.stdout.decode().split()
    assert out[0] == "unset" and "nsbox-init" in out and "nsbox-netfwd" not in out
    assert marked_processes(resolve_env) == []


def test_default_mode_keeps_the_proxy_off_the_import_path(workspace):
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "nsbox", "exec",
                        "--workspace", str(workspace), "--", "true"],
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    imported = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.decode().splitlines()
                if line.startswith("import time:")}
    assert "nsbox.launch.caller" in imported
    for module in ("nsbox.netproxy", "nsbox.launch.proxy", "nsbox.policy.netallow",
                   "ipaddress", "pyroute2"):
        assert module not in imported


def test_session_commands_report_their_own_refusals(workspace, servers, resolve_env):
    plain, _ = servers
    policy = Policy(workspace=str(workspace), network_allow=("allowed.test",))
    with nsbox.Session(policy, env=resolve_env) as session:
        first = session.run(["sh", "-c", "echo sandbox-started; curl -sS -o /dev/null "
                             "-w '%{http_code}' http://denied.test/session"], timeout=60)
        second = session.run(["curl", "-sS", "http://allowed.test/session"], timeout=60)
    assert first.stdout == b"sandbox-started\n403", first.stderr
    assert [x.as_dict() for x in first.network_blocked] == [
        {"method": "GET", "host": "denied.test", "port": 80, "reason": "not in allowlist"}]
    assert second.stdout == b"hello /session\n", second.stderr
    assert second.network_blocked == ()
    assert plain.seen == [("allowed.test", "/session")]
