from django.apps import AppConfig


class LiveConfig(AppConfig):
    name = "live"
    verbose_name = "Live topics"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from live import receivers  # noqa: F401 - connects the rule cache's invalidation
