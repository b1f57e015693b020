"""Benchmarks: figures, not pass/fail. ``make bench`` runs this module.

Webhook run life (start -> wait -> callback -> unsubscribe -> Succeeded), through the real
app over HTTP: the dev host serves ``function_app.app`` in this process, Azurite (started
here, in memory) is the storage, and a loopback target subscribes, records the callback URL
and unsubscribes. Storage transactions are counted by a policy on the table client's
pipeline (its request hook), so every HTTP request to storage is counted, retries included.

Azurite is the ceiling here, so its raw single-entity write rate is measured in the same
run with the same concurrency, and the headline is the ratio:

    storage efficiency ratio = runs/s x transactions per run / raw writes/s

Each figure is the median over ``--rounds`` rounds; they are printed one per line.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests
from azure.data.tables import TableServiceClient

from scripts.azurite import Azurite


class TransactionCounter:
    """Counts every request the table client sends (its ``raw_request_hook``, run per retry)."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def __call__(self, request: object) -> None:
        with self._lock:
            self.count += 1


class Target:
    """Loopback webhook target: subscribe stores the callback URL; unsubscribe answers 200."""

    def __init__(self) -> None:
        self.callback_urls: list[str] = []
        self.unsubscribes = 0
        self._lock = threading.Lock()
        target = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with target._lock:
                    if self.path == "/subscribe":
                        target.callback_urls.append(json.loads(raw)["callbackUrl"])
                    else:
                        target.unsubscribes += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def take_urls(self) -> list[str]:
        with self._lock:
            urls, self.callback_urls = self.callback_urls, []
            return urls


@contextmanager
def app_server(connection_string: str, counter: TransactionCounter) -> Iterator[str]:
    """The function app in an in-process dev host, its table client instrumented."""
    os.environ.update(
        {
            "AzureWebJobsStorage": connection_string,
            "HOOKFLOW_SIGNING_KEYS": secrets.token_urlsafe(32),
            "HOOKFLOW_TABLE_PREFIX": "bench" + secrets.token_hex(3),
            "HOOKFLOW_ALLOW_PRIVATE_NETWORK": "true",
        }
    )
    from function_app import app
    from scripts.devhost import DevHost
    from shared import bootstrap
    from shared.settings import Settings
    from shared.store.table import TableStore

    settings = Settings.from_env()
    engine = bootstrap.build_engine(settings)
    service = TableServiceClient.from_connection_string(connection_string, raw_request_hook=counter)
    engine.store = TableStore(service, settings.table_prefix)
    bootstrap._engine = engine  # the composition root's engine, with the counting client
    host = DevHost(app, port=0, timers_enabled=False).start()
    try:
        yield host.api_url
    finally:
        host.stop()
        bootstrap.reset()


def raw_write_rate(connection_string: str, writes: int, concurrency: int) -> float:
    """Single-entity inserts per second into Azurite at the given concurrency."""
    service = TableServiceClient.from_connection_string(connection_string)
    table = service.create_table_if_not_exists("raw" + secrets.token_hex(4))
    payload = {"Status": "Waiting", "D00": secrets.token_bytes(600)}

    def insert(i: int) -> None:
        table.create_entity({"PartitionKey": f"p{i:08d}", "RowKey": "run", **payload})

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(insert, range(writes)))
    elapsed = time.perf_counter() - started
    service.delete_table(table.table_name)
    return writes / elapsed


