"""The deployment files agree with each other and with the settings.

Docker cannot run on the development machines, so this reads
docker-compose.yml, the Dockerfile, deploy/nginx.conf and .env.example and
checks what `docker compose up` relies on: every service, port, volume,
health check, dependency and variable exists and matches.
"""

from __future__ import annotations

import importlib
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml
from django.conf import settings

ROOT = Path(settings.BASE_DIR)
APP_PORT = "8000"


def read(name: str) -> str:
    return (ROOT / name).read_text()


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(read("docker-compose.yml"))


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def web_services(services: dict) -> list[str]:
    """The services that run the image's own command: the daphne workers."""
    return sorted(n for n, s in services.items() if "build" in s and "command" not in s)


def settings_variables() -> set[str]:
    """Every environment variable the settings read through config.env's helpers."""
    source = "".join(path.read_text() for path in sorted((ROOT / "config").glob("*.py")))
    return set(re.findall(r"env_(?:str|int|bool|float|list)\(\s*\"([A-Z][A-Z0-9_]*)\"", source))


def env_example() -> dict[str, str]:
    """Variables in .env.example, set (VAR=x) or shown commented with their default (# VAR=x)."""
    found = {}
    for line in read(".env.example").splitlines():
        match = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$", line.strip())
        if match:
            found[match.group(1)] = match.group(2)
    return found


