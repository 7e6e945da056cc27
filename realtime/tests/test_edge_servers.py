"""What a hostile client meets at the edge, under every server of realtime.launcher.SERVERS.

Issue 14 items 5, 6 and 7: secrets in URLs never reach a server's log; a
connection that does not finish its request headers within
HTTP_HEADER_TIMEOUT_SECONDS (2 s here) is closed, however it trickles; and
/metrics is refused to a request whose loopback address came from a header.
One process per server, started together and shared by the module's tests.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
import uuid

import pytest
from channels.db import database_sync_to_async

from realtime.launcher import SERVERS, http_get
from testsupport.auth import make_token
from testsupport.faults import poll
from testsupport.processes import server_env
from testsupport.servers import every_server, handshake, token_socket

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]

HEADER_TIMEOUT = 2.0
# A bound on a hang, not a measure of speed: closed well inside this, or not at all.
CLOSED_WITHIN = 3 * HEADER_TIMEOUT
# Faster than the deadline: an idle timeout that every byte restarts would never fire.
TRICKLE_EVERY = HEADER_TIMEOUT / 4

# What a careless client puts in a URL (shapes of a JWT, a password, an API key, an opaque token).
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1cmwtc2VjcmV0In0.c2lnbmF0dXJlLW9mLXRoZS11cmw"
PASSWORD = "hunter2-url-password"
API_KEY = "rk_abcd1234_UrlApiKeySecretMaterial"
OPAQUE = "opaque-url-access-token-42"
SECRETS = (JWT, JWT.rsplit(".", 1)[1], PASSWORD, API_KEY.rsplit("_", 1)[1], OPAQUE)
QUERY = f"token={JWT}&password={PASSWORD}&api_key={API_KEY}&access_token={OPAQUE}&page=2"


@pytest.fixture(scope="module")
def servers(django_db_setup, tmp_path_factory):
    """Every server of SERVERS on the test database with a 2 s header deadline; {name: Worker}."""
    logs = tmp_path_factory.mktemp("edge")
    env = server_env(uuid.uuid4().hex[:10]) | {
        # Access lines (uvicorn's, runserver's) are INFO records.
        "LOG_LEVEL": "INFO",
        "HTTP_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
        "METRICS_TOKEN": "",
    }
    with every_server(env, logs) as started:
        yield started


async def closed_by_server(port: int, payload: bytes = b"", *, every: float = 0.0) -> bool:
    """Connect, send `payload` one byte per `every` s (then nothing), and tell whether the server
    closes the connection within CLOSED_WITHIN."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def trickle() -> None:
        try:
            for byte in payload:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(every)  # pacing the attack, not waiting for the server
        except OSError:
            pass  # the server closed first

    async def until_eof() -> None:
        try:
            while await reader.read(65536):
                pass
        except OSError:
            pass  # a reset is a close too

    feeder = asyncio.create_task(trickle())
    try:
        await asyncio.wait_for(until_eof(), CLOSED_WITHIN)
        return True
    except TimeoutError:
        return False
    finally:
        feeder.cancel()
        writer.close()


@pytest.mark.parametrize("server", list(SERVERS))
async def test_secrets_in_urls_never_reach_the_log(server, servers):
    """Credentials in the query of an HTTP request and of a socket handshake are masked in the log."""
    worker = servers[server]
    mark = worker.log_size()
    assert (await asyncio.to_thread(http_get, f"{worker.url}/x/?{QUERY}"))[0] == 404
    assert (await asyncio.to_thread(http_get, f"{worker.url}/healthz?{QUERY}"))[0] == 200
    status, _, writer = await handshake(worker.port, f"/ws/notifications/?{QUERY}", {})
    writer.close()
    assert status == 101

    async def logged() -> bool:
        # The access lines (a 200 is logged by nothing else) and the socket's path.
        text = worker.log_since(mark)
        return "/healthz" in text and "/x/" in text and "/ws/notifications/" in text

    await poll(logged, seconds=10, what=f"{server} logged the requests")
    text = worker.log_since(mark)
    for secret in SECRETS:
        assert secret not in text, f"{server} logged {secret!r}:\n{text}"


@pytest.mark.parametrize("server", list(SERVERS))
async def test_a_trickled_request_head_is_closed_within_the_deadline(server, servers):
    """A request line and headers sent a byte at a time, faster than any idle timeout, are cut off."""
    head = b"GET /ws/notifications/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nX-Slow: " + b"a" * 64
    assert await closed_by_server(servers[server].port, head, every=TRICKLE_EVERY)


@pytest.mark.parametrize("server", list(SERVERS))
async def test_an_idle_connection_is_closed_within_the_deadline(server, servers):
    """A connection that sends nothing at all is closed."""
    assert await closed_by_server(servers[server].port)


@pytest.mark.parametrize("server", list(SERVERS))
async def test_an_idle_kept_alive_connection_is_closed_within_the_deadline(server, servers):
    """After a response, the next request's headers are bounded too."""
    worker = servers[server]
    reader, writer = await asyncio.open_connection("127.0.0.1", worker.port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200"), head
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")

        async def until_eof() -> None:
            while await reader.read(65536):
                pass

        await asyncio.wait_for(until_eof(), CLOSED_WITHIN)
    finally:
        writer.close()


@pytest.mark.parametrize("server", list(SERVERS))
async def test_200_partial_handshakes_are_all_closed(server, servers):
    """200 handshakes left without their final blank line are all closed."""
    port = servers[server].port
    partial = (
        b"GET /ws/chat/lobby/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    )
    gate = asyncio.Semaphore(50)

    async def one() -> bool:
        async with gate:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(partial)
        try:
            await asyncio.wait_for(reader.read(65536), CLOSED_WITHIN)
            return True
        except TimeoutError:
            return False
        except OSError:
            return True
        finally:
            writer.close()

    closed = await asyncio.gather(*(one() for _ in range(200)))
    assert closed.count(True) == 200


@pytest.mark.parametrize("server", list(SERVERS))
async def test_an_open_socket_outlives_the_header_deadline(server, servers, alice):
    """The deadline stops at the end of the headers: an accepted socket stays open past it."""
    token = await database_sync_to_async(make_token)(alice)
    socket = await token_socket(f"{servers[server].ws}/ws/notifications/", token)
    try:
        assert json.loads(await asyncio.wait_for(socket.recv(), 10))["type"] == "welcome"
        await asyncio.sleep(CLOSED_WITHIN)  # let the deadline pass, were it still armed
        await socket.send(json.dumps({"type": "ping"}))
        assert json.loads(await asyncio.wait_for(socket.recv(), 10)) == {"type": "pong"}
    finally:
        await socket.close()


def get_metrics(base: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(f"{base}/metrics", headers=headers)  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback test URL
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.parametrize("server", list(SERVERS))
async def test_metrics_from_loopback_but_never_by_a_forwarded_header(server, servers):
    """Without METRICS_TOKEN: 200 from loopback; 403 when a header claims the loopback address."""
    base = servers[server].url
    assert await asyncio.to_thread(get_metrics, base, {}) == 200
    for header in ("X-Forwarded-For", "X-Real-IP"):
        assert await asyncio.to_thread(get_metrics, base, {header: "127.0.0.1"}) == 403
    assert await asyncio.to_thread(get_metrics, base, {"Forwarded": "for=127.0.0.1"}) == 403
