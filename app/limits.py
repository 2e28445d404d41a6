"""Per-key token buckets: a request costs one token; an empty bucket answers 429 with Retry-After."""
from __future__ import annotations

import math
import time


class TokenBuckets:
    def __init__(self, rate: float, burst: int):
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, last refill)

    def take(self, name: str, rate: float | None = None, burst: int | None = None) -> float:
        """0 when the request may go ahead, else the seconds until a token is free."""
        rate, burst = rate or self.rate, burst or self.burst
        now = time.monotonic()
        tokens, last = self._buckets.get(name, (float(burst), now))
        tokens = min(float(burst), tokens + (now - last) * rate)
        if tokens >= 1:
            self._buckets[name] = (tokens - 1, now)
            return 0.0
        self._buckets[name] = (tokens, now)
        return (1 - tokens) / rate


def retry_after(seconds: float) -> int:
    return max(1, math.ceil(seconds))