def interpolated(text: str) -> set[str]:
    """${VAR}, ${VAR:-default}, ${VAR:?error} in a compose file ($$ escapes excluded)."""
    return set(re.findall(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)", text))


def dockerfile_instruction(name: str) -> list[str]:
    text = read("Dockerfile").replace("\\\n", " ")
    return [line.split(None, 1)[1] for line in text.splitlines() if line.startswith(name + " ")]


def nginx_upstream_servers() -> list[str]:
    block = re.search(r"upstream\s+relay_web\s*\{(.*?)\}", read("deploy/nginx.conf"), re.S).group(1)
    return re.findall(r"^\s*server\s+([^\s;]+)", block, re.M)


def test_services_and_topology(services):
    """PostgreSQL, Redis, a one-shot migrate, two or more web workers and the proxy."""
    assert {"postgres", "redis", "migrate", "proxy"} <= services.keys()
    assert len(web_services(services)) >= 2
    assert services["migrate"]["command"][:3] == ["python", "manage.py", "migrate"]
    assert services["migrate"]["restart"] == "no"


def test_dependencies_exist_and_wait_for_health(services):
    """Every depends_on names a service; service_healthy waits only on services with a health check."""
    for name, service in services.items():
        for target, rule in (service.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on unknown {target}"
            condition = rule["condition"]
            assert condition in ("service_started", "service_healthy", "service_completed_successfully")
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target}, which has no check"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for web in web_services(services):
        assert services[web]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert services["proxy"]["depends_on"][web]["condition"] == "service_healthy"


def test_health_checks(services):
    """Databases answer their own ping; workers are checked on /readyz, the proxy on /healthz."""
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["redis"]["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]
    for web in web_services(services):
        assert f"127.0.0.1:{APP_PORT}/readyz" in " ".join(services[web]["healthcheck"]["test"])
        # docker stop waits for the drain before SIGKILL.
        grace = int(services[web]["stop_grace_period"].rstrip("s"))
        assert grace > settings.DRAIN_GRACE_SECONDS + settings.DRAIN_CLOSE_TIMEOUT_SECONDS
    assert "/healthz" in " ".join(services["proxy"]["healthcheck"]["test"])
    (check,) = dockerfile_instruction("HEALTHCHECK")
    assert f"127.0.0.1:{APP_PORT}/healthz" in check


def test_postgres_is_healthy_only_once_it_listens_on_tcp(services):
    """pg_isready asks over TCP: on first start the image's init server listens on its Unix socket only."""
    kind, command = services["postgres"]["healthcheck"]["test"]
    argv = shlex.split(command) if kind == "CMD-SHELL" else [command]
    assert argv[0] == "pg_isready"
    # Without -h it asks the socket, is told "ready" during initialisation, and migrate races the restart.
    assert "-h" in argv and argv[argv.index("-h") + 1] in ("127.0.0.1", "localhost")


def test_volumes(compose, services):
    """Named volumes are declared; PostgreSQL keeps its data in one."""
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"
    assert "pgdata:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    assert "./deploy/nginx.conf:/etc/nginx/conf.d/default.conf:ro" in services["proxy"]["volumes"]


def test_ports_line_up(services):
    """The image serves on 8000, the workers expose 8000, the proxy publishes nginx's port 80."""
    assert dockerfile_instruction("EXPOSE") == [APP_PORT]
    cmd = json.loads(dockerfile_instruction("CMD")[0])
    assert cmd[cmd.index("--port") + 1] == APP_PORT
    for web in web_services(services):
        assert services[web]["expose"] == [APP_PORT]
        assert "ports" not in services[web], "workers are reached through the proxy only"
    (published,) = services["proxy"]["ports"]
    assert published.endswith(":80")
    assert re.search(r"^\s*listen\s+80;", read("deploy/nginx.conf"), re.M)


def test_proxy_upstreams_are_the_web_services(services):
    """nginx's upstream lists exactly the web workers, on the port they serve."""
    assert sorted(nginx_upstream_servers()) == [f"{web}:{APP_PORT}" for web in web_services(services)]


def test_proxy_forwards_websockets():
    """Upgrade and Connection are passed on, over HTTP/1.1, with long read timeouts."""
    conf = read("deploy/nginx.conf")
    ws = re.search(r"location\s+/ws/\s*\{(.*?)\}", conf, re.S).group(1)
    assert "proxy_http_version 1.1;" in ws
    assert "proxy_set_header Upgrade $http_upgrade;" in ws
    assert "proxy_set_header Connection $connection_upgrade;" in ws
    assert "map $http_upgrade $connection_upgrade" in conf
    timeout = re.search(r"proxy_read_timeout\s+(\d+)s;", ws)
    assert timeout and int(timeout.group(1)) >= 3600


def test_proxy_bounds_request_headers_as_the_workers_do():
    """nginx's client_header_timeout is the workers' default HTTP_HEADER_TIMEOUT_SECONDS (nginx's: 60 s)."""
    match = re.search(r"^\s*client_header_timeout\s+(\d+)s;", read("deploy/nginx.conf"), re.M)
    assert match, "deploy/nginx.conf sets no client_header_timeout"
    default = re.search(r'env_float\("HTTP_HEADER_TIMEOUT_SECONDS", ([\d.]+)', read("config/settings.py"))
    assert float(match.group(1)) == float(default.group(1))


def test_proxy_passes_the_browsers_host_with_its_port():
    """Each proxied location forwards $http_host (localhost:8100), which Django's CSRF check compares."""
    locations = re.findall(r"location\s+[^{]*\{(.*?)\}", read("deploy/nginx.conf"), re.S)
    proxied = [body for body in locations if "proxy_pass" in body]
    assert len(proxied) == 2
    for body in proxied:
        assert re.findall(r"proxy_set_header\s+Host\s+(\S+);", body) == ["$http_host"]


def test_dockerfile_builds_a_small_non_root_image_serving_the_asgi_app():
    """python:3.11-slim, static collected at build, a non-root user, CMD serves config.asgi:application."""
    assert all(image.startswith("python:3.11-slim") for image in dockerfile_instruction("FROM"))
    (user,) = dockerfile_instruction("USER")
    assert user.strip() not in ("root", "0")
    assert any("collectstatic --noinput" in run for run in dockerfile_instruction("RUN"))
    assert "whitenoise.middleware.WhiteNoiseMiddleware" in settings.MIDDLEWARE
    cmd = json.loads(dockerfile_instruction("CMD")[0])
    assert cmd[:3] == ["python", "-m", "realtime.serve"]
    assert cmd[-1] == "config.asgi:application"
    module, attr = cmd[-1].split(":")
    assert callable(getattr(importlib.import_module(module), attr))
    assert importlib.util.find_spec("realtime.serve") is not None
    ignored = read(".dockerignore").split()
    assert {".env", ".venv", ".git"} <= set(ignored)


def test_env_example_matches_the_settings_and_compose(services):
    """Every variable the settings read is in .env.example, and every one there is used."""
    example = env_example()
    read_by_settings = settings_variables()
    compose_text = read("docker-compose.yml")
    used_by_compose = interpolated(compose_text)
    assert read_by_settings, "found no env_* calls in config/"
    assert read_by_settings - example.keys() == set(), "missing from .env.example"
    assert example.keys() - read_by_settings - used_by_compose == set(), "in .env.example but never read"
    assert used_by_compose - example.keys() == set(), "compose uses variables .env.example does not list"
    for name in [*web_services(services), "migrate"]:
        service = services[name]
        assert service["env_file"] == ".env"
        unknown = set(service["environment"]) - read_by_settings
        assert unknown == set(), f"{name} sets variables the settings never read"


def test_readme_lists_every_setting():
    """The README's configuration table names every variable the settings read."""
    readme = read("README.md")
    missing = {name for name in settings_variables() if f"`{name}`" not in readme}
    assert missing == set()
