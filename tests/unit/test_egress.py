"""The egress guard (app/core/egress.py): address classification, the operator's allowlist, URL checks with a
stub resolver, and the pinned transport against listeners on loopback.

Network rule: nothing here connects outside 127.0.0.0/8 and ::1. Private, link-local, metadata and public
addresses appear only as literals classified without I/O or as answers of a stub resolver for made-up names;
the network rule (tests/network_rule.py) refuses any connection elsewhere and the tests assert no attempt.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from app.core.config import Settings
from app.core.egress import (
    EgressGuard,
    EgressRefused,
    OutboundAllowlist,
    UnresolvableHost,
    address_kind,
    http_status_text,
    is_cloud_metadata,
)
from tests.network_rule import NetworkRule, NetworkRuleViolation, is_loopback_target, wrap_connect
from tests.stub_dns import PUBLIC, StubResolver

# --- classification (pure) ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("93.184.216.34", None),
        ("8.8.8.8", None),
        ("2606:2800:220:1:248:1893:25c8:1946", None),
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.7", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("169.254.10.1", "link-local"),
        ("fe80::1", "link-local"),
        ("fe80::1%2", "link-local"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("100.127.255.254", "carrier-grade NAT"),
        ("fc00::1", "unique-local"),
        ("fd12:3456:789a::1", "unique-local"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("::", "unspecified"),
        ("255.255.255.255", "reserved"),
        ("240.0.0.1", "reserved"),
        ("192.0.0.8", "reserved"),
        ("192.0.2.10", "documentation"),
        ("198.51.100.1", "documentation"),
        ("203.0.113.5", "documentation"),
        ("2001:db8::1", "documentation"),
        ("198.18.0.1", "benchmarking"),
        ("fec0::1", "site-local"),
        ("2001::1", "reserved"),  # Teredo
        ("100::1", "reserved"),
        ("::2", "reserved"),  # outside 2000::/3
        ("4000::1", "reserved"),
        ("169.254.169.254", "cloud metadata"),
        ("169.254.170.2", "cloud metadata"),
        ("100.100.100.200", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        # IPv4 inside IPv6 is judged as IPv4
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.7", "private"),
        ("::ffff:169.254.169.254", "cloud metadata"),
        ("::ffff:93.184.216.34", None),
        ("64:ff9b::10.0.0.7", "private"),
        ("64:ff9b::a9fe:a9fe", "cloud metadata"),
        ("64:ff9b::93.184.216.34", None),
        ("2002:0a00:0007::1", "private"),  # 6to4 of 10.0.0.7
        ("2002:5db8:d822::1", None),  # 6to4 of 93.184.216.34
        ("64:ff9b:1::1", "local-use NAT64"),
    ],
)
def test_address_kind(address: str, kind: str | None) -> None:
    assert address_kind(ipaddress.ip_address(address)) == kind


def test_metadata_addresses_are_named() -> None:
    assert is_cloud_metadata(ipaddress.ip_address("::ffff:a9fe:a9fe"))
    assert not is_cloud_metadata(ipaddress.ip_address("169.254.169.253"))


def test_status_text_uses_the_standard_phrase() -> None:
    assert http_status_text(404) == "HTTP 404 Not Found"
    assert http_status_text(302) == "HTTP 302 Found"
    assert http_status_text(599) == "HTTP 599"


# --- the allowlist -----------------------------------------------------------------------------------------


def test_allowlist_parses_hosts_and_networks() -> None:
    allow = OutboundAllowlist.parse(" localhost, Ollama.internal. ,10.1.2.0/24 127.0.0.1,[::1]")
    assert allow.hosts == frozenset({"localhost", "ollama.internal"})
    assert allow.allows_host("OLLAMA.internal") and not allow.allows_host("ollama")
    assert allow.allows_address(ipaddress.ip_address("10.1.2.99"))
    assert allow.allows_address(ipaddress.ip_address("::ffff:10.1.2.3"))
    assert allow.allows_address(ipaddress.ip_address("::1"))
    assert not allow.allows_address(ipaddress.ip_address("10.1.3.1"))
    assert not OutboundAllowlist.parse("") and OutboundAllowlist.parse("") == OutboundAllowlist()


@pytest.mark.parametrize("bad", ["http://localhost", "10.0.0.0/33", "a b/c", "-bad-.host"])
def test_allowlist_rejects_what_is_neither_host_nor_network(bad: str) -> None:
    with pytest.raises(ValueError, match="OUTBOUND_ALLOW"):
        OutboundAllowlist.parse(bad)


def test_outbound_allow_is_validated_with_the_settings() -> None:
    assert Settings(outbound_allow="localhost,127.0.0.1").outbound_allow == "localhost,127.0.0.1"
    with pytest.raises(ValueError, match="OUTBOUND_ALLOW"):
        Settings(outbound_allow="http://localhost:11434")


# --- URL checks with a stub resolver (no connection) -------------------------------------------------------


def guard(allow: str = "", **answers: list[str]) -> tuple[EgressGuard, StubResolver]:
    stub = StubResolver()
    for host, addresses in answers.items():
        stub.answer(host.replace("_", "."), addresses)
    return EgressGuard(OutboundAllowlist.parse(allow), resolver=stub), stub


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        (["127.0.0.1"], "a loopback"),
        (["10.0.0.7"], "a private"),
        (["169.254.10.1"], "a link-local"),
        (["100.64.0.1"], "a carrier-grade NAT"),
        (["fd12::1"], "a unique-local"),
        (["::ffff:192.168.1.1"], "a private"),
        (["224.0.0.251"], "a multicast"),
        (["0.0.0.0"], "an unspecified"),  # (it said "a unspecified")
        ([PUBLIC, "10.0.0.7"], "a private"),  # one bad answer among good ones is enough
    ],
)
async def test_a_name_resolving_to_a_non_public_address_is_refused(answer: list[str], kind: str) -> None:
    egress, _ = guard(**{"svc_example_test": answer})
    with pytest.raises(EgressRefused, match=f"svc.example.test resolves to {kind} address"):
        await egress.check_url("https://svc.example.test/v1")


async def test_metadata_is_refused_even_when_allowlisted() -> None:
    egress, _ = guard("metadata.example.test, 169.254.0.0/16", metadata_example_test=["169.254.169.254"])
    with pytest.raises(EgressRefused, match="cloud metadata"):
        await egress.check_url("http://metadata.example.test/latest/meta-data/")


async def test_a_public_https_url_passes_and_yields_the_checked_addresses() -> None:
    egress, stub = guard(llm_example_test=[PUBLIC, "2606:2800:220:1:248:1893:25c8:1946"])
    checked = await egress.check_url("https://LLM.example.test/v1")
    assert checked.host == "llm.example.test" and checked.port == 443 and not checked.allowlisted
    assert [str(a) for a in checked.addresses] == [PUBLIC, "2606:2800:220:1:248:1893:25c8:1946"]
    assert stub.calls == ["llm.example.test"]


async def test_plain_http_needs_the_allowlist() -> None:
    egress, stub = guard(llm_example_test=[PUBLIC])
    with pytest.raises(EgressRefused, match="plain http:// is allowed only"):
        await egress.check_url("http://llm.example.test/v1")
    assert stub.calls == [], "refused before any DNS query"
    with pytest.raises(EgressRefused, match="only http:// and https://"):
        await egress.check_url("ftp://llm.example.test/")
    with pytest.raises(EgressRefused, match="loopback"):
        await egress.check_url("http://127.0.0.1:11434/v1")


async def test_the_allowlist_opens_local_model_servers() -> None:
    egress, _ = guard("localhost, 127.0.0.0/8, ::1", localhost=["127.0.0.1", "::1"])
    assert (await egress.check_url("http://localhost:11434/v1")).allowlisted
    assert (await egress.check_url("http://127.0.0.1:8000/v1")).addresses == (ipaddress.ip_address("127.0.0.1"),)
    assert (await egress.check_url("http://[::1]:8000/v1")).port == 8000
    with pytest.raises(EgressRefused, match="private"):
        await egress.check_url("http://10.0.0.7:8000/v1")


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999/x", "http://localhost:0/hook", "https://localhost:65536/"])
async def test_a_port_outside_the_tcp_range_is_refused(url: str) -> None:
    """httpx parses these; saved as an alert webhook they were accepted, and every alert then failed for hours."""
    egress, stub = guard("localhost, 127.0.0.0/8, ::1", localhost=["127.0.0.1", "::1"])
    with pytest.raises(EgressRefused, match="port must be 1 to 65535"):
        await egress.check_url(url)
    assert stub.calls == [], "refused before any resolution"


async def test_allowlisted_names_need_no_resolution_at_save_time() -> None:
    egress, stub = guard("ollama")
    checked = await egress.check_url("http://ollama:11434/v1", resolve_allowlisted=False)
    assert checked.addresses == () and checked.allowlisted and stub.calls == []
    with pytest.raises(UnresolvableHost):
        await egress.check_url("http://ollama:11434/v1")


async def test_numeric_host_forms_are_judged_by_what_they_resolve_to() -> None:
    """``http://2130706433/`` is 127.0.0.1 to the C resolver: the guard judges the resolved address."""
    egress, _ = guard(**{"2130706433": ["127.0.0.1"]})
    with pytest.raises(EgressRefused, match="loopback"):
        await egress.check_url("https://2130706433/")


