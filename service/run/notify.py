"""Tell someone that a study ended: a JSON POST to a webhook.

    study ends (done · failed · cancelled) ──► study_outcome(): name, state, counts, best,
                                               report link ──► deliver(): POST, retried

Webhooks come from the spec (`notify: {webhook: URL}`) and, in the service, from
`LIANDAN_WEBHOOK` too. `liandan run` posts after the study and its report (the report link is
the file's path); a worker of `liandan serve` posts from a background thread, so its next
study does not wait (the link is the API's report URL). A delivery is tried `TRIES` times with
backoff; one that still fails is logged and dropped: the study's outcome is in the storage
either way, and a notification must never fail or hold up a study.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from service.records import better, finite

__all__ = ["BACKOFF_S", "Delivery", "STATES", "TIMEOUT_S", "deliver", "notify",
           "notify_in_background", "redacted", "study_outcome"]

log = logging.getLogger("liandan.notify")

STATES = ("done", "failed", "cancelled")
BACKOFF_S = (1.0, 2.0)  # the waits between the three tries: at most ~3 s + 3 timeouts
TIMEOUT_S = 5.0  # per try; a receiver that takes longer is treated as down
MAX_ERROR_CHARS = 2000  # a traceback's tail is enough to tell what failed
# Statuses worth another try: the receiver's trouble, not the request's (a 404 or 401 will
# answer the same in two seconds).
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Delivery:
    """How one webhook delivery went."""

    url: str
    ok: bool
    tries: int
    status: int | None = None  # the last HTTP status, None when no answer came
    error: str | None = None  # why the last try failed


def redacted(url: str) -> str:
    """`https://hooks.slack.com/…`: what the logs show of a webhook (its path is often the
    secret)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/…"


def study_outcome(storage_url: str | None, name: str, state: str, *,
                  report: str | None = None, error: str | None = None) -> dict[str, Any]:
    """The notification's body: the study's state, trial counts and best value, read from the
    storage (a storage that cannot be read leaves counts and best out, not the message)."""
    body: dict[str, Any] = {
        "event": "study_ended", "study": name, "state": state,
        "counts": None, "best_value": None, "arms": [], "report": report,
        "error": None if error is None else error[-MAX_ERROR_CHARS:],
        "ended_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    try:
        from service.store.status import study_statuses
        from service.store.storage import default_storage_url

        statuses = study_statuses(storage_url or default_storage_url(), name)
    except Exception:  # noqa: BLE001 - the message still says how the study ended
        log.exception("study %s: could not read its trials for the notification", name)
        return body
    if not statuses:
        return body
    st = statuses[0]
    counts = st.counts
    body.update(objective=st.objective, metric=st.metric, direction=st.direction, counts={
        "complete": counts["COMPLETE"], "pruned": counts["PRUNED"], "failed": counts["FAIL"]})
    best = None
    for arm in st.arms:
        value = None if arm.best is None else arm.best.value
        body["arms"].append({"arm": arm.arm or None, "best_value": value})
        if finite(value) and (best is None or better(value, best, st.direction)):
            best = value
    body["best_value"] = best
    return body


def deliver(url: str, body: dict[str, Any], *, backoff_s: Sequence[float] = BACKOFF_S,
            timeout_s: float = TIMEOUT_S) -> Delivery:
    """POST `body` as JSON to `url`, tried `len(backoff_s) + 1` times; never raises."""
    data = json.dumps(body, allow_nan=False, default=str).encode()
    tries, status, error = 0, None, None
    for wait in (*backoff_s, None):
        tries += 1
        request = urllib.request.Request(url, data=data, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": "liandan-notify"})
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as answer:  # noqa: S310 - the scheme is checked (http/https only)
                status = answer.status
            return Delivery(url, True, tries, status)
        except urllib.error.HTTPError as err:
            status, error = err.code, f"HTTP {err.code} {err.reason}"
            if err.code not in RETRY_STATUSES:
                break
        except (OSError, ValueError) as err:  # refused, unreachable, timed out, bad name
            status, error = None, f"{type(err).__name__}: {err}"
        if wait is not None:
            time.sleep(wait)
    log.warning("notification to %s not delivered after %d tries: %s", redacted(url), tries,
                error)
    return Delivery(url, False, tries, status, error)


def _webhooks(urls: Iterable[str | None]) -> list[str]:
    """Each URL once, in order; None and empty ones left out."""
    return list(dict.fromkeys(u for u in urls if u))


def notify(urls: Iterable[str | None], body: dict[str, Any], **kw: Any) -> list[Delivery]:
    """Deliver `body` to every webhook in `urls`, one after another; never raises."""
    return [deliver(url, body, **kw) for url in _webhooks(urls)]


def notify_in_background(urls: Iterable[str | None], body_of: Any,
                         **kw: Any) -> threading.Thread | None:
    """`notify` in a thread of its own (None when there is no webhook). `body_of()` builds the
    body there too: reading the study's trials is the thread's work, not the caller's. Not a
    daemon: a process that ends right after waits for the (bounded) delivery."""
    hooks = _webhooks(urls)
    if not hooks:
        return None

    def send() -> None:
        try:
            notify(hooks, body_of(), **kw)
        except Exception:  # noqa: BLE001 - a notification never takes anything down
            log.exception("notification failed")

    thread = threading.Thread(target=send, name="liandan-notify", daemon=False)
    thread.start()
    return thread
