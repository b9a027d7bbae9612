"""Image links: data: URIs decoded, http(s) links fetched with limits and a private-address guard."""
from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import socket
import threading
import time
from functools import cache
from urllib.parse import urljoin, urlsplit

from .errors import FetchFailed, FetchTimeout, ImageInvalid, ImageTooLarge, LinkNotAllowed
from .settings import Settings

DATA_URI = re.compile(r"^data:(image/[A-Za-z0-9.+-]+)(;[^,]*)?;base64,", re.IGNORECASE)


def decode_data_uri(link: str, settings: Settings, label: str) -> bytes:
    match = DATA_URI.match(link)
    if not match:
        raise ImageInvalid(f"{label} must be an http(s) URL or a data:image/...;base64, URI.")
    payload = link[match.end():]
    if len(payload) * 3 // 4 > settings.max_image_bytes + 3:
        raise ImageTooLarge(f"{label} is larger than {settings.max_image_bytes} bytes.")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ImageInvalid(f"{label} is not valid base64.") from None


# NAT64, IPv4-compatible (::a.b.c.d) and SIIT-translated (::ffff:0:a.b.c.d) addresses end in an IPv4 one.
_LAST_32_BITS_V4 = [ipaddress.ip_network(n) for n in ("64:ff9b::/96", "::/96", "::ffff:0:0:0/96")]
_UNSAFE = re.compile(r"[\\\s\x00-\x1f\x7f]")  # parsers disagree on backslashes; no URL needs these


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries (mapped, 6to4, Teredo, NAT64): those are where it leads."""
    found = [a for a in (ip.ipv4_mapped, ip.sixtofour) if a is not None] + list(ip.teredo or ())
    if any(ip in net for net in _LAST_32_BITS_V4):
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    targets = (_embedded_ipv4(ip) if ip.version == 6 else []) or [ip]
    return all(t.is_global and not t.is_multicast for t in targets)


def check_host(url: str, settings: Settings, label: str) -> None:
    """Refuse links the HTTP client could read differently, or whose host resolves to a non-public address."""
    from urllib3.util import parse_url

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LinkNotAllowed(f"{label} must be an http:// or https:// URL.")
    if _UNSAFE.search(url) or "@" in parts.netloc:
        raise LinkNotAllowed(f"{label} must not hold a backslash, white space, control characters or a user name.")
    try:
        client_host = (parse_url(url).host or "").strip("[]").lower()
    except ValueError:
        client_host = ""
    if client_host != parts.hostname.lower():  # one URL, one host, whichever parser reads it
        raise LinkNotAllowed(f"{label} is ambiguous about its host.")
    if settings.allow_private_links:
        return
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(parts.hostname, port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError, ValueError) as exc:
        raise FetchFailed(f"{label}: cannot resolve {parts.hostname!r} ({exc}).") from None
    addresses = {info[4][0] for info in infos}
    if not all(_public(a) for a in addresses):
        raise LinkNotAllowed(f"{label} points at a private or local address; the server only fetches public "
                             "links (setting allow_private_links).")


class _Fetch(threading.local):
    """What the connections of the fetch running on this thread must obey."""
    check_peer = True
    label = ""
    sockets: list


_current = _Fetch()


@cache
def _guarded_classes():
    """urllib3 connection pools whose connections check the peer before a byte is sent, and are
    remembered so the deadline can shut them (a server dripping headers never hits a read timeout)."""
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class Guarded:
        def _new_conn(self):
            sock = super()._new_conn()
            if _current.check_peer and not _public(sock.getpeername()[0]):
                sock.close()
                raise LinkNotAllowed(f"{_current.label} connected to a private or local address.")
            _current.sockets.append(sock)
            return sock

    http = type("GuardedHTTPConnection", (Guarded, HTTPConnection), {})
    https = type("GuardedHTTPSConnection", (Guarded, HTTPSConnection), {})
    return {"http": type("GuardedPool", (HTTPConnectionPool,), {"ConnectionCls": http}),
            "https": type("GuardedTLSPool", (HTTPSConnectionPool,), {"ConnectionCls": https})}


def _shut(sockets: list) -> None:
    for sock in list(sockets):
        try:
            sock.shutdown(socket.SHUT_RDWR)  # wakes a read blocked on it
        except OSError:
            pass


def fetch_link(url: str, settings: Settings, label: str) -> bytes:
    """Download an image link: every hop checked, the peer checked before sending, one deadline for all."""
    import requests
    from requests.adapters import HTTPAdapter

    limit, deadline = settings.max_image_bytes, time.monotonic() + settings.link_deadline
    _current.check_peer, _current.label, _current.sockets = not settings.allow_private_links, label, []
    watchdog = threading.Timer(settings.link_deadline, _shut, args=(_current.sockets,))
    watchdog.daemon = True
    watchdog.start()
    adapter = HTTPAdapter(max_retries=0)
    adapter.poolmanager.pool_classes_by_scheme = _guarded_classes()
    try:
        with requests.Session() as session:
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.trust_env = False  # a proxy from the environment would bypass the guarded connections
            for _ in range(settings.link_max_redirects + 1):
                if time.monotonic() >= deadline:  # name lookups are outside the watchdog's reach
                    raise FetchTimeout(f"{label}: the download took too long.")
                check_host(url, settings, label)
                response = _get(session, url, label, min(settings.link_timeout, deadline - time.monotonic()),
                                settings.link_timeout, deadline)
                with response:
                    if response.is_redirect:
                        url = urljoin(url, response.headers["Location"])
                        continue
                    return _read_image(response, label, limit, deadline)
        raise FetchFailed(f"{label}: more than {settings.link_max_redirects} redirects.")
    finally:
        watchdog.cancel()


def _get(session, url: str, label: str, connect_timeout: float, read_timeout: float, deadline: float):
    import requests

    try:
        response = session.get(url, stream=True, allow_redirects=False, headers={"Accept": "image/*", "User-Agent":
                               "edge-server"}, timeout=(max(connect_timeout, 0.01), read_timeout))
    except requests.RequestException as exc:
        if isinstance(exc, requests.Timeout) or time.monotonic() >= deadline:
            raise FetchTimeout(f"{label}: {urlsplit(url).hostname} did not answer in time.") from None
        raise FetchFailed(f"{label}: could not fetch ({exc.__class__.__name__}).") from None
    if time.monotonic() >= deadline:  # the deadline cut the headers short
        response.close()
        raise FetchTimeout(f"{label}: {urlsplit(url).hostname} did not answer in time.")
    return response


def _read_image(response, label: str, limit: int, deadline: float) -> bytes:
    import requests

    if response.status_code != 200:
        raise FetchFailed(f"{label}: the server answered {response.status_code}.")
    kind = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if not kind.startswith("image/"):
        raise ImageInvalid(f"{label} is {kind or 'of no stated type'}, not an image.")
    if int(response.headers.get("Content-Length") or 0) > limit:
        raise ImageTooLarge(f"{label} is larger than {limit} bytes.")
    body = bytearray()
    try:
        for chunk in response.iter_content(64 * 1024):
            body += chunk
            if len(body) > limit:
                raise ImageTooLarge(f"{label} is larger than {limit} bytes.")
    except requests.RequestException as exc:
        # requests reports a read timeout while streaming as a ConnectionError.
        if isinstance(exc, requests.Timeout) or "timed out" in str(exc).lower() or time.monotonic() >= deadline:
            raise FetchTimeout(f"{label}: the download stalled or took too long.") from None
        raise FetchFailed(f"{label}: the download failed ({exc.__class__.__name__}).") from None
    if time.monotonic() >= deadline:  # the deadline cut it short
        raise FetchTimeout(f"{label}: the download took too long.")
    return bytes(body)


def load_link(link: str, settings: Settings, label: str) -> bytes:
    if not isinstance(link, str) or not link:
        raise ImageInvalid(f"{label} must be a non-empty string.")
    if link[:5].lower() == "data:":
        return decode_data_uri(link, settings, label)
    return fetch_link(link, settings, label)