async def test_an_unknown_name_is_unresolvable() -> None:
    egress, _ = guard()
    with pytest.raises(UnresolvableHost, match="nowhere.example.test cannot be resolved"):
        await egress.check_url("https://nowhere.example.test/")


# --- the network rule itself (pure: the real connect is a recording fake) ----------------------------------


def test_the_network_rule_refuses_everything_but_loopback() -> None:
    rule, made = NetworkRule(), []
    connect = wrap_connect(rule, lambda sock, address: made.append(address))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        connect(sock, ("127.0.0.2", 80))
        connect(sock6, ("::1", 80, 0, 0))
        for address in ("10.0.0.7", "169.254.169.254", PUBLIC, "example.test"):
            with pytest.raises(NetworkRuleViolation):
                connect(sock, (address, 80))
        with pytest.raises(NetworkRuleViolation):
            connect(sock6, ("fd00:ec2::254", 80, 0, 0))
    finally:
        sock.close()
        sock6.close()
    assert made == [("127.0.0.2", 80), ("::1", 80, 0, 0)], "refused addresses never reach the real connect"
    assert len(rule.violations) == 5 and len(rule.non_loopback_attempts()) == 5
    assert is_loopback_target("localhost") and is_loopback_target("::ffff:127.0.0.1")
    assert not is_loopback_target("::ffff:10.0.0.1") and not is_loopback_target("fe80::1")


