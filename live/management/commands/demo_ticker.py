"""`manage.py demo_ticker [--rate N]`: a random walk of the 50 demo prices, published until stopped."""

from __future__ import annotations

import random
import time

import orjson
from django.core.management.base import BaseCommand, CommandError

from live import demo, store
from live.services import TopicError, publish_topic
from realtime import redis_client


class Command(BaseCommand):
    help = "Publish a random walk to the demo topics (stocks.*) until stopped (`make run` starts it)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--rate", type=float, default=20.0, help="publishes a second (all symbols)")
        parser.add_argument("--count", type=int, default=0, help="stop after this many publishes (0: never)")

    def handle(self, *args, rate: float, count: int, **options) -> None:
        if rate <= 0:
            raise CommandError("--rate must be above 0")
        if not redis_client.configured():
            self.stderr.write("demo_ticker: no REDIS_URL, so no other process sees these prices")
        prices = self._start_prices()
        interval = 1.0 / rate
        self.stdout.write(f"demo_ticker: {rate:g} publishes a second to {len(prices)} topics; Ctrl-C stops")
        self.stdout.flush()
        published = 0
        next_at = time.monotonic()
        try:
            while not count or published < count:
                symbol = random.choice(demo.SYMBOLS)[0]
                previous = prices[symbol]
                # A random walk: about 0.3 % a step, never below one cent.
                prices[symbol] = max(1, round(previous * (1 + random.gauss(0, 0.003))))
                try:
                    publish_topic(demo.topic(symbol), demo.quote(symbol, prices[symbol], previous))
                except TopicError as exc:
                    raise CommandError(f"{exc.code}: {exc.detail} (run seed_demo first)") from None
                published += 1
                next_at += interval
                time.sleep(max(0.0, next_at - time.monotonic()))
        except KeyboardInterrupt:
            pass
        self.stdout.write(f"demo_ticker: {published} prices published")

    def _start_prices(self) -> dict[str, int]:
        """From the current values where there are some, so a restarted ticker carries on."""
        values = store.read([demo.topic(symbol) for symbol, _ in demo.SYMBOLS])
        prices = {}
        for (symbol, cents), value in zip(demo.SYMBOLS, values, strict=True):
            data = orjson.loads(value.data) if value.seq is not None else None
            price = data.get("price") if isinstance(data, dict) else None
            prices[symbol] = round(price * 100) if isinstance(price, int | float) and price > 0 else cents
        return prices
