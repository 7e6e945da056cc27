"""Hostile and malformed requests to the HTTP API, table-driven (issue 7).

Bodies posted to the publish API (chat and notifications), to marking
notifications read and to /api/token/: truncated, non-UTF-8 or oversized
JSON, wrong types, unknown fields, hostile text (stored verbatim). Each case
gets the contract's status and error code, and harms nothing: the checks
around it are `testsupport.bad_input.unharmed`. The sockets' cases are
`test_bad_input_sockets.py`.
"""

from __future__ import annotations

import pytest

from realtime.authentication import apikeys
from realtime.tests.test_bad_input_sockets import CASES as SOCKET_CASES
from testsupport.bad_input import Case, run_http_case, unharmed

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("own_redis_keys")]

CASES = [
    # HTTP API.
    Case("http-publish-truncated", "http", ("publish-chat", b'{"body": "x'), ("http", 400, "invalid_json")),
    Case(
        "http-publish-invalid-utf8",
        "http",
        ("publish-chat", b'{"body": "\xff\xfe"}'),
        ("http", 400, "invalid_json"),
    ),
    Case(
        "http-publish-lone-surrogate",
        "http",
        ("publish-chat", b'{"body": "\\udc00"}'),
        ("http", 400, "invalid_json"),
    ),
    Case("http-publish-array", "http", ("publish-chat", b'["body"]'), ("http", 400, "invalid_message")),
    Case("http-publish-empty", "http", ("publish-chat", b""), ("http", 400, "invalid_json")),
    Case(
        "http-publish-body-int", "http", ("publish-chat", b'{"body": 12}'), ("http", 400, "invalid_message")
    ),
    Case(
        "http-publish-nul",
        "http",
        ("publish-chat", b'{"body": "a\\u0000b"}'),
        ("http", 400, "invalid_message"),
    ),
    Case(
        "http-publish-combining",
        "http",
        ("publish-chat", ('{"body": "e' + "\u0301" * 10_000 + '"}').encode()),
        ("http", 413, "too_large"),
    ),
    Case(
        "http-publish-oversized",
        "http",
        ("publish-chat", b'{"body": "' + b"x" * 70_000 + b'"}'),
        ("http", 413, "too_large"),
    ),
    Case(
        "http-publish-slug-101",
        "http",
        ("publish-chat:" + "a" * 101, b'{"body": "x"}'),
        ("http", 404, "not_found"),
    ),
    Case(
        "http-notify-huge-number",
        "http",
        (
            "publish-notifications",
            b'{"users": ["alice"], "title": "t", "body": "b", "data": {"n": 1'
            + b"0" * 40
            + b'}, "level": 1e999}',
        ),
        ("http", 400, "invalid_json"),
    ),
    Case(
        "http-notify-wrong-types",
        "http",
        ("publish-notifications", b'{"users": "alice", "title": 1, "body": null}'),
        ("http", 400, "invalid_message"),
    ),
    Case(
        "http-notify-unknown-field",
        "http",
        ("publish-notifications", b'{"everyone": true, "title": "t", "body": "b"}'),
        ("http", 400, "invalid_message"),
    ),
    Case(
        "http-notify-bad-url",
        "http",
        (
            "publish-notifications",
            b'{"users": ["alice"], "title": "t", "body": "b", "url": "javascript:alert(1)"}',
        ),
        ("http", 400, "invalid_message"),
    ),
    Case(
        "http-notify-sql-html",
        "http",
        ("publish-notifications", None),  # built in the runner from HOSTILE
        ("stored",),
        stores=1,
    ),
    Case(
        "http-read-ids-strings",
        "http",
        ("read", b'{"ids": ["1; DROP TABLE x"]}'),
        ("http", 400, "invalid_message"),
    ),
    Case(
        "http-read-ids-huge",
        "http",
        ("read", b'{"ids": [99999999999999999999999]}'),
        ("http", 400, "invalid_message"),
    ),
    Case(
        "http-token-wrong-types",
        "http",
        ("token", b'{"username": ["alice"], "password": {"a": 1}}'),
        ("http", 400, "invalid_message"),
    ),
    Case(
        "http-token-sql",
        "http",
        ("token", b'{"username": "alice\' OR 1=1 --", "password": "x\' OR \'1\'=\'1"}'),
        ("http", 401, "invalid_credentials"),
    ),
]


@pytest.fixture
def api_key(db):
    return apikeys.create_api_key(name="bad-input")[1]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_a_bad_request_gets_its_status_and_harms_nothing(
    case: Case, socket_for, alice, bob, lobby, api_key, caplog
):
    """The contract's status and error code; the worker stays up, stores only what it may, logs no ERROR."""
    async with unharmed(case, socket_for, alice, bob, lobby, caplog):
        await run_http_case(case, api_key, alice)


def test_the_table_is_big_enough():
    """The sockets' and the HTTP API's cases together: at least 30, and every runner used."""
    cases = SOCKET_CASES + CASES
    assert len(cases) >= 30
    assert {c.where for c in cases} == {"notifications", "chat", "http", "connect"}
