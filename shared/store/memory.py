"""In-memory :class:`~shared.store.base.Store` for unit tests: the same policy, dict primitives.

It behaves like Table Storage where the engine can tell: atomic transactions, ETags that
change on every write, ``create`` refusing an existing row, and conditional updates refusing
a stale ETag. ``fail_next`` injects a failure into the next write, for crash tests.
"""

from __future__ import annotations

import copy
import itertools
import threading
from collections.abc import Callable, Sequence

from shared.errors import AlreadyExists, ConcurrencyConflict, TableMissing
from shared.store.base import MAX_ENTITY_WIRE_BYTES, Op, Row, Store


class MemoryStore(Store):
    def __init__(self, prefix: str = "hookflow") -> None:
        super().__init__(prefix)
        self._tables: dict[str, dict[tuple[str, str], Row]] = {}
        self._lock = threading.Lock()
        self._etags = itertools.count(1)
        self.transactions = 0
        self.before_submit: Callable[[str, Sequence[Op]], None] | None = None

    def sibling(self) -> MemoryStore:
        """Another store over the same data, as another process would have."""
        other = MemoryStore(self._prefix)
        other._tables, other._lock, other._etags = self._tables, self._lock, self._etags
        return other

    def _ensure_tables(self, names: Sequence[str]) -> None:
        with self._lock:
            for name in names:
                self._tables.setdefault(name, {})

    def _list_tables(self, prefix: str, last: str) -> list[str]:
        with self._lock:
            self.transactions += 1
            return sorted(name for name in self._tables if name.startswith(prefix) and name <= last)

    def _drop_table(self, name: str) -> None:
        with self._lock:
            self.transactions += 1
            self._tables.pop(name, None)

    def _read_row(self, table: str, partition_key: str, row_key: str) -> Row | None:
        with self._lock:
            self.transactions += 1
            row = self._tables[table].get((partition_key, row_key))
            return copy.deepcopy(row)

    def _read_partition(self, table: str, partition_key: str) -> list[Row]:
        with self._lock:
            self.transactions += 1
            rows = [r for (pk, _), r in self._tables[table].items() if pk == partition_key]
            return copy.deepcopy(sorted(rows, key=lambda r: r.row_key))

    def _submit(self, table: str, partition_key: str, ops: Sequence[Op]) -> dict[str, str]:
        if self.before_submit is not None:
            self.before_submit(table, ops)
        with self._lock:
            self.transactions += 1
            if table not in self._tables:
                raise TableMissing(table)
            rows = self._tables[table]
            for op in ops:  # check everything first: the transaction is all or nothing
                if op.kind != "delete" and _wire_size(op.row) > MAX_ENTITY_WIRE_BYTES:
                    raise ValueError(f"EntityTooLarge: {op.row.row_key} is over 1 MiB on the wire")
                key = (op.row.partition_key, op.row.row_key)
                assert op.row.partition_key == partition_key, "a transaction stays in one partition"
                existing = rows.get(key)
                if op.kind == "create" and existing is not None:
                    raise AlreadyExists(f"{key} exists")
                if (
                    op.kind in ("update", "delete")
                    and op.etag is not None
                    and (existing is None or existing.etag != op.etag)
                ):
                    raise ConcurrencyConflict(f"{key} changed")
                if op.kind == "update" and existing is None:
                    raise ConcurrencyConflict(f"{key} is gone")
            etags: dict[str, str] = {}
            for op in ops:
                key = (op.row.partition_key, op.row.row_key)
                if op.kind == "delete":
                    rows.pop(key, None)
                    continue
                etag = f'W/"{next(self._etags)}"'
                rows[key] = Row(op.row.partition_key, op.row.row_key, copy.deepcopy(op.row.props), etag)
                etags[op.row.row_key] = etag
            return etags

    def _range(self, table: str, *, pk_max: str, rk_max: str, top: int, claimed_before: str | None = None) -> list[Row]:
        with self._lock:
            self.transactions += 1
            rows = sorted(
                (
                    r
                    for (pk, rk), r in self._tables[table].items()
                    if pk <= pk_max
                    and rk <= rk_max
                    # As in Table Storage, a row without the property matches no comparison on it.
                    and (
                        claimed_before is None
                        or ("ClaimedUntil" in r.props and str(r.props["ClaimedUntil"]) < claimed_before)
                    )
                ),
                key=lambda r: (r.partition_key, r.row_key),
            )
            return copy.deepcopy(rows[:top])

    def _scan(
        self, table: str, *, row_key: str, equals: dict[str, str], top: int, continuation: str | None
    ) -> tuple[list[Row], str | None]:
        with self._lock:
            self.transactions += 1
            matching = sorted(
                (
                    r
                    for (pk, rk), r in self._tables[table].items()
                    if rk == row_key and all(r.props.get(k) == v for k, v in equals.items())
                ),
                key=lambda r: r.partition_key,
            )
            if continuation:
                matching = [r for r in matching if r.partition_key > continuation]
            page = copy.deepcopy(matching[:top])
            token = page[-1].partition_key if len(matching) > top else None
            return page, token


def _wire_size(row: Row) -> int:
    """Roughly what Table Storage counts: binary as base64, text as UTF-16."""
    size = 0
    for name, value in row.props.items():
        size += len(name) * 2
        if isinstance(value, bytes | bytearray):
            size += (len(value) + 2) // 3 * 4
        elif isinstance(value, str):
            size += len(value) * 2
        else:
            size += 8
    return size
