#!/usr/bin/env python3
"""The docker-compose topology without Docker: `make stack` and the stack tests use it.

    python deploy/stack.py start [--ports 8101,8102] [--proxy-port 8100] [--no-proxy] [--dir .stack]
    python deploy/stack.py status [--dir .stack]
    python deploy/stack.py stop [--dir .stack]

`start` uses the PostgreSQL and Redis named by DATABASE_URL and REDIS_URL
(the local ones that .ci/run starts), creates the database if it is missing,
runs `migrate`, starts one worker per port (`python -m realtime.serve`, the
image's command) and, when nginx is installed, nginx on the proxy port with
deploy/nginx.conf's upstreams pointed at the workers. It returns once every
process answers /readyz (a bounded wait) and prints the addresses as JSON.
Everything runs on 127.0.0.1. Pids, logs and the generated nginx config go
under --dir (gitignored); `stop` ends exactly those processes (SIGTERM, so
the workers drain; SIGKILL after a bounded wait).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as a script (`python deploy/stack.py`): the project's root is not on the path by itself.
sys.path.insert(0, str(ROOT))
from realtime.launcher import Worker, http_get  # noqa: E402 - needs the root on the path first

NGINX_TEMPLATE = ROOT / "deploy" / "nginx.conf"
STATE = "stack.json"


# --- processes ----------------------------------------------------------------------
def start_time(pid: int) -> str | None:
    """The process's start time (jiffies since boot), to tell it from a later one with the same pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # exited, waiting to be reaped: gone for our purposes
        return None
    return fields[19]


def alive(entry: dict) -> bool:
    return start_time(entry["pid"]) == entry["started"]


def spawn(name: str, argv: list[str], port: int, env: dict[str, str], directory: Path) -> tuple[Worker, dict]:
    """Start one process (realtime.launcher) and its entry in the state file; it outlives this command."""
    # Its own process group, so `stop` (a later command, by pid) can end it and its children.
    worker = Worker(
        argv=argv, name=name, port=port, env=env, log_path=directory / f"{name}.log", own_session=True
    )
    worker.spawn()
    for _ in range(100):  # /proc is written by the time Popen returns; bounded anyway
        started = start_time(worker.pid)
        if started:
            break
    entry = {"name": name, "pid": worker.pid, "started": started, "log": str(worker.log_path)}
    return worker, entry | {"port": port, "url": worker.url}


