"""Topic declarations and values: which names exist, seq per publish, atomic across processes."""

from __future__ import annotations

import asyncio
import sys
import threading

import orjson
import pytest
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.management import call_command

from live import demo, selectors, services, store
from live.models import Topic
from live.services import TopicError
from realtime.protocol import ErrorCode
from testsupport.processes import run_manage, subprocess_env

pytestmark = pytest.mark.django_db


def test_an_exact_declaration_wins_over_a_prefix_and_the_longest_prefix_wins():
    """`stocks.aapl` exact beats `stocks.`; `stocks.eu.` beats `stocks.` for `stocks.eu.sap`."""
    services.declare_topic(name="stocks.", match=Topic.Match.PREFIX, read=Topic.Read.PUBLIC)
    services.declare_topic(name="stocks.eu.", match=Topic.Match.PREFIX, read=Topic.Read.AUTHENTICATED)
    services.declare_topic(name="stocks.aapl", read=Topic.Read.GROUPS)
    assert selectors.topic_rule("stocks.aapl").read == "groups"
    assert selectors.topic_rule("stocks.eu.sap").read == "authenticated"
    assert selectors.topic_rule("stocks.msft").read == "public"
    assert selectors.topic_rule("stocks") is None
    assert selectors.topic_rule("bonds.x") is None
    assert selectors.topic_rule("Stocks.AAPL") is None  # not a topic name


def test_a_declaration_must_be_a_topic_name():
    """Upper case, spaces or a leading dot are refused by the model's validation."""
    for bad in ("Stocks.", " stocks", ".stocks", "a" * 101):
        with pytest.raises(ValidationError):
            services.declare_topic(name=bad)


def test_read_rules_public_authenticated_and_groups(make_user):
    """Public: anyone; authenticated: any user; groups: members of one of its groups only."""
    traders = Group.objects.create(name="traders")
    services.declare_topic(name="desk", read=Topic.Read.GROUPS, groups=[traders])
    services.declare_topic(name="news", read=Topic.Read.AUTHENTICATED)
    services.declare_topic(name="weather", read=Topic.Read.PUBLIC)
    alice, bob = make_user("alice"), make_user("bob")
    alice.groups.add(traders)
    rules = selectors.rules()

    def reads(user, name):
        return selectors.may_read(
            rules.find(name), authenticated=user is not None, group_ids=selectors.user_group_ids(user)
        )

    assert [reads(None, n) for n in ("weather", "news", "desk")] == [True, False, False]
    assert [reads(bob, n) for n in ("weather", "news", "desk")] == [True, True, False]
    assert [reads(alice, n) for n in ("weather", "news", "desk")] == [True, True, True]


def test_seq_rises_by_one_per_publish_and_the_latest_value_is_kept(stocks):
    """Three publishes give seq 1, 2, 3; reading gives the third value; an unpublished topic has none."""
    seqs = [services.publish_topic("stocks.aapl", {"price": p}) for p in (1.5, 2.5, 3.5)]
    assert seqs == [1, 2, 3]
    latest = services.read_topic("stocks.aapl")
    assert (latest.seq, orjson.loads(latest.data)) == (3, {"price": 3.5})
    never = services.read_topic("stocks.msft")
    assert (never.seq, never.data) == (None, "null")


def test_unknown_and_oversized_values_are_refused(stocks):
    """No declaration: unknown_topic; over max_bytes: too_large; nothing stored either way."""
    with pytest.raises(TopicError) as unknown:
        services.publish_topic("bonds.x", 1)
    assert unknown.value.code == ErrorCode.UNKNOWN_TOPIC
    services.declare_topic(name="tiny", read=Topic.Read.PUBLIC, max_bytes=10)
    with pytest.raises(TopicError) as large:
        services.publish_topic("tiny", "x" * 20)
    assert large.value.code == ErrorCode.TOO_LARGE
    assert services.read_topic("tiny").seq is None
    with pytest.raises(TopicError) as not_json:
        services.publish_topic("tiny", {1, 2})
    assert not_json.value.code == ErrorCode.INVALID_MESSAGE


def test_concurrent_publishers_get_every_seq_exactly_once(stocks):
    """Four threads on their own connections publish 100 times each: seq 1..400, none twice, none missing."""
    got: list[int] = []
    lock = threading.Lock()

    def publisher(n: int) -> None:
        for i in range(100):
            value = store.publish("stocks.race", orjson.dumps({"by": n, "i": i}).decode())
            with lock:
                got.append(value.seq)

    threads = [threading.Thread(target=publisher, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(got) == list(range(1, 401))
    assert store.read(["stocks.race"])[0].seq == 400


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
async def test_two_processes_publishing_one_topic_get_consecutive_seqs(stocks):
    """Two `publish_topic` processes at once: together their seqs are 1..2n, none shared."""
    script = (
        "import django, sys; django.setup(); from live.services import publish_topic; "
        "print(*(publish_topic('stocks.both', {'i': i}) for i in range(60)))"
    )
    env = {**subprocess_env(), "DJANGO_SETTINGS_MODULE": "config.settings"}

    async def run() -> list[int]:
        pipe = asyncio.subprocess.PIPE
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, env=env, stdout=pipe, stderr=pipe
        )
        out, err = await process.communicate()
        assert process.returncode == 0, err.decode()
        return [int(seq) for seq in out.split()]

    first, second = await asyncio.gather(run(), run())
    assert sorted(first + second) == list(range(1, 121))
    assert first == sorted(first) and second == sorted(second)


@pytest.mark.django_db(transaction=True)
async def test_publish_topic_command_prints_the_seq(stocks):
    """`manage.py publish_topic stocks.aapl '{"price": 1}'` prints 1, then 2."""
    assert (await run_manage("publish_topic", "stocks.aapl", '{"price": 1}')).strip() == "1"
    assert (await run_manage("publish_topic", "stocks.aapl", "2.5")).strip() == "2"
    value = store.read(["stocks.aapl"])[0]
    assert orjson.loads(value.data) == 2.5


def test_seed_demo_declares_stocks_and_prices_fifty_symbols_once(capsys, django_capture_on_commit_callbacks):
    """seed_demo: `stocks.` public, no client publish, 50 prices at seq 1; again: still seq 1."""
    for _ in range(2):
        with django_capture_on_commit_callbacks(execute=True):
            call_command("seed_demo")
    rule = selectors.topic_rule("stocks.anything")
    assert (rule.public, rule.client_publish, rule.prefix) == (True, False, True)
    values = store.read([demo.topic(symbol) for symbol, _ in demo.SYMBOLS])
    assert len(values) == 50 and {value.seq for value in values} == {1}
    assert orjson.loads(values[0].data)["symbol"] == "AAPL"
    assert "/live/" in capsys.readouterr().out


@pytest.mark.django_db(transaction=True)
async def test_demo_ticker_publishes_a_random_walk(stocks):
    """`demo_ticker --rate 500 --count 40`: 40 publishes over the demo symbols, each a price and change."""
    out = await run_manage("demo_ticker", "--rate", "500", "--count", "40")
    assert "40 prices published" in out
    values = store.read([demo.topic(symbol) for symbol, _ in demo.SYMBOLS])
    assert sum(value.seq or 0 for value in values) == 40
    quote = orjson.loads(next(value for value in values if value.seq).data)
    assert set(quote) == {"symbol", "price", "change"} and quote["price"] > 0