def run_lives(api: str, target: Target, counter: TransactionCounter, runs: int, concurrency: int) -> dict[str, float]:
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=concurrency, pool_maxsize=concurrency * 2)
    session.mount("http://", adapter)
    name = "bench-" + secrets.token_hex(3)
    definition = {
        "definition": {
            "triggers": {"manual": {"type": "Request"}},
            "actions": {
                "Wait": {
                    "type": "HttpWebhook",
                    "inputs": {
                        "subscribe": {
                            "method": "POST",
                            "uri": f"{target.base_url}/subscribe",
                            "body": {"callbackUrl": "@{listCallbackUrl()}", "order": "@triggerBody()?['order']"},
                        },
                        "unsubscribe": {"method": "POST", "uri": f"{target.base_url}/unsubscribe"},
                    },
                }
            },
        }
    }
    session.put(f"{api}/workflows/{name}", json=definition, timeout=60).raise_for_status()
    # Warm up the path once so table creation and first-use costs are not counted.
    _start_and_resume(session, api, name, target)
    target.take_urls()

    before = counter.count
    t0 = time.perf_counter()

    def start(i: int) -> None:
        answer = session.post(f"{api}/workflows/{name}/runs", json={"order": i}, timeout=60)
        if answer.status_code != 202:
            raise RuntimeError(f"start answered {answer.status_code}: {answer.text[:200]}")

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(start, range(runs)))
    t1 = time.perf_counter()
    urls = target.take_urls()
    latencies: list[float] = []

    def resume(url: str) -> None:
        sent = time.perf_counter()
        answer = session.post(url, json={"approved": True}, timeout=60)
        latencies.append(time.perf_counter() - sent)
        if answer.status_code != 200 or answer.json()["status"] != "Succeeded":
            raise RuntimeError(f"callback answered {answer.status_code}: {answer.text[:200]}")

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(resume, urls))
    t2 = time.perf_counter()
    transactions = counter.count - before
    latencies.sort()
    return {
        "starts/s": runs / (t1 - t0),
        "resumes/s": len(urls) / (t2 - t1),
        "runs/s": runs / (t2 - t0),
        "callback p50 ms": 1000 * latencies[len(latencies) // 2],
        "callback p99 ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "storage transactions per run": transactions / runs,
    }


def _start_and_resume(session: requests.Session, api: str, name: str, target: Target) -> None:
    session.post(f"{api}/workflows/{name}/runs", json={}, timeout=60).raise_for_status()
    for url in target.take_urls():
        session.post(url, json={}, timeout=60).raise_for_status()


def median_of(rounds: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rounds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=300, help="run lives per round (default 300)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; figures are medians (default 3)")
    args = parser.parse_args(argv)

    print(f"webhook run life: {args.runs} runs x {args.rounds} rounds, concurrency {args.concurrency}", flush=True)
    counter = TransactionCounter()
    target = Target()
    target.thread.start()
    results: list[dict[str, float]] = []
    try:
        with Azurite.for_tests() as azurite, app_server(azurite.connection_string, counter) as api:
            for number in range(1, args.rounds + 1):
                figures = run_lives(api, target, counter, args.runs, args.concurrency)
                figures["raw writes/s"] = raw_write_rate(azurite.connection_string, args.runs * 4, args.concurrency)
                figures["ratio"] = figures["runs/s"] * figures["storage transactions per run"] / figures["raw writes/s"]
                results.append(figures)
                print(f"  round {number}: " + ", ".join(f"{k} {v:.1f}" for k, v in figures.items()), flush=True)
    finally:
        target.server.shutdown()
        target.server.server_close()

    show: list[tuple[str, Callable[[], float], str]] = [
        ("starts/s", lambda: median_of(results, "starts/s"), "{:.1f}"),
        ("resumes/s", lambda: median_of(results, "resumes/s"), "{:.1f}"),
        ("runs/s", lambda: median_of(results, "runs/s"), "{:.1f}"),
        ("callback latency p50 ms", lambda: median_of(results, "callback p50 ms"), "{:.1f}"),
        ("callback latency p99 ms", lambda: median_of(results, "callback p99 ms"), "{:.1f}"),
        ("storage transactions per run", lambda: median_of(results, "storage transactions per run"), "{:.1f}"),
        ("azurite raw writes/s", lambda: median_of(results, "raw writes/s"), "{:.1f}"),
        ("storage efficiency ratio", lambda: median_of(results, "ratio"), "{:.2f}"),
    ]
    for label, value, fmt in show:
        print(f"{label}: {fmt.format(value())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
