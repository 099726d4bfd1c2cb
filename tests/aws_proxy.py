"""An HTTP proxy in front of moto's server that counts AWS calls and injects faults.

The agent reaches AWS only through `endpoint_url`; pointing that at this proxy lets a test count
the calls the agent really makes ("no GetSecretValue when nothing changed") and make the endpoint
throttle, fail with 5xx, answer slower than the read timeout, or reset connections, then heal.
"""

from __future__ import annotations

import html
import http.client
import json
import socket
import struct
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional, Tuple


@dataclass
class Fault:
    """What to do to calls of `operation` ("*" for all): an error response, a delay, or a reset.

    An error response carries `code` and `message` in the protocol of the request: JSON for the
    services called with X-Amz-Target (Secrets Manager, KMS, SQS), the query protocol's XML
    otherwise (STS). `body` answers with that text instead (with `status`, even 200: a canned
    response where moto cannot give AWS's, e.g. another account's secret by ARN).
    """

    operation: str = "*"
    status: int = 0  # HTTP status of an injected error response; 0 = forward normally
    code: str = "ThrottlingException"
    delay_s: float = 0.0
    reset: bool = False
    remaining: Optional[int] = None  # None = until cleared
    message: str = "injected by AwsProxy"
    body: Optional[str] = None


class AwsProxy:
    def __init__(self, upstream_url: str) -> None:
        parsed = urllib.parse.urlparse(upstream_url)
        self.upstream: Tuple[str, int] = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.calls: Counter[str] = Counter()
        self.log: List[Tuple[float, str, int]] = []  # (time, operation, status)
        self.faults: List[Fault] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> AwsProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset_counts(self) -> None:
        with self._lock:
            self.calls.clear()
            self.log.clear()

    def inject(self, fault: Fault) -> None:
        with self._lock:
            self.faults.append(fault)

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def count(self, operation: str) -> int:
        with self._lock:
            return self.calls[operation]

    def _fault_for(self, operation: str) -> Optional[Fault]:
        with self._lock:
            for fault in self.faults:
                if fault.operation in ("*", operation) and (
                    fault.remaining is None or fault.remaining > 0
                ):
                    if fault.remaining is not None:
                        fault.remaining -= 1
                    return fault
        return None

    def _record(self, operation: str, status: int) -> None:
        with self._lock:
            self.calls[operation] += 1
            self.log.append((time.time(), operation, status))

    def _handler_class(self) -> type:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # quiet
                return

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                operation = _operation(self.headers.get("X-Amz-Target"), body, self.path)
                fault = proxy._fault_for(operation)
                if fault and fault.delay_s:
                    time.sleep(fault.delay_s)
                if fault and fault.reset:
                    proxy._record(operation, 0)
                    # SO_LINGER 0: close with RST, as a dropped connection looks to the client.
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.connection.close()
                    self.close_connection = True
                    return
                if fault and fault.status:
                    json_protocol = bool(self.headers.get("X-Amz-Target"))
                    payload = _fault_payload(fault, json_protocol)
                    proxy._record(operation, fault.status)
                    self.send_response(fault.status)
                    self.send_header(
                        "Content-Type",
                        "application/x-amz-json-1.1" if json_protocol else "text/xml",
                    )
                    if fault.status >= 400 and fault.body is None:
                        self.send_header("x-amzn-ErrorType", fault.code)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                headers: Dict[str, str] = {
                    k: v for k, v in self.headers.items() if k.lower() != "host"
                }
                headers["Host"] = f"{proxy.upstream[0]}:{proxy.upstream[1]}"
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                proxy._record(operation, response.status)
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in (
                        "transfer-encoding",
                        "connection",
                        "content-length",
                        "server",
                        "date",
                    ):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            def _forward_quietly(self) -> None:
                # A client that gives up (a daemon stopping during a long poll) is not an error.
                try:
                    self._forward()
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward_quietly

        return Handler


def _fault_payload(fault: Fault, json_protocol: bool) -> bytes:
    """The injected answer's body: `fault.body` verbatim, else an AWS error in the request's protocol."""
    if fault.body is not None:
        return fault.body.encode()
    if json_protocol:
        return json.dumps({"__type": fault.code, "message": fault.message}).encode()
    return (
        "<ErrorResponse><Error><Type>Sender</Type>"
        f"<Code>{html.escape(fault.code)}</Code><Message>{html.escape(fault.message)}</Message>"
        "</Error><RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>"
    ).encode()


def _operation(target: Optional[str], body: bytes, path: str) -> str:
    """`GetSecretValue`, `ReceiveMessage`, `AssumeRole`...: from X-Amz-Target or a query Action;
    the instance metadata service's paths are `IMDS:token` and `IMDS:meta-data`."""
    if target:
        return target.rsplit(".", 1)[-1]
    if path.startswith("/latest/api/token"):
        return "IMDS:token"
    if path.startswith("/latest/meta-data"):
        return "IMDS:meta-data"
    for source in (body.decode("utf-8", "replace"), urllib.parse.urlparse(path).query):
        action = urllib.parse.parse_qs(source).get("Action")
        if action:
            return action[0]
    return "unknown"
