"""A small local server that speaks the part of SendGrid's v3 API Groundswell uses.

`POST /v3/mail/send` checks the bearer key, parses and keeps the JSON body,
validates the basics the real API insists on and answers 202 with an
`X-Message-Id`. Tests can make it answer 429 or 5xx for the next requests, or
be slow or garbled, to exercise the caller's retry and timeout handling. It runs on
127.0.0.1 on a free port, in a thread, and never talks to anything else.
"""

from __future__ import annotations

import json
import secrets
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_PERSONALIZATIONS = 1000
MAIL_SEND_PATH = "/v3/mail/send"


@dataclass
class ReceivedRequest:
    """One request as the server saw it, accepted or not."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    json: Any = None
    message_id: str = ""


@dataclass
class _PlannedFailure:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=dict)


def _errors(*messages: tuple[str | None, str]) -> dict[str, Any]:
    return {"errors": [{"field": f, "message": m, "help": None} for f, m in messages]}


def validate_mail_send(body: Any) -> list[tuple[str | None, str]]:
    """The problems SendGrid would report for this body; empty when it would accept it."""
    if not isinstance(body, dict):
        return [(None, "The request body must be a JSON object.")]
    problems: list[tuple[str | None, str]] = []
    personalizations = body.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        problems.append(("personalizations", "At least one personalization is required."))
        personalizations = []
    elif len(personalizations) > MAX_PERSONALIZATIONS:
        problems.append(
            ("personalizations", f"No more than {MAX_PERSONALIZATIONS} personalizations.")
        )
    for i, item in enumerate(personalizations):
        to = item.get("to") if isinstance(item, dict) else None
        if not isinstance(to, list) or not to:
            problems.append((f"personalizations.{i}.to", "Each personalization needs a to."))
            continue
        for j, address in enumerate(to):
            if not isinstance(address, dict) or "@" not in str(address.get("email", "")):
                problems.append((f"personalizations.{i}.to.{j}.email", "Invalid email."))
    sender = body.get("from")
    if not isinstance(sender, dict) or "@" not in str(sender.get("email", "")):
        problems.append(("from.email", "The from object must have a valid email."))
    has_template = bool(body.get("template_id"))
    subject_everywhere = bool(body.get("subject")) or (
        bool(personalizations)
        and all(isinstance(p, dict) and p.get("subject") for p in personalizations)
    )
    if not (subject_everywhere or has_template):
        problems.append(("subject", "The subject is required."))
    content = body.get("content")
    if content is None and not has_template:
        problems.append(("content", "Content or a template_id is required."))
    elif content is not None:
        if not isinstance(content, list) or not content:
            problems.append(("content", "Content must be a non-empty list."))
        else:
            types = [c.get("type") if isinstance(c, dict) else None for c in content]
            if any(not isinstance(c, dict) or not c.get("value") for c in content):
                problems.append(("content.value", "Each content needs a non-empty value."))
            if "text/plain" in types and types[0] != "text/plain":
                problems.append(("content", "text/plain must come first."))
    for name in ("headers", "custom_args"):
        values = body.get(name)
        if values is not None and (
            not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values())
        ):
            problems.append((name, f"{name} must map names to strings."))
    return problems


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (its timeout) closes the socket under a slow answer.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class FakeSendGrid:
    """Start with `with FakeSendGrid() as sg:`; point the client at `sg.url`."""

    def __init__(self, api_key: str = "SG.fake-test-key") -> None:
        self.api_key = api_key
        self.requests: list[ReceivedRequest] = []
        self.delay = 0.0  # seconds to wait before answering, to test client timeouts
        self._planned: deque[_PlannedFailure] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = _Server(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def accepted(self) -> list[ReceivedRequest]:
        """Mail-send requests answered 202, oldest first."""
        with self._lock:
            return [r for r in self.requests if r.status == 202]

    def fail_next(
        self, status: int, times: int = 1, reset_in: int = 60, body: dict[str, Any] | None = None
    ) -> None:
        """Answer the next `times` mail-send requests with `status` (429, 500, 400, …).

        A negative status answers with bytes that are not HTTP at all.
        """
        headers: dict[str, str] = {}
        if status == 429:
            headers = {
                "X-RateLimit-Limit": "600",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(int(time.time()) + reset_in),
            }
        default = _errors((None, "too many requests" if status == 429 else "failure"))
        with self._lock:
            for _ in range(times):
                self._planned.append(_PlannedFailure(status, headers, body or default))

    def start(self) -> FakeSendGrid:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wake handlers sleeping in `delay`
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeSendGrid:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _answer(self, request: ReceivedRequest) -> tuple[int, dict[str, str], dict[str, Any]]:
        """Decide the response to one request: status, extra headers, JSON body."""
        if request.path != MAIL_SEND_PATH:
            return 404, {}, _errors((None, "not found"))
        if request.method != "POST":
            return 405, {}, _errors((None, "method not allowed"))
        if request.headers.get("authorization", "") != f"Bearer {self.api_key}":
            return 401, {}, _errors((None, "The provided authorization grant is invalid."))
        with self._lock:
            planned = self._planned.popleft() if self._planned else None
        if planned is not None:
            return planned.status, planned.headers, planned.body
        if not request.headers.get("content-type", "").startswith("application/json"):
            return 415, {}, _errors((None, "Content-Type must be application/json."))
        try:
            request.json = json.loads(request.body)
        except ValueError:
            return 400, {}, _errors((None, "The request body is not valid JSON."))
        if problems := validate_mail_send(request.json):
            return 400, {}, _errors(*problems)
        request.message_id = secrets.token_urlsafe(16)
        return 202, {"X-Message-Id": request.message_id}, {}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "FakeSendGrid/1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                received = ReceivedRequest(
                    method=self.command,
                    path=self.path.split("?", 1)[0],
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length) if length else b"",
                    status=0,
                )
                if fake.delay:
                    fake._stopping.wait(fake.delay)
                status, headers, payload = fake._answer(received)
                received.status = status
                with fake._lock:
                    fake.requests.append(received)
                if status < 0:
                    self.close_connection = True
                    self.wfile.write(b"NOT HTTP\r\n\r\n")
                    return
                data = json.dumps(payload).encode() if payload else b""
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                if data:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if data:
                    self.wfile.write(data)

            do_POST = do_GET = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output quiet; `fake.requests` is the record

        return Handler