def terminate(entries: list[dict], timeout: float) -> list[str]:
    """SIGTERM each (a worker drains), SIGKILL what is left after `timeout`; returns the names killed."""
    for entry in entries:
        if alive(entry):
            os.kill(entry["pid"], signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(alive(e) for e in entries) and time.monotonic() < deadline:
        time.sleep(0.05)
    killed = []
    for entry in entries:
        if alive(entry):
            os.killpg(entry["pid"], signal.SIGKILL)
            killed.append(entry["name"])
    return killed


def http_status(url: str, timeout: float = 2.0) -> int | None:
    try:
        return http_get(url, timeout)[0]
    except OSError:
        return None


# --- configuration --------------------------------------------------------------------
def stack_env(directory: Path) -> dict[str, str]:
    env = dict(os.environ)
    if not env.get("REDIS_URL") and not env.get("REDIS_SENTINELS"):
        sys.exit("stack: set REDIS_URL (the workers share groups through Redis)")
    if not env.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
        sys.exit("stack: set DATABASE_URL to a PostgreSQL database")
    if not env.get("DJANGO_SECRET_KEY"):
        # One key for every worker, kept across restarts so sessions stay valid.
        key_file = directory / "secret_key"
        if not key_file.exists():
            key_file.write_text(secrets.token_urlsafe(50))
            key_file.chmod(0o600)
        env["DJANGO_SECRET_KEY"] = key_file.read_text().strip()
    # The image collects static files at build; here the workers serve them from
    # the app folders instead, so the pages' scripts (and their sockets) load.
    env.setdefault("WHITENOISE_USE_FINDERS", "true")
    # nginx reaches the workers from loopback: its X-Forwarded-For names the client
    # (the login throttle's per-address count).
    env.setdefault("TRUSTED_PROXIES", "127.0.0.1,::1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def ensure_database(url: str) -> None:
    """Create the database named in DATABASE_URL when the server has no such database."""
    import psycopg
    from psycopg import sql

    try:
        psycopg.connect(url, connect_timeout=5).close()
        return
    except psycopg.OperationalError as exc:
        if "does not exist" not in str(exc):
            raise
    name = url.rsplit("/", 1)[1].split("?", 1)[0]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", connect_timeout=5, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def find_nginx() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def local_nginx_conf(template: str, ports: list[int], listen: int) -> str:
    """deploy/nginx.conf with its upstream servers and listen address moved to loopback."""
    servers = "".join(f"    server 127.0.0.1:{port} max_fails=1 fail_timeout=5s;\n" for port in ports)
    text, upstreams = re.subn(r"(?m)(^[ \t]*server[ \t]+web\w*:\d+[^;]*;\n)+", servers, template, count=1)
    text, listens = re.subn(r"(?m)^([ \t]*)listen[ \t]+80;", rf"\1listen 127.0.0.1:{listen};", text)
    if (upstreams, listens) != (1, 1):
        raise SystemExit("stack: deploy/nginx.conf has no `server webN:PORT` upstream or `listen 80;`")
    return text


def nginx_main_conf(directory: Path) -> str:
    temp = directory / "nginx-temp"
    paths = "".join(
        f"    {kind}_temp_path {temp / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        "# Generated by deploy/stack.py; the server blocks are deploy/nginx.conf's.\n"
        "worker_processes 1;\n"
        "daemon off;\n"
        f"pid {directory / 'nginx.pid'};\n"
        f"error_log {directory / 'nginx-error.log'} warn;\n"
        "events { worker_connections 1024; }\n"
        "http {\n"
        f"    access_log {directory / 'nginx-access.log'};\n"
        f"{paths}"
        f"    include {directory / 'relay-nginx.conf'};\n"
        "}\n"
    )


# --- commands ---------------------------------------------------------------------------
def load_state(directory: Path) -> dict | None:
    path = directory / STATE
    return json.loads(path.read_text()) if path.exists() else None


def entries_of(state: dict) -> list[dict]:
    return [*state["workers"], *([state["proxy"]] if state.get("proxy") else [])]


def cmd_start(args: argparse.Namespace) -> int:
    directory = args.dir
    directory.mkdir(parents=True, exist_ok=True)
    previous = load_state(directory)
    if previous and any(alive(e) for e in entries_of(previous)):
        print(f"stack: already running from {directory}; run `stop` first", file=sys.stderr)
        return 1
    env = stack_env(directory)
    ensure_database(env["DATABASE_URL"])
    if not args.no_migrate:
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, check=True, timeout=300
        )
    state: dict = {"dir": str(directory), "workers": [], "proxy": None}
    started: list[Worker] = []
    for port in args.ports:
        argv = [sys.executable, "-m", "realtime.serve", "--bind", "127.0.0.1", "--port", str(port)]
        argv += ["--proxy-headers", "config.asgi:application"]
        worker, entry = spawn(f"worker-{port}", argv, port, env, directory)
        started.append(worker)
        state["workers"].append(entry)
    nginx = None if args.no_proxy else find_nginx()
    if nginx:
        (directory / "nginx-temp").mkdir(exist_ok=True)
        conf = local_nginx_conf(NGINX_TEMPLATE.read_text(), args.ports, args.proxy_port)
        (directory / "relay-nginx.conf").write_text(conf)
        (directory / "nginx.conf").write_text(nginx_main_conf(directory))
        argv = [nginx, "-p", str(directory), "-e", str(directory / "nginx-error.log")]
        argv += ["-c", str(directory / "nginx.conf")]
        proxy, state["proxy"] = spawn("nginx", argv, args.proxy_port, env, directory)
        started.append(proxy)
    elif not args.no_proxy:
        print("stack: nginx is not installed; serving from the workers directly", file=sys.stderr)
    (directory / STATE).write_text(json.dumps(state, indent=2))
    try:
        Worker.wait_all_ready(started, args.timeout)  # /readyz; the proxy's is a worker's
    except RuntimeError as exc:
        print(f"stack: {exc}", file=sys.stderr)
        terminate(entries_of(state), timeout=10)
        return 1
    print(json.dumps(summary(state)))
    return 0


def summary(state: dict) -> dict:
    proxy = state.get("proxy")
    return {
        "dir": state["dir"],
        "workers": [w["url"] for w in state["workers"]],
        "proxy": proxy["url"] if proxy else None,
        "url": proxy["url"] if proxy else state["workers"][0]["url"],
    }


def cmd_status(args: argparse.Namespace) -> int:
    state = load_state(args.dir)
    if not state:
        print(json.dumps({"running": False}))
        return 3
    report = summary(state)
    report["processes"] = [
        {"name": e["name"], "pid": e["pid"], "alive": alive(e), "readyz": http_status(e["url"] + "/readyz")}
        for e in entries_of(state)
    ]
    report["running"] = all(p["alive"] and p["readyz"] == 200 for p in report["processes"])
    print(json.dumps(report, indent=2))
    return 0 if report["running"] else 3


def cmd_stop(args: argparse.Namespace) -> int:
    state = load_state(args.dir)
    if not state:
        print("stack: nothing to stop", file=sys.stderr)
        return 0
    # The proxy first, then the workers: they drain, closing their sockets with 1012.
    killed = terminate([state["proxy"]] if state.get("proxy") else [], timeout=args.timeout)
    killed += terminate(state["workers"], timeout=args.timeout)
    (args.dir / STATE).unlink()
    if killed:
        print(f"stack: killed after {args.timeout:.0f}s: {', '.join(killed)}", file=sys.stderr)
    return 0


def ports(value: str) -> list[int]:
    return [int(p) for p in value.split(",") if p.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("start", "stop", "status"))
    parser.add_argument("--dir", type=Path, default=Path(os.environ.get("STACK_DIR", ROOT / ".stack")))
    parser.add_argument("--ports", type=ports, default=ports(os.environ.get("STACK_PORTS", "8101,8102")))
    parser.add_argument("--proxy-port", type=int, default=int(os.environ.get("STACK_PROXY_PORT", "8100")))
    parser.add_argument("--no-proxy", action="store_true", help="workers only, even if nginx is installed")
    parser.add_argument("--no-migrate", action="store_true")
    parser.add_argument("--timeout", type=float, default=60.0, help="bound on start-up and on stop")
    args = parser.parse_args(argv)
    args.dir = args.dir.resolve()
    return {"start": cmd_start, "stop": cmd_stop, "status": cmd_status}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