def test_the_network_rule_is_installed() -> None:
    assert hasattr(socket.socket.connect, "__wrapped__") and hasattr(socket.socket.connect_ex, "__wrapped__")


# --- the pinned transport against loopback listeners -------------------------------------------------------


@dataclass
class Listener:
    """An HTTP listener on a loopback address recording ``(method, path, Host)`` and answering ``reply``."""

    host: str
    port: int = 0
    seen: list[tuple[str, str, str]] = field(default_factory=list)
    reply: tuple[int, dict[str, str]] = (200, {})


@pytest.fixture
def listen() -> Iterator[Any]:
    servers: list[ThreadingHTTPServer] = []

    def start(host: str = "127.0.0.1", reply: tuple[int, dict[str, str]] = (200, {})) -> Listener:
        state = Listener(host, reply=reply)

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                if length:
                    self.rfile.read(length)
                state.seen.append((self.command, self.path, self.headers.get("host", "")))
                status, headers = state.reply
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            do_GET = do_POST = _any  # noqa: N815 (http.server naming)

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer((host, 0), Handler)
        state.port = server.server_address[1]
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return state

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


async def test_the_connection_goes_to_the_checked_address_with_the_host_name_kept(
    listen: Any, network: NetworkRule
) -> None:
    """A made-up name the stub resolves to 127.0.0.1 (allowlisted by network): the request reaches the
    listener on the checked address and keeps ``Host: pinned.example.test:<port>``; the name is resolved for
    every request (a pooled connection is reused only for the same host and port)."""
    listener = listen()
    egress, stub = guard("127.0.0.1/32", pinned_example_test=["127.0.0.1"])
    async with egress.client(timeout=5) as client:
        for _ in range(2):
            response = await client.get(f"http://pinned.example.test:{listener.port}/hello")
            assert response.status_code == 200
    assert listener.seen == [("GET", "/hello", f"pinned.example.test:{listener.port}")] * 2
    assert stub.calls == ["pinned.example.test"] * 2
    assert network.non_loopback_attempts() == []


async def test_dns_that_changes_after_the_check_is_refused_at_send_time(network: NetworkRule) -> None:
    """Public at save time, private at send time (DNS rebinding): refused before any connection."""
    egress, stub = guard()
    stub.answer("rebind.example.test", [PUBLIC], ["10.0.0.7"])
    assert (await egress.check_url("https://rebind.example.test/hook")).addresses == (ipaddress.ip_address(PUBLIC),)
    before = len(network.attempts)
    async with egress.client(timeout=5) as client:
        with pytest.raises(EgressRefused, match="private"):
            await client.post("https://rebind.example.test/hook", content=b"{}")
    assert network.attempts[before:] == [], "no connection was even attempted"


