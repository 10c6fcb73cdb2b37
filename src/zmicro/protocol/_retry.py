"""Retry policy, pure: which outcomes may be retried, backoff with jitter, and a retry budget.

The budget is the token bucket gRPC uses for retry throttling: every failed call takes
a token, every success gives back a fraction; retries are allowed only while the bucket
is more than half full. A total outage therefore stops retries within a few calls
instead of multiplying the load on a service that is already down.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ("RetryBudget", "RetryPolicy", "backoff_delay")


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    max_attempts: int = 4
    """Attempts in all, the first one included."""
    base_delay: float = 0.02
    max_delay: float = 1.0
    budget_tokens: float = 10.0
    budget_ratio: float = 0.1
    """Tokens a success gives back (0.1: one retry may follow every ten successes)."""


def backoff_delay(attempt: int, policy: RetryPolicy, rand: random.Random | None = None) -> float:
    """Full-jitter exponential backoff before retry number ``attempt`` (1 for the first retry)."""
    cap = min(policy.max_delay, policy.base_delay * (2 ** (attempt - 1)))
    return (rand or random).uniform(0.0, cap)


class RetryBudget:
    """A token bucket per target; ``allow_retry()`` spends nothing, ``on_failure()`` does.

    >>> budget = RetryBudget(RetryPolicy(budget_tokens=4))
    >>> for _ in range(2): budget.on_failure()
    >>> budget.allow_retry()
    False
    """

    def __init__(self, policy: RetryPolicy) -> None:
        self._max = policy.budget_tokens
        self._ratio = policy.budget_ratio
        self.tokens = policy.budget_tokens
        self.denied = 0

    def on_success(self) -> None:
        self.tokens = min(self._max, self.tokens + self._ratio)

    def on_failure(self) -> None:
        self.tokens = max(0.0, self.tokens - 1.0)

    def allow_retry(self) -> bool:
        if self.tokens > self._max / 2:
            return True
        self.denied += 1
        return False
