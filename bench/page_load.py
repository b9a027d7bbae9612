"""The web app's page load on a phone (run by hand): bytes, requests and time to interactive.

    python bench/page_load.py [--runs 5] [--cpu 4] [--gguf model.gguf]

Starts `python -m edge_server` (with the given model launched, so the chat screen loads a chat),
then opens / in Debian's chromium as a 390x844 touch phone with the CPU slowed down `--cpu` times
(Chrome's throttling; 4x is roughly a mid-range phone). "Interactive" is when the page's boot
script has listed the models and shown a screen (its `edge-ready` performance mark). Cold loads use
a fresh browser context each run (empty cache); warm loads reload in the same one (ETag, 304s).
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
from pathlib import Path

import requests
from _common import start_server

PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True, "device_scale_factor": 3}


def start(gguf: str | None):
    data = Path(tempfile.mkdtemp(prefix="edge-page-"))
    if gguf:
        (data / "models.json").write_text(json.dumps({"local": {"path": str(Path(gguf).resolve()), "n_ctx": 2048}}))
    proc, url = start_server(data)
    if gguf:
        requests.post(f"{url}/model/launch", json={"model_name": "local"}, timeout=300).raise_for_status()
        requests.post(f"{url}/generate/fromtext", json={"model_name": "local", "prompt": "Hello", "max_new_tokens": 32},
                      timeout=300).raise_for_status()  # a chat with one exchange to load
    return proc, url


def load(page, url: str, cpu: float, reload: bool) -> dict:
    cdp = page.context.new_cdp_session(page)
    cdp.send("Emulation.setCPUThrottlingRate", {"rate": cpu})
    cdp.send("Network.enable")
    sizes: dict[str, int] = {}
    cdp.on("Network.loadingFinished", lambda e: sizes.__setitem__(e["requestId"], e["encodedDataLength"]))
    if reload:
        page.reload()
    else:
        page.goto(f"{url}/")
    page.wait_for_selector("body[data-ready]")
    ready = page.evaluate("performance.getEntriesByName('edge-ready')[0].startTime")
    nav = page.evaluate("JSON.stringify(performance.getEntriesByType('navigation')[0])")
    cdp.detach()
    return {"ready_ms": ready, "dcl_ms": json.loads(nav)["domContentLoadedEventEnd"], "bytes": sum(sizes.values()),
            "requests": len(sizes)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cpu", type=float, default=4.0, help="CPU slow-down factor (default 4)")
    parser.add_argument("--gguf", help="a model file to launch first, so a chat is loaded too")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    files = sorted((Path(__file__).resolve().parent.parent / "edge_server" / "web").rglob("*"))
    on_disk = {p.name: p.stat().st_size for p in files if p.is_file() and not p.name.endswith(".txt")}
    proc, url = start(args.gguf)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
            cold, warm = [], []
            for _ in range(args.runs):
                context = browser.new_context(**PHONE)
                page = context.new_page()
                cold.append(load(page, url, args.cpu, reload=False))
                warm.append(load(page, url, args.cpu, reload=True))
                context.close()
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(f"page files on disk: {sum(on_disk.values()) / 1024:.1f} KiB in {len(on_disk)} files "
          f"(largest: {', '.join(f'{n} {s / 1024:.0f} KiB' for n, s in sorted(on_disk.items(), key=lambda i: -i[1])[:3])})")
    for name, runs in (("cold", cold), ("warm", warm)):
        print(f"{name} load at {args.cpu:g}x CPU throttling (median of {len(runs)}): "
              f"interactive {statistics.median(r['ready_ms'] for r in runs):.0f} ms, "
              f"DOMContentLoaded {statistics.median(r['dcl_ms'] for r in runs):.0f} ms, "
              f"{statistics.median(r['bytes'] for r in runs) / 1024:.1f} KiB over the wire in "
              f"{statistics.median(r['requests'] for r in runs):.0f} requests")


if __name__ == "__main__":
    main()
