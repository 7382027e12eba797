"""API latency under load (issue: the service): 50 clients polling study status while studies
run, and the latency of submissions made meanwhile.

One `liandan serve` (2 workers on a local Ray head, SQLite, no dashboard) in a temporary
folder. Four toy studies run (sleep-based objectives: the workers write trials the whole
time, the CPUs stay mostly free for the API); 50 clients, each with its own keep-alive
connection, poll `GET /studies/{name}` every `--interval` seconds, round-robin
over the studies (one event loop, raw HTTP/1.1); a submitter thread sends `POST /studies`
twice a second meanwhile. After 2 s of warm-up, `--seconds` are measured. Two phases:

  cached     the service as shipped (a status read is cached 0.5 s: status_cache_s)
  uncached   LIANDAN_STATUS_CACHE_S=0: every poll runs its SQL (counts, best trial)

Target: p99 <= 100 ms for status reads on loopback, 2 cores.

    .venv/bin/python bench/api_load.py            # writes bench/results/api_load.json
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from record import RESULTS, machine, now, save

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token-" + "x" * 24
RESULT = RESULTS / "api_load.json"
SPEC = """\
name: {name}
objective: toy_objectives:quadratic
metric: val_loss
direction: minimize
nuisance: {{x: {{low: -2.0, high: 3.0}}}}
fixed: {{epochs: 5, sleep: {sleep}}}
budget: {{trials: {trials}, seeds: 1, max_concurrent: 2}}
search: {{sampler: random, pruner: none, seed: 0}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def summary(latencies_s: list[float], errors: int, wall_s: float) -> dict:
    ms = [v * 1000 for v in latencies_s]
    return {"n": len(ms), "errors": errors, "req_per_s": round(len(ms) / wall_s, 1),
            "p50_ms": round(percentile(ms, 50), 2), "p90_ms": round(percentile(ms, 90), 2),
            "p99_ms": round(percentile(ms, 99), 2), "max_ms": round(max(ms), 2),
            "mean_ms": round(statistics.fmean(ms), 2)}


class Serve:
    def __init__(self, folder: Path, cache_s: float, workers: int):
        self.port = free_port()
        env = {**os.environ, "LIANDAN_TOKEN": TOKEN, "LIANDAN_STATUS_CACHE_S": str(cache_s),
               "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "fixtures"), str(ROOT)])}
        self.log = (folder / "serve.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(self.port),
             "--workers", str(workers), "--no-dashboard",
             "--storage", f"sqlite:///{folder / 'bench.db'}",
             "--allow-objective", "toy_objectives"],  # the service runs allowed modules only
            cwd=folder, env=env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.monotonic() + 180
        while True:
            try:
                if request(self.port, "GET", "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"liandan serve did not start; see {folder / 'serve.log'}")
            time.sleep(0.5)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.close()


def request(port: int, method: str, path: str, body: bytes | None = None,
            conn: http.client.HTTPConnection | None = None) -> tuple[int, bytes]:
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    if body is not None:
        headers["Content-Type"] = "application/yaml"
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    if own:
        conn.close()
    return response.status, data


async def poll(port: int, studies: list[str], args: argparse.Namespace,
               seconds: float) -> tuple[list[float], int]:
    """`args.clients` keep-alive connections on one event loop, each polling every
    `args.interval` s for `seconds` (one loop, not 50 threads: the clients share the 2 cores
    with the service, and a thread per client would time the GIL, not the API)."""
    latencies: list[float] = []
    errors = 0
    end = time.monotonic() + seconds

    async def client(i: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(i * args.interval / args.clients)  # spread the clients out
        k = i
        while time.monotonic() < end:
            path = f"/studies/{studies[k % len(studies)]}"
            t0 = time.perf_counter()
            writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         f"Authorization: Bearer {TOKEN}\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            await reader.readexactly(length)
            if head.startswith(b"HTTP/1.1 200"):
                latencies.append(time.perf_counter() - t0)
            else:
                errors += 1
            k += 1
            await asyncio.sleep(args.interval)
        writer.close()

    await asyncio.gather(*(client(i) for i in range(args.clients)))
    return latencies, errors


def phase(name: str, folder: Path, args: argparse.Namespace, cache_s: float) -> dict:
    print(f"[{name}] starting liandan serve ...", flush=True)
    serve = Serve(folder, cache_s, args.workers)
    try:
        studies = [f"{name}-run-{i}" for i in range(4)]
        for study in studies:
            code, _ = request(serve.port, "POST", "/studies",
                              SPEC.format(name=study, sleep=0.3, trials=30).encode())
            assert code == 201, code
        # Wait until trials are being written, so the polls race real writes.
        deadline = time.monotonic() + 120
        while args.workers and time.monotonic() < deadline and json.loads(request(
                serve.port, "GET", f"/studies/{studies[0]}")[1])["counts"]["running"] == 0:
            time.sleep(0.5)
        asyncio.run(poll(serve.port, studies, args, seconds=2.0))  # warm-up, not counted
        posts: list[float] = []
        post_errors = 0
        stop = threading.Event()

        def submitter() -> None:  # a thread beside the pollers' event loop
            nonlocal post_errors
            n = 0
            while not stop.is_set():
                body = SPEC.format(name=f"{name}-queued-{n}", sleep=0.0, trials=2).encode()
                t0 = time.perf_counter()
                try:
                    code, _ = request(serve.port, "POST", "/studies", body)
                except OSError:
                    code = 0
                if code == 201:
                    posts.append(time.perf_counter() - t0)
                else:
                    post_errors += 1
                n += 1
                stop.wait(0.5)

        thread = threading.Thread(target=submitter)
        thread.start()
        t0 = time.perf_counter()
        gets, errors = asyncio.run(poll(serve.port, studies, args, seconds=args.seconds))
        wall = time.perf_counter() - t0
        stop.set()
        thread.join()
        running = [json.loads(request(serve.port, "GET", f"/studies/{s}")[1])["counts"]
                   for s in studies]
        result = {"status_cache_s": cache_s,
                  "get_status": summary(gets, errors, wall),
                  "post_studies": summary(posts, post_errors, wall),
                  "trial_counts_at_end": dict(zip(studies, running, strict=True))}
        print(f"[{name}] GET /studies/{{name}}: {result['get_status']}", flush=True)
        print(f"[{name}] POST /studies:        {result['post_studies']}", flush=True)
        return result
    finally:
        serve.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--interval", type=float, default=0.2,
                        help="seconds each client waits between polls")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    results = {"bench": "api_load", "created": now(),
               "machine": machine(load_avg_at_start=[round(x, 2) for x in os.getloadavg()]),
               "config": {k: (str(v) if isinstance(v, Path) else v)
                          for k, v in vars(args).items()},
               "target": "p99 <= 100 ms for GET /studies/{name}"}
    with tempfile.TemporaryDirectory(prefix="liandan-bench-") as tmp:
        for name, cache_s in (("cached", 0.5), ("uncached", 0.0)):
            folder = Path(tmp) / name
            folder.mkdir()
            results[name] = phase(name, folder, args, cache_s)
    results["machine"]["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    save(results, args.out)


if __name__ == "__main__":
    main()
