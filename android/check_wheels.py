"""Which of edge-server's lite dependencies have binary wheels on a Raspberry Pi and in Termux (run by hand).

    python android/check_wheels.py

Asks PyPI through `pip download --only-binary=:all:` for each platform; "build" means pip would
compile it from source there. Termux's Python 3.13+ takes Android wheels (android_24_arm64_v8a).
"""
from __future__ import annotations

import subprocess
import sys
import tempfile

PACKAGES = ["flask", "werkzeug", "jinja2", "markupsafe", "itsdangerous", "click", "blinker", "waitress",
            "llama-cpp-python", "numpy", "diskcache", "typing-extensions", "huggingface-hub", "hf-xet", "httpx2",
            "pyyaml", "tqdm", "filelock", "fsspec", "packaging", "pillow", "requests", "urllib3",
            "charset-normalizer", "idna", "certifi", "flask-cors", "flask-swagger-ui", "segno", "prometheus-client"]
PLATFORMS = {"Pi OS 64-bit (py3.11)": (["manylinux_2_28_aarch64", "manylinux2014_aarch64"], "3.11"),
             "Pi OS 32-bit (py3.11)": (["manylinux_2_28_armv7l", "manylinux2014_armv7l"], "3.11"),
             "Termux (py3.13)": (["android_24_arm64_v8a"], "3.13")}


def has_wheel(package: str, platforms: list[str], python: str) -> bool:
    with tempfile.TemporaryDirectory() as folder:
        args = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", folder,
                "--python-version", python, package]
        for platform in platforms:
            args[-1:-1] = ["--platform", platform]
        return subprocess.run(args, capture_output=True).returncode == 0


def main() -> None:
    print(f"{'package':<20}" + "".join(f"{name:<24}" for name in PLATFORMS))
    for package in PACKAGES:
        cells = ["wheel" if has_wheel(package, *spec) else "build" for spec in PLATFORMS.values()]
        print(f"{package:<20}" + "".join(f"{cell:<24}" for cell in cells), flush=True)


if __name__ == "__main__":
    main()
