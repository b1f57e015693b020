"""A tiny webhook target for trying Hookflow by hand (the README's walkthrough).

``POST /subscribe`` prints the callback URL it was given and answers 200; ``POST
/unsubscribe`` prints that it was called. It never calls back by itself: you do, with curl,
as the service would when its event happens.

    python -m scripts.demo_target [--port 7072]
"""

from __future__ import annotations

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        run = self.headers.get("x-ms-workflow-run-id", "?")
        if self.path == "/subscribe":
            url = body.get("callbackUrl") if isinstance(body, dict) else None
            print(f"subscribe   run {run}; call back with:", flush=True)
            print(f"  curl -X POST '{url}' -H 'Content-Type: application/json' -d '{{\"approved\": true}}'", flush=True)
        elif self.path == "/unsubscribe":
            print(f"unsubscribe run {run}", flush=True)
        else:
            print(f"{self.path} run {run}: {body}", flush=True)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A webhook target that prints what Hookflow sends it.")
    parser.add_argument("--port", type=int, default=7072)
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), _Handler)
    print(f"demo target listening on http://127.0.0.1:{args.port} (Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
