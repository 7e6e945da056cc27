# The Relay image: daphne workers behind a proxy (see docker-compose.yml).
# Two stages: the first builds the virtualenv, the second carries only it and
# the code, so no compiler or pip cache ends up in the image.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
RUN /opt/venv/bin/pip install -r /tmp/requirements.txt

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DJANGO_SETTINGS_MODULE=config.settings
RUN useradd --system --uid 10001 --no-create-home --home-dir /app --shell /usr/sbin/nologin relay
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY . /app
# Static files are collected at build time and served by WhiteNoise from the
# image; the key only lets settings load here, it is never used at run time.
RUN DJANGO_SECRET_KEY=collectstatic-only-not-a-secret python manage.py collectstatic --noinput
# The code stays root-owned and read-only to the process that serves it.
USER relay
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]
# realtime.serve is daphne plus the graceful drain: on SIGTERM (docker stop)
# sockets are closed with 1012 and the clients reconnect to another worker.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "realtime.serve", "--bind", "0.0.0.0", "--port", "8000", "--proxy-headers", "config.asgi:application"]
