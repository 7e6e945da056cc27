from django.apps import AppConfig


class RealtimeConfig(AppConfig):
    name = "realtime"
    verbose_name = "Real-time runtime"

    def ready(self) -> None:
        from django.core.handlers.asgi import ASGIHandler
        from django.core.signals import request_finished

        from realtime.db import close_request_connections

        # Requests served by ASGI only (the sender is the handler class): a WSGI
        # server, or the test client, reuses one thread and so its connection.
        request_finished.connect(
            close_request_connections, sender=ASGIHandler, dispatch_uid="realtime.close_request_connections"
        )
