"""What ``make run`` runs: Azurite (Table service) plus the dev host, in the foreground.

* Azurite listens on ``AZURITE_PORT`` (default 10002) with the well-known development
  account; data lives in memory unless ``AZURITE_LOCATION`` names a folder.
* ``AzureWebJobsStorage`` is pointed at that Azurite unless it is already exported in the
  shell (a value in local.settings.json does not count: ``make run`` means local storage).
* The dev host serves ``function_app.app`` on ``PORT`` (default 7071).

Ctrl-C or SIGTERM stops the dev host and then Azurite, by PID, whatever happened before.
"""

from __future__ import annotations

import os
import signal
import sys

from scripts.azurite import DEFAULT_TABLE_PORT, Azurite, AzuriteError, port_is_open
from scripts.devhost import (
    DEFAULT_PORT,
    DevHost,
    DevHostError,
    configure_logging,
    ensure_dev_signing_key,
    load_app,
    load_local_settings,
    run_foreground,
)

_STORAGE_SETTING = "AzureWebJobsStorage"


def _port_from_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ValueError(f"{name} must be a port number, not {raw!r}")
    return int(raw)


def main() -> int:
    """Start Azurite and the dev host; return the exit code."""
    try:
        azurite_port = _port_from_env("AZURITE_PORT", DEFAULT_TABLE_PORT)
        http_port = _port_from_env("PORT", DEFAULT_PORT)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # Checked before Azurite starts, so a busy dev host port costs no emulator start-up.
    if port_is_open(http_port):
        print(f"error: port {http_port} on 127.0.0.1 is already in use (set PORT to use another)", file=sys.stderr)
        return 1
    if port_is_open(azurite_port):
        print(
            f"error: port {azurite_port} on 127.0.0.1 is already in use: another Azurite? "
            "(stop it, or set AZURITE_PORT to use another port)",
            file=sys.stderr,
        )
        return 1

    # Until run_foreground installs its handlers, SIGTERM must still unwind through finally.
    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    configure_logging()
    azurite = Azurite(port=azurite_port, location=os.environ.get("AZURITE_LOCATION") or None)
    try:
        try:
            azurite.start()
        except AzuriteError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        where = "in memory" if azurite.location is None else f"in {azurite.location}"
        print(f"Azurite Table service on {azurite.table_endpoint} (pid {azurite.pid}, data {where})", flush=True)
        # The Functions host's own setting name; its case is fixed by the platform.
        os.environ.setdefault(_STORAGE_SETTING, azurite.connection_string)
        try:
            load_local_settings()
            configure_logging()  # local settings may name HOOKFLOW_LOG_LEVEL
            ensure_dev_signing_key()
            host = DevHost(load_app("function_app:app"), port=http_port)
        except DevHostError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

        def azurite_problem() -> str | None:
            return None if azurite.running else "Azurite exited unexpectedly; stopping"

        return run_foreground(host, healthy=azurite_problem)
    except KeyboardInterrupt:
        return 130
    finally:
        azurite.stop()


if __name__ == "__main__":
    sys.exit(main())
