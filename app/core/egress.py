"""The egress guard: every HTTP request to a URL a coach configures (the LLM base URL, the alert webhook, any
later one) goes through :class:`EgressGuard`, so signing up cannot be a way to probe the internal network.

Threat: server-side request forgery. Following the OWASP Server-Side Request Forgery Prevention Cheat Sheet
(case "the application can send requests to any external IP address or domain name"):

1. Only ``https`` URLs, except for hosts and networks the operator allowlists (``OUTBOUND_ALLOW``, process
   configuration that no coach can change), where ``http`` is allowed too (Ollama / vLLM on localhost).
2. The host name is resolved (asynchronously, through a replaceable :data:`Resolver`) and *every* address it
   resolves to must be a globally routable unicast address: loopback, private, link-local, carrier-grade
   NAT, unique-local, multicast, unspecified, documentation, benchmarking and other reserved addresses are
   refused (:func:`address_kind`, after the IANA special-purpose address registries of RFC 6890), and so are
   the same addresses inside IPv6 (IPv4-mapped ``::ffff:a.b.c.d``, NAT64 ``64:ff9b::/96``, 6to4
   ``2002::/16``). Cloud metadata services (:data:`CLOUD_METADATA`) are refused even when allowlisted.
3. The connection goes to the address that was checked, not to a second resolution (DNS rebinding: a name
   that answers a public address to the check and a private one to the connection). :class:`GuardedTransport`
   checks each request and hands the checked addresses to its connection pool's network backend, which
   connects only to them; the URL, the ``Host`` header and the TLS server name (SNI, certificate check) keep
   the host name. A pooled connection is reused only for the same host and port, so it too was checked.
4. No redirects are followed (:meth:`EgressGuard.client`); and since the transport checks every request it
   sends, a client that does follow redirects has each hop checked again.
5. What a coach or client can read about a failed request is a status code and a short reason
   (:func:`http_status_text`, the standard phrase, not the one the server sent), never the response body.

Sources: OWASP Cheat Sheet Series, "Server Side Request Forgery Prevention"; RFC 6890 (special-purpose IP
address registries) and the IANA IPv4/IPv6 Special-Purpose Address Registries; RFC 1918 (private); RFC 6598
(shared address space, CGNAT, 100.64.0.0/10); RFC 3927 (IPv4 link-local); RFC 4193 (IPv6 unique local,
fc00::/7); RFC 4291 (IPv6 addressing: loopback, link-local, multicast, IPv4-mapped); RFC 5771 (multicast);
RFC 5737, RFC 3849 and RFC 9637 (documentation); RFC 2544 (benchmarking); RFC 6052 and RFC 8215 (NAT64);
RFC 3056 (6to4); RFC 9110 section 15 (status codes and their reason phrases).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import httpcore
import httpx

if TYPE_CHECKING:
    from app.core.config import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""``await resolver(host, port)`` → the host's addresses as strings (``"93.184.216.34"``, ``"2001:db8::1"``),
in the order to try them. Raises ``OSError`` (e.g. ``socket.gaierror``) when the name does not resolve."""

RESOLVE_TIMEOUT_SECONDS = 10.0
MAX_PORT = 65535
"""The highest TCP port (RFC 793's 16-bit port field); a URL naming another is refused."""


class EgressRefused(Exception):
    """The egress policy refuses a URL. ``str(exc)`` is one short sentence, safe to show the coach: it names the
    host as the coach wrote it and the kind of address, never a resolved address nor anything a server sent."""


class UnresolvableHost(OSError):
    """The host name did not resolve (or the resolver timed out). A retry may succeed; at save time it is
    reported to the coach like a refusal."""


# --- address classification -------------------------------------------------------------------------------


def _v4(networks: Iterable[tuple[str, str]]) -> tuple[tuple[ipaddress.IPv4Network, str], ...]:
    return tuple((ipaddress.IPv4Network(net), kind) for net, kind in networks)


def _v6(networks: Iterable[tuple[str, str]]) -> tuple[tuple[ipaddress.IPv6Network, str], ...]:
    return tuple((ipaddress.IPv6Network(net), kind) for net, kind in networks)


