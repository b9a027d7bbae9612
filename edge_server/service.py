"""Start at boot and restart on failure: a systemd unit (Raspberry Pi OS and other systemd Linux) or, in
Termux, a termux-services (runit) service that Termux:Boot starts, holding a wake lock while it serves.

`edge-server service print|install|uninstall|status [--user]`. The service runs this same Python
(`python -m edge_server`) with host, port and data dir fixed at install time; anything else goes in
`<data-dir>/edge-server.env` (EDGE_* lines), which both kinds of service read at start.
"""
from __future__ import annotations

import os
import pwd
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

NAME = "edge-server"
ENV_FILE = "edge-server.env"
SYSTEM_UNITS = Path("/etc/systemd/system")


class ServiceError(Exception):
    """Something the user must fix; the message says what."""


def in_termux(env=os.environ) -> bool:
    return bool(env.get("TERMUX_VERSION")) or "/com.termux/" in env.get("PREFIX", "")


@dataclass(frozen=True)
class Service:
    """What the service runs, and as whom."""

    python: str
    data_dir: Path
    host: str = "0.0.0.0"
    port: int = 8000
    user: str | None = None  # the account a system unit runs as (None: the user manager's own)

    def command(self) -> list[str]:
        return [self.python, "-m", "edge_server", "serve", "--host", self.host, "--port", str(self.port),
                "--data-dir", str(self.data_dir)]


# --- systemd ----------------------------------------------------------------------------------------------

def _systemd_word(word: str) -> str:
    """Quote one ExecStart word the way systemd reads it (and double %, its specifier sign)."""
    word = word.replace("%", "%%")
    if any(c.isspace() or c in "\"'\\;" for c in word):
        return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return word


def unit(service: Service, user_unit: bool) -> str:
    """The unit file. System units run as an unprivileged account in a read-only system, writing only the
    data dir; user units (systemd --user) keep only what a user manager can enforce without user namespaces."""
    data = str(service.data_dir).replace("%", "%%")  # % starts a systemd specifier
    if any(c.isspace() or c in "\"'\\" for c in data):
        raise ServiceError(f"The data dir {str(service.data_dir)!r} has spaces, quotes or backslashes, which "
                           "systemd's settings split on; pass --data-dir with a plainer path.")
    lines = [
        "[Unit]",
        "Description=edge-server: language models for the devices on this network",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=simple",
    ]
    if not user_unit:
        lines.append(f"User={service.user}")
    lines += [
        f"ExecStart={' '.join(_systemd_word(w) for w in service.command())}",
        f"EnvironmentFile=-{data}/{ENV_FILE}",
        f"Environment=PYTHONUNBUFFERED=1 HF_HOME={data}/huggingface",
        f"WorkingDirectory={data}",
        "Restart=on-failure",
        "RestartSec=5",
        "TimeoutStopSec=30",
        "NoNewPrivileges=yes",
        "MemoryAccounting=yes",
        "CPUAccounting=yes",
    ]
    if not user_unit:
        lines += [
            "ProtectSystem=strict",
            "ProtectHome=read-only",  # the virtual environment is usually under /home
            f"ReadWritePaths=-{data}",  # "-": a data dir on a drive not yet mounted does not stop the boot
            "PrivateTmp=yes",
            "ProtectKernelTunables=yes",
            "ProtectKernelModules=yes",
            "ProtectControlGroups=yes",
            "RestrictSUIDSGID=yes",
            "LockPersonality=yes",
        ]
    lines += ["", "[Install]", f"WantedBy={'default.target' if user_unit else 'multi-user.target'}", ""]
    return "\n".join(lines)


def unit_path(user_unit: bool, home: Path) -> Path:
    if user_unit:
        return home / ".config" / "systemd" / "user" / f"{NAME}.service"
    return SYSTEM_UNITS / f"{NAME}.service"


def account(user_unit: bool, as_user: str | None) -> pwd.struct_passwd:
    """Who runs the server: yourself for --user; for a system unit the named user, else the one behind sudo."""
    if user_unit:
        return pwd.getpwuid(os.getuid())
    name = as_user or os.environ.get("SUDO_USER") or pwd.getpwuid(os.getuid()).pw_name
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise ServiceError(f"There is no user {name!r}.") from None
    if entry.pw_uid == 0:
        raise ServiceError("The server should not run as root: run `sudo edge-server service install` from your "
                           "own account, or pass --as-user NAME.")
    return entry


def _systemctl(user_unit: bool, *args: str) -> list[str]:
    return ["systemctl", *(["--user"] if user_unit else []), *args]


def install_systemd(service: Service, user_unit: bool, home: Path, run=subprocess.run) -> Path:
    if not user_unit and os.geteuid() != 0:
        raise ServiceError("Installing a system unit needs root: `sudo $(which edge-server) service install`, "
                           "or `edge-server service install --user` for your own user manager.")
    text = unit(service, user_unit)
    path = unit_path(user_unit, home)
    path.parent.mkdir(parents=True, exist_ok=True)
    if user_unit:
        service.data_dir.mkdir(parents=True, exist_ok=True)
    else:
        _make_dirs_for(service.data_dir, pwd.getpwnam(service.user))
    path.write_text(text)
    run(_systemctl(user_unit, "daemon-reload"), check=True)
    run(_systemctl(user_unit, "enable", "--now", f"{NAME}.service"), check=True)
    if user_unit:  # without lingering a user manager (and the server) starts only when the user logs in
        run(["loginctl", "enable-linger", pwd.getpwuid(os.getuid()).pw_name], check=False)
    return path


