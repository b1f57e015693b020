"""What both benchmarks use."""

from __future__ import annotations

import threading


class TransactionCounter:
    """Counts every request the table client sends (its ``raw_request_hook``, run per retry)."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def __call__(self, request: object) -> None:
        with self._lock:
            self.count += 1
