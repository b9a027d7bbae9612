"""What a person needs to reach the server from another device: its LAN URLs, the key and a QR code."""
from __future__ import annotations

import array
import fcntl
import ipaddress
import socket
import struct
import sys

SIOCGIFADDR = 0x8915  # Linux and Android: an interface's IPv4 address


def _interface_addresses() -> list[str]:
    """IPv4 addresses of this machine's interfaces (ioctl works in Termux, where netlink is refused)."""
    found = []
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:
        names = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for name in names:
            request = array.array("B", struct.pack("256s", name.encode()[:15]))
            try:
                fcntl.ioctl(s.fileno(), SIOCGIFADDR, request)
            except OSError:
                continue  # no IPv4 address on this interface
            found.append(socket.inet_ntoa(request.tobytes()[20:24]))
    if not found:
        try:
            found = [info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)]
        except OSError:
            pass
    return found


def lan_addresses(host: str) -> list[str]:
    """The addresses other devices can use: the bound one, or every non-loopback one for 0.0.0.0/::."""
    if host not in ("0.0.0.0", "::", ""):
        return [host]
    seen = dict.fromkeys(a for a in _interface_addresses() if not ipaddress.ip_address(a).is_loopback)
    return list(seen) or ["127.0.0.1"]


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def announce(host: str, port: int, api_key: str | None, out=None) -> None:
    """Print the URLs, the key and a QR code of the first URL (with the key) for a phone to scan."""
    out = out or sys.stdout
    urls = [f"http://{_url_host(a)}:{port}/" for a in lan_addresses(host)]
    print("edge-server is reachable at:", file=out)
    for url in urls:
        print(f"  {url}   (API docs: {url}docs)", file=out)
    if api_key is None:
        out.flush()
        return
    print(f"API key: {api_key}   (send 'Authorization: Bearer <key>'; `edge-server key` prints it again)", file=out)
    link = f"{urls[0]}#key={api_key}"
    try:
        import segno
    except ImportError:
        print(f"Open on your phone: {link}", file=out)
    else:
        print(f"Scan to open {link}", file=out)
        segno.make(link, error="l").terminal(out=out, compact=True)
    out.flush()