def _make_dirs_for(folder: Path, owner: pwd.struct_passwd) -> None:
    """Create `folder` and any missing parents owned by `owner` (as root, mkdir would leave ~/.local root's)."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir()
        os.chown(path, owner.pw_uid, owner.pw_gid)
    if not missing:
        os.chown(folder, owner.pw_uid, owner.pw_gid)


def uninstall_systemd(user_unit: bool, home: Path, run=subprocess.run) -> Path | None:
    path = unit_path(user_unit, home)
    if not path.exists():
        return None
    run(_systemctl(user_unit, "disable", "--now", f"{NAME}.service"), check=False)
    path.unlink()
    run(_systemctl(user_unit, "daemon-reload"), check=False)
    return path


# --- Termux -----------------------------------------------------------------------------------------------

def termux_files(service: Service, prefix: Path, home: Path) -> dict[Path, str]:
    """The runit service (run, finish, log/run) under $PREFIX/var/service and the Termux:Boot script."""
    sh = f"#!{prefix}/bin/sh"
    data = shlex.quote(str(service.data_dir))
    env_file = shlex.quote(str(service.data_dir / ENV_FILE))
    folder = prefix / "var" / "service" / NAME
    return {
        folder / "run": f"""{sh}
# edge-server under runit (termux-services): restarted if it stops; a wake lock keeps Android from pausing it.
exec 2>&1
termux-wake-lock
mkdir -p {data}
# shellcheck source=/dev/null
if [ -f {env_file} ]; then set -a; . {env_file}; set +a; fi
exec {shlex.join(service.command())}
""",
        folder / "finish": f"""{sh}
# The server stopped: let the phone sleep again.
termux-wake-unlock
""",
        folder / "log" / "run": f"""{sh}
# The server's output, rotated by svlogd, in the data dir.
mkdir -p {data}/logs
exec svlogd -tt {data}/logs
""",
        home / ".termux" / "boot" / NAME: f"""{sh}
# Termux:Boot runs this after the phone starts: hold a wake lock and start Termux's services
# (termux-services' runsvdir), edge-server among them.
termux-wake-lock
# shellcheck source=/dev/null
. {prefix}/etc/profile.d/start-services.sh
""",
    }


def install_termux(service: Service, prefix: Path, home: Path, run=subprocess.run) -> list[Path]:
    written = []
    for path, text in termux_files(service, prefix, home).items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o755)
        written.append(path)
    service.data_dir.mkdir(parents=True, exist_ok=True)
    down = prefix / "var" / "service" / NAME / "down"
    down.unlink(missing_ok=True)  # enabled: runit starts it with the other services
    run(["sv", "up", str(down.parent)], check=False)  # now, if runsvdir already runs (after a Termux restart it will)
    return written


def uninstall_termux(prefix: Path, home: Path, run=subprocess.run) -> list[Path]:
    run(["sv", "down", str(prefix / "var" / "service" / NAME)], check=False)
    removed = []
    for path in (home / ".termux" / "boot" / NAME, prefix / "var" / "service" / NAME):
        if path.is_dir():
            shutil.rmtree(path)
            removed.append(path)
        elif path.exists():
            path.unlink()
            removed.append(path)
    return removed


# --- the command ------------------------------------------------------------------------------------------

def main(action: str, *, user_unit: bool = False, host: str = "0.0.0.0", port: int = 8000,
         data_dir: Path | None = None, as_user: str | None = None, env=os.environ, run=subprocess.run) -> int:
    """`edge-server service ACTION` (print, install, uninstall, status); returns the exit status.

    `data_dir` None: the default data dir of the account that runs the server."""
    try:
        if in_termux(env):
            prefix, home = Path(env.get("PREFIX", "/data/data/com.termux/files/usr")), Path(env["HOME"])
            service = Service(sys.executable, (data_dir or home / ".local" / "share" / NAME).resolve(), host, port)
            return _termux(action, service, prefix, home, run)
        entry = account(user_unit, as_user)
        home = Path(entry.pw_dir)
        service = Service(sys.executable, (data_dir or home / ".local" / "share" / NAME).resolve(), host, port,
                          None if user_unit else entry.pw_name)
        return _systemd(action, service, user_unit, home, run)
    except ServiceError as exc:
        print(f"edge-server: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(f"edge-server: {shlex.join(exc.cmd)} failed (exit {exc.returncode})", file=sys.stderr)
        return 1


def _termux(action: str, service: Service, prefix: Path, home: Path, run) -> int:
    if action == "print":
        for path, text in termux_files(service, prefix, home).items():
            print(f"# {path}\n{text}")
    elif action == "install":
        for path in install_termux(service, prefix, home, run):
            print(f"wrote {path}")
        print(f"Enabled. It starts with Termux's services (after installing termux-services, restart Termux once) "
              f"and at boot through the Termux:Boot app (open it once). Logs: {service.data_dir}/logs/current")
    elif action == "uninstall":
        for path in uninstall_termux(prefix, home, run):
            print(f"removed {path}")
    else:
        return run(["sv", "status", str(prefix / "var" / "service" / NAME)], check=False).returncode
    return 0


def _systemd(action: str, service: Service, user_unit: bool, home: Path, run) -> int:
    if action == "print":
        print(unit(service, user_unit), end="")
    elif action == "install":
        path = install_systemd(service, user_unit, home, run)
        print(f"wrote {path}; enabled and started. Logs: journalctl {'--user ' if user_unit else ''}-u {NAME}")
    elif action == "uninstall":
        path = uninstall_systemd(user_unit, home, run)
        print(f"removed {path}" if path else "no unit was installed")
    else:
        return run(_systemctl(user_unit, "status", f"{NAME}.service"), check=False).returncode
    return 0
