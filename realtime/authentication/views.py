"""The login page: Django's, answering 429 while the login throttle is on."""

from __future__ import annotations

import logging

from django.contrib.auth import views as auth_views

from realtime.authentication import login_throttle
from realtime.operations.errors import UNAVAILABLE_ERRORS, log_unavailable

logger = logging.getLogger("realtime.health")


class LoginView(auth_views.LoginView):
    """Django's login page, answering 429 while the login throttle is on (contract v2).

    The throttle itself is realtime.authentication.login_throttle.ThrottleBackend, which the
    form's authenticate() runs first; this only turns its refusal into the page.
    """

    def form_invalid(self, form):
        wait = login_throttle.refused(self.request)
        if wait is None:
            return super().form_invalid(form)
        context = self.get_context_data(form=form, rate_limited=True, retry_after=wait)
        response = self.render_to_response(context, status=429)
        response["Retry-After"] = str(wait)
        return response

    def post(self, request, *args, **kwargs):
        try:
            return super().post(request, *args, **kwargs)
        except UNAVAILABLE_ERRORS as exc:
            # The throttle could not be asked (Redis down): refuse rather than skip it.
            log_unavailable(logger, exc, "login: backing service unavailable")
            context = self.get_context_data(form=self.get_form_class()(request), unavailable=True)
            return self.render_to_response(context, status=503)
