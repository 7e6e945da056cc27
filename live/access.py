"""One socket's access to topics: the declarations and the user's groups it checks them against.

The declarations come from the process-wide cache (`live.selectors`), read in
the frame lane (realtime.db) when it is stale; a socket's user's groups are
read once and kept for `LIVE_RULES_CACHE_SECONDS`, and forgotten when the
socket authenticates as someone else.
"""

from __future__ import annotations

import time

from django.conf import settings

from live import selectors
from live.selectors import Rule, Rules
from realtime import db

_load_rules = db.frames(selectors.load_rules)
_user_group_ids = db.frames(selectors.user_group_ids)


class Access:
    """What one socket's user may read and publish."""

    def __init__(self) -> None:
        self._groups: tuple[float, frozenset[int]] | None = None

    def forget(self) -> None:
        """The socket's user changed: its groups are read again when next needed."""
        self._groups = None

    async def rules(self) -> Rules:
        """The declarations, from the cache while it is fresh."""
        return selectors.cached_rules() or await _load_rules()

    async def fresh_rules(self) -> Rules:
        """The declarations as the database holds them now."""
        return await _load_rules()

    async def may_read(self, user, rule: Rule) -> bool:
        authenticated = user is not None
        group_ids = await self._group_ids(user) if authenticated and rule.group_ids else frozenset()
        return selectors.may_read(rule, authenticated=authenticated, group_ids=group_ids)

    async def may_publish(self, user, rule: Rule) -> bool:
        if user is None:
            return False
        return selectors.may_publish(rule, authenticated=True, group_ids=await self._group_ids(user))

    async def _group_ids(self, user) -> frozenset[int]:
        cached = self._groups
        if cached is None or time.monotonic() - cached[0] > settings.LIVE_RULES_CACHE_SECONDS:
            cached = self._groups = (time.monotonic(), await _user_group_ids(user))
        return cached[1]
