"""The IMDSv2 reader against a real HTTP server on 127.0.0.1 that behaves as IMDSv2 does:
no token, no answer (401); a token only from PUT /latest/api/token with a TTL header."""

from __future__ import annotations

import http.server
import socket
import threading
from typing import ClassVar, Iterator, List, Tuple

import pytest

from certpull.instance_id import first_of, from_env, from_imds

pytestmark = pytest.mark.integration

TOKEN = "AQAEAFakeToken=="
INSTANCE = "i-0123456789abcdef0"


class Imds(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[List[Tuple[str, str]]] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_PUT(self) -> None:
        self.seen.append(("PUT", self.path))
        if self.path == "/latest/api/token" and self.headers.get(
            "X-aws-ec2-metadata-token-ttl-seconds"
        ):
            self._reply(200, TOKEN)
        else:
            self._reply(400, "")

    def do_GET(self) -> None:
        self.seen.append(("GET", self.path))
        if self.headers.get("X-aws-ec2-metadata-token") != TOKEN:
            self._reply(401, "")
        elif self.path == "/latest/meta-data/instance-id":
            self._reply(200, INSTANCE)
        else:
            self._reply(404, "")

    def _reply(self, code: int, body: str) -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def imds() -> Iterator[str]:
    Imds.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Imds)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_imdsv2_token_then_instance_id(imds: str) -> None:
    assert from_imds(imds)() == INSTANCE
    assert Imds.seen == [("PUT", "/latest/api/token"), ("GET", "/latest/meta-data/instance-id")]


def test_the_environment_wins_without_any_request(imds: str) -> None:
    readers = [from_env({"AWS_SSM_INSTANCE_ID": "i-0bbbbbbbbbbbbbbbb"}), from_imds(imds)]
    assert first_of(readers) == "i-0bbbbbbbbbbbbbbbb"
    assert Imds.seen == []


def test_no_imds_answers_none_quickly() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert from_imds(f"http://127.0.0.1:{port}", timeout_s=0.5)() is None


def test_a_proxy_in_the_environment_is_not_used(imds: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # discard port: would fail if used
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    assert from_imds(imds)() == INSTANCE


def test_only_http_urls() -> None:
    with pytest.raises(ValueError, match="http://"):
        from_imds("file:///etc/passwd")
