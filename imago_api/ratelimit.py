"""Per-client rate limits by plan, on the `limits` library (moving window; memory or Redis storage)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse_many
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from imago_pipeline.core.config import Plan


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    limit: str  # the tightest limit, e.g. "60 per 1 minute"
    remaining: int
    retry_after_s: int = 0


class RateLimiter:
    def __init__(self, storage_uri: str, plans: dict[str, Plan], default_plan: str = "free"):
        self._limiter = MovingWindowRateLimiter(storage_from_string(storage_uri))
        self.in_memory = storage_uri.startswith("memory://")  # else a network store: call it off the event loop
        self._limits = {name: parse_many(plan.rate_limit) for name, plan in plans.items()}
        self._default = default_plan

    def limits_for(self, plan: str) -> list[RateLimitItem]:
        return self._limits.get(plan) or self._limits[self._default]

    def hit(self, client: str, plan: str) -> RateDecision:
        """Count one request of `client` against every limit of its plan."""
        remaining, tightest = None, None
        for item in self.limits_for(plan):
            if not self._limiter.hit(item, "client", client):
                stats = self._limiter.get_window_stats(item, "client", client)
                return RateDecision(False, str(item), 0, max(1, math.ceil(stats.reset_time - time.time())))
            left = self._limiter.get_window_stats(item, "client", client).remaining
            if remaining is None or left < remaining:
                remaining, tightest = left, item
        return RateDecision(True, str(tightest), remaining or 0)
