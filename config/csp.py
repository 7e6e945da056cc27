"""The Content-Security-Policy every page and the admin are served with (django-csp).

No inline script, style or event handler anywhere: configuration reaches scripts
through data- attributes and json_script blocks, which never run. See README,
"Security".
"""

from __future__ import annotations

from typing import Any

from csp.constants import NONE, SELF


def content_security_policy(*, allowed_hosts: list[str]) -> dict[str, Any]:
    """django-csp's CONTENT_SECURITY_POLICY for a site answering to `allowed_hosts`."""
    return {
        "DIRECTIVES": {
            "default-src": [SELF],
            "script-src": [SELF],
            "style-src": [SELF],
            "img-src": [SELF, "data:"],  # the pages' empty favicon (href="data:,")
            "connect-src": [SELF, *socket_sources(allowed_hosts)],
            "object-src": [NONE],
            "base-uri": [NONE],
            "frame-ancestors": [NONE],
            "form-action": [SELF],
        }
    }


def socket_sources(hosts: list[str]) -> list[str]:
    """ws:/wss: sources for the hosts this site answers to, on any port (as ALLOWED_HOSTS matches).

    A page opens its sockets on its own host (static/js/realtime.js), which is
    always an allowed host. CSP 3 lets 'self' cover that already; the explicit
    sources are for browsers that read 'self' as http(s) only.
    """
    sources: list[str] = []
    for host in hosts:
        if host == "*":
            return ["ws:", "wss:"]
        if host.startswith("["):
            continue  # CSP has no syntax for IPv6 literals; 'self' still covers them
        names = [f"*{host}", host[1:]] if host.startswith(".") else [host]
        sources += [f"{scheme}://{name}:*" for name in names for scheme in ("ws", "wss")]
    return sources
