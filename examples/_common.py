"""What every example shares: --url and --key, a session that sends the key, and error printing."""
from __future__ import annotations

import argparse
import json
import os
import sys

import requests


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--url", default=os.environ.get("EDGE_URL", "http://127.0.0.1:8000"), help="the server")
    p.add_argument("--key", default=os.environ.get("EDGE_API_KEY"), help="API key (`edge-server key` prints it)")
    return p


def session(args) -> requests.Session:
    s = requests.Session()
    if args.key:
        s.headers["Authorization"] = f"Bearer {args.key}"
    return s


def show(response: requests.Response) -> None:
    """Print a JSON answer, or the error's detail and code and exit 1."""
    if not response.ok:
        try:
            error = response.json()
            print(f"error {response.status_code} {error.get('code')}: {error.get('detail')}", file=sys.stderr)
        except ValueError:
            print(f"error {response.status_code}: {response.text}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(response.json(), indent=2, ensure_ascii=False))


def stream(response: requests.Response) -> None:
    """Print a streamed answer as it arrives."""
    if not response.ok:
        show(response)
    for piece in response.iter_content(chunk_size=None, decode_unicode=True):
        print(piece, end="", flush=True)
    print()
