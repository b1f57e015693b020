"""The store contract, run against the in-memory fake and against Table Storage (Azurite).

The same tests on both: whatever the engine may rely on holds for the fake it is unit-tested
with and for the real adapter it runs on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.data.tables import TableServiceClient

from scripts.azurite import Azurite
from shared.engine import new_run_id
from shared.errors import AlreadyExists, ConcurrencyConflict, RunTooLarge
from shared.models import ActionRecord, ActionStatus, RunRecord, RunStatus, TriggerRecord, WorkflowDefinition
from shared.store import MemoryStore, Store
from shared.store.table import TableStore

NOW = datetime(2026, 1, 1, tzinfo=UTC)
DEFINITION = WorkflowDefinition.model_validate(
    {
        "triggers": {"manual": {"type": "Request"}},
        "actions": {"A": {"type": "Http", "inputs": {"method": "GET", "uri": "http://x"}}},
    }
)


@pytest.fixture(params=["memory", "table"])
def store(request: pytest.FixtureRequest, table_prefix: str) -> Iterator[Store]:
    if request.param == "memory":
        yield MemoryStore(table_prefix)
        return
    azurite: Azurite = request.getfixturevalue("azurite")
    service = TableServiceClient.from_connection_string(azurite.connection_string)
    try:
        yield TableStore(service, table_prefix)
    finally:
        for table in service.list_tables():
            if table.name.startswith(table_prefix):
                service.delete_table(table.name)
        service.close()


def make_run(*, workflow: str = "wf", when: datetime = NOW, body: object = None) -> RunRecord:
    return RunRecord(
        id=new_run_id(when),
        workflow=workflow,
        start_time=when,
        trigger=TriggerRecord(name="manual", outputs={"headers": {}, "body": body}),
        actions={"A": ActionRecord()},
        client_tracking_id="t",
        base_url="http://127.0.0.1:7071",
    )


class TestRuns:
    def test_a_created_run_loads_back_equal(self, store: Store) -> None:
        """A run and its pinned definition read back exactly as written."""
        run = make_run(body={"order": 1, "text": "héllo"})
        store.create_run(run, DEFINITION)
        loaded = store.load_run(run.id)
        assert loaded is not None
        assert loaded.run == run
        assert loaded.definition == DEFINITION

    def test_creating_the_same_run_twice_is_refused(self, store: Store) -> None:
        """A second insert with the same id raises AlreadyExists and keeps the first."""
        run = make_run()
        store.create_run(run, DEFINITION)
        with pytest.raises(AlreadyExists):
            store.create_run(run.model_copy(update={"workflow": "other"}), DEFINITION)
        loaded = store.load_run(run.id)
        assert loaded is not None
        assert loaded.run.workflow == "wf"

    def test_a_save_with_a_stale_etag_is_refused(self, store: Store) -> None:
        """Two writers from the same read: the first wins, the second gets ConcurrencyConflict."""
        loaded = store.create_run(make_run(), DEFINITION)
        first = loaded.run.model_copy(deep=True)
        first.actions["A"].status = ActionStatus.SUCCEEDED
        store.save_run(loaded, first)
        second = loaded.run.model_copy(deep=True)
        second.actions["A"].status = ActionStatus.FAILED
        with pytest.raises(ConcurrencyConflict):
            store.save_run(loaded, second)
        current = store.load_run(loaded.run.id)
        assert current is not None
        assert current.run.actions["A"].status == ActionStatus.SUCCEEDED

    def test_a_large_incompressible_body_is_split_and_reassembled(self, store: Store) -> None:
        """A body larger than one entity is spread over rows and comes back whole, then shrinks cleanly."""
        big = os.urandom(800_000).hex()  # 1.6 MB of text that compresses to about 0.8 MB
        run = make_run()
        loaded = store.create_run(run, DEFINITION)
        grown = run.model_copy(deep=True)
        grown.actions["A"].outputs = {"body": big}
        loaded = store.save_run(loaded, grown)
        assert loaded.overflow_rows >= 1
        again = store.load_run(run.id)
        assert again is not None
        assert again.run.actions["A"].outputs == {"body": big}

        shrunk = again.run.model_copy(deep=True)
        shrunk.actions["A"].outputs = {"body": "small"}
        store.save_run(again, shrunk)
        last = store.load_run(run.id)
        assert last is not None
        assert last.overflow_rows == 0
        assert last.run.actions["A"].outputs == {"body": "small"}

    def test_a_run_too_large_for_one_write_is_refused_and_nothing_changes(self, store: Store) -> None:
        """A document over what one transaction carries raises RunTooLarge and leaves the stored run as it was."""
        run = make_run()
        loaded = store.create_run(run, DEFINITION)
        huge = run.model_copy(deep=True)
        huge.actions["A"].outputs = {"body": os.urandom(2_600_000).hex()}
        with pytest.raises(RunTooLarge):
            store.save_run(loaded, huge)
        again = store.load_run(run.id)
        assert again is not None
        assert again.run == run

    def test_a_missing_run_loads_as_none(self, store: Store) -> None:
        """Loading an id that was never written returns None."""
        assert store.load_run(new_run_id(NOW)) is None

    def test_runs_list_newest_first_by_workflow_and_status_with_paging(self, store: Store) -> None:
        """Listing filters by workflow and status, pages with a token, and puts the newest first."""
        ids = []
        for minute in range(5):
            run = make_run(when=NOW + timedelta(minutes=minute))
            if minute % 2:
                run.status = RunStatus.SUCCEEDED
            store.create_run(run, DEFINITION)
            ids.append(run.id)
        store.create_run(make_run(workflow="other"), DEFINITION)

        page, token = store.list_runs("wf", status=None, top=3, continuation=None)
        assert [s.id for s in page] == list(reversed(ids))[:3]
        assert token is not None
        rest, token = store.list_runs("wf", status=None, top=3, continuation=token)
        assert [s.id for s in rest] == list(reversed(ids))[3:]
        assert token is None
        done, _ = store.list_runs("wf", status="Succeeded", top=10, continuation=None)
        assert [s.id for s in done] == [ids[3], ids[1]]


class TestWorkflows:
    def test_put_creates_then_replaces_with_a_new_version(self, store: Store) -> None:
        """The first save creates version 1, the next replaces it as version 2 and keeps createdTime."""
        created, was_new = store.put_workflow("wf", {"triggers": {}}, "Enabled", NOW)
        replaced, again_new = store.put_workflow("wf", {"triggers": {"t": {}}}, "Disabled", NOW + timedelta(hours=1))
        assert (was_new, again_new) == (True, False)
        assert (created.version, replaced.version) == (1, 2)
        stored = store.get_workflow("wf")
        assert stored is not None
        assert stored.definition == {"triggers": {"t": {}}}
        assert stored.state == "Disabled"
        assert stored.created_time == NOW

    def test_workflows_list_by_name_and_delete(self, store: Store) -> None:
        """The list is sorted by name; a deleted workflow is gone and deleting it again reports False."""
        for name in ("b", "a"):
            store.put_workflow(name, {"triggers": {}}, "Enabled", NOW)
        assert [w.name for w in store.list_workflows()] == ["a", "b"]
        assert store.delete_workflow("a") is True
        assert store.get_workflow("a") is None
        assert store.delete_workflow("a") is False


def another_instance(store: Store) -> Store:
    """A second store over the same data, as a second instance of the app has."""
    if isinstance(store, MemoryStore):
        return store.sibling()
    assert isinstance(store, TableStore)
    return TableStore(store._service, store._prefix)


class TestRecentWorkflows:
    """``get_workflow(max_age=...)``: what starting runs may reuse, and what it must not."""

    def test_a_recent_copy_is_reused_without_a_read(self, store: Store) -> None:
        store.put_workflow("wf", {"triggers": {}}, "Enabled", NOW)
        reads = count_reads(store)
        first = store.get_workflow("wf", max_age=60)
        again = store.get_workflow("wf", max_age=60)
        assert first is not None
        assert again is first
        assert reads() == 0  # the write through this store left a copy
        assert again.parsed() is first.parsed()  # validated once

    def test_this_instance_sees_its_own_changes_at_once(self, store: Store) -> None:
        store.put_workflow("wf", {"triggers": {}}, "Enabled", NOW)
        assert store.get_workflow("wf", max_age=60) is not None
        store.put_workflow("wf", {"triggers": {}}, "Disabled", NOW)
        seen = store.get_workflow("wf", max_age=60)
        assert seen is not None
        assert seen.state == "Disabled"
        assert store.delete_workflow("wf") is True
        assert store.get_workflow("wf", max_age=60) is None

    def test_another_instance_sees_a_change_once_its_copy_is_older_than_max_age(self, store: Store) -> None:
        other = another_instance(store)
        store.put_workflow("wf", {"triggers": {}}, "Enabled", NOW)
        assert (seen := other.get_workflow("wf", max_age=60)) is not None
        assert seen.state == "Enabled"
        store.put_workflow("wf", {"triggers": {}}, "Disabled", NOW)
        stale = other.get_workflow("wf", max_age=60)
        assert stale is not None
        assert stale.state == "Enabled"  # within max_age: the copy it has
        fresh = other.get_workflow("wf", max_age=0)
        assert fresh is not None
        assert fresh.state == "Disabled"
        # A fresh read replaces the copy, so later starts use it too.
        again = other.get_workflow("wf", max_age=60)
        assert again is not None
        assert again.state == "Disabled"

    def test_a_workflow_that_does_not_exist_is_read_every_time(self, store: Store) -> None:
        other = another_instance(store)
        assert other.get_workflow("wf", max_age=60) is None
        store.put_workflow("wf", {"triggers": {}}, "Enabled", NOW)
        assert other.get_workflow("wf", max_age=60) is not None

    def test_a_failed_write_forgets_the_copy(self, store: Store) -> None:
        """A write that failed may have landed: the next start reads again."""
        stored, _ = store.put_workflow("wf", {"triggers": {}}, "Enabled", NOW)
        other = another_instance(store)
        other.put_workflow("wf", {"triggers": {}}, "Disabled", NOW)
        with pytest.raises(ConcurrencyConflict):
            store.replace_workflow(stored, {**stored.doc, "state": "Enabled"})  # stale ETag
        seen = store.get_workflow("wf", max_age=60)
        assert seen is not None
        assert seen.state == "Disabled"


def count_reads(store: Store) -> Callable[[], int]:
    """Count the reads ``store`` makes from now on."""
    reads = 0
    read_row, read_partition = store._read_row, store._read_partition

    def counting_row(*args: Any, **kwargs: Any) -> Any:
        nonlocal reads
        reads += 1
        return read_row(*args, **kwargs)

    def counting_partition(*args: Any, **kwargs: Any) -> Any:
        nonlocal reads
        reads += 1
        return read_partition(*args, **kwargs)

    store._read_row = counting_row  # type: ignore[method-assign]
    store._read_partition = counting_partition  # type: ignore[method-assign]
    return lambda: reads


class TestIdempotency:
    def test_the_first_claim_of_a_key_wins(self, store: Store) -> None:
        """A key binds to the first run id that claims it; later claims get that id back."""
        assert store.claim_idempotency_key("wf", "k1", "run-1") == "run-1"
        assert store.claim_idempotency_key("wf", "k1", "run-2") == "run-1"
        assert store.claim_idempotency_key("other", "k1", "run-3") == "run-3"
