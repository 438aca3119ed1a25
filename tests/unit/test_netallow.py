"""Network allowlist policy, its file and flag forms, and the proxy's message parsing."""

import pytest

from nsbox.cli import exec_args
from nsbox.errors import PolicyError
from nsbox.netproxy import protocol
from nsbox.policy import landlock_rules, loader, netallow
from nsbox.policy.model import Policy

ALLOW = netallow.check_entries(["pypi.org", "*.example.org", "10.1.2.3", "[::1]"])


def test_entries_are_normalized_and_checked():
    assert netallow.check_entries(["PyPI.org.", "pypi.org", "*.X.org"]) == ("pypi.org", "*.x.org")
    assert ALLOW[-1] == "::1"
    for bad in ("a b", "*", "*.", "foo.*.org", "-a.org", "a..org", "http://x.org", "x.org:443"):
        with pytest.raises(ValueError, match="bad network allow entry"):
            netallow.check_entries([bad])


@pytest.mark.parametrize("host, reason", [
    ("pypi.org", None), ("PYPI.ORG.", None), ("files.pypi.org", netallow.NOT_LISTED),
    ("a.example.org", None), ("a.b.example.org", None), ("example.org", netallow.NOT_LISTED),
    ("badexample.org", netallow.NOT_LISTED), ("denied.test", netallow.NOT_LISTED),
    ("10.1.2.3", None), ("10.1.2.4", netallow.RAW_IP), ("127.0.0.1", netallow.RAW_IP),
    ("::1", None), ("[::1]", None), ("::2", netallow.RAW_IP),
])
def test_refusal_reason(host, reason):
    assert netallow.refusal_reason(host, ALLOW) == reason


def test_names_resolving_to_local_addresses_are_refused_unless_listed():
    assert netallow.address_refusal("151.101.0.223", ALLOW) is None
    assert netallow.address_refusal("127.0.0.1", ALLOW) == \
        "resolves to non-public address 127.0.0.1"
    assert netallow.address_refusal("192.168.1.1", ALLOW) is not None
    assert netallow.address_refusal("169.254.169.254", ALLOW) is not None  # cloud metadata
    assert netallow.address_refusal("::ffff:127.0.0.1", ALLOW) is not None
    assert netallow.address_refusal("10.1.2.3", ALLOW) is None  # listed


def test_exact_and_pinned_names_may_resolve_anywhere_wildcards_may_not():
    allow = netallow.check_entries(["pypi.org", "*.example.org", "Reg.Internal=10.9.8.7"])
    assert allow[-1] == "reg.internal=10.9.8.7"
    assert netallow.address_refusal("10.0.0.1", allow, "pypi.org") is None  # a gateway
    assert netallow.address_refusal("127.0.0.1", allow, "a.example.org") is not None
    assert netallow.address_refusal("127.0.0.1", allow, "127.0.0.1") is not None
    assert netallow.refusal_reason("reg.internal", allow) is None
    assert netallow.refusal_reason("10.9.8.7", allow) == netallow.RAW_IP  # a pin lists no address
    assert netallow.pinned_address("REG.internal.", allow) == "10.9.8.7"
    assert netallow.pinned_address("pypi.org", allow) is None
    assert netallow.check_entries(["a.org=[::1]"]) == ("a.org=::1",)
    for bad in ("*.a.org=10.0.0.1", "a.org=", "a.org=b.org", "10.0.0.1=10.0.0.2", "=10.0.0.1"):
        with pytest.raises(ValueError, match="bad network allow entry"):
            netallow.check_entries([bad])


def test_refusal_line_format():
    r = netallow.Refusal("CONNECT", "denied.test", 443, netallow.NOT_LISTED)
    assert netallow.stderr_line(r) == \
        "nsbox: network: blocked CONNECT denied.test:443 (not in allowlist)\n"
    assert netallow.Refusal("SOCKS", "::1", 80, "x").describe() == "SOCKS [::1]:80 (x)"


def test_proxy_env_sets_both_cases():
    env = netallow.proxy_env(3128)
    assert env["HTTPS_PROXY"] == env["https_proxy"] == "http://127.0.0.1:3128"
    assert env["ALL_PROXY"] == "socks5h://127.0.0.1:3128"
    assert env["NO_PROXY"] == env["no_proxy"] == "localhost,127.0.0.1"


