from django.apps import AppConfig


class AuthenticationConfig(AppConfig):
    name = "realtime.authentication"
    label = "authentication"
    verbose_name = "Authentication"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model
        from django.contrib.auth.signals import user_logged_out, user_login_failed
        from django.db.models.signals import post_save, pre_save

        from realtime.authentication.login_throttle import count_failure
        from realtime.authentication.receivers import (
            close_sockets_on_deactivation,
            close_sockets_on_logout,
            note_deactivation,
        )

        # user_logged_out is sent by django.contrib.auth.logout() itself, so it
        # covers every way out (the logout page, the admin's, any custom view)
        # where wrapping one view would miss the others.
        user_logged_out.connect(close_sockets_on_logout, dispatch_uid="realtime.close_sockets_on_logout")
        # Deactivation from any code that saves the user (the shell, a service,
        # the admin's form): compared with the stored row, pushed after commit.
        # A queryset update() sends no signal: services.deactivate_users closes
        # the sockets itself.
        user_model = get_user_model()
        pre_save.connect(note_deactivation, sender=user_model, dispatch_uid="realtime.note_deactivation")
        post_save.connect(
            close_sockets_on_deactivation, sender=user_model, dispatch_uid="realtime.close_on_deactivation"
        )
        # Failed logins count wherever authenticate() is called with a request.
        user_login_failed.connect(count_failure, dispatch_uid="realtime.login_throttle")
