"""Start at boot on systemd Linux (a Raspberry Pi): the unit edge-server writes, checked by systemd itself."""
from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge_server import service
from edge_server.service import Service


def parse(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)  # strict: no key given twice
    parser.optionxform = str
    parser.read_string(text)
    return parser


def system_service(data_dir: Path) -> Service:
    return Service(sys.executable, data_dir, "0.0.0.0", 8123, user="nobody")


def test_system_unit_runs_hardened_as_a_user_and_writes_only_its_data_dir(tmp_path):
    data = tmp_path / "data"
    fields = parse(service.unit(system_service(data), user_unit=False))
    run = fields["Service"]
    assert run["User"] == "nobody"
    assert run["ExecStart"] == f"{sys.executable} -m edge_server serve --host 0.0.0.0 --port 8123 --data-dir {data}"
    assert run["Restart"] == "on-failure" and run["NoNewPrivileges"] == "yes"
    assert run["ProtectSystem"] == "strict" and run["ProtectHome"] == "read-only" and run["PrivateTmp"] == "yes"
    assert run["ReadWritePaths"] == f"-{data}" and run["MemoryAccounting"] == "yes"
    assert run["EnvironmentFile"] == f"-{data}/edge-server.env"
    assert fields["Install"]["WantedBy"] == "multi-user.target"
    assert fields["Unit"]["After"] == "network-online.target"


def test_user_unit_keeps_what_a_user_manager_can_enforce(tmp_path):
    fields = parse(service.unit(Service(sys.executable, tmp_path, "0.0.0.0", 8000), user_unit=True))
    assert "User" not in fields["Service"] and "ProtectSystem" not in fields["Service"]
    assert fields["Service"]["NoNewPrivileges"] == "yes" and fields["Install"]["WantedBy"] == "default.target"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed (apt: systemd)")
def test_systemd_analyze_verifies_the_unit(tmp_path):
    for odd in ("a data dir", "the user's", 'a "b"', "a\\b"):  # systemd splits words on these: refused
        with pytest.raises(service.ServiceError, match="spaces, quotes or backslashes"):
            service.unit(system_service(tmp_path / odd), user_unit=False)
    data = tmp_path / "odd%name-data"
    data.mkdir()
    unit_file = tmp_path / "edge-server.service"
    unit_file.write_text(service.unit(system_service(data), user_unit=False))
    out = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit_file)], capture_output=True, text=True)
    problems = [line for line in out.stderr.splitlines() if "nobody" not in line]  # nobody: only for this test
    assert out.returncode == 0 and problems == [], out.stderr
    assert "odd%%name-data" in unit_file.read_text()  # % doubled: systemd reads it as one %
    broken = tmp_path / "broken.service"
    broken.write_text(unit_file.read_text().replace(sys.executable, "/nonexistent/python"))
    out = subprocess.run(["systemd-analyze", "verify", "--man=no", str(broken)], capture_output=True, text=True)
    assert out.returncode != 0  # the check can fail


@pytest.mark.skipif(not Path("/run/systemd/system").is_dir(), reason="systemd is not PID 1 here (a container)")
def test_unit_runs_under_a_transient_systemd_run(tmp_path):
    port = 8000 + os.getpid() % 1000
    args = ["systemd-run", "--wait", "--collect", "-p", "RuntimeMaxSec=20", "-p", "NoNewPrivileges=yes",
            "-p", "ProtectSystem=strict", "-p", f"ReadWritePaths={tmp_path}", sys.executable, "-c",
            f"import subprocess, sys, time, urllib.request; p = subprocess.Popen([sys.executable, '-m', 'edge_server', "
            f"'--port', '{port}', '--data-dir', '{tmp_path}']); time.sleep(8); "
            f"urllib.request.urlopen('http://127.0.0.1:{port}/health'); p.terminate()"]
    assert subprocess.run(args, capture_output=True, text=True, timeout=60).returncode == 0


def test_install_writes_enables_and_uninstall_undoes(tmp_path, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("installing a system unit needs root")
    calls = []
    home = tmp_path / "home"
    etc = tmp_path / "etc"
    monkeypatch.setattr(service, "SYSTEM_UNITS", etc)
    svc = system_service(tmp_path / "home" / ".local" / "share" / "edge-server")
    path = service.install_systemd(svc, False, home, run=lambda cmd, **kw: calls.append(cmd))
    assert path == etc / "edge-server.service" and path.read_text() == service.unit(svc, False)
    assert calls == [["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", "edge-server.service"]]
    for made in (home, home / ".local", home / ".local" / "share", svc.data_dir):  # all the account's, not root's
        assert made.stat().st_uid == 65534, made
    calls.clear()
    assert service.install_systemd(svc, False, home, run=lambda cmd, **kw: calls.append(cmd)) == path  # again: same
    calls.clear()
    assert service.uninstall_systemd(False, home, run=lambda cmd, **kw: calls.append(cmd)) == path
    assert not path.exists() and calls[0] == ["systemctl", "disable", "--now", "edge-server.service"]
    assert service.uninstall_systemd(False, home, run=lambda cmd, **kw: calls.append(cmd)) is None


def test_the_command_refuses_root_and_prints_for_a_named_user(tmp_path, capsys):
    env = {"PATH": os.environ["PATH"]}
    if os.geteuid() == 0:
        assert service.main("print", env=env) == 2
        assert "should not run as root" in capsys.readouterr().err
    assert service.main("print", as_user="nobody", data_dir=tmp_path, port=8200, env=env) == 0
    fields = parse(capsys.readouterr().out)
    assert fields["Service"]["User"] == "nobody" and "--port 8200" in fields["Service"]["ExecStart"]
    assert service.main("print", as_user="no-such-user-here", env=env) == 2
    assert "no user" in capsys.readouterr().err
