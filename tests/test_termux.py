"""android/install.sh and the service it installs, run for real under a fake Termux: a temporary $PREFIX and
$HOME, TERMUX_VERSION set, and stub pkg, pip, uname, sv and termux-wake-lock/unlock that record their calls."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
STUBS = ("pkg", "pip", "uname", "sv", "svlogd", "termux-wake-lock", "termux-wake-unlock")


class FakeTermux:
    def __init__(self, tmp: Path):
        self.prefix, self.home, self.log = tmp / "usr", tmp / "home", tmp / "calls.log"
        (self.prefix / "bin").mkdir(parents=True)
        (self.prefix / "tmp").mkdir()
        (self.prefix / "etc").mkdir()
        self.home.mkdir()
        for name in STUBS:
            stub = self.prefix / "bin" / name
            answer = 'echo aarch64' if name == "uname" else ""
            stub.write_text(f'#!/bin/sh\necho "{name} $* | CMAKE_ARGS=${{CMAKE_ARGS:-}}" >> "$CALLS"\n{answer}\n')
            stub.chmod(0o755)
        os.symlink("/bin/sh", self.prefix / "bin" / "sh")  # the scripts' #! line points into $PREFIX/bin
        self.port = free_port()
        self.env = {"PREFIX": str(self.prefix), "HOME": str(self.home), "TERMUX_VERSION": "0.118.1",
                    "TMPDIR": str(self.prefix / "tmp"), "CALLS": str(self.log), "EDGE_PORT": str(self.port),
                    "PATH": f"{self.prefix / 'bin'}:{Path(sys.executable).parent}:/usr/bin:/bin"}

    def run(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=120, **kw)

    def calls(self, name: str) -> list[str]:
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return [line[len(name) + 1:] for line in lines if line.startswith(name + " ")]

    @property
    def service(self) -> Path:
        return self.prefix / "var" / "service" / "edge-server"

    @property
    def boot(self) -> Path:
        return self.home / ".termux" / "boot" / "edge-server"


@pytest.fixture
def termux(tmp_path):
    return FakeTermux(tmp_path)


def test_install_script_installs_builds_and_enables_the_service(termux):
    out = termux.run("sh", "android/install.sh")
    assert out.returncode == 0, out.stdout + out.stderr
    packages = termux.calls("pkg")[0].split(" | ")[0].split()
    assert packages[:2] == ["install", "-y"]
    assert {"python", "python-pip", "clang", "cmake", "ninja", "libandroid-spawn", "python-numpy", "python-pillow",
            "termux-services"} <= set(packages)
    pips = termux.calls("pip")
    hub, requirements, own = pips
    assert hub.startswith("install --no-deps huggingface-hub>=")  # without hf-xet, which needs Rust
    assert requirements.startswith("install -r ")
    assert own.startswith("install --no-deps -e .")
    assert requirements.endswith("CMAKE_ARGS=-DGGML_OPENMP=OFF -DGGML_RPC=on")  # the build flags reach pip
    listed = subprocess.run([sys.executable, "android/requirements.py"], cwd=ROOT, capture_output=True,
                            text=True).stdout.split("\n")
    assert any(line.startswith("llama-cpp-python") for line in listed)
    assert not any(line.lower().startswith(("hf-xet", "hf_xet", "huggingface")) for line in listed)

    for path in (termux.service / "run", termux.service / "finish", termux.service / "log" / "run", termux.boot):
        assert path.is_file() and os.access(path, os.X_OK), path
        assert path.read_text().startswith(f"#!{termux.prefix}/bin/sh\n")
    assert not (termux.service / "down").exists()  # enabled
    assert termux.calls("sv")[-1].startswith(f"up {termux.service} ")
    boot = termux.boot.read_text()
    assert "termux-wake-lock" in boot and f". {termux.prefix}/etc/profile.d/start-services.sh" in boot
    run = (termux.service / "run").read_text()
    assert f"--port {termux.port}" in run and "--host 0.0.0.0" in run
    assert f"--data-dir {termux.home}/.local/share/edge-server" in run

    # Again (an upgrade): the same files, nothing doubled.
    before = {p: p.read_text() for p in termux.service.rglob("*") if p.is_file()}
    out = termux.run("sh", "android/install.sh")
    assert out.returncode == 0, out.stderr
    assert {p: p.read_text() for p in termux.service.rglob("*") if p.is_file()} == before
    assert len(termux.calls("pip")) == 6


def test_the_service_runs_holds_a_wake_lock_and_logs(termux):
    assert termux.run(sys.executable, "-m", "edge_server", "service", "install").returncode == 0
    data = termux.home / ".local" / "share" / "edge-server"
    (data / "edge-server.env").write_text("EDGE_QUEUE_SIZE=3\n")
    server = subprocess.Popen([str(termux.service / "run")], env=termux.env, cwd=termux.service,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 60
        while True:
            try:
                assert requests.get(f"http://127.0.0.1:{termux.port}/health", timeout=1).json()["status"] == "ok"
                break
            except requests.ConnectionError:
                assert server.poll() is None and time.time() < deadline, server.stdout.read().decode()
                time.sleep(0.2)
        assert termux.calls("termux-wake-lock") == [" | CMAKE_ARGS="]  # held while it serves
        assert (data / "api_key").exists()  # serving the LAN: a key was made
    finally:
        server.terminate()
        server.wait(30)
    assert termux.run(str(termux.service / "finish")).returncode == 0
    assert len(termux.calls("termux-wake-unlock")) == 1
    assert termux.run(str(termux.service / "log" / "run")).returncode == 0
    assert (data / "logs").is_dir() and termux.calls("svlogd")[0].startswith(f"-tt {data}/logs")


def test_uninstall_removes_the_service_and_the_boot_script(termux):
    assert termux.run(sys.executable, "-m", "edge_server", "service", "install").returncode == 0
    out = termux.run(sys.executable, "-m", "edge_server", "service", "uninstall")
    assert out.returncode == 0 and "removed" in out.stdout
    assert not termux.service.exists() and not termux.boot.exists()
    assert termux.calls("sv")[-1].startswith(f"down {termux.service} ")


def test_install_script_refuses_outside_termux(tmp_path):
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    out = subprocess.run(["sh", "android/install.sh"], env=env, cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 1 and "Termux" in out.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None and not os.environ.get("CI"),
                    reason="shellcheck is not installed (apt-get install shellcheck; tests/setup.sh does as root)")
def test_shellcheck_passes_on_every_shell_script(termux):
    assert termux.run(sys.executable, "-m", "edge_server", "service", "install").returncode == 0
    scripts = [ROOT / "android" / "install.sh", ROOT / "tests" / "setup.sh", ROOT / ".ci" / "run",
               termux.service / "run", termux.service / "finish", termux.service / "log" / "run", termux.boot]
    out = subprocess.run(["shellcheck", "--shell=sh", *map(str, scripts[:2]), *map(str, scripts[3:])],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout
    out = subprocess.run(["shellcheck", str(scripts[2])], capture_output=True, text=True)  # bash
    assert out.returncode == 0, out.stdout
