"""A worker process of `liandan serve`: claims queued studies and runs them on Ray, one at a time.

    claim ──► run_study (this process's main thread: Ray Tune needs it) ──► report ──► done
      ▲          │ should_stop(): cancel requested, or this worker is shutting down
      │          ▼
      └── requeue (shutdown) · cancelled · failed (the error kept on the queue row)

A thread beats the row's heartbeat every few seconds. If the worker dies, the row goes stale
and `liandan serve` puts it back in the queue; the next run resumes it. SIGINT stops the run
within about a second (its unfinished trials FAIL `cancelled`, to be re-run) and hands the
study back to the queue. (SIGTERM does the same only until the first study: joining Ray
installs Ray's own SIGTERM handler, which ends the process at once.) The storage URL and the
allowed objective modules come from the environment (LIANDAN_STORAGE,
LIANDAN_ALLOW_OBJECTIVES: `Settings`), so a password never shows in the process list.

    python -m service.server.worker --ray-address 127.0.0.1:6379     # what `liandan serve` starts
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
import uuid
from pathlib import Path

from service.server.allowed import check_runnable
from service.server.api.settings import Settings
from service.server.cluster import record_cluster
from service.server.process import die_with_parent
from service.server.queue import QueueEntry, StudyQueue

log = logging.getLogger("liandan.worker")


class Heartbeat(threading.Thread):
    """Beats the study's row; notices a lost claim, and a parent that died."""

    def __init__(self, queue: StudyQueue, name: str, worker_id: str, every_s: float,
                 parent_pid: int | None):
        super().__init__(name=f"heartbeat-{name}", daemon=True)
        self.queue, self.study, self.worker_id, self.every_s = queue, name, worker_id, every_s
        self.parent_pid = parent_pid
        self.lost = threading.Event()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.every_s):
            if self.parent_pid is not None and os.getppid() != self.parent_pid:
                # `liandan serve` died: leave the row `running`; the next serve requeues it.
                os._exit(70)
            try:
                if not self.queue.beat(self.study, self.worker_id):
                    log.warning("study %s: claim lost (requeued elsewhere); stopping", self.study)
                    self.lost.set()
                    return
            except Exception:  # noqa: BLE001 - a database blip: try again next beat
                log.exception("heartbeat of %s failed", self.study)

    def stop(self) -> None:
        self.done.set()


