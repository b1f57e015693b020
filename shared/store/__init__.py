"""Persistence: the :class:`Store` port, the Table Storage adapter and an in-memory fake."""

from shared.store.base import LoadedRun, RunSummary, Store, StoredWorkflow
from shared.store.memory import MemoryStore

__all__ = ["LoadedRun", "MemoryStore", "RunSummary", "Store", "StoredWorkflow"]
