"""Azure Table Storage :class:`~shared.store.base.Store` (``azure-data-tables``).

Only primitives live here; key layout, encoding and the meaning of conflicts are the base
class's. ``azure.core`` errors become Hookflow's store errors, raised ``from`` the original.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.data.tables import TableClient, TableServiceClient, TableTransactionError, UpdateMode

from shared.errors import AlreadyExists, BadRequest, ConcurrencyConflict, ServiceUnavailable, TableMissing
from shared.store.base import Op, Row, Store

_KEYS = ("PartitionKey", "RowKey")


class TableStore(Store):
    def __init__(self, service: TableServiceClient, prefix: str) -> None:
        super().__init__(prefix)
        self._service = service
        self._clients: dict[str, TableClient] = {}

    def _client(self, table: str) -> TableClient:
        client = self._clients.get(table)
        if client is None:
            client = self._clients[table] = self._service.get_table_client(table)
        return client

    def _ensure_tables(self, names: Sequence[str]) -> None:
        with _unavailable():
            for name in names:
                self._service.create_table_if_not_exists(name)

    def _list_tables(self, prefix: str, last: str) -> list[str]:
        with _unavailable():
            found = self._service.query_tables(
                "TableName ge @low and TableName le @high", parameters={"low": prefix, "high": last}
            )
            return sorted(t.name for t in found)

    def _drop_table(self, name: str) -> None:
        with _unavailable():
            self._service.delete_table(name)  # no error when it is gone already
        self._clients.pop(name, None)

    def _read_row(self, table: str, partition_key: str, row_key: str) -> Row | None:
        with _unavailable():
            try:
                entity = self._client(table).get_entity(partition_key, row_key)
            except ResourceNotFoundError:
                return None
        return _row(entity)

    def _read_partition(self, table: str, partition_key: str) -> list[Row]:
        with _unavailable():
            entities = self._client(table).query_entities("PartitionKey eq @pk", parameters={"pk": partition_key})
            return sorted((_row(e) for e in entities), key=lambda r: r.row_key)

    def _submit(self, table: str, partition_key: str, ops: Sequence[Op]) -> dict[str, str]:
        client = self._client(table)
        with _unavailable():
            if len(ops) == 1:
                return self._submit_one(client, ops[0])
            try:
                results = client.submit_transaction([_operation(op) for op in ops])
            except TableTransactionError as exc:
                code = getattr(exc, "error_code", None) or ""
                if "AlreadyExists" in str(code):
                    raise AlreadyExists(str(code)) from exc
                if "ConditionNotSatisfied" in str(code) or "ResourceNotFound" in str(code):
                    raise ConcurrencyConflict(str(code)) from exc
                raise
        etags: dict[str, str] = {}
        for op, meta in zip(ops, results, strict=True):
            if op.kind != "delete":
                etags[op.row.row_key] = str(meta.get("etag", ""))
        return etags

    @staticmethod
    def _submit_one(client: TableClient, op: Op) -> dict[str, str]:
        entity = _entity(op.row)
        try:
            if op.kind == "create":
                meta = client.create_entity(entity)
            elif op.kind == "update":
                meta = client.update_entity(
                    entity, mode=UpdateMode.REPLACE, etag=op.etag, match_condition=_condition(op.etag)
                )
            elif op.kind == "upsert":
                meta = client.upsert_entity(entity, mode=UpdateMode.REPLACE)
            else:
                client.delete_entity(
                    op.row.partition_key, op.row.row_key, etag=op.etag, match_condition=_condition(op.etag)
                )
                return {}
        except ResourceExistsError as exc:
            raise AlreadyExists(op.row.row_key) from exc
        except ResourceNotFoundError as exc:
            if "TableNotFound" in str(getattr(exc, "error_code", "") or exc):
                raise TableMissing(op.row.partition_key) from exc
            raise ConcurrencyConflict(op.row.row_key) from exc
        except ResourceModifiedError as exc:
            raise ConcurrencyConflict(op.row.row_key) from exc
        except HttpResponseError as exc:
            if exc.status_code == 412:
                raise ConcurrencyConflict(op.row.row_key) from exc
            raise
        return {op.row.row_key: str(meta.get("etag", ""))}

    def _range(self, table: str, *, pk_max: str, rk_max: str, top: int, claimed_before: str | None = None) -> list[Row]:
        # PartitionKey is the leading key, so the service reads only up to pk_max: items due
        # later are never touched, however many there are.
        query = "PartitionKey le @pk and RowKey le @rk"
        parameters: dict[str, Any] = {"pk": pk_max, "rk": rk_max}
        if claimed_before is not None:
            query += " and ClaimedUntil lt @claimed"
            parameters["claimed"] = claimed_before
        with _unavailable():
            pages = self._client(table).query_entities(query, parameters=parameters, results_per_page=top).by_page()
            rows: list[Row] = []
            for page in pages:
                rows.extend(_row(e) for e in page)
                if len(rows) >= top:
                    break
        return rows[:top]

    def _scan(
        self, table: str, *, row_key: str, equals: dict[str, str], top: int, continuation: str | None
    ) -> tuple[list[Row], str | None]:
        clauses = ["RowKey eq @rk"]
        parameters: dict[str, Any] = {"rk": row_key}
        for index, (name, value) in enumerate(sorted(equals.items())):
            clauses.append(f"{name} eq @p{index}")
            parameters[f"p{index}"] = value
        token = _decode_token(continuation)
        with _unavailable():
            pages = (
                self._client(table)
                .query_entities(" and ".join(clauses), parameters=parameters, results_per_page=top)
                .by_page(continuation_token=token)
            )
            # One service page per call, with the service's own token: a page can come back
            # short (partition-range boundaries), and cutting pages to size would lose rows.
            page: Any = next(pages, [])
            rows = [_row(e) for e in page]
            next_token = pages.continuation_token  # type: ignore[attr-defined]
        encoded = base64.urlsafe_b64encode(json.dumps(next_token).encode()).decode() if next_token else None
        return rows, encoded


def _decode_token(continuation: str | None) -> Any:
    if not continuation:
        return None
    try:
        token = json.loads(base64.urlsafe_b64decode(continuation.encode()))
    except (ValueError, binascii.Error) as exc:
        raise BadRequest("continuationToken is not one this service handed out", code="InvalidParameter") from exc
    if not isinstance(token, dict):
        raise BadRequest("continuationToken is not one this service handed out", code="InvalidParameter")
    return token


def _condition(etag: str | None) -> MatchConditions:
    return MatchConditions.IfNotModified if etag else MatchConditions.Unconditionally


def _operation(op: Op) -> tuple[Any, ...]:
    entity = _entity(op.row)
    if op.kind == "create":
        return ("create", entity)
    if op.kind == "upsert":
        return ("upsert", entity, {"mode": UpdateMode.REPLACE})
    if op.kind == "update":
        return ("update", entity, {"mode": UpdateMode.REPLACE, "etag": op.etag, "match_condition": _condition(op.etag)})
    return ("delete", entity, {"etag": op.etag, "match_condition": _condition(op.etag)})


def _entity(row: Row) -> dict[str, Any]:
    return {"PartitionKey": row.partition_key, "RowKey": row.row_key, **row.props}


def _row(entity: Any) -> Row:
    props = {k: v for k, v in entity.items() if k not in _KEYS}
    etag = entity.metadata.get("etag") if hasattr(entity, "metadata") else None
    return Row(entity["PartitionKey"], entity["RowKey"], props, etag)


class _unavailable:
    """Turn 'storage did not answer' into a 503 for the caller, keeping the cause."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, ServiceRequestError | ServiceResponseError):
            raise ServiceUnavailable("storage did not answer") from exc
