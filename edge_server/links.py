"""Image links: data: URIs decoded, http(s) links fetched with limits and a private-address guard."""
from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import socket
import time
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


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_host(url: str, settings: Settings, label: str) -> None:
    """Refuse links whose host resolves to loopback, private, link-local or multicast addresses."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LinkNotAllowed(f"{label} must be an http:// or https:// URL.")
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


def _peer_is_public(response) -> bool:
    """Check the address actually connected to (a DNS answer can change between check and connect)."""
    try:
        return _public(response.raw.connection.sock.getpeername()[0])
    except (AttributeError, OSError, ValueError):
        return True  # no socket to inspect (already released): the resolve check stands


def fetch_link(url: str, settings: Settings, label: str) -> bytes:
    """Download an image link: every redirect hop checked, the body cut at the byte limit."""
    import requests

    limit, deadline = settings.max_image_bytes, time.monotonic() + settings.link_timeout * 3
    with requests.Session() as session:
        for _ in range(settings.link_max_redirects + 1):
            check_host(url, settings, label)
            try:
                response = session.get(url, stream=True, allow_redirects=False,
                                       timeout=(settings.link_timeout, settings.link_timeout),
                                       headers={"Accept": "image/*", "User-Agent": "edge-server"})
            except requests.Timeout:
                raise FetchTimeout(f"{label}: {urlsplit(url).hostname} did not answer in time.") from None
            except requests.RequestException as exc:
                raise FetchFailed(f"{label}: could not fetch ({exc.__class__.__name__}).") from None
            with response:
                if not settings.allow_private_links and not _peer_is_public(response):
                    raise LinkNotAllowed(f"{label} connected to a private or local address.")
                if response.is_redirect:
                    url = urljoin(url, response.headers["Location"])
                    continue
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
                        if time.monotonic() > deadline:
                            raise FetchTimeout(f"{label}: the download took too long.")
                except requests.RequestException as exc:
                    # requests reports a read timeout while streaming as a ConnectionError.
                    if isinstance(exc, requests.Timeout) or "timed out" in str(exc).lower():
                        raise FetchTimeout(f"{label}: the download stalled.") from None
                    raise FetchFailed(f"{label}: the download failed ({exc.__class__.__name__}).") from None
                return bytes(body)
    raise FetchFailed(f"{label}: more than {settings.link_max_redirects} redirects.")


def load_link(link: str, settings: Settings, label: str) -> bytes:
    if not isinstance(link, str) or not link:
        raise ImageInvalid(f"{label} must be a non-empty string.")
    if link[:5].lower() == "data:":
        return decode_data_uri(link, settings, label)
    return fetch_link(link, settings, label)
