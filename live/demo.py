"""The demo topics of `seed_demo`, `demo_ticker` and the `/live/` board: 50 stock symbols under `stocks.`."""

from __future__ import annotations

PREFIX = "stocks."
# Symbol and a starting price in cents (made up, for the demo only).
SYMBOLS: tuple[tuple[str, int], ...] = (
    ("aapl", 18950), ("msft", 41520), ("googl", 16875), ("amzn", 18330), ("nvda", 12040),
    ("meta", 50210), ("tsla", 24870), ("brk-b", 41290), ("jpm", 20110), ("v", 27640),
    ("unh", 52380), ("xom", 11820), ("jnj", 15230), ("wmt", 6810), ("ma", 46750),
    ("pg", 16640), ("hd", 38120), ("cvx", 15470), ("mrk", 12590), ("abbv", 17430),
    ("ko", 6270), ("pep", 16980), ("avgo", 14120), ("cost", 85340), ("adbe", 52460),
    ("crm", 27180), ("nflx", 64220), ("amd", 15660), ("intc", 3120), ("csco", 4960),
    ("orcl", 14270), ("dis", 9980), ("nke", 9410), ("mcd", 28760), ("ba", 17850),
    ("ibm", 18730), ("qcom", 16940), ("txn", 19530), ("sbux", 9260), ("pypl", 6450),
    ("uber", 7120), ("abnb", 13780), ("shop", 7690), ("sq", 7340), ("snow", 14880),
    ("pltr", 2450), ("coin", 22560), ("rivn", 1180), ("f", 1080), ("gm", 4730),
)  # fmt: skip


def topic(symbol: str) -> str:
    return PREFIX + symbol


def quote(symbol: str, cents: int, previous: int) -> dict[str, object]:
    """A demo topic's value: the price, and its change since the previous one."""
    change = round((cents - previous) / 100, 2)
    return {"symbol": symbol.upper(), "price": round(cents / 100, 2), "change": change}
