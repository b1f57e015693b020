"""The persistence port. The base class owns the policy; backends implement primitives.

Policy here: table and key layout, how documents are encoded and split across properties
and rows, which writes are conditional, and what a lost race means. A backend implements
five primitives over plain rows (:meth:`_read_row`, :meth:`_read_partition`, :meth:`_submit`,
:meth:`_scan`, :meth:`_ensure_tables`) and translates its own errors into
:class:`~shared.errors.ConcurrencyConflict` / :class:`~shared.errors.AlreadyExists`.

Layout (table names carry ``HOOKFLOW_TABLE_PREFIX``):

``<prefix>workflows``
    PartitionKey = workflow name, rows ``wf``, ``wf.1``, ... (the document and its overflow).
``<prefix>runs``
    PartitionKey = run id. The head row ``run`` holds the mutable run document and, when
    they are small, the definition the run started with and its trigger outputs (both
    written once, at creation); larger ones get rows of their own (``def``, ``trg``), and a
    long run document continues on ``run.1``, ``run.2``... All rows of a run change together
    in one entity-group transaction; a small run is one entity, so creating and saving it is
    one single-entity request, the cheapest there is.
    Idempotency keys live in their own partitions (``idem-<sha256>``).

Documents are JSON, zlib-compressed, and split into binary properties of at most 60,000
bytes (``D000``, ``F000``, ``T000``... by document), 10 to a row: entities hold 1 MiB and 64
KiB per property, and Azurite counts binary in its base64 form, so 600,000 bytes are 800,000
on the wire. The head row also carries a few plain properties (status, times) so that
listings and people with a storage browser can read them without decoding.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import time
import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from shared.durations import iso
from shared.errors import AlreadyExists, ConcurrencyConflict, NotFound, RunTooLarge, TableMissing
from shared.models import RunRecord, WorkflowDefinition

CHUNK_BYTES = 60_000
CHUNKS_PER_ROW = 10
# Entity-group transactions carry at most 4 MiB; binary travels base64-encoded (4/3), so
# about 2.4 MB of compressed document per write leaves room for the envelope.
MAX_DOCUMENT_BYTES = 2_400_000
MAX_ENTITY_WIRE_BYTES = 1024 * 1024
# Definitions and trigger outputs up to this size (compressed) ride on the run's head row.
INLINE_BYTES = 16_000

WORKFLOWS = "workflows"
RUNS = "runs"
DUE = "due"
# Due items of one minute are spread over this many partitions, so that a burst of waits
# started together does not pile onto one partition.
DUE_SHARDS = 4
# How many workflows a store keeps a recent copy of (see Store.get_workflow).
_WORKFLOWS_REMEMBERED = 1024


@dataclass
class Row:
    """One entity: its keys, properties and (when read or written) its ETag."""

    partition_key: str
    row_key: str
    props: dict[str, Any] = field(default_factory=dict)
    etag: str | None = None


@dataclass(frozen=True)
class Op:
    """One operation of an entity-group transaction."""

    kind: Literal["create", "update", "upsert", "delete"]
    row: Row
    etag: str | None = None  # for update/delete: the ETag the row must still have


@dataclass(frozen=True)
class StoredWorkflow:
    """A workflow as stored: its document (definition, state, trigger state) and ETag."""

    name: str
    doc: dict[str, Any]
    etag: str
    rows: int = 1

    @property
    def definition(self) -> dict[str, Any]:
        result: dict[str, Any] = self.doc["definition"]
        return result

    @property
    def state(self) -> str:
        return str(self.doc["state"])

    @property
    def created_time(self) -> datetime:
        return datetime.fromisoformat(self.doc["createdTime"])

    @property
    def changed_time(self) -> datetime:
        return datetime.fromisoformat(self.doc["changedTime"])

    @property
    def version(self) -> int:
        return int(self.doc["version"])

    @property
    def trigger(self) -> dict[str, Any] | None:
        trigger: dict[str, Any] | None = self.doc.get("trigger")
        return trigger

    def parsed(self) -> WorkflowDefinition:
        """The definition as a model, validated once per stored version (callers only read it)."""
        parsed: WorkflowDefinition | None = self.__dict__.get("_parsed")
        if parsed is None:
            parsed = WorkflowDefinition.model_validate(self.definition)
            object.__setattr__(self, "_parsed", parsed)  # a cache, not state: frozen stays frozen
        return parsed


@dataclass(frozen=True)
class LoadedRun:
    """A run as read: its mutable record, pinned definition, and the head row's ETag."""

    run: RunRecord
    definition: WorkflowDefinition
    etag: str
    overflow_rows: int = 0
    # Compressed documents that live on the head row and must be written back with it.
    inline: dict[str, bytes] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class RunSummary:
    id: str
    workflow: str
    status: str
    start_time: str | None
    end_time: str | None
    error: dict[str, Any] | None


