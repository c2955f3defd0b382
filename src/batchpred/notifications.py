"""Tell an operator: POST a small JSON summary of a run that ended failed or drifted to a
webhook (Slack-, Teams- or PagerDuty-style endpoints, or anything that takes JSON).

The URL is read from the environment variable that `notifications.webhook_url_env` names,
because such URLs usually carry a token; it is never logged or put into an error message.
A notification that cannot be delivered is reported back as one line for the caller to log
as a warning: it never changes the outcome of the run it reports on.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

from batchpred.config import NotificationsConfig

USER_AGENT = "batchpred-notifier"


def run_summary(
    *,
    flow: str,
    run: str | None,
    dataset: str,
    day: date | None,
    state: str,
    reason: str,
    drifted: list[dict[str, Any]] | None = None,
    url: str | None = None,
) -> dict[str, Any]:
    """The JSON body: which run (its name as the UI shows it, and `url`, its page in the UI
    when $PREFECT_UI_URL or $PREFECT_API_URL says where that is), which dataset and day, how
    it ended and why in one line (paths under the working directory made relative to it: a
    receiver has no use for this machine's layout), and the drifted features (name, PSI,
    threshold), worst first."""
    return {
        "flow": flow,
        "run": run,
        "url": url,
        "dataset": dataset,
        "day": day.isoformat() if day else None,
        "state": state,
        "reason": _relative(reason),
        "drifted": [
            {"feature": r["feature"], "psi": round(float(r["psi"]), 4), "threshold": r["psi_major"]}
            for r in drifted or []
        ],
    }


def _relative(text: str, root: Path | None = None) -> str:
    """`text` with the paths under `root` (the working directory) relative to it."""
    base = str(root or Path.cwd()).rstrip("/") + "/"
    return text.replace(f"file://{base}", "").replace(base, "")


def wanted(cfg: NotificationsConfig, state: str) -> bool:
    """Whether a run ending in `state` (Failed, Drifted, ...) is to be notified."""
    return state.lower() in cfg.on


def send(
    cfg: NotificationsConfig,
    payload: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """POST `payload` to the webhook, if one is configured and the state is wanted. Returns
    None when sent or not wanted, else why it was not delivered (one line, without the URL).
    Never raises."""
    if not wanted(cfg, str(payload.get("state", ""))):
        return None
    url = (os.environ if environ is None else environ).get(cfg.webhook_url_env, "").strip()
    if not url:
        return None
    if not url.lower().startswith(("http://", "https://")):
        return f"${cfg.webhook_url_env} is not an http(s) URL; notification not sent"
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", "User-Agent": USER_AGENT},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=cfg.timeout_seconds) as response:  # noqa: S310
            response.read()
    except urllib.error.HTTPError as exc:
        return f"webhook ${cfg.webhook_url_env} answered HTTP {exc.code}; notification lost"
    except Exception as exc:  # noqa: BLE001 - a notification must never fail the run
        reason = getattr(exc, "reason", None) or type(exc).__name__
        return f"webhook ${cfg.webhook_url_env} unreachable ({reason}); notification lost"
    return None
