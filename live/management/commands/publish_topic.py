"""`manage.py publish_topic NAME JSON`: publish one value to a live topic; prints its seq."""

from __future__ import annotations

import orjson
from django.core.management.base import BaseCommand, CommandError

from live.services import TopicError, publish_topic


class Command(BaseCommand):
    help = "Publish one value (JSON) to a live topic and print its seq."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="the topic, e.g. stocks.aapl")
        parser.add_argument("json", help="the value as JSON, e.g. '{\"price\": 189.5}'")

    def handle(self, *args, name: str, json: str, **options) -> None:
        try:
            data = orjson.loads(json)
        except orjson.JSONDecodeError as exc:
            raise CommandError(f"not JSON: {exc}") from None
        try:
            seq = publish_topic(name, data)
        except TopicError as exc:
            raise CommandError(f"{exc.code}: {exc.detail}") from None
        self.stdout.write(str(seq))
