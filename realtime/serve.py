"""`python -m realtime.serve [daphne options] config.asgi:application`: daphne with a graceful drain.

Takes exactly daphne's command-line options. What differs is SIGTERM (and
SIGINT). Plain daphne lets Twisted stop the reactor at once: application
instances are cancelled and connections are dropped without a close frame, so
every client sees 1006 and reconnects at the same moment. Here the worker:

1. stops listening, so the proxy sends new connections to the other workers
   (nginx retries the next upstream on a refused connection);
2. refuses sockets still mid-handshake with 1012 and answers /readyz with 503;
3. after DRAIN_GRACE_SECONDS closes every open socket with 1012 and waits up
   to DRAIN_CLOSE_TIMEOUT_SECONDS for the clients to answer the close;
4. stops the reactor and exits 0.

A second SIGTERM/SIGINT during the drain stops at once.

Close codes, the Origin refusal and the slow-client bound are
realtime.adapter's, installed by `config.asgi` under any daphne launcher.
"""

# daphne.cli imports daphne.server, which must install the asyncio reactor
# before anything else imports Twisted: the launcher module imports it first.
from realtime.adapter.daphne_launcher import DrainingCommandLineInterface


def main() -> None:
    DrainingCommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