@dataclass(frozen=True)
class DueItem:
    """An entry of the due-item index: ``run_id`` needs the timer at ``due_at``.

    ``run_id`` names a run, or a workflow's trigger as ``w-<workflow name>`` (run ids begin
    with a digit, so the two never meet).
    """

    run_id: str
    due_at: datetime
    etag: str = ""
    claimed_until: datetime | None = None

    @property
    def keys(self) -> tuple[str, str]:
        return due_keys(self.run_id, self.due_at)


def due_keys(run_id: str, due_at: datetime) -> tuple[str, str]:
    """PartitionKey = the minute it is due + a shard; RowKey = the exact time + the run.

    Both sort by time, so "everything due by now" is one key-range query that never reads
    an item due later, however many there are.
    """
    when = due_at.astimezone(UTC)
    shard = sum(run_id.encode()) % DUE_SHARDS
    return f"{when:%Y%m%d%H%M}-{shard}", f"{when:%Y%m%d%H%M%S%f}-{run_id}"


class Store(ABC):
    """Workflows and runs, with ETag-conditional writes."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._tables_ready = False
        self._due_tables: set[str] = set()
        # Workflows this process has read or written lately: name -> (when, monotonic; it),
        # and when this process last finished writing each (a read begun before that may
        # have seen the version the write replaced, so it is not remembered).
        self._workflows_seen: dict[str, tuple[float, StoredWorkflow]] = {}
        self._workflows_written: dict[str, float] = {}

    def table(self, name: str) -> str:
        return f"{self._prefix}{name}"

    # ------------------------------------------------------------------ workflows

    def get_workflow(self, name: str, *, max_age: float = 0.0) -> StoredWorkflow | None:
        """Read a workflow. With ``max_age`` (seconds), a copy this process read or wrote less
        than that long ago will do: starting runs of a busy workflow then costs no read.

        Writes through this store replace its copy at once, so the process that changes a
        workflow never sees the old one; other processes see it within ``max_age``.
        """
        if max_age > 0:
            seen = self._workflows_seen.get(name)
            if seen is not None and time.monotonic() - seen[0] < max_age:
                return seen[1]
        self._ready()
        asked = time.monotonic()
        rows = self._read_rows(self.table(WORKFLOWS), name, "wf")
        head = _head(rows, "wf")
        if head is None:
            return None
        stored = StoredWorkflow(name, _load(_gather(rows, "wf")["D"]), head.etag or "", int(head.props.get("Rows", 1)))
        if asked > self._workflows_written.get(name, -1.0):
            self._remember(stored, asked)
        return stored

    def _remember(self, stored: StoredWorkflow, when: float) -> StoredWorkflow:
        if len(self._workflows_seen) >= _WORKFLOWS_REMEMBERED:
            self._workflows_seen.clear()
        self._workflows_seen[stored.name] = (when, stored)
        return stored

    @contextlib.contextmanager
    def _writing(self, name: str) -> Iterator[float]:
        """Around a write of a workflow: yields when it began; after it, succeeded or not (a
        failed write may still have landed), the copy is gone and the write's end noted."""
        try:
            yield time.monotonic()
        finally:
            self._workflows_written[name] = time.monotonic()
            self._workflows_seen.pop(name, None)

    def create_workflow(self, name: str, doc: dict[str, Any]) -> StoredWorkflow:
        """Insert a workflow; :class:`AlreadyExists` when the name is taken."""
        self._ready()
        rows = _layout(name, "wf", {"D": _dump(doc)}, {"State": doc["state"]})
        with self._writing(name) as began:
            etags = self._submit(self.table(WORKFLOWS), name, [Op("create", r) for r in rows])
        return self._remember(StoredWorkflow(name, doc, etags["wf"], len(rows)), began)

    def replace_workflow(self, stored: StoredWorkflow, doc: dict[str, Any]) -> StoredWorkflow:
        """Replace a workflow's document if it still carries ``stored.etag``; else
        :class:`ConcurrencyConflict`."""
        self._ready()
        head = Row(stored.name, "wf", {"Rows": stored.rows}, stored.etag)
        ops = _replace_ops(stored.name, "wf", {"D": _dump(doc)}, {"State": doc["state"]}, head)
        with self._writing(stored.name) as began:
            etags = self._submit(self.table(WORKFLOWS), stored.name, ops)
        rows = sum(1 for op in ops if op.kind != "delete")
        return self._remember(StoredWorkflow(stored.name, doc, etags["wf"], rows), began)

    def put_workflow(
        self, name: str, definition: dict[str, Any], state: str, now: datetime
    ) -> tuple[StoredWorkflow, bool]:
        """Create or replace a workflow (no trigger state); return it and whether it was created."""
        for _ in range(5):
            current = self.get_workflow(name)
            doc = {
                "definition": definition,
                "state": state,
                "createdTime": current.doc["createdTime"] if current else now.isoformat(),
                "changedTime": now.isoformat(),
                "version": current.version + 1 if current else 1,
            }
            try:
                if current is None:
                    return self.create_workflow(name, doc), True
                return self.replace_workflow(current, doc), False
            except (AlreadyExists, ConcurrencyConflict):
                continue
        raise ConcurrencyConflict(f"workflow {name!r} kept changing while it was being saved")

    def delete_workflow(self, name: str, etag: str | None = None) -> bool:
        """Delete a workflow's rows; ``False`` when there was none.

        With ``etag``, only the version read: :class:`ConcurrencyConflict` when it changed.
        """
        self._ready()
        table = self.table(WORKFLOWS)
        for _ in range(5):
            rows = self._read_partition(table, name)
            head = _head(rows, "wf")
            if head is None:
                return False
            if etag is not None and head.etag != etag:
                raise ConcurrencyConflict(f"workflow {name!r} changed")
            try:
                with self._writing(name):
                    self._submit(table, name, [Op("delete", r, etag=r.etag if r is head else None) for r in rows])
            except ConcurrencyConflict:
                if etag is not None:
                    raise
                continue
            return True
        raise ConcurrencyConflict(f"workflow {name!r} kept changing while it was being deleted")

    # ------------------------------------------------------------------ run slots

    def active_runs(self, workflow: str) -> tuple[dict[str, str], str | None]:
        """The runs holding a concurrency slot of ``workflow`` (run id -> when it took the
        slot, ISO 8601), and the row's ETag."""
        self._ready()
        row = self._read_row(self.table(WORKFLOWS), workflow, "slots")
        if row is None:
            return {}, None
        runs = json.loads(str(row.props.get("Runs") or "{}"))
        if isinstance(runs, list):  # an earlier layout without times: as if taken long ago
            runs = dict.fromkeys(runs, "1970-01-01T00:00:00Z")
        return {str(k): str(v) for k, v in runs.items()}, row.etag

    def set_active_runs(self, workflow: str, runs: dict[str, str], etag: str | None) -> None:
        """Write the slot holders if nobody changed them since ``etag`` (``None``: the row is new)."""
        self._ready()
        row = Row(workflow, "slots", {"Runs": json.dumps(runs)})
        op = Op("create", row) if etag is None else Op("update", row, etag=etag)
        try:
            self._submit(self.table(WORKFLOWS), workflow, [op])
        except AlreadyExists as exc:
            raise ConcurrencyConflict("slots changed") from exc

    def list_workflows(self) -> list[StoredWorkflow]:
        self._ready()
        rows: list[Row] = []
        token: str | None = None
        while True:
            page, token = self._scan(self.table(WORKFLOWS), row_key="wf", equals={}, top=1000, continuation=token)
            rows += page
            if token is None:
                break
        out = []
        for head in rows:
            if int(head.props.get("Rows", 1)) > 1:
                stored = self.get_workflow(head.partition_key)
                if stored is None:
                    continue
            else:
                stored = StoredWorkflow(head.partition_key, _load(_gather([head], "wf")["D"]), head.etag or "")
            out.append(stored)
        return sorted(out, key=lambda w: w.name)

    # ------------------------------------------------------------------ runs

    def create_run(self, run: RunRecord, definition: WorkflowDefinition) -> LoadedRun:
        """Insert a new run with its pinned definition; :class:`AlreadyExists` if the id is taken."""
        self._ready()
        inline: dict[str, bytes] = {}
        own_rows: list[Row] = []
        for prefix, name, doc in (
            ("F", "def", definition.model_dump(mode="json", by_alias=True, exclude_defaults=True)),
            ("T", "trg", run.trigger.model_dump(mode="json")),
        ):
            data = _dump(doc)
            if len(data) <= INLINE_BYTES:
                inline[prefix] = data
            else:
                own_rows += _layout(run.id, name, {"D": data}, {})
        head_rows = _layout(run.id, "run", {**inline, "D": _dump(_run_doc(run))}, _run_props(run))
        rows = [*head_rows, *own_rows]
        _check_size(rows)
        etags = self._submit(self.table(RUNS), run.id, [Op("create", r) for r in rows])
        # A snapshot: the caller goes on changing its run, and this is what is stored.
        snapshot = run.model_copy(deep=True)
        return LoadedRun(snapshot, definition, etags["run"], overflow_rows=len(head_rows) - 1, inline=inline)

    def load_run(self, run_id: str) -> LoadedRun | None:
        self._ready()
        rows = self._read_rows(self.table(RUNS), run_id, "run")
        head = _head(rows, "run")
        if head is None:
            return None
        docs = _gather(rows, "run")
        inline = {prefix: data for prefix, data in docs.items() if prefix != "D"}
        doc = _load(docs["D"])
        doc["trigger"] = _load(inline["T"] if "T" in inline else _gather(rows, "trg")["D"])
        definition = _load(inline["F"] if "F" in inline else _gather(rows, "def")["D"])
        return LoadedRun(
            run=RunRecord.model_validate(doc),
            definition=WorkflowDefinition.model_validate(definition),
            etag=head.etag or "",
            overflow_rows=int(head.props.get("Rows", 1)) - 1,
            inline=inline,
        )

    def save_run(self, loaded: LoadedRun, run: RunRecord) -> LoadedRun:
        """Replace the run's mutable rows if they still carry ``loaded.etag``.

        Raises :class:`ConcurrencyConflict` when someone else wrote first: the caller reloads
        and decides again.
        """
        self._ready()
        new_rows = _layout(run.id, "run", {**loaded.inline, "D": _dump(_run_doc(run))}, _run_props(run))
        _check_size(new_rows)
        ops = [Op("update", new_rows[0], etag=loaded.etag)]
        ops += [Op("upsert", r) for r in new_rows[1:]]
        ops += [Op("delete", Row(run.id, f"run.{i}")) for i in range(len(new_rows), loaded.overflow_rows + 1)]
        etags = self._submit(self.table(RUNS), run.id, ops)
        snapshot = run.model_copy(deep=True)  # what is stored, whatever the caller does next
        return LoadedRun(
            snapshot, loaded.definition, etags["run"], overflow_rows=len(new_rows) - 1, inline=loaded.inline
        )

    def list_runs(
        self, workflow: str, *, status: str | None, top: int, continuation: str | None
    ) -> tuple[list[RunSummary], str | None]:
        """Runs of one workflow, newest first (run ids sort newest first), one page at a time."""
        self._ready()
        equals = {"Workflow": workflow}
        if status:
            equals["Status"] = status
        rows, token = self._scan(self.table(RUNS), row_key="run", equals=equals, top=top, continuation=continuation)
        return [
            RunSummary(
                id=r.partition_key,
                workflow=r.props.get("Workflow", ""),
                status=r.props.get("Status", ""),
                start_time=r.props.get("StartTime"),
                end_time=r.props.get("EndTime") or None,
                error=json.loads(r.props["Error"]) if r.props.get("Error") else None,
            )
            for r in rows
        ], token

    def claim_idempotency_key(self, workflow: str, key: str, run_id: str) -> str:
        """Bind ``key`` to ``run_id`` unless it is bound already; return the bound run id."""
        self._ready()
        digest = hashlib.sha256(f"{workflow}\x00{key}".encode()).hexdigest()[:48]
        pk = f"idem-{digest}"
        table = self.table(RUNS)
        try:
            self._submit(table, pk, [Op("create", Row(pk, "idem", {"RunId": run_id, "Workflow": workflow}))])
        except AlreadyExists:
            existing = self._read_row(table, pk, "idem")
            if existing is None:  # deleted between the two calls: the key is free again
                return self.claim_idempotency_key(workflow, key, run_id)
            return str(existing.props["RunId"])
        return run_id

    def _read_rows(self, table: str, partition_key: str, head_key: str) -> list[Row]:
        """The head row by a point read (the cheapest read there is), and the rest of the
        partition only when the head says the document continues elsewhere."""
        head = self._read_row(table, partition_key, head_key)
        if head is None:
            return []
        inline = {k[0] for k in head.props if k.endswith("Chunks") and len(k) == 7}
        complete = int(head.props.get("Rows", 1)) == 1 and (head_key != "run" or {"F", "T"} <= inline)
        return [head] if complete else self._read_partition(table, partition_key)

    # ------------------------------------------------------------------ due items
    #
    # The index is split into one table per day an item is due (``<prefix>dueYYYYMMDD``).
    # Range queries only read what is due either way; the split keeps the tables the sweep
    # writes to (claims, deletes) small, whatever is waiting weeks ahead, and lets a day's
    # table go as a whole once it is empty.

    def due_table(self, due_at: datetime) -> str:
        return self.table(f"{DUE}{due_at.astimezone(UTC):%Y%m%d}")

    def add_due(self, run_id: str, due_at: datetime) -> None:
        """Put ``run_id`` in the index at ``due_at`` (written before the state that needs it)."""
        self._ready()
        table = self.due_table(due_at)
        if table not in self._due_tables:
            self._ensure_tables([table])
            self._due_tables.add(table)
        pk, rk = due_keys(run_id, due_at)
        # The same run at the same microsecond already there: that one item serves both.
        props = {"RunId": run_id, "DueAt": iso(due_at), "ClaimedUntil": ""}
        with contextlib.suppress(AlreadyExists):
            self._submit(table, pk, [Op("create", Row(pk, rk, props))])

    def delete_due(self, run_id: str, due_at: datetime) -> None:
        """Remove an item if it is there (an item already gone is not an error)."""
        self._ready()
        pk, rk = due_keys(run_id, due_at)
        with contextlib.suppress(ConcurrencyConflict, TableMissing):
            self._submit(self.due_table(due_at), pk, [Op("delete", Row(pk, rk))])

    def due_items(self, now: datetime, limit: int) -> list[DueItem]:
        """Items due at or before ``now``, oldest first, at most ``limit``.

        Day tables older than yesterday that hold nothing any more are deleted on the way.
        """
        self._ready()
        last = self.due_table(now)
        tables = sorted(t for t in self._list_tables(self.table(DUE), last) if t <= last)
        # "~" sorts after every shard digit and every run id: the bounds take in all of "now".
        pk_max, rk_max = due_keys("0", now)
        pk_bound = pk_max.rsplit("-", 1)[0] + "-~"
        rk_bound = rk_max.split("-", 1)[0] + "-~"
        yesterday = self.due_table(now - timedelta(days=1))
        items: list[DueItem] = []
        for table in tables:
            if len(items) >= limit:
                break
            # Items under a live claim are left out, so that a sweep that died holding many
            # claims does not fill every later batch with items nobody may touch.
            rows = self._range(table, pk_max=pk_bound, rk_max=rk_bound, claimed_before=iso(now), top=limit - len(items))
            items += [_due_item(r) for r in rows]
            if not rows and table < yesterday and not self._range(table, pk_max="~", rk_max="~", top=1):
                # Every item of a past day is due, so an empty answer means an empty table.
                self._drop_table(table)
                self._due_tables.discard(table)
        return items

    def claim_due(self, item: DueItem, until: datetime) -> DueItem | None:
        """Mark an item as being worked on until ``until``; ``None`` if someone changed it first."""
        self._ready()
        pk, rk = item.keys
        props = {"RunId": item.run_id, "DueAt": iso(item.due_at), "ClaimedUntil": iso(until)}
        try:
            etags = self._submit(self.due_table(item.due_at), pk, [Op("update", Row(pk, rk, props), etag=item.etag)])
        except (ConcurrencyConflict, TableMissing):
            return None
        return DueItem(item.run_id, item.due_at, etags[rk], until)

    # ------------------------------------------------------------------ health

    def ping(self) -> None:
        """One cheap read that fails when storage does not answer."""
        self._ready()
        self._read_row(self.table(WORKFLOWS), "~health", "~health")

    # ------------------------------------------------------------------ primitives

    def _ready(self) -> None:
        if not self._tables_ready:
            self._ensure_tables([self.table(WORKFLOWS), self.table(RUNS)])
            self._tables_ready = True

    @abstractmethod
    def _ensure_tables(self, names: Sequence[str]) -> None:
        """Create the tables that do not exist yet."""

    @abstractmethod
    def _read_row(self, table: str, partition_key: str, row_key: str) -> Row | None:
        """One row, or ``None``."""

    @abstractmethod
    def _read_partition(self, table: str, partition_key: str) -> list[Row]:
        """Every row of one partition, in row-key order."""

    @abstractmethod
    def _submit(self, table: str, partition_key: str, ops: Sequence[Op]) -> dict[str, str]:
        """Apply ``ops`` atomically; return the new ETag of each written row by row key.

        Raises :class:`AlreadyExists` when a ``create`` finds its row, and
        :class:`ConcurrencyConflict` when an ``update``/``delete`` ETag no longer matches.
        """

    @abstractmethod
    def _list_tables(self, prefix: str, last: str) -> list[str]:
        """Names of the tables that start with ``prefix``, up to ``last``."""

    @abstractmethod
    def _drop_table(self, name: str) -> None:
        """Delete a table (gone already is fine)."""

    @abstractmethod
    def _range(self, table: str, *, pk_max: str, rk_max: str, top: int, claimed_before: str | None = None) -> list[Row]:
        """Rows with PartitionKey <= ``pk_max`` and RowKey <= ``rk_max`` (and, when given,
        ``ClaimedUntil`` < ``claimed_before``), in key order, at most ``top``."""

    @abstractmethod
    def _scan(
        self, table: str, *, row_key: str, equals: dict[str, str], top: int, continuation: str | None
    ) -> tuple[list[Row], str | None]:
        """Rows with this row key and these property values, in partition-key order, paged."""


