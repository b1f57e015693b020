"""Start and stop Azurite's Table service for local runs and tests.

Only the Table service is started: Hookflow keeps all of its state in tables, and one
service is one port and one process to clean up.

The Azurite binary comes from ``node_modules`` of this repository (``npm ci`` installs the
version pinned in ``package.json``), so every machine runs the same emulator.

Usage as a library::

    with Azurite.for_tests() as azurite:
        TableServiceClient.from_connection_string(azurite.connection_string)

and as a command (foreground until Ctrl-C)::

    python -m scripts.azurite --port 10002 [--location DIR]
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import logging
import os
import secrets
import signal
import socket
import string
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

__all__ = [
    "DEFAULT_TABLE_PORT",
    "DEV_ACCOUNT_NAME",
    "REPO_ROOT",
    "Azurite",
    "AzuriteError",
    "free_port",
    "port_is_open",
]

logger = logging.getLogger("hookflow.azurite")

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCAL_HOST = "127.0.0.1"
DEFAULT_TABLE_PORT = 10002
DEV_ACCOUNT_NAME = "devstoreaccount1"

_STDERR_TAIL_LINES = 40
# Auto-picked ports can be taken between picking and Azurite binding them; a few fresh
# attempts make that race harmless instead of a flaky test.
_AUTO_PORT_ATTEMPTS = 3


# Windows has no SIGKILL; terminate() there is already forceful.
_SIGKILL: signal.Signals = getattr(signal, "SIGKILL", signal.SIGTERM)


class AzuriteError(RuntimeError):
    """Azurite could not be started (missing binary, port in use, not answering)."""


def free_port(host: str = LOCAL_HOST) -> int:
    """Return a TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_open(port: int, host: str = LOCAL_HOST, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def azurite_table_executable(root: Path = REPO_ROOT) -> Path:
    """The ``azurite-table`` launcher that ``npm ci`` put in this repository's node_modules."""
    name = "azurite-table.cmd" if os.name == "nt" else "azurite-table"
    return root / "node_modules" / ".bin" / name


def _dev_account_key() -> str:
    # The well-known emulator key is public, but keeping it out of this repository keeps
    # secret scanners quiet and leaves one source of truth: the SDK's own constant.
    from azure.data.tables import _base_client

    for part in _base_client._DEV_CONN_STRING.split(";"):
        name, _, value = part.partition("=")
        if name == "AccountKey":
            return value
    raise AzuriteError("the Azure Tables SDK no longer exposes the development account key")


class Azurite:
    """One Azurite Table service process, started by :meth:`start` and killed by PID in :meth:`stop`.

    ``port=None`` picks a free port on 127.0.0.1; ``location=None`` keeps data in memory
    (``--inMemoryPersistence``), else data is kept in that folder; ``accounts`` maps account
    names to base64 keys (passed to Azurite as ``AZURITE_ACCOUNTS``), ``None`` = the
    well-known development account ``devstoreaccount1``.
    """

    def __init__(
        self,
        port: int | None = None,
        location: str | None = None,
        accounts: dict[str, str] | None = None,
        *,
        startup_timeout: float = 30.0,
    ) -> None:
        if accounts is not None and not accounts:
            raise ValueError("accounts must name at least one account (or be None for the dev account)")
        self._requested_port = port
        self._port: int | None = port
        self.location = location
        self.accounts = dict(accounts) if accounts is not None else None
        self.startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._readers: list[threading.Thread] = []
        self._output_tail: collections.deque[str] = collections.deque(maxlen=_STDERR_TAIL_LINES)
        self._echo_output = False
        self._lock = threading.Lock()

    @classmethod
    def for_tests(cls, port: int | None = None, *, startup_timeout: float = 30.0) -> Azurite:
        """An in-memory Azurite with a random account name and key, made up for this run only.

        Keeps every key literal out of the repository: nothing a test uses is a known credential.
        """
        name = "hf" + "".join(secrets.choice(string.ascii_lowercase) for _ in range(8))
        key = base64.b64encode(secrets.token_bytes(64)).decode("ascii")
        return cls(port=port, location=None, accounts={name: key}, startup_timeout=startup_timeout)

    # -- properties -----------------------------------------------------------------

    @property
    def port(self) -> int:
        """The Table service port (known once started when the port was picked automatically)."""
        if self._port is None:
            raise AzuriteError("the port is picked when Azurite starts; call start() first")
        return self._port

    @property
    def pid(self) -> int | None:
        """PID of the Azurite process, ``None`` when not running."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        """Whether the Azurite process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def account_name(self) -> str:
        """The storage account that :attr:`connection_string` addresses."""
        if self.accounts is None:
            return DEV_ACCOUNT_NAME
        return next(iter(self.accounts))

    @property
    def table_endpoint(self) -> str:
        """Path-style Table endpoint of :attr:`account_name`."""
        return f"http://{LOCAL_HOST}:{self.port}/{self.account_name}"

    @property
    def connection_string(self) -> str:
        """Connection string for the Azure SDK and ``AzureWebJobsStorage``."""
        if self.accounts is None:
            if self.port == DEFAULT_TABLE_PORT:
                return "UseDevelopmentStorage=true"
            key = _dev_account_key()
        else:
            key = self.accounts[self.account_name]
        return (
            f"DefaultEndpointsProtocol=http;AccountName={self.account_name};"
            f"AccountKey={key};TableEndpoint={self.table_endpoint};"
        )

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> Self:
        """Start Azurite and return once it answers a Table request; raise :class:`AzuriteError` if not."""
        with self._lock:
            if self.running:
                return self
            executable = azurite_table_executable()
            if not executable.exists():
                missing = executable.relative_to(REPO_ROOT)
                raise AzuriteError(f"{missing} is missing: run `npm ci` in the repository root")
            if self.location is not None:
                Path(self.location).mkdir(parents=True, exist_ok=True)
            attempts = _AUTO_PORT_ATTEMPTS if self._requested_port is None else 1
            for attempt in range(1, attempts + 1):
                self._port = self._requested_port if self._requested_port is not None else free_port()
                if port_is_open(self._port):
                    raise AzuriteError(f"port {self._port} on {LOCAL_HOST} is already in use: stop what listens there")
                try:
                    self._launch(executable)
                    return self
                except AzuriteError:
                    self._kill()
                    if attempt == attempts:
                        raise
                    logger.warning("Azurite did not start on port %s, trying another port", self._port)
            raise AssertionError("unreachable: the loop returns or raises")

    def stop(self, timeout: float = 10.0) -> None:
        """End Azurite's process group by PID: SIGINT (its clean shutdown), then SIGTERM, then SIGKILL.

        Each step waits up to ``timeout`` seconds (2 for SIGTERM); safe to call twice.
        """
        with self._lock:
            self._kill(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        port = self._port if self._port is not None else "auto"
        return f"Azurite(port={port}, account={self.account_name!r}, pid={self.pid})"

    # -- internals ------------------------------------------------------------------

    def _command(self, executable: Path) -> list[str]:
        command = [
            str(executable),
            "--tableHost",
            LOCAL_HOST,
            "--tablePort",
            str(self.port),
            "--skipApiVersionCheck",
            "--disableProductStyleUrl",
            # Telemetry would try to phone home from developer machines and CI.
            "--disableTelemetry",
            "--silent",
        ]
        if self.location is None:
            command.append("--inMemoryPersistence")
        else:
            command += ["--location", str(Path(self.location).resolve())]
        return command

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.accounts is None:
            # An AZURITE_ACCOUNTS left in the shell would disable devstoreaccount1 and make
            # the connection string we hand out wrong.
            env.pop("AZURITE_ACCOUNTS", None)
        else:
            env["AZURITE_ACCOUNTS"] = ";".join(f"{name}:{key}" for name, key in self.accounts.items())
        return env

    def _launch(self, executable: Path) -> None:
        self._output_tail.clear()
        self._process = subprocess.Popen(
            self._command(executable),
            cwd=self.location if self.location is not None else REPO_ROOT,
            env=self._child_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            # Own process group: Ctrl-C in the terminal reaches only us, and stop() can kill
            # Azurite together with anything it spawned.
            start_new_session=(os.name != "nt"),
        )
        assert self._process.stdout is not None
        assert self._process.stderr is not None
        self._readers = [
            threading.Thread(target=self._pump, args=(stream,), name=f"azurite-{label}", daemon=True)
            for label, stream in (("stdout", self._process.stdout), ("stderr", self._process.stderr))
        ]
        for reader in self._readers:
            reader.start()
        logger.debug("Azurite started, pid %s, port %s", self._process.pid, self.port)
        self._wait_until_ready()

    def _pump(self, stream: IO[bytes]) -> None:
        # Keep draining so a chatty Azurite never blocks on a full pipe; keep the tail for errors.
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            if not line:
                continue
            self._output_tail.append(line)
            if self._echo_output:
                logger.info("azurite: %s", line)
            else:
                logger.debug("azurite: %s", line)

    def _wait_until_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._join_readers()
                raise AzuriteError(
                    f"Azurite exited with code {self._process.returncode} during startup:\n{self._tail()}"
                )
            if port_is_open(self.port):
                try:
                    self._probe()
                    return
                except Exception as exc:  # any failure means "not ready yet"; the deadline bounds it
                    last_error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.1)
        raise AzuriteError(
            f"Azurite did not answer a Table request on port {self.port} within "
            f"{self.startup_timeout:.0f}s ({last_error}):\n{self._tail()}"
        )

    def _probe(self) -> None:
        from azure.data.tables import TableServiceClient

        # A real, authenticated request: proves the service is up and accepts our account key.
        with TableServiceClient.from_connection_string(
            self.connection_string, retry_total=0, connection_timeout=2, read_timeout=5
        ) as service:
            next(iter(service.list_tables(results_per_page=1)), None)

    def _tail(self) -> str:
        return "\n".join(self._output_tail) or "(no output)"

    def _kill(self, timeout: float = 10.0) -> None:
        process = self._process
        if process is None:
            return
        try:
            # SIGINT first: it is the one signal Azurite handles by closing cleanly, which saves
            # a --location database to disk (SIGTERM ends Node at once and loses recent writes).
            for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 2.0), (_SIGKILL, timeout)):
                if process.poll() is not None:
                    break
                self._signal(process, sig)
                try:
                    process.wait(timeout=wait)
                except subprocess.TimeoutExpired:
                    logger.warning("Azurite (pid %s) did not exit on %s", process.pid, sig.name)
            if process.poll() is None:
                raise AzuriteError(f"Azurite (pid {process.pid}) survived SIGKILL")
            if os.name != "nt":
                # The launcher is gone; anything it left in its group goes with it.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, _SIGKILL)
        finally:
            self._join_readers()
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
            self._process = None
            if self._requested_port is None:
                self._port = None
            logger.debug("Azurite stopped (pid %s)", process.pid)

    @staticmethod
    def _signal(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        if os.name == "nt":
            # No process groups or SIGINT delivery to a child there: terminate() is the way.
            process.terminate()
            return
        # start_new_session made the child its group leader: its pid is the group id.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)

    def _join_readers(self) -> None:
        for reader in self._readers:
            reader.join(timeout=5)
        self._readers = []


# -- command line -------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run Azurite's Table service in the foreground until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m scripts.azurite", description="Run Azurite's Table service in the foreground."
    )
    parser.add_argument("--port", type=int, default=DEFAULT_TABLE_PORT, help="Table service port (default 10002)")
    parser.add_argument("--location", default=None, help="folder to keep data in (default: in memory)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("HOOKFLOW_LOG_LEVEL", "INFO").upper(), format="%(message)s")
    # The SDK logs the readiness probe's headers at INFO; that is noise on a console.
    logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)

    stop_requested = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stop_requested.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    azurite = Azurite(port=args.port, location=args.location)
    azurite._echo_output = True
    try:
        azurite.start()
    except AzuriteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        storage = "data in memory" if args.location is None else f"data in {args.location}"
        hint = "UseDevelopmentStorage=true" if args.port == DEFAULT_TABLE_PORT else f"account {DEV_ACCOUNT_NAME}"
        print(f"Azurite Table service on {azurite.table_endpoint} (pid {azurite.pid}, {storage}, {hint})", flush=True)
        while not stop_requested.wait(0.5):
            if not azurite.running:
                print("error: Azurite exited unexpectedly", file=sys.stderr)
                return 1
        return 0
    finally:
        azurite.stop()


if __name__ == "__main__":
    sys.exit(main())