class Worker:
    def __init__(self, queue: StudyQueue, worker_id: str, ray_address: str | None,
                 reports_dir: Path, heartbeat_s: float = 5.0, poll_s: float = 1.0,
                 parent_pid: int | None = None, allow_objectives: tuple[str, ...] = (),
                 webhook: str | None = None, api_url: str | None = None):
        self.queue, self.worker_id, self.ray_address = queue, worker_id, ray_address
        # LIANDAN_WEBHOOK (told of every study) and where the report links point.
        self.webhook, self.api_url = webhook, api_url
        self.current: QueueEntry | None = None  # the study being run: its spec's webhook
        self.reports_dir, self.heartbeat_s, self.poll_s = reports_dir, heartbeat_s, poll_s
        self.parent_pid = parent_pid
        self.allow_objectives = allow_objectives
        self.stopping = threading.Event()
        self.attached = False

    def attach_ray(self) -> None:
        """Join the service's Ray (--ray-address) once, and note its nodes for the API's
        submission check. Studies then run on this connection; a failure is retried before
        the next study (run_study would join on its own anyway)."""
        if self.attached or not self.ray_address:
            return
        try:
            from service.run.runner import ensure_ray

            ensure_ray(self.ray_address)
        except Exception:  # noqa: BLE001 - a cluster not up yet: the study run retries it
            log.exception("could not join Ray at %s", self.ray_address)
            return
        self.attached = True
        record_cluster(self.queue, self.ray_address)

    def run_forever(self) -> None:
        log.info("worker %s ready (ray %s)", self.worker_id, self.ray_address or "local")
        self.attach_ray()
        while not self.stopping.is_set():
            if self.parent_pid is not None and os.getppid() != self.parent_pid:
                return
            try:
                entry = self.queue.claim(self.worker_id)
            except Exception:  # noqa: BLE001 - the database is down: wait, don't die
                log.exception("claim failed")
                entry = None
            if entry is None:
                self.stopping.wait(self.poll_s)
                continue
            self.run_one(entry)

    def run_one(self, entry: QueueEntry) -> str:
        """Run one claimed study to its end; returns the state it was left in."""
        from objectives import ObjectiveNotFound
        from service.run.runner import StudyFailed, Unschedulable, run_study
        from service.spec import validate_spec

        name = entry.name
        self.current = entry
        log.info("study %s: running", name)
        beat = Heartbeat(self.queue, name, self.worker_id, self.heartbeat_s, self.parent_pid)
        beat.start()

        def should_stop() -> bool:
            return (self.stopping.is_set() or beat.lost.is_set()
                    or self.queue.cancel_requested(name))

        try:
            # The API checked the objective by name; here it is imported (this process runs
            # it anyway) and checked again: a row written by an older service, or straight
            # into the database, must not run a module the operator did not allow.
            spec = validate_spec(entry.spec, check_objective=False)
            check_runnable(spec.objective, self.allow_objectives)
            self.attach_ray()
            if self.attached:
                record_cluster(self.queue, self.ray_address)  # nodes may have come or gone
            result = run_study(spec, self.queue.url, ray_address=self.ray_address,
                               show_progress=False, should_stop=should_stop)
        except (PermissionError, ObjectiveNotFound) as exc:  # its objective may not run here
            beat.stop()
            log.error("study %s refused: %s", name, exc)
            return self._finish(name, beat, "failed", f"objective refused: {exc}")
        except (StudyFailed, Unschedulable) as exc:  # the study's own failure, told plainly
            beat.stop()
            log.error("study %s failed: %s", name, exc)
            return self._finish(name, beat, "failed", str(exc))
        except Exception:  # noqa: BLE001 - any error of the run is the study's, not ours
            beat.stop()
            error = traceback.format_exc()
            log.error("study %s failed:\n%s", name, error)
            return self._finish(name, beat, "failed", error)
        if result.cancelled:
            beat.stop()
            if self.queue.cancel_requested(name):
                return self._finish(name, beat, "cancelled")
            # Shutting down (or the claim was lost): hand it back; the next run resumes it.
            return self._finish(name, beat, "queued")
        error = self._report(name)
        beat.stop()
        return self._finish(name, beat, "done", error)

    def _report(self, name: str) -> str | None:
        """Write the report; a problem with it is noted, the study is still done."""
        try:
            # What `liandan run` writes too: the rule checks when the spec lists rules that
            # have one, else the study report (service.report.write_study_report).
            from service.rulebook.run import report_study

            paths = report_study(self.queue.url, name, self.reports_dir)
        except Exception as exc:  # noqa: BLE001 - the trials are recorded; say what failed
            log.exception("study %s: report failed", name)
            return f"report not written: {type(exc).__name__}: {exc}"
        log.info("study %s: report %s", name, paths.markdown)
        return "; ".join(paths.warnings) or None

    def _finish(self, name: str, beat: Heartbeat, state: str, error: str | None = None) -> str:
        if beat.lost.is_set():
            return "lost"
        if not self.queue.finish(name, self.worker_id, state, error):  # type: ignore[arg-type]
            log.warning("study %s: no longer ours; left as it is", name)
            return "lost"
        log.info("study %s: %s", name, state)
        self._notify(name, state, error)
        return state

    def _notify(self, name: str, state: str, error: str | None) -> None:
        """POST the study's end to its webhooks from a thread of its own (service.run.notify):
        the next study does not wait for a slow receiver."""
        if state not in ("done", "failed", "cancelled"):
            return  # handed back to the queue: it has not ended
        from service.run.notify import notify_in_background, study_outcome

        spec = self.current.spec if self.current is not None and \
            self.current.name == name else {}
        report = (f"{self.api_url}/studies/{name}/report"
                  if state == "done" and self.api_url else None)
        notify_in_background(
            [(spec.get("notify") or {}).get("webhook"), self.webhook],
            lambda: study_outcome(self.queue.url, name, state, report=report, error=error))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ray-address", default=None)
    parser.add_argument("--reports-dir", default="reports")
    parser.add_argument("--heartbeat-s", type=float, default=5.0)
    parser.add_argument("--worker-id", default=None)
    parser.add_argument("--parent-pid", type=int, default=None,
                        help="exit when this process (liandan serve) is gone")
    args = parser.parse_args(argv)
    if args.parent_pid is not None:
        die_with_parent()
        if os.getppid() != args.parent_pid:
            return 70  # the parent died before prctl took hold
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s[%(process)d] %(message)s")
    # Ctrl-C reaches the whole process group: Tune's own SIGINT handler would end the run as
    # if it had finished; ours stops it as a shutdown, so the study is handed back.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    worker_id = args.worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    # LIANDAN_STORAGE, LIANDAN_ALLOW_OBJECTIVES, LIANDAN_PUBLIC_URL (set by liandan serve),
    # LIANDAN_WEBHOOK
    settings = Settings()
    worker = Worker(StudyQueue(settings.storage), worker_id, args.ray_address,
                    Path(args.reports_dir), args.heartbeat_s, parent_pid=args.parent_pid,
                    allow_objectives=settings.allow_objectives, webhook=settings.webhook,
                    api_url=settings.api_url())

    def stop(signum: int, _frame: object) -> None:
        log.info("worker %s: %s, stopping", worker_id, signal.Signals(signum).name)
        worker.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    started = time.monotonic()
    worker.run_forever()
    log.info("worker %s: exit after %.0f s", worker_id, time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