# ---------------------------------------------------------------------- encoding


def _due_item(row: Row) -> DueItem:
    claimed = row.props.get("ClaimedUntil")
    return DueItem(
        run_id=str(row.props["RunId"]),
        due_at=datetime.fromisoformat(str(row.props["DueAt"]).replace("Z", "+00:00")),
        etag=row.etag or "",
        claimed_until=datetime.fromisoformat(str(claimed).replace("Z", "+00:00")) if claimed else None,
    )


def _run_doc(run: RunRecord) -> dict[str, Any]:
    return run.model_dump(mode="json", exclude={"trigger"})


def _run_props(run: RunRecord) -> dict[str, Any]:
    return {
        "Workflow": run.workflow,
        "Status": run.status.value,
        "StartTime": iso(run.start_time),
        "EndTime": iso(run.end_time) if run.end_time else "",
        "Error": json.dumps(run.error.model_dump()) if run.error else "",
    }


def _dump(doc: dict[str, Any]) -> bytes:
    # Level 1: most of the size win on JSON for a fraction of the CPU of the default level.
    data = zlib.compress(json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode(), 1)
    if len(data) > MAX_DOCUMENT_BYTES:
        raise RunTooLarge(f"a document is {len(data)} bytes compressed; at most {MAX_DOCUMENT_BYTES} fit")
    return data


