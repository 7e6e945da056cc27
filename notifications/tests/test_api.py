"""The inbox HTTP API with a logged-in session."""

from __future__ import annotations

import pytest
from django.test import Client

from notifications import services

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice_client(alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    return client


def csrf_headers(client: Client) -> dict[str, str]:
    client.get("/notifications/")  # sets the csrftoken cookie
    return {"HTTP_X_CSRFTOKEN": client.cookies["csrftoken"].value}


def test_list_is_newest_first_with_a_cursor(alice, alice_client):
    """GET /api/notifications/ pages newest first."""
    ids = [services.notify(users=alice, title=f"n{i}")[0].id for i in range(3)]
    body = alice_client.get("/api/notifications/?limit=2").json()
    assert [n["id"] for n in body["results"]] == [ids[2], ids[1]]
    assert body["next_before"] == ids[1]
    body = alice_client.get(f"/api/notifications/?before={body['next_before']}").json()
    assert ([n["id"] for n in body["results"]], body["next_before"]) == ([ids[0]], None)


def test_limit_is_capped_and_unread_filter_works(alice, alice_client, settings):
    """limit is capped at API_PAGE_MAX; unread=1 leaves out read ones."""
    settings.API_PAGE_MAX = 2
    ids = [services.notify(users=alice, title=f"n{i}")[0].id for i in range(3)]
    services.mark_read(user=alice, ids=[ids[2]])
    assert len(alice_client.get("/api/notifications/?limit=1000").json()["results"]) == 2
    unread = alice_client.get("/api/notifications/?unread=1").json()["results"]
    assert [n["id"] for n in unread] == [ids[1], ids[0]]


def test_unread_count_and_mark_read(alice, alice_client):
    """Marking read over HTTP returns the new unread count."""
    ids = [services.notify(users=alice, title=f"n{i}")[0].id for i in range(2)]
    assert alice_client.get("/api/notifications/unread-count/").json() == {"unread": 2}
    headers = csrf_headers(alice_client)
    response = alice_client.post(
        "/api/notifications/read/", {"ids": [ids[0]]}, content_type="application/json", **headers
    )
    assert response.json() == {"unread": 1}
    response = alice_client.post(
        "/api/notifications/read/", {"all": True}, content_type="application/json", **headers
    )
    assert response.json() == {"unread": 0}


def test_mark_read_without_csrf_is_refused_as_json(alice_client):
    """A session POST without the CSRF header gets a JSON 403."""
    response = alice_client.post("/api/notifications/read/", {"all": True}, content_type="application/json")
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ("{nope", 400, "invalid_json"),
        ("[1]", 400, "invalid_message"),
        ('{"ids": "1"}', 400, "invalid_message"),
        ('{"ids": [true]}', 400, "invalid_message"),
        ('{"ids": [99999999999999999999999]}', 400, "invalid_message"),
        ('{"all": "yes"}', 400, "invalid_message"),
    ],
)
def test_bad_mark_read_bodies_get_json_errors(alice_client, body, status, code):
    """Malformed bodies are answered with the contract's JSON error."""
    response = alice_client.post(
        "/api/notifications/read/", body, content_type="application/json", **csrf_headers(alice_client)
    )
    assert (response.status_code, response.json()["error"]) == (status, code)


def test_bad_query_parameters_get_400(alice_client):
    """A non-integer cursor is a 400, not a crash."""
    response = alice_client.get("/api/notifications/?before=abc")
    assert (response.status_code, response.json()["error"]) == (400, "invalid_message")


def test_anonymous_gets_401(client):
    """Without a session the API answers 401 JSON."""
    response = client.get("/api/notifications/")
    assert (response.status_code, response.json()["error"]) == (401, "not_authenticated")


def test_health_endpoints(client):
    """healthz answers while the process runs; readyz checks database and channel layer."""
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "database": "ok", "channel_layer": "ok"}
