"""No secrets in logs: tokens, API keys and passwords never reach log output, even at DEBUG."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from io import StringIO
from urllib.parse import urlencode

import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command

from realtime.authentication import apikeys
from realtime.operations.redaction import RedactSecrets
from testsupport.asgi import http, receive_type
from testsupport.auth import DEMO_PASSWORD, make_token

pytestmark = pytest.mark.django_db(transaction=True)

CSRF = "b" * 32


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))
        self.lines.append(repr(record.args))


@contextmanager
def every_log_at_debug():
    """Every logger at DEBUG, every record captured, whatever its propagation."""
    capture = Capture()
    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in list(logging.root.manager.loggerDict))]
    saved = [(lg, lg.level, lg.disabled) for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.DEBUG)
            lg.disabled = False
            if lg is logging.getLogger() or not lg.propagate:
                lg.addHandler(capture)
        yield capture
    finally:
        for lg, level, disabled in saved:
            lg.setLevel(level)
            lg.disabled = disabled
            lg.removeHandler(capture)


async def test_secrets_never_reach_the_logs(socket_for, alice, settings):
    """Login, token issue, socket auth and API-key publish, all logged at DEBUG with SQL: no secret."""
    settings.DEBUG = True  # the worst case: Django also logs every SQL query
    form = {"content_type": "application/x-www-form-urlencoded"}
    csrf = [(b"cookie", f"csrftoken={CSRF}".encode()), (b"x-csrftoken", CSRF.encode())]
    with every_log_at_debug() as capture:
        # Login, right and wrong.
        statuses = []
        for password in (DEMO_PASSWORD, "wrong-password-xyz"):
            body = urlencode({"username": "alice", "password": password}).encode()
            statuses.append((await http("POST", "/accounts/login/", body=body, headers=csrf, **form))[0])
        assert statuses == [302, 200]  # logged in; then the form again with an error
        # Token issue, right and wrong.
        status, issued, _ = await http(
            "POST", "/api/token/", body={"username": "alice", "password": DEMO_PASSWORD}
        )
        assert status == 200
        token = issued["access"]
        await http("POST", "/api/token/", body={"username": "alice", "password": "wrong-password-xyz"})
        # Socket auth: header, frame, a refused frame, a token in the query string.
        header_socket = await socket_for("/ws/notifications/", origin=None, token=token)
        await receive_type(header_socket, "welcome")
        frame_socket = await socket_for(f"/ws/notifications/?token={token}", origin=None)
        forged = make_token(alice, key="another-key-that-is-at-least-32-bytes-long")
        await frame_socket.send_json_to({"type": "auth", "token": forged})
        await receive_type(frame_socket, "error")
        await frame_socket.send_json_to({"type": "auth", "token": token})
        await receive_type(frame_socket, "welcome")
        # Bearer on the API, good and expired.
        await http("GET", "/api/notifications/", headers=[(b"authorization", f"Bearer {token}".encode())])
        await http("GET", "/api/notifications/", headers=[(b"authorization", f"Bearer {forged}".encode())])
        # API keys: created by the command, used, revoked, used again.
        out = StringIO()
        await sync_to_async(call_command)("createapikey", "logs", stdout=out, stderr=StringIO())
        key = out.getvalue().strip().splitlines()[-1]
        auth = [(b"authorization", f"Api-Key {key}".encode())]
        body = {"users": ["alice"], "title": "hi"}
        assert (await http("POST", "/api/publish/notifications/", body=body, headers=auth))[0] == 202
        await sync_to_async(apikeys.revoke_api_keys)(keys=apikeys.ApiKey.objects.all())
        assert (await http("POST", "/api/publish/notifications/", body=body, headers=auth))[0] == 401
    text = "\n".join(capture.lines)
    # The capture saw the traffic (SQL included), so its silence about secrets means something.
    assert "realtime.socket" in text and "django.db.backends" in text and "Unauthorized" in text
    secret_part = key.split("_", 2)[2]
    for secret in (DEMO_PASSWORD, "wrong-password-xyz", token, token.rsplit(".", 1)[1], forged, secret_part):
        assert secret not in text


def configured_handler() -> logging.Handler:
    return next(
        h for h in logging.getLogger().handlers if any(isinstance(f, RedactSecrets) for f in h.filters)
    )


async def test_the_console_handler_masks_secrets_a_library_might_log(alice):
    """Headers, JWTs, API keys and password fields logged by anyone are masked in the console output."""
    token = make_token(alice)
    key = "rk_0123abcd_" + "S3cretS3cretS3cretS3cretS3cretS3cret-_x"
    handler = configured_handler()
    cases = [
        ("ASGI headers %s", ([(b"authorization", f"Bearer {token}".encode())],)),
        ("request %s", ({"Authorization": f"Api-Key {key}"},)),
        ("GET /ws/notifications/?token=%s", (token,)),
        ("form %s", ("username=alice&password=hunter2-secret",)),
        ('body {"password": "%s"}', ("hunter2-secret",)),
    ]
    for message, args in cases:
        record = logging.LogRecord("some.library", logging.DEBUG, __file__, 1, message, args, None)
        assert handler.filter(record)
        output = handler.format(record)
        for secret in (token, key[12:], "hunter2-secret"):
            assert secret not in output, output
    # The public prefix survives, so a key can still be identified in logs.
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "key %s", (key,), None)
    handler.filter(record)
    assert "rk_0123abcd_" in handler.format(record)


async def test_tracebacks_are_masked_too(alice):
    """An exception message quoting a token is masked in the formatted traceback."""
    token = make_token(alice)
    handler = configured_handler()
    try:
        raise ValueError(f"could not parse {token}")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    handler.filter(record)
    output = handler.format(record)
    assert "ValueError" in output and token not in output