def test_test_resolve_mapping():
    mapping = netallow.parse_test_resolve("a.test=127.0.0.1:81, a.test:443=127.0.0.1:82")
    assert netallow.resolve_override(mapping, "A.test", 443) == ("127.0.0.1", 82)
    assert netallow.resolve_override(mapping, "a.test", 80) == ("127.0.0.1", 81)
    assert netallow.resolve_override(mapping, "b.test", 80) is None
    with pytest.raises(ValueError, match="NSBOX_TEST_RESOLVE"):
        netallow.parse_test_resolve("a.test=nowhere")


def test_policy_allow_list_implies_allowlist_mode():
    assert Policy(network_allow=["pypi.org"]).network == "allowlist"
    assert Policy(preset="full-access", network_allow=["pypi.org"]).network == "allowlist"
    assert Policy(network="none", network_allow=["pypi.org"]).network == "none"
    assert Policy(network="allowlist").network_allow == ()  # nothing reachable
    with pytest.raises(PolicyError, match="use network 'allowlist'"):
        Policy(network="host", network_allow=["pypi.org"])
    with pytest.raises(PolicyError, match="bad network allow entry"):
        Policy(network_allow=["not a name"])
    assert Policy(network_allow=["a.org"]).digest() != Policy(network_allow=["b.org"]).digest()


def test_flags_and_file_layers_add_up():
    args = exec_args.parse(["--allow-domain", "pypi.org", "--allow-domain=*.npmjs.org", "true"])
    assert args.values["network_allow"] == ["pypi.org", "*.npmjs.org"]
    file_layer = loader.parse_toml('[network]\nallow = ["files.pythonhosted.org"]\n', "p.toml")
    policy = loader.merge([file_layer, {"network_allow": args.values["network_allow"]}])
    assert policy.network == "allowlist"
    assert policy.network_allow == ("files.pythonhosted.org", "pypi.org", "*.npmjs.org")


def test_network_table_errors_name_the_line():
    with pytest.raises(PolicyError, match=r"p.toml: line 3: bad network allow entry"):
        loader.parse_toml('[network]\nmode = "allowlist"\nallow = ["x y"]\n', "p.toml")
    with pytest.raises(PolicyError, match=r"line 2: network must be one of"):
        loader.parse_toml('[network]\nmode = "some"\n', "p.toml")
    with pytest.raises(PolicyError, match=r"use the \[network\] table"):
        loader.parse_toml('network_allow = ["a.org"]\n', "p.toml")
    assert loader.parse_toml('network = "allowlist"\n', "p.toml") == {"network": "allowlist"}


def test_landlock_leaves_tcp_to_the_namespace_in_allowlist_mode():
    # The forwarder listens on the sandbox's own loopback: TCP connect must stay possible.
    assert landlock_rules.build(7, network="allowlist", net_namespace=True).handled_net == 0


def test_parse_connect_and_absolute_http():
    r = protocol.parse_head(b"CONNECT pypi.org:443 HTTP/1.1\r\nHost: pypi.org:443")
    assert (r.method, r.host, r.port) == ("CONNECT", "pypi.org", 443)
    r = protocol.parse_head(b"GET http://[::1]:8080/a?b=1 HTTP/1.1\r\nProxy-Connection: keep-alive"
                            b"\r\nHost: [::1]:8080\r\nAccept: */*")
    assert (r.host, r.port, r.path) == ("::1", 8080, "/a?b=1")
    head = protocol.origin_head(r).decode()
    assert head.startswith("GET /a?b=1 HTTP/1.1\r\n")
    assert "Proxy-Connection" not in head and "Connection: close\r\n" in head
    assert "Host: [::1]:8080" in head
    r = protocol.parse_head(b"GET http://example.org HTTP/1.0")
    assert (r.host, r.port, r.path) == ("example.org", 80, "/")
    assert "Host: example.org\r\n" in protocol.origin_head(r).decode()


@pytest.mark.parametrize("head", [
    b"GET /relative HTTP/1.1", b"GET https://x.org/ HTTP/1.1", b"CONNECT x.org:0 HTTP/1.1",
    b"CONNECT x.org:99999 HTTP/1.1", b"garbage", b"GET http://u:p@x.org/ HTTP/1.1",
])
def test_bad_requests(head):
    with pytest.raises(protocol.BadRequest):
        protocol.parse_head(head)


def test_socks_reply_shape():
    assert protocol.socks_reply(protocol.SOCKS_NOT_ALLOWED) == b"\x05\x02\x00\x01\0\0\0\0\0\0"
