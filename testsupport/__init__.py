"""What Relay's own tests share: the helpers the root conftest.py's hooks and fixtures delegate to.

- `run`: this test run's own names in a shared Redis (and a test's own keys), what CI requires, clean-up;
- `auth`: the personas' password, session cookies and headers, hand-made tokens;
- `asgi`: requests and sockets (a chat room's among them) through the real ASGI application, in process;
- `processes`: other processes on this test's database and Redis names (`manage.py`,
  workers through `realtime.launcher`);
- `servers`: clients of a server running in a subprocess (sockets, raw handshakes, JSON POSTs, /metrics);
- `browser`: Chromium through Playwright, and what it reports (page errors, CSP violations);
- `faults`: private Redis and PostgreSQL servers to break, and workers that die as in a crash;
- `recording`: clients that record what they got through a fault, and the check that nothing was lost;
- `bad_input`: a hostile-input case, its runners, and the checks that it harmed nothing;
- `handshakes`: handshakes held in progress (credential tables locked), a worker's handshake queue;
- `deployments`: whole deployments (scratch databases, Sentinel) as an operator runs them.

Not the test kit: `relay_testing/` is the pytest plugin a project using the
service loads; nothing there may depend on this package.
"""