IPV4_SPECIAL = _v4(
    (
        ("0.0.0.0/8", "unspecified"),  # "this network", RFC 791 / RFC 6890
        ("10.0.0.0/8", "private"),  # RFC 1918
        ("100.64.0.0/10", "carrier-grade NAT"),  # shared address space, RFC 6598
        ("127.0.0.0/8", "loopback"),  # RFC 1122
        ("169.254.0.0/16", "link-local"),  # RFC 3927
        ("172.16.0.0/12", "private"),  # RFC 1918
        ("192.0.0.0/24", "reserved"),  # IETF protocol assignments, RFC 6890
        ("192.0.2.0/24", "documentation"),  # TEST-NET-1, RFC 5737
        ("192.88.99.0/24", "reserved"),  # deprecated 6to4 relay anycast, RFC 7526
        ("192.168.0.0/16", "private"),  # RFC 1918
        ("198.18.0.0/15", "benchmarking"),  # RFC 2544
        ("198.51.100.0/24", "documentation"),  # TEST-NET-2, RFC 5737
        ("203.0.113.0/24", "documentation"),  # TEST-NET-3, RFC 5737
        ("224.0.0.0/4", "multicast"),  # RFC 5771
        ("240.0.0.0/4", "reserved"),  # RFC 1112, including 255.255.255.255 (limited broadcast)
    )
)
"""IPv4 special-purpose blocks and the kind each is reported as (IANA IPv4 Special-Purpose Address Registry,
RFC 6890, plus multicast and the reserved class E). Anything else is a public unicast address."""

IPV6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
"""The only IPv6 block allocated for global unicast (RFC 4291 section 2.4; IANA IPv6 Address Space)."""

IPV6_SPECIAL = _v6(
    (
        ("::/128", "unspecified"),  # RFC 4291
        ("::1/128", "loopback"),  # RFC 4291
        ("fc00::/7", "unique-local"),  # RFC 4193
        ("fe80::/10", "link-local"),  # RFC 4291
        ("fec0::/10", "site-local"),  # deprecated, RFC 3879
        ("ff00::/8", "multicast"),  # RFC 4291
        ("64:ff9b:1::/48", "local-use NAT64"),  # RFC 8215
        ("100::/64", "reserved"),  # discard-only, RFC 6666
        ("2001::/23", "reserved"),  # IETF protocol assignments (Teredo, ORCHID, ...), RFC 2928 / RFC 6890
        ("2001:db8::/32", "documentation"),  # RFC 3849
        ("3fff::/20", "documentation"),  # RFC 9637
    )
)
"""IPv6 special-purpose blocks (IANA IPv6 Special-Purpose Address Registry, RFC 6890). Addresses outside
:data:`IPV6_GLOBAL_UNICAST` are reported as ``reserved``; IPv4 embedded in IPv6 is judged as IPv4."""

NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
"""RFC 6052 well-known prefix: the low 32 bits are an IPv4 address (DNS64 synthesises these)."""
SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")
"""RFC 3056 6to4: bits 16–47 are the IPv4 address of the site."""

CLOUD_METADATA = frozenset(
    ipaddress.ip_address(address)
    for address in (
        "169.254.169.254",  # AWS, Google Cloud, Azure, OpenStack, Oracle Cloud, DigitalOcean instance metadata
        "169.254.170.2",  # AWS ECS task metadata and credentials
        "100.100.100.200",  # Alibaba Cloud instance metadata
        "fd00:ec2::254",  # AWS instance metadata over IPv6
    )
)
"""Cloud instance metadata services (which hand out credentials): refused whatever ``OUTBOUND_ALLOW`` says.
All of them lie in refused blocks too; naming them gives the coach a precise reason."""


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside an IPv4-mapped (``::ffff:a.b.c.d``), NAT64 (``64:ff9b::a.b.c.d``) or 6to4
    (``2002:aabb:ccdd::/48``) IPv6 address; ``None`` for any other."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in NAT64_WELL_KNOWN:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in SIX_TO_FOUR:
        return address.sixtofour
    return None


