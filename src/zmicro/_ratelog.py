"""Log a kind of problem once, then at most once per interval with a count: floods stay quiet."""

from __future__ import annotations

import logging
import time

__all__ = ("RateLimitedLog",)


class RateLimitedLog:
    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self._logger = logger
        self._interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, kind: str, message: str, now: float | None = None) -> bool:
        """Log ``message`` unless ``kind`` was logged less than ``interval`` ago. True if logged."""
        now = time.monotonic() if now is None else now
        last = self._last.get(kind)
        if last is not None and now - last < self._interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return False
        self._last[kind] = now
        skipped = self._suppressed.pop(kind, 0)
        suffix = f" ({skipped} more like it since the last report)" if skipped else ""
        self._logger.warning("%s%s", message, suffix)
        return True
