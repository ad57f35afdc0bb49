"""A tiny web app: greets visitors and counts visits in $DATA_DIR/visits.

Only the Python standard library, so the image stays small.
"""
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

GREETING = os.environ.get("GREETING", "Hello")
COUNTER = Path(os.environ.get("DATA_DIR", "/data")) / "visits"
LOCK = threading.Lock()


def count_visit() -> int:
    """Adds one to the counter file and returns the new count."""
    with LOCK:
        try:
            n = int(COUNTER.read_text())
        except (FileNotFoundError, ValueError):
            n = 0
        n += 1
        COUNTER.write_text(str(n))
        return n


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/healthz":
            body = b"ok\n"
        else:
            body = f"{GREETING}! You are visitor number {count_visit()}.\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


if __name__ == "__main__":
    # Listen on all interfaces: inside a container, 127.0.0.1 cannot be
    # reached from outside.
    server = ThreadingHTTPServer(("0.0.0.0", 8000), Handler)
    print("listening on port 8000", flush=True)
    server.serve_forever()
