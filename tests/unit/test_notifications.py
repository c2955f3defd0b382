"""The webhook notification: its JSON payload, delivery to a loopback receiver, and failures
that are reported back as one line without the URL and never raised.

tests/flows/test_outcomes.py reuses `webhook_receiver` for the nightly's notifications.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from batchpred import notifications
from batchpred.config import NotificationsConfig

ENV = "BATCHPRED_WEBHOOK_URL"
SECRET_URL_PART = "hooks/T0KEN-s3cret"


@dataclass
class Receiver:
    """What a loopback webhook endpoint received."""

    url: str
    bodies: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)


@contextmanager
def webhook_receiver(status: int = 200, delay: float = 0.0) -> Iterator[Receiver]:
    """An HTTP server on 127.0.0.1 (random port) recording every POSTed JSON body and
    answering `status` after `delay` seconds."""
    server: ThreadingHTTPServer | None = None

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            length = int(self.headers.get("Content-Length", 0))
            receiver.bodies.append(json.loads(self.rfile.read(length)))
            receiver.headers.append(dict(self.headers))
            if delay:
                threading.Event().wait(delay)
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args: object) -> None:  # keep test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver = Receiver(f"http://127.0.0.1:{server.server_address[1]}/{SECRET_URL_PART}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _payload(state: str = "Failed", **kwargs: Any) -> dict[str, Any]:
    return notifications.run_summary(
        flow="nightly",
        run="nightly-2026-10-08",
        dataset="churn",
        day=date(2026, 10, 8),
        state=state,
        reason=kwargs.pop("reason", "training failed: something broke"),
        **kwargs,
    )


def test_payload_is_a_small_json_summary() -> None:
    drifted = [
        {"feature": "tenure_months", "psi": 2.3456789, "psi_major": 0.25, "level": "major"},
        {"feature": "(score)", "psi": 0.41, "psi_major": 0.3, "level": "major"},
    ]
    payload = _payload("Drifted", reason="2026-10-08 drifted: ...", drifted=drifted)
    assert payload == {
        "flow": "nightly",
        "run": "nightly-2026-10-08",
        "url": None,
        "dataset": "churn",
        "day": "2026-10-08",
        "state": "Drifted",
        "reason": "2026-10-08 drifted: ...",
        "drifted": [
            {"feature": "tenure_months", "psi": 2.3457, "threshold": 0.25},
            {"feature": "(score)", "psi": 0.41, "threshold": 0.3},
        ],
    }
    json.dumps(payload)  # serialisable as is


def test_the_reason_shows_no_path_of_this_machine_under_the_working_directory() -> None:
    here = Path.cwd()
    reason = f"partition dt=2026-10-08 under {here}/data/lake/raw/churn: 0 rows in file://{here}/x"
    payload = _payload(reason=reason, url="https://prefect.example/flow-runs/flow-run/1")
    assert payload["reason"] == "partition dt=2026-10-08 under data/lake/raw/churn: 0 rows in x"
    assert payload["url"] == "https://prefect.example/flow-runs/flow-run/1"


def test_posts_json_to_the_url_from_the_environment() -> None:
    with webhook_receiver() as hook:
        problem = notifications.send(NotificationsConfig(), _payload(), {ENV: hook.url})
    assert problem is None
    assert hook.bodies == [_payload()]
    assert hook.headers[0]["Content-Type"] == "application/json"


@pytest.mark.parametrize(
    ("on", "state", "sent"),
    [
        (("failed", "drifted"), "Failed", True),
        (("failed", "drifted"), "Drifted", True),
        (("failed", "drifted"), "Completed", False),
        (("failed",), "Drifted", False),
    ],
)
def test_only_the_states_in_on_are_sent(on: tuple[str, ...], state: str, sent: bool) -> None:
    cfg = NotificationsConfig(on=on)  # type: ignore[arg-type]
    with webhook_receiver() as hook:
        assert notifications.send(cfg, _payload(state), {ENV: hook.url}) is None
    assert len(hook.bodies) == int(sent)


def test_no_url_configured_sends_nothing_and_is_no_problem() -> None:
    cfg = NotificationsConfig(webhook_url_env="BATCHPRED_TEST_NO_SUCH_VARIABLE")
    assert notifications.send(cfg, _payload(), {}) is None
    assert notifications.send(NotificationsConfig(), _payload(), {ENV: "  "}) is None


def test_a_failed_delivery_is_one_line_without_the_url_and_never_raises() -> None:
    cfg = NotificationsConfig(timeout_seconds=0.5)
    with webhook_receiver(status=500) as hook:
        answered = notifications.send(cfg, _payload(), {ENV: hook.url})
    with webhook_receiver(delay=2.0) as slow:
        timed_out = notifications.send(cfg, _payload(), {ENV: slow.url})
    port = hook.url.split(":")[2].split("/")[0]
    refused = notifications.send(cfg, _payload(), {ENV: hook.url})  # server gone
    not_http = notifications.send(cfg, _payload(), {ENV: f"file:///etc/{SECRET_URL_PART}"})
    assert answered is not None and "HTTP 500" in answered
    assert timed_out is not None and "unreachable" in timed_out
    assert refused is not None and "unreachable" in refused
    assert not_http is not None and "not an http(s) URL" in not_http
    for problem in (answered, timed_out, refused, not_http):
        assert SECRET_URL_PART not in problem and port not in problem
        assert "\n" not in problem and ENV in problem