def _plain(address: IPAddress) -> IPAddress:
    """``address`` without a zone index (``fe80::1%eth0`` → ``fe80::1``) and with embedded IPv4 unwrapped."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id is not None:
            address = ipaddress.IPv6Address(int(address))
        inner = embedded_ipv4(address)
        if inner is not None:
            return inner
    return address


def is_cloud_metadata(address: IPAddress) -> bool:
    """Whether ``address`` (or the IPv4 address inside it) is a cloud metadata service (:data:`CLOUD_METADATA`)."""
    return address in CLOUD_METADATA or _plain(address) in CLOUD_METADATA


def address_kind(address: IPAddress) -> str | None:
    """``None`` for a globally routable unicast address; otherwise the kind of address that may not be reached:
    ``"cloud metadata"``, ``"loopback"``, ``"private"``, ``"link-local"``, ``"carrier-grade NAT"``,
    ``"unique-local"``, ``"multicast"``, ``"unspecified"``, ``"documentation"``, ``"benchmarking"``,
    ``"site-local"``, ``"local-use NAT64"`` or ``"reserved"``. IPv4 inside IPv6 (mapped, NAT64, 6to4) is judged
    as that IPv4 address. Pure: no resolution, no I/O."""
    if is_cloud_metadata(address):
        return "cloud metadata"
    plain = _plain(address)
    if isinstance(plain, ipaddress.IPv4Address):
        for v4_network, kind in IPV4_SPECIAL:
            if plain in v4_network:
                return kind
        return None
    for v6_network, kind in IPV6_SPECIAL:
        if plain in v6_network:
            return kind
    return None if plain in IPV6_GLOBAL_UNICAST else "reserved"


def with_article(kind: str) -> str:
    """``kind`` (of :func:`address_kind`) after its indefinite article, as a refusal says it: ``"an unspecified"``,
    ``"a unique-local"`` (a *u* sounded "you" takes "a"), ``"a loopback"``."""
    vowel_sound = kind[:1] in ("a", "e", "i", "o") or (kind[:1] == "u" and not kind.startswith(("uni", "use", "usu")))
    return f"{'an' if vowel_sound else 'a'} {kind}"


def parse_ip(text: str) -> IPAddress | None:
    """``text`` as an IP address (a zone index ``%eth0`` is allowed), or ``None`` when it is not one."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


# --- the operator's allowlist ----------------------------------------------------------------------------

_LABEL = r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?"
_HOST_RE = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")


def _host_key(host: str) -> str:
    return host.strip().lower().rstrip(".")


def is_host_name(name: str) -> bool:
    """Whether ``name`` (lower case) is a DNS host name: dot-separated labels of letters, digits, ``-`` and ``_``
    (not at a label's ends), each at most 63 characters, 253 in all (RFC 1123 section 2.1)."""
    return _HOST_RE.match(name) is not None


@dataclass(frozen=True)
class OutboundAllowlist:
    """Hosts and networks the operator lets coaches reach even though they are not public, and over plain
    ``http`` (a one-team install pointing at Ollama on ``localhost``). Parsed from ``OUTBOUND_ALLOW``; empty by
    default, and a coach has no way to widen it. Cloud metadata addresses stay refused."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, text: str) -> OutboundAllowlist:
        """``"localhost, ollama, 10.1.2.0/24, 127.0.0.1, ::1"`` (comma- or blank-separated): each entry a host
        name (matched exactly, case-insensitively) or an IP address / CIDR network. Raises ``ValueError``
        naming the first entry that is neither."""
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for raw in re.split(r"[,\s]+", text.strip()):
            entry = raw.strip()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            name = _host_key(entry)
            if not is_host_name(name):
                raise ValueError(f"OUTBOUND_ALLOW: {entry!r} is neither a host name nor an IP address or network")
            hosts.add(name)
        return cls(frozenset(hosts), tuple(networks))

    def __bool__(self) -> bool:
        return bool(self.hosts or self.networks)

    def allows_host(self, host: str) -> bool:
        """Whether the host name (as in the URL) is allowlisted by name."""
        return _host_key(host) in self.hosts

    def allows_address(self, address: IPAddress) -> bool:
        """Whether ``address`` (or the IPv4 address inside it) lies in an allowlisted network."""
        candidates = {address, _plain(address)}
        return any(a in network for a in candidates for network in self.networks if a.version == network.version)


# --- resolution --------------------------------------------------------------------------------------------


async def system_resolver(host: str, port: int) -> list[str]:
    """The operating system's resolver (``getaddrinfo`` in the event loop's executor), TCP addresses only."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