@pytest.mark.parametrize(
    ("answer", "kind"),
    [(["169.254.169.254"], "cloud metadata"), (["192.168.0.10"], "private"), (["fd00::5"], "unique-local")],
)
async def test_refused_at_send_time_before_any_connection(answer: list[str], kind: str, network: NetworkRule) -> None:
    egress, _ = guard(internal_example_test=answer)
    before = len(network.attempts)
    async with egress.client(timeout=5) as client:
        with pytest.raises(EgressRefused, match=kind):
            await client.get("https://internal.example.test/latest/meta-data/")
    assert network.attempts[before:] == []


async def test_the_guard_runs_before_respx_mocks() -> None:
    """With httpx mocked by respx (as the provider tests do), a refused URL never reaches the mock: the guard
    sits in the transport, in front of httpcore's pool that respx patches."""
    egress, _ = guard(mocked_example_test=["10.0.0.7"], public_example_test=[PUBLIC])
    with respx.mock(assert_all_called=False) as router:
        refused = router.get("https://mocked.example.test/").respond(200)
        allowed = router.get("https://public.example.test/").respond(204)
        async with egress.client(timeout=5) as client:
            with pytest.raises(EgressRefused):
                await client.get("https://mocked.example.test/")
            assert (await client.get("https://public.example.test/")).status_code == 204
    assert not refused.called and allowed.called


async def test_a_redirect_to_another_listener_is_not_followed(listen: Any, network: NetworkRule) -> None:
    """The first listener (allowlisted) answers 302 to a second loopback listener that is not: the client
    follows no redirect, and one that is told to has the second hop checked and refused; the second listener
    gets nothing either way."""
    second = listen("127.0.0.2")
    first = listen("127.0.0.1", reply=(302, {"location": f"http://127.0.0.2:{second.port}/stolen"}))
    egress, _ = guard("127.0.0.1/32")
    async with egress.client(timeout=5) as client:
        response = await client.post(f"http://127.0.0.1:{first.port}/hook", content=b"{}")
        assert response.status_code == 302
        with pytest.raises(EgressRefused, match="127.0.0.2 is a loopback address"):
            await client.post(f"http://127.0.0.1:{first.port}/hook", content=b"{}", follow_redirects=True)
    assert len(first.seen) == 2 and second.seen == []
    assert network.non_loopback_attempts() == []


def _tls_files(tmp: Path, name: str) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for ``name`` signed by it (PEM files: ca, cert, key)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "egress test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = (tmp / "ca.pem", tmp / "cert.pem", tmp / "key.pem")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


async def test_tls_to_the_pinned_address_uses_the_host_name_for_sni_and_the_certificate(tmp_path: Path) -> None:
    """https to a name pinned to 127.0.0.1: the TLS server sees SNI ``tls.example.test`` and the client checks
    the certificate against that name (a certificate for another name fails)."""
    ca, cert, key = _tls_files(tmp_path, "tls.example.test")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    sni: list[str | None] = []
    server_context.sni_callback = lambda sock, name, ctx: sni.append(name)  # type: ignore[assignment,misc,return-value]
    listener_server = _tls_listener(server_context)
    stub = StubResolver()
    stub.answer("tls.example.test", ["127.0.0.1"])
    stub.answer("other.example.test", ["127.0.0.1"])
    egress = EgressGuard(OutboundAllowlist.parse("127.0.0.1/32"), resolver=stub)
    client_context = ssl.create_default_context(cafile=str(ca))
    async with httpx.AsyncClient(transport=egress.transport(verify=client_context), timeout=5) as client:
        response = await client.get(f"https://tls.example.test:{listener_server.port}/secure")
        assert response.status_code == 200
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED|certificate"):
            await client.get(f"https://other.example.test:{listener_server.port}/secure")
    assert sni[0] == "tls.example.test"
    assert listener_server.seen[0] == ("GET", "/secure", f"tls.example.test:{listener_server.port}")


def _tls_listener(context: ssl.SSLContext) -> Listener:
    """A TLS listener on 127.0.0.1 with ``context`` (shut down after the test)."""
    state = Listener("127.0.0.1")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server naming)
            state.seen.append((self.command, self.path, self.headers.get("host", "")))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    state.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _TLS_SERVERS.append(server)
    return state


_TLS_SERVERS: list[ThreadingHTTPServer] = []


@pytest.fixture(autouse=True)
def _close_tls_servers() -> Iterator[None]:
    yield
    while _TLS_SERVERS:
        server = _TLS_SERVERS.pop()
        server.shutdown()
        server.server_close()
