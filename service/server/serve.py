"""`liandan serve`: one command, every process of the service.

    liandan serve ─┬─ Ray head (ray.init here, on 127.0.0.1), unless --ray-address names one
                   ├─ uvicorn: the API (this process's main thread)
                   ├─ N × `python -m service.server.worker`  (processes: Tune wants a main thread)
                   ├─ `liandan dashboard`: optuna-dashboard on the same storage
                   └─ supervisor thread: restarts a dead child, requeues stale studies

On start, a single-node serve (it started the Ray head, so every worker was its own) puts
back every study left `running` by the previous serve; with --ray-address, or with no
workers, only studies whose heartbeat went stale are put back. On SIGTERM/SIGINT the workers
hand their studies back to the queue before the process exits.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from service.server.api.settings import Settings
from service.server.cluster import record_cluster
from service.server.queue import StudyQueue
from service.server.token import ensure_token

log = logging.getLogger("liandan.serve")
STOP_GRACE_S = 30.0


def start_ray_head() -> str:
    """Start a local Ray head in this process, listening on 127.0.0.1 only; workers attach
    to its address."""
    if "ray" in sys.modules:
        raise RuntimeError("start_ray_head must run before anything imports ray")
    # Only this machine's workers use this head, so nothing of it should listen beyond
    # loopback. Ray turns a node address of 127.0.0.1 into the machine's routable one unless
    # its single-machine mode is on; in that mode every server (GCS, raylet, object manager,
    # workers) binds 127.0.0.1. Read when ray is imported; inherited by the workers, which
    # must then also see the node as 127.0.0.1 to find its raylet.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray

    # "local": a new head, always. With no address, ray.init joins the newest Ray instance it
    # finds on the machine, which may be anyone's (and go away under us).
    ray.init(address="local", include_dashboard=False, log_to_driver=False,
             configure_logging=False, _node_ip_address="127.0.0.1")
    return ray.get_runtime_context().gcs_address


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    worker_id: str | None = None  # a worker's queue identity (kept across restarts)
    proc: subprocess.Popen | None = None
    started: float = 0.0
    restarts: list[float] = field(default_factory=list)

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, env=self.env)
        self.started = time.monotonic()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Supervisor(threading.Thread):
    """Starts the children, restarts one that dies, requeues studies whose worker went quiet;
    on stop, asks every child to stop and waits for them (then kills what is left)."""

    def __init__(self, settings: Settings, queue: StudyQueue, ray_address: str | None,
                 every_s: float = 2.0):
        super().__init__(name="liandan-supervisor", daemon=True)
        self.settings, self.queue, self.every_s = settings, queue, every_s
        self.stopping = threading.Event()
        # The children read their settings from the environment (`Settings()`): the ones
        # that concern them are set from this serve's; the token and the API's address are
        # not theirs (a worker serves nothing; the dashboard gets the token below).
        env = {k: v for k, v in os.environ.items()
               if k not in ("LIANDAN_TOKEN", "LIANDAN_HOST", "LIANDAN_PORT")}
        env["LIANDAN_STORAGE"] = settings.storage
        env["LIANDAN_ALLOW_OBJECTIVES"] = ",".join(settings.allow_objectives)
        env["LIANDAN_ALLOWED_HOSTS"] = ",".join(settings.allowed_hosts)
        env["LIANDAN_PUBLIC_URL"] = settings.api_url()  # the report link a webhook gets
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), env.get("PYTHONPATH")]))
        reports = str(settings.reports_dir.resolve())
        me = str(os.getpid())
        ids = [f"{os.uname().nodename}:{me}:w{i + 1}" for i in range(settings.workers)]
        self.children = [
            Child(f"worker-{i + 1}", [
                sys.executable, "-m", "service.server.worker", "--reports-dir", reports,
                "--heartbeat-s", str(settings.heartbeat_s), "--parent-pid", me,
                "--worker-id", worker_id,
                *(["--ray-address", ray_address] if ray_address else [])], env, worker_id)
            for i, worker_id in enumerate(ids)]
        if settings.dashboard:
            # The dashboard gates changes (and off loopback every request) with the token.
            dash_env = {**env, "LIANDAN_TOKEN": settings.token_value() or ""}
            self.children.append(Child("dashboard", [
                sys.executable, "-m", "service.cli", "dashboard", "--host", settings.host,
                "--port", str(settings.dashboard_port), "--reports-dir", reports,
                "--parent-pid", me], dash_env))

    def start(self) -> None:
        for child in self.children:  # from the main thread: see die_with_parent
            child.start()
        super().start()

    def run(self) -> None:
        while not self.stopping.wait(self.every_s):
            for child in self.children:
                if child.alive() or self.stopping.is_set():
                    continue
                code = child.proc.returncode if child.proc else None
                now = time.monotonic()
                child.restarts = [t for t in child.restarts if now - t < 60] + [now]
                if len(child.restarts) > 5:
                    log.error("%s keeps dying (exit %s); not restarting it", child.name, code)
                    continue
                log.warning("%s exited (%s); restarting it", child.name, code)
                if child.worker_id:  # its study need not wait for the heartbeat to go stale
                    try:
                        if names := self.queue.requeue_worker(child.worker_id):
                            log.warning("requeued (its worker died): %s", ", ".join(names))
                    except Exception:  # noqa: BLE001 - the stale check will catch it later
                        log.exception("requeue of %s's studies failed", child.name)
                child.start()
            try:
                if names := self.queue.requeue_stale(self.settings.stale_after_s):
                    log.warning("requeued (worker went quiet): %s", ", ".join(names))
            except Exception:  # noqa: BLE001 - the database is down; the next round retries
                log.exception("requeue of stale studies failed")
        self._stop_children()

    def _stop_children(self) -> None:
        for child in self.children:
            if child.alive():
                # SIGINT for a worker: once it has joined Ray, Ray's own SIGTERM handler kills
                # it on the spot, and the study would wait for a restart to be requeued.
                child.proc.send_signal(signal.SIGINT if child.name.startswith("worker")
                                       else signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for child in self.children:
            if child.proc is None:
                continue
            try:
                child.proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0f s; killing it", child.name, STOP_GRACE_S)
                child.proc.kill()
                child.proc.wait()

    def stop(self) -> None:
        self.stopping.set()
        if self.is_alive():
            self.join()
        else:
            self._stop_children()


def serve(settings: Settings) -> None:
    """Run the service until SIGINT/SIGTERM."""
    import uvicorn

    from service.server.api.main import create_app

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s[%(process)d] %(message)s")
    settings = ensure_token(settings)
    queue = StudyQueue(settings.storage).setup()
    settings.reports_dir.mkdir(parents=True, exist_ok=True)
    ray_address, started_ray = settings.ray_address, False
    if settings.workers and ray_address is None:
        ray_address, started_ray = start_ray_head(), True
        record_cluster(queue, ray_address)  # known at once: submissions are checked against it
        if names := queue.requeue_running():
            log.warning("requeued (left running by the last serve): %s", ", ".join(names))
    supervisor = Supervisor(settings, queue, ray_address)
    supervisor.start()
    log.info("API http://%s:%d/docs · %d worker(s) on Ray %s%s", settings.host, settings.port,
             settings.workers, ray_address or "-",
             f" · dashboard http://{settings.host}:{settings.dashboard_port}/"
             if settings.dashboard else "")
    server = uvicorn.Server(uvicorn.Config(
        create_app(settings, queue, ray_address), host=settings.host, port=settings.port,
        log_level="warning", access_log=False, server_header=False, timeout_graceful_shutdown=5))
    # Everything imported so far lives as long as the process: keep it out of the collector's
    # full passes, which otherwise stall every request for 50-100 ms a few times a minute.
    gc.collect()
    gc.freeze()
    # uvicorn handles SIGINT/SIGTERM itself, then re-raises the signal to whatever handler
    # was there before: make that one quiet (the default would raise KeyboardInterrupt in
    # the middle of the shutdown below).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: log.info(
            "%s: already stopping", signal.Signals(signum).name))
    try:
        server.run()
    finally:
        log.info("stopping: workers hand their studies back to the queue")
        supervisor.stop()
        queue.close()
        if started_ray:
            import ray

            ray.shutdown()
