"""pytest hooks and fixtures of Relay's own tests; what they do is in `testsupport/` (its docstring).

Tests import helpers from `testsupport`, never from this file. Fixtures here:
personas (`make_user`, `alice`, `bob`, `carol`), the `lobby` room, Redis keys
of a test's own (`own_redis_keys`), logged-in sockets through the real ASGI
app (`socket_for`), a worker in a subprocess (`live_server_asgi`) and
Chromium driving it (`browser`, `browser_as`).
"""

from __future__ import annotations

import uuid

import pytest

from testsupport import run
from testsupport.asgi import Sockets
from testsupport.auth import create_user
from testsupport.browser import BrowserUsers, chromium
from testsupport.processes import live_worker, server_env

# The test kit a project's own tests use (README, "Testing your code"); its fixtures are `relay_*`.
pytest_plugins = ["relay_testing"]


def pytest_configure(config):
    run.configure()


def pytest_collection_modifyitems(config, items):
    run.skip_unavailable(items)


@pytest.fixture(autouse=True)
async def _close_hub():
    """Each test has its own event loop; stop that loop's hub and /readyz echo before it ends."""
    yield
    # The kit's own clean-up, imported once pytest_plugins has loaded (and assertion-rewritten) it.
    from relay_testing.fixtures import close_loop_resources

    await close_loop_resources()


@pytest.fixture(scope="session", autouse=True)
def _connections_closed_before_the_test_database_goes(django_db_setup):
    """Torn down before `django_db_setup`, which drops the test database (`run.close_thread_connections`)."""
    yield
    run.close_thread_connections()


@pytest.fixture
def make_user(db):
    return create_user


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def bob(make_user):
    return make_user("bob")


@pytest.fixture
def carol(make_user):
    return make_user("carol")


@pytest.fixture
def lobby(db):
    """The public chat room most socket tests meet in."""
    from chat import services

    return services.create_room(slug="lobby", title="Lobby")


@pytest.fixture
async def own_redis_keys(settings):
    """Presence and rate-limit keys of this test's own, and a fresh channel layer (`run.keys_of_its_own`)."""
    async with run.keys_of_its_own(settings):
        yield


@pytest.fixture
async def socket_for():
    """Open a socket through the full ASGI app; every one is closed at teardown."""
    sockets = Sockets()
    yield sockets.open
    await sockets.close()


@pytest.fixture
async def live_server_asgi(transactional_db, request):
    """A worker subprocess (`python -m realtime.serve`) on a free loopback port, stopped at teardown.

    Settings of its own come as an indirect parameter: a dict of environment variables.
    """
    env = {**server_env(uuid.uuid4().hex[:10]), **getattr(request, "param", {})}
    server = live_worker(env, log_name=request.node.name.replace("/", "_")[:80])
    await server.astart(30)
    yield server
    await server.astop()


@pytest.fixture
async def browser():
    async with chromium() as launched:
        yield launched


@pytest.fixture
async def browser_as(browser, live_server_asgi):
    """`await browser_as(user)`: a fresh context with that user's session cookie."""
    users = BrowserUsers(browser, live_server_asgi.url)
    yield users.open
    await users.close()
