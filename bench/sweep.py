"""Sweep benchmark: does the sweep's cost follow the due items only?

Two stores in one Azurite: one holds nothing but the work of the round; the other also holds
100,000 alarms of waiting runs that are not due (due in 30 to 120 days). Each round starts
100 webhook runs on each store through the engine, moves the clock past their one-minute
timeout, and times one sweep, which times them out, unsubscribes and ends them.

The not-due alarms are written straight into the due-item index (``Store.add_due``), without
run rows behind them: the sweep never reads a run whose alarm is not due (the transaction counts show it),
and 100,000 single-run inserts would take Azurite many minutes.

Printed: sweep seconds for each store (median of the rounds), the median of the per-round
ratios (each round sweeps both stores back to back), and the storage transactions the sweep
spends per due item.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from azure.core.pipeline.transport import RequestsTransport
from azure.data.tables import TableServiceClient

from bench.common import TransactionCounter
from scripts.azurite import Azurite
from shared.engine import Engine, InboundRequest
from shared.outbound import RequestsSender, new_session
from shared.signing import CallbackSigner
from shared.store.table import TableStore
from shared.triggers import Workflows

DUE_PER_ROUND = 100


class ManualClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _target() -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _seed_not_due(store: TableStore, count: int, base: datetime) -> float:
    """Write ``count`` far-future alarms; return the seconds it took.

    Single inserts from 8 threads: Azurite takes entity-group transactions several times
    slower per entity than single inserts.
    """

    def insert(i: int) -> None:
        run_id = f"{i:017d}{secrets.token_hex(6)}"
        store.add_due(run_id, base + timedelta(days=30) + timedelta(seconds=(i * 7919) % (90 * 86400)))

    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(insert, range(count)))
    return time.perf_counter() - started


def webhook_workflow(url: str, *, timeout: str | None = None) -> dict[str, Any]:
    """A workflow of one webhook action on the loopback target at ``url``."""
    wait: dict[str, Any] = {
        "type": "HttpWebhook",
        "inputs": {
            "subscribe": {"method": "POST", "uri": f"{url}/subscribe", "retryPolicy": {"type": "none"}},
            "unsubscribe": {"method": "POST", "uri": f"{url}/unsubscribe"},
        },
    }
    if timeout is not None:
        wait["limit"] = {"timeout": timeout}
    return {"definition": {"triggers": {"manual": {"type": "Request"}}, "actions": {"Wait": wait}}}


def long_wait_life(engine: Engine, counter: TransactionCounter, clock: ManualClock, url: str) -> dict[str, int]:
    """Storage transactions of a one-webhook run resumed after its lease has run out.

    The run's alarm is first due when the start's lease ends; the sweep then finds the run
    waiting and re-arms the alarm for the wait's timeout. Counted by the table client's
    request hook, in three parts: the start, that sweep (less its range query, which every
    item due in a sweep shares), and the callback.
    """
    Workflows(engine).put("approval", webhook_workflow(url))
    request = InboundRequest("POST", "http://127.0.0.1/api/x", {"Content-Type": "application/json"}, b"{}")
    first = engine.start_run("approval", request)  # a first start, as a busy workflow has had
    engine.cancel_run(first.id)
    spent: dict[str, int] = {}
    before = counter.count
    run = engine.start_run("approval", request)
    spent["start"] = counter.count - before
    clock.now += engine.lease - timedelta(minutes=1)
    before = counter.count
    engine.sweep()  # nothing due yet: what the range query alone costs
    query_cost = counter.count - before
    clock.now += timedelta(minutes=2)
    before = counter.count
    engine.sweep()
    spent["sweep at the lease's end"] = counter.count - before - query_cost
    callback = urlsplit(engine.callback_urls(engine.get_run(run.id).run)["Wait"])
    query = dict(parse_qsl(callback.query))
    clock.now += timedelta(hours=1)
    before = counter.count
    resumed = engine.receive_action_callback(run.id, "Wait", query, request)
    spent["callback"] = counter.count - before
    if resumed.status.value != "Succeeded":
        raise RuntimeError(f"the long wait ended {resumed.status.value}")
    return spent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--not-due", type=int, default=100_000, help="alarms that are not due (default 100000)")
    parser.add_argument("--rounds", type=int, default=9, help="rounds; figures are medians (default 9)")
    args = parser.parse_args(argv)

    print(f"sweep: {DUE_PER_ROUND} due items, with {args.not_due} not-due items vs none, {args.rounds} rounds")
    target = _target()
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    times: dict[str, list[float]] = {"none": [], "loaded": []}
    ratios: list[float] = []
    per_item: list[float] = []
    try:
        with Azurite.for_tests() as azurite:
            counter = TransactionCounter()
            service = TableServiceClient.from_connection_string(
                azurite.connection_string,
                raw_request_hook=counter,
                transport=RequestsTransport(session=new_session(), session_owner=False),
            )
            engines = {}
            for label in ("none", "loaded", "long"):
                store = TableStore(service, "sw" + label + secrets.token_hex(2))
                engines[label] = Engine(
                    store,
                    RequestsSender(
                        new_session(), timeout_seconds=30, max_body_bytes=1 << 20, allow_private_network=True
                    ),
                    CallbackSigner([secrets.token_bytes(32)]),
                    max_body_bytes=1 << 20,
                    clock=clock,
                )
                url = f"http://127.0.0.1:{target.server_port}"
                Workflows(engines[label]).put("timeouts", webhook_workflow(url, timeout="PT1M"))
            loaded_store = engines["loaded"].store
            assert isinstance(loaded_store, TableStore)
            seconds = _seed_not_due(loaded_store, args.not_due, clock())
            print(f"  seeded {args.not_due} not-due items in {seconds:.1f} s")

            request = InboundRequest("POST", "http://127.0.0.1/api/x", {"Content-Type": "application/json"}, b"{}")
            for number in range(1, args.rounds + 1):
                line = []
                for label in ("none", "loaded"):
                    engine = engines[label]
                    for _ in range(DUE_PER_ROUND):
                        engine.start_run("timeouts", request)
                    clock.now += timedelta(minutes=2)
                    before = counter.count
                    report = engine.sweep(batch=1000, budget=timedelta(minutes=5))
                    spent = counter.count - before
                    if report.done != DUE_PER_ROUND:
                        raise RuntimeError(f"the sweep finished {report.done} of {DUE_PER_ROUND}: {report}")
                    times[label].append(report.seconds)
                    per_item.append(spent / DUE_PER_ROUND)
                    line.append(
                        f"{label} {report.seconds:.3f} s (query {report.query_seconds:.3f} s), "
                        f"{spent / DUE_PER_ROUND:.2f} tx/item"
                    )
                    clock.now += timedelta(minutes=10)
                ratios.append(times["loaded"][-1] / times["none"][-1])
                print(f"  round {number}: " + "; ".join(line) + f"; ratio {ratios[-1]:.2f}", flush=True)
            # On a store of its own, so that nothing else is due when its sweep runs.
            engines["long"].workflow_cache = timedelta(minutes=1)
            long_wait = long_wait_life(engines["long"], counter, clock, f"http://127.0.0.1:{target.server_port}")
    finally:
        target.shutdown()
        target.server_close()

    none, loaded = statistics.median(times["none"]), statistics.median(times["loaded"])
    print(f"sweep seconds (none not due): {none:.3f}")
    print(f"sweep seconds ({args.not_due // 1000}k not due): {loaded:.3f}")
    # Each round sweeps both stores back to back, under the same conditions: the median of the
    # paired ratios is steadier than the ratio of the medians on a noisy machine.
    print(f"sweep ratio ({args.not_due // 1000}k not due / none): {statistics.median(ratios):.2f}")
    print(f"ratio of the medians: {loaded / none:.2f}")
    print(f"storage transactions per due item: {statistics.median(per_item):.2f}")
    parts = ", ".join(f"{name} {count}" for name, count in long_wait.items())
    print(f"storage transactions per run resumed after its lease: {sum(long_wait.values())} ({parts})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