_default_resolver: Resolver = system_resolver


def set_resolver(resolver: Resolver | None) -> Resolver:
    """Make ``resolver`` the one every :class:`EgressGuard` built without its own uses (``None``: the system
    resolver again). Returns the previous one. For tests: a stub that hands out chosen addresses."""
    global _default_resolver
    previous = _default_resolver
    _default_resolver = resolver or system_resolver
    return previous


def http_status_text(status: int) -> str:
    """``"HTTP 404 Not Found"``: the status code and its standard reason phrase (RFC 9110 section 15), never the
    phrase the server sent (which is free text the server chooses); ``"HTTP 599"`` for an unregistered code."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return f"HTTP {status} {phrase}".rstrip()


# --- the guard ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Destination:
    """A checked URL: ``host`` as in the URL (lower case, IDNA), ``port``, and ``addresses``, the checked
    addresses to connect to, in order (empty only for an allowlisted host name checked without resolving)."""

    scheme: str
    host: str
    port: int
    addresses: tuple[IPAddress, ...]
    allowlisted: bool


class EgressGuard:
    """Checks URLs against the policy (module docstring) and makes HTTP clients that connect only to checked
    addresses.

    ``allowlist``: the operator's :class:`OutboundAllowlist`; ``resolver``: how host names are resolved (``None``:
    the process default, see :func:`set_resolver`).
    """

    def __init__(
        self,
        allowlist: OutboundAllowlist | None = None,
        *,
        resolver: Resolver | None = None,
        resolve_timeout: float = RESOLVE_TIMEOUT_SECONDS,
    ) -> None:
        self.allowlist = allowlist or OutboundAllowlist()
        self._resolver = resolver
        self._resolve_timeout = resolve_timeout

    @classmethod
    def from_settings(cls, settings: Settings) -> EgressGuard:
        """The guard for the process: ``OUTBOUND_ALLOW`` from ``settings``, the default resolver."""
        return cls(OutboundAllowlist.parse(settings.outbound_allow))

    async def resolve(self, host: str, port: int) -> tuple[IPAddress, ...]:
        """The addresses of ``host`` (deduplicated, in the resolver's order). Raises :class:`UnresolvableHost`."""
        resolver = self._resolver or _default_resolver
        try:
            answers = await asyncio.wait_for(resolver(host, port), self._resolve_timeout)
        except (OSError, TimeoutError) as exc:
            raise UnresolvableHost(f"{host} cannot be resolved") from exc
        addresses = tuple(dict.fromkeys(a for a in (parse_ip(str(answer)) for answer in answers) if a is not None))
        if not addresses:
            raise UnresolvableHost(f"{host} cannot be resolved")
        return addresses

    async def check_url(self, url: str | httpx.URL, *, resolve_allowlisted: bool = True) -> Destination:
        """Check ``url`` against the policy; returns the :class:`Destination` with the addresses to connect to.

        ``resolve_allowlisted=False`` skips resolving a host allowlisted by name (a settings form need not
        resolve ``ollama`` where only the worker's network knows it). Raises :class:`EgressRefused` (not http(s),
        no host, a port outside 1–65535, plain http outside the allowlist, an address that may not be reached) or
        :class:`UnresolvableHost`.
        """
        try:
            parsed = url if isinstance(url, httpx.URL) else httpx.URL(url.strip())
        except (httpx.InvalidURL, TypeError) as exc:
            raise EgressRefused("the URL is not valid") from exc
        scheme = parsed.scheme
        if scheme not in ("http", "https"):
            raise EgressRefused("only http:// and https:// URLs can be used")
        host = parsed.host
        if not host:
            raise EgressRefused("the URL has no host")
        if parsed.port is not None and not 1 <= parsed.port <= MAX_PORT:
            # (httpx parses 99999; the resolver would take it modulo 65536 and check another port than the one dialled)
            raise EgressRefused(f"the URL's port must be 1 to {MAX_PORT}, not {parsed.port}")
        port = parsed.port or (443 if scheme == "https" else 80)
        by_name = self.allowlist.allows_host(host)
        plain_http_refused = EgressRefused(
            f"{host}: plain http:// is allowed only for hosts the operator allows (OUTBOUND_ALLOW); use https://"
        )
        literal = parse_ip(host)
        if scheme == "http" and not by_name and not self.allowlist.networks and literal is None:
            raise plain_http_refused  # before any DNS query
        if literal is not None:
            addresses: tuple[IPAddress, ...] = (literal,)
        elif by_name and not resolve_allowlisted:
            addresses = ()
        else:
            addresses = await self.resolve(host, port)
        verb = "is" if literal is not None else "resolves to"
        for address in addresses:
            if is_cloud_metadata(address):
                raise EgressRefused(f"{host} {verb} a cloud metadata address, which can never be reached")
            if by_name or self.allowlist.allows_address(address):
                continue
            kind = address_kind(address)
            if kind is not None:
                raise EgressRefused(f"{host} {verb} {with_article(kind)} address; only public addresses can be reached")
        if scheme == "http" and not by_name and not all(self.allowlist.allows_address(a) for a in addresses):
            raise plain_http_refused
        return Destination(scheme, host, port, addresses, by_name)

    def transport(
        self, *, verify: ssl.SSLContext | bool = True, limits: httpx.Limits | None = None
    ) -> GuardedTransport:
        """A :class:`GuardedTransport` for this guard (``verify``: certificate checking, as in httpx)."""
        return GuardedTransport(self, verify=verify, limits=limits)

    def client(self, *, timeout: float | httpx.Timeout, **kwargs: Any) -> httpx.AsyncClient:
        """An ``httpx.AsyncClient`` on a :class:`GuardedTransport` that follows no redirects and ignores proxy
        and ``.netrc`` settings from the environment (a proxy would make the connection for us, unchecked).
        ``kwargs`` go to ``httpx.AsyncClient`` (headers, base_url …)."""
        return httpx.AsyncClient(
            transport=self.transport(), timeout=timeout, follow_redirects=False, trust_env=False, **kwargs
        )


# --- pinning: the transport and its network backend --------------------------------------------------------

_PINNED: ContextVar[dict[tuple[str, int], tuple[IPAddress, ...]] | None] = ContextVar("egress_pinned", default=None)
"""The checked addresses per ``(host, port)`` of the request being sent in this task (set by
:class:`GuardedTransport`, read by :class:`PinnedBackend` when the pool opens a connection)."""


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that opens TCP connections only to the addresses :class:`GuardedTransport`
    checked for this host and port (trying them in order), whatever the host name would resolve to now; with
    no checked address it refuses (fails closed). TLS is then started by httpcore with the host name as server
    name, so SNI and the certificate check use the name, not the address."""

    def __init__(self) -> None:
        self._backend = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's AsyncNetworkBackend signature)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = (_PINNED.get() or {}).get((host.lower(), port))
        if not addresses:
            raise httpcore.ConnectError(f"{host}:{port} was not checked by the egress guard")
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self._backend.connect_tcp(
                    str(address), port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's AsyncNetworkBackend signature)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("outbound requests never use Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """An ``httpx.AsyncHTTPTransport`` that checks every request with its :class:`EgressGuard` and then lets its
    connection pool connect only to the checked addresses (:class:`PinnedBackend`). The request itself is sent
    unchanged: URL, ``Host`` header and TLS server name keep the host name, and pooled connections are keyed by
    host and port (rewriting the URL to the address would let two names on one address share a TLS connection).

    Raises :class:`EgressRefused` for a refused request (before any connection) and ``httpx.ConnectError`` when
    the host does not resolve. HTTP/1.1 only; no proxy.
    """

    def __init__(
        self, guard: EgressGuard, *, verify: ssl.SSLContext | bool = True, limits: httpx.Limits | None = None
    ) -> None:
        # Not super().__init__(): it would build a pool on the default network backend, which resolves names.
        limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0)
        self._guard = guard
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=PinnedBackend(),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            destination = await self._guard.check_url(request.url)
        except UnresolvableHost as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        key = (request.url.raw_host.decode("ascii").lower(), destination.port)
        token = _PINNED.set({**(_PINNED.get() or {}), key: destination.addresses})
        try:
            return await super().handle_async_request(request)
        finally:
            _PINNED.reset(token)
