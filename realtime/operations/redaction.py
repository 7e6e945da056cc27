"""A logging filter that masks credentials in whatever reaches a handler.

Our own code never logs a token, an API key or a password. This is defence
in depth for libraries that might (a server logging ASGI headers at a trace
level, a request line carrying a token someone put in a query string, an
exception message quoting its input). It rewrites the formatted message, and
the traceback text, of every record that passes through a handler it is
attached to (settings.LOGGING puts it on the console handler, which also
carries uvicorn's access log). `redact` is also what realtime.adapter applies
to daphne's access log, which daphne writes to stdout without `logging`.
"""

from __future__ import annotations

import logging
import re

MASK = "[redacted]"

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # Authorization header values: "Bearer x", "Api-Key x", "Basic x".
    (re.compile(r"(?i)\b(bearer|api-key|basic)(\s+|%20|\+)[^\s'\",;)\]}]+"), rf"\1\2{MASK}"),
    # A raw header pair as an ASGI server would print it: (b'authorization', b'...').
    (re.compile(r"(?i)(b?['\"]authorization['\"],\s*b?['\"])[^'\"]*"), rf"\1{MASK}"),
    # Anything shaped like a JWT (three base64url parts, the first a JSON header).
    (re.compile(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), MASK),
    # Our API keys: keep the public prefix, which identifies the key in logs.
    (re.compile(r"\b(rk_[a-z0-9]{8}_)[A-Za-z0-9_-]+"), rf"\1{MASK}"),
    # A query parameter whose name says it carries a credential (token, access_token, api_key,
    # apikey, password, client_secret, auth, sessionid, signature...): the value goes,
    # the name stays, so an access log line still shows which parameters a client sent.
    (
        re.compile(
            r"(?i)([?&;][^=&;\s\"'#]*(?:token|passw|pwd|secret|key|auth|session|sig|credential)"
            r"[^=&;\s\"'#]*=)[^&;\s\"'#]+"
        ),
        rf"\1{MASK}",
    ),
    # key=value or "key": "value" for the names credentials travel under.
    (
        re.compile(
            r"(?i)([\"']?\b(?:password|passwd|token|access|api_key|secret|authorization)\b[\"']?"
            r"\s*[:=]\s*[\"']?)[^\s\"'&,;}]+"
        ),
        rf"\1{MASK}",
    ),
]


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: let the handler report it as usual
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            # Format the traceback now, so the handler prints the cleaned text.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True
