"""A real S3 server for tests (moto's server mode, on 127.0.0.1) and a fault-injecting proxy in
front of it: every Nth PUT answered 503 SlowDown, every Nth GET held past the client's read
timeout, a bucket whose every request is denied. The proxy forwards everything else unchanged."""
from __future__ import annotations

import http.client
import http.server
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def start_moto() -> tuple[object, str]:
    """(server, endpoint URL) of a moto S3 server on a free port of 127.0.0.1."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


def _error(code: str, message: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message>'
            "<RequestId>fault</RequestId></Error>").encode()


@dataclass
class Faults:
    fail_put_every: int = 0      # every Nth PUT answered 503 SlowDown (0: none)
    stall_get_every: int = 0     # every Nth GET held for stall_s before it is forwarded
    stall_s: float = 0.0
    deny_bucket: str = ""        # every request to this bucket answered 403 AccessDenied
    seen: Counter = field(default_factory=Counter)      # method -> requests
    injected: Counter = field(default_factory=Counter)  # "put 503", "get stall", "denied" -> count


class FaultProxy:
    """An HTTP proxy to ``upstream`` (host, port) that injects ``faults``; ``endpoint`` is its URL."""

    def __init__(self, upstream: str, faults: Faults):
        host, port = upstream.removeprefix("http://").split(":")
        self.faults, self.lock = faults, threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fault = proxy._fault(self.command, self.path)
                if fault == "stall":
                    time.sleep(proxy.faults.stall_s)
                elif fault:
                    status, code = fault
                    data = _error(code, f"injected by the test proxy ({code})")
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                conn = http.client.HTTPConnection(host, int(port), timeout=60)
                conn.request(self.command, self.path, body=body, headers=dict(self.headers))
                reply = conn.getresponse()
                data = reply.read()
                self.send_response(reply.status)
                for key, value in reply.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                        self.send_header(key, value)
                length = reply.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _fault(self, method: str, path: str):
        faults = self.faults
        with self.lock:
            faults.seen[method] += 1
            n = faults.seen[method]
            if faults.deny_bucket and path.lstrip("/").split("/")[0].split("?")[0] == faults.deny_bucket:
                faults.injected["denied"] += 1
                return 403, "AccessDenied"
            if method == "PUT" and faults.fail_put_every and n % faults.fail_put_every == 0:
                faults.injected["put 503"] += 1
                return 503, "SlowDown"
            if method == "GET" and faults.stall_get_every and n % faults.stall_get_every == 0:
                faults.injected["get stall"] += 1
                return "stall"
        return None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