def _load(data: bytes) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(zlib.decompress(data))
    return result


def _layout(pk: str, name: str, docs: dict[str, bytes], props: dict[str, Any]) -> list[Row]:
    """Lay documents out as chunk properties, 10 to a row, in the order given.

    The first row is ``name`` and carries ``props``, the chunk count of each document
    (``<prefix>Chunks``) and the row count; the rest are ``name.1``, ``name.2``...
    """
    chunks: list[tuple[str, bytes]] = []
    counts: dict[str, int] = {}
    for prefix, data in docs.items():
        pieces = [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)] or [b""]
        counts[f"{prefix}Chunks"] = len(pieces)
        chunks += [(f"{prefix}{n:03d}", piece) for n, piece in enumerate(pieces)]
    groups = [chunks[i : i + CHUNKS_PER_ROW] for i in range(0, len(chunks), CHUNKS_PER_ROW)]
    rows = []
    for index, group in enumerate(groups):
        row_props: dict[str, Any] = dict(group)
        if index == 0:
            row_props.update(props)
            row_props.update(counts)
            row_props["Rows"] = len(groups)
        rows.append(Row(pk, name if index == 0 else f"{name}.{index}", row_props))
    return rows


def _gather(rows: Iterable[Row], name: str) -> dict[str, bytes]:
    """The documents :func:`_layout` wrote under ``name``, by prefix."""
    by_key = {r.row_key: r for r in rows}
    head = by_key.get(name)
    if head is None:
        raise NotFound(f"row {name!r} is missing")
    props: dict[str, Any] = {}
    for index in range(int(head.props.get("Rows", 1))):
        row = by_key.get(name if index == 0 else f"{name}.{index}")
        if row is None:
            raise ValueError(f"row {name}.{index} is missing")
        props.update(row.props)
    docs = {}
    for key, count in head.props.items():
        if key.endswith("Chunks") and len(key) == 7:
            prefix = key[0]
            docs[prefix] = b"".join(_as_bytes(props[f"{prefix}{n:03d}"]) for n in range(int(count)))
    return docs


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    # Some table clients hand binary back wrapped or base64-encoded; accept both.
    inner = getattr(value, "value", value)
    if isinstance(inner, bytes | bytearray):
        return bytes(inner)
    return base64.b64decode(inner)


def _head(rows: Iterable[Row], name: str) -> Row | None:
    return next((r for r in rows if r.row_key == name), None)


def _replace_ops(pk: str, name: str, docs: dict[str, bytes], props: dict[str, Any], head: Row) -> list[Op]:
    """Replace a document's rows; the head's ETag guards the set (overflow rows only change with it)."""
    new_rows = _layout(pk, name, docs, props)
    ops = [Op("update", new_rows[0], etag=head.etag)]
    ops += [Op("upsert", r) for r in new_rows[1:]]
    ops += [Op("delete", Row(pk, f"{name}.{i}")) for i in range(len(new_rows), int(head.props.get("Rows", 1)))]
    return ops


def _check_size(rows: Sequence[Row]) -> None:
    total = sum(len(v) for r in rows for v in r.props.values() if isinstance(v, bytes))
    if total > MAX_DOCUMENT_BYTES:
        raise RunTooLarge(f"the run is {total} bytes compressed; at most {MAX_DOCUMENT_BYTES} fit in one write")
