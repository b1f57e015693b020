"""Benchmarks: figures, not pass/fail. ``make bench`` runs this module: the webhook run
life below, then the sweep benchmark (``bench/sweep.py``).

Webhook run life (start -> wait -> callback -> unsubscribe -> Succeeded), through the real
app over HTTP: the dev host serves ``function_app.app`` in this process, Azurite (started
here, in memory) is the storage, and a second process plays the clients and the loopback
target (subscribe records the callback URL, unsubscribe answers 200), so that the app's
process does only the app's work, as it would when deployed. Storage transactions are
counted by the table client's request hook, so every HTTP request to storage is counted,
retries included.

Azurite is the ceiling here, so its raw single-entity write rate is measured in the same
run with the same concurrency, and the headline is the ratio:

    storage efficiency ratio = runs/s x transactions per run / raw writes/s

Each figure is the median over ``--rounds`` rounds; they are printed one per line.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
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
from multiprocessing.connection import Connection
from typing import Any

import requests
from azure.core.pipeline.transport import RequestsTransport
from azure.data.tables import TableServiceClient

from bench import sweep
from bench.common import TransactionCounter
from scripts.azurite import Azurite
from shared.outbound import new_session


class Target:
    """Loopback webhook target: subscribe stores the callback URL; unsubscribe answers 200."""

    def __init__(self) -> None:
        self.callback_urls: list[str] = []
        self.unsubscribes = 0
        self._lock = threading.Lock()
        target = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

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
            "HOOKFLOW_POLL_SCHEDULE": "*/5 * * * * *",
        }
    )
    from function_app import app
    from scripts.devhost import DevHost
    from shared import bootstrap
    from shared.settings import Settings
    from shared.store.table import TableStore

    settings = Settings.from_env()
    engine = bootstrap.build_engine(settings)
    service = TableServiceClient.from_connection_string(
        connection_string,
        raw_request_hook=counter,
        transport=RequestsTransport(session=new_session(), session_owner=False),
    )
    engine.store = TableStore(service, settings.table_prefix)
    bootstrap.use(engine)  # the composition root's engine, with the counting client
    host = DevHost(app, port=0, timers_enabled=False).start()
    try:
        yield host.api_url
    finally:
        host.stop()
        bootstrap.reset()


def raw_write_rate(connection_string: str, writes: int, concurrency: int) -> float:
    """Single-entity inserts per second into Azurite at the given concurrency."""
    # The same transport as the app's, so both sides pay the same client overhead.
    service = TableServiceClient.from_connection_string(
        connection_string, transport=RequestsTransport(session=new_session(), session_owner=False)
    )
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


def client_round(api: str, runs: int, concurrency: int, conn: Connection) -> None:
    """In a child process: register, warm up, say "ready", wait for "go", then measure.

    Starts go first (the target only records callback URLs), then every callback; the
    parent counts storage transactions between "go" and the answer.
    """
    target = Target()
    target.thread.start()
    try:
        conn.send(_client_round(api, target, runs, concurrency, conn))
    except Exception as exc:  # the parent prints it; a traceback here would be lost
        conn.send({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        target.server.shutdown()
        target.server.server_close()


def _client_round(api: str, target: Target, runs: int, concurrency: int, conn: Connection) -> dict[str, Any]:
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
    # Warm up so that table creation and first-use costs fall outside the measurement.
    session.post(f"{api}/workflows/{name}/runs", json={}, timeout=60).raise_for_status()
    for url in target.take_urls():
        session.post(url, json={}, timeout=60).raise_for_status()
    conn.send("ready")
    conn.recv()

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
    if len(urls) != runs or target.unsubscribes != runs + 1:
        raise RuntimeError(
            f"expected {runs} subscribes and unsubscribes, saw {len(urls)} and {target.unsubscribes - 1}"
        )
    latencies.sort()
    return {
        "starts/s": runs / (t1 - t0),
        "resumes/s": len(urls) / (t2 - t1),
        "runs/s": runs / (t2 - t0),
        "callback p50 ms": 1000 * latencies[len(latencies) // 2],
        "callback p99 ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux ``/proc``), 0 where that is not available."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_round(
    api: str, counter: TransactionCounter, runs: int, concurrency: int, azurite_pid: int
) -> dict[str, float]:
    parent, child = multiprocessing.get_context("spawn").Pipe()
    process = multiprocessing.get_context("spawn").Process(target=client_round, args=(api, runs, concurrency, child))
    process.start()
    try:
        ready = parent.recv()
        if ready != "ready":
            raise RuntimeError(f"the client process failed: {ready}")
        before = counter.count
        pids = {"app": os.getpid(), "clients": process.pid or 0, "azurite": azurite_pid}
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        parent.send("go")
        figures: dict[str, Any] = parent.recv()
        transactions = counter.count - before
        for name, pid in pids.items():
            figures[f"{name} cpu ms/run"] = 1000 * (cpu_seconds(pid) - cpu_before[name]) / runs
    finally:
        process.join(timeout=60)
        if process.is_alive():
            process.kill()
    if "error" in figures:
        raise RuntimeError(f"the client process failed: {figures['error']}")
    figures["storage transactions per run"] = transactions / runs
    return figures


def median_of(rounds: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rounds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=300, help="run lives per round (default 300)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; figures are medians (default 5)")
    parser.add_argument("--only", choices=("webhook", "sweep"), help="run one benchmark (default: both)")
    args = parser.parse_args(argv)
    if args.only != "sweep":
        webhook_benchmark(args)
    if args.only != "webhook":
        print(flush=True)
        sweep.main([])
    return 0


def webhook_benchmark(args: argparse.Namespace) -> None:
    print(f"webhook run life: {args.runs} runs x {args.rounds} rounds, concurrency {args.concurrency}", flush=True)
    counter = TransactionCounter()
    results: list[dict[str, float]] = []
    with Azurite.for_tests() as azurite, app_server(azurite.connection_string, counter) as api:
        for number in range(1, args.rounds + 1):
            # Azurite's pace drifts as its in-memory tables grow: take the raw rate on both
            # sides of the run phase and compare with their mean.
            raw_before = raw_write_rate(azurite.connection_string, args.runs * 2, args.concurrency)
            figures = measure_round(api, counter, args.runs, args.concurrency, azurite.pid or 0)
            raw_after = raw_write_rate(azurite.connection_string, args.runs * 2, args.concurrency)
            figures["raw writes/s"] = (raw_before + raw_after) / 2
            figures["ratio"] = figures["runs/s"] * figures["storage transactions per run"] / figures["raw writes/s"]
            results.append(figures)
            print(f"  round {number}: " + ", ".join(f"{k} {v:.2f}" for k, v in figures.items()), flush=True)

    show: list[tuple[str, Callable[[], float], str]] = [
        ("starts/s", lambda: median_of(results, "starts/s"), "{:.1f}"),
        ("resumes/s", lambda: median_of(results, "resumes/s"), "{:.1f}"),
        ("runs/s", lambda: median_of(results, "runs/s"), "{:.1f}"),
        ("callback latency p50 ms", lambda: median_of(results, "callback p50 ms"), "{:.1f}"),
        ("callback latency p99 ms", lambda: median_of(results, "callback p99 ms"), "{:.1f}"),
        ("storage transactions per run", lambda: median_of(results, "storage transactions per run"), "{:.1f}"),
        ("app cpu ms per run", lambda: median_of(results, "app cpu ms/run"), "{:.1f}"),
        ("azurite cpu ms per run", lambda: median_of(results, "azurite cpu ms/run"), "{:.1f}"),
        ("azurite raw writes/s", lambda: median_of(results, "raw writes/s"), "{:.1f}"),
        ("storage efficiency ratio", lambda: median_of(results, "ratio"), "{:.2f}"),
    ]
    for label, value, fmt in show:
        print(f"{label}: {fmt.format(value())}")


if __name__ == "__main__":
    sys.exit(main())
