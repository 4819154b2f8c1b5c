"""Benchmark: the public "You Said, We Did" page under gunicorn, against a bare Flask baseline.

The script builds a throwaway instance folder with the demo data, starts two gunicorn servers
with identical settings on loopback ports, one serving the project's ``wsgi:app`` and one serving a
bare Flask app whose single route returns the very same bytes, then loads both with the same load
generator in alternating rounds. It prints requests/s for each, the ratio app/baseline and the
p50/p99 latencies.

The load generator is ``wrk`` when it is on PATH, otherwise a small threaded Python client (which
shares the CPU with the servers and saturates sooner, so its ratios are compressed towards 1).

Environment knobs: ``BENCH_ROUNDS`` (default 3), ``BENCH_SECONDS`` per round (default 5),
``BENCH_CONNECTIONS`` (default 16), ``BENCH_WORKERS`` (default 2), ``BENCH_THREADS`` (default 4).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from common import ROOT, finish_work_dir, machine, new_work_dir

PATH = "/you-said-we-did"
HOST = "127.0.0.1"

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "5"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "16"))
WORKERS = int(os.environ.get("BENCH_WORKERS", "2"))
THREADS = int(os.environ.get("BENCH_THREADS", "4"))
WARMUP_SECONDS = 1
START_TIMEOUT_SECONDS = 30
PY_MAX_REQUESTS_PER_ROUND = 500_000

# Project settings that could point the benchmark at a real database, mail server or host list.
SCRUBBED_ENV = ("DATABASE_URL", "TRUSTED_HOSTS", "PUBLIC_BASE_URL", "MAIL_SERVER", "SECRET_KEY")

BARE_APP = textwrap.dedent(
    '''\
    """A bare Flask app: one route returning the recorded bytes of the public page."""

    from pathlib import Path

    from flask import Flask, Response

    BODY = (Path(__file__).parent / "page.html").read_bytes()

    app = Flask(__name__)


    @app.get("{path}")
    def page():
        """The recorded page, as is."""
        return Response(BODY, content_type="text/html; charset=utf-8")
    '''
).format(path=PATH)


@dataclass
class RoundResult:
    """One load round against one server."""

    requests_per_second: float
    p50_ms: float | None
    p99_ms: float | None
    errors: int


def project_env(instance: Path) -> dict[str, str]:
    """The environment for the project's commands and server: development, instance in the work dir."""
    env = {key: value for key, value in os.environ.items() if key not in SCRUBBED_ENV}
    env.update(WINBACK_ENV="development", WINBACK_INSTANCE_PATH=str(instance), MAIL_BACKEND="outbox")
    return env


def prepare_database(env: dict[str, str]) -> None:
    """Run the migrations and load the demo data into the work dir's SQLite database."""
    for args in (["db", "upgrade"], ["demo", "load"]):
        command = [sys.executable, "-m", "flask", "--app", "wsgi", *args]
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed:\n{done.stdout}{done.stderr}")


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def start_gunicorn(
    module: str, cwd: Path, env: dict[str, str], port: int, log: Path
) -> subprocess.Popen[bytes]:
    """Start a gunicorn master in its own process group with the shared settings."""
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-k",
        "gthread",
        "--workers",
        str(WORKERS),
        "--threads",
        str(THREADS),
        "--bind",
        f"{HOST}:{port}",
        "--log-level",
        "warning",
        module,
    ]
    with log.open("wb") as handle:
        return subprocess.Popen(
            command, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )


def fetch(port: int) -> tuple[int, str, bytes]:
    """One GET of the page: status, content type and body."""
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request("GET", PATH)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        conn.close()


def wait_until_up(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Poll the server until it answers 200, or fail after START_TIMEOUT_SECONDS."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn on port {port} exited early:\n{log.read_text()}")
        try:
            status, _, _ = fetch(port)
        except OSError:
            time.sleep(0.1)
            continue
        if status == 200:
            return
        raise RuntimeError(f"GET {PATH} on port {port} answered {status}:\n{log.read_text()}")
    raise RuntimeError(f"gunicorn on port {port} did not answer within {START_TIMEOUT_SECONDS} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a gunicorn master and its workers: TERM, then KILL to its process group if needed."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def to_ms(value: str, unit: str) -> float:
    """A wrk duration such as 1.23ms, 850.00us or 1.02s in milliseconds."""
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(url: str, seconds: int) -> RoundResult:
    """One wrk round; parses Requests/sec, the latency distribution and any errors."""
    command = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", url]
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rps is None:
        raise RuntimeError(f"could not read wrk output:\n{out}")
    latency = {
        pct: to_ms(value, unit)
        for pct, value, unit in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\b", out, re.M)
    }
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses:\s+(\d+)", out))
    socket_errors = re.search(r"Socket errors:(.*)", out)
    if socket_errors:
        errors += sum(int(n) for n in re.findall(r"\d+", socket_errors.group(1)))
    return RoundResult(float(rps.group(1)), latency.get("50"), latency.get("99"), errors)


def run_python(port: int, seconds: int) -> RoundResult:
    """One round of the threaded http.client generator: keep-alive connections, bounded in time and count."""
    deadline = time.monotonic() + seconds
    per_thread_cap = PY_MAX_REQUESTS_PER_ROUND // CONNECTIONS
    latencies: list[list[float]] = [[] for _ in range(CONNECTIONS)]
    errors = [0] * CONNECTIONS

    def worker(index: int) -> None:
        """Send requests on one connection until the deadline or the cap."""
        conn = http.client.HTTPConnection(HOST, port, timeout=5)
        mine = latencies[index]
        try:
            while len(mine) < per_thread_cap and time.monotonic() < deadline:
                began = time.perf_counter()
                try:
                    conn.request("GET", PATH)
                    response = conn.getresponse()
                    response.read()
                except (OSError, http.client.HTTPException):
                    errors[index] += 1
                    conn.close()
                    conn = http.client.HTTPConnection(HOST, port, timeout=5)
                    continue
                mine.append(time.perf_counter() - began)
                if response.status != 200:
                    errors[index] += 1
        finally:
            conn.close()

    began = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 30)
    elapsed = time.monotonic() - began
    merged = sorted(value for chunk in latencies for value in chunk)
    if not merged:
        return RoundResult(0.0, None, None, sum(errors))
    p50 = merged[int(0.50 * (len(merged) - 1))] * 1000
    p99 = merged[int(0.99 * (len(merged) - 1))] * 1000
    return RoundResult(len(merged) / elapsed, p50, p99, sum(errors))


def load(port: int, seconds: int, use_wrk: bool) -> RoundResult:
    """One round against the server on port, with whichever generator this run uses."""
    if use_wrk:
        return run_wrk(f"http://{HOST}:{port}{PATH}", seconds)
    return run_python(port, seconds)


def median_of(results: list[RoundResult]) -> RoundResult:
    """The median of each figure over the rounds, errors summed."""

    def med(values: list[float | None]) -> float | None:
        """Median of the known values, or None."""
        known = [v for v in values if v is not None]
        return statistics.median(known) if known else None

    return RoundResult(
        statistics.median(r.requests_per_second for r in results),
        med([r.p50_ms for r in results]),
        med([r.p99_ms for r in results]),
        sum(r.errors for r in results),
    )


def ms(value: float | None) -> str:
    """A latency for printing."""
    return "n/a" if value is None else f"{value:.2f} ms"


def figures(label: str, result: RoundResult) -> str:
    """One server's figures on one line."""
    return (
        f"{label:<11} {PATH}: {result.requests_per_second:8.1f} req/s  "
        f"p50 {ms(result.p50_ms)}  p99 {ms(result.p99_ms)}"
    )


def main() -> int:
    """Set up, serve both, load both in alternating rounds, print the figures."""
    work = new_work_dir("public_page")
    instance = work / "instance"
    env = project_env(instance)
    use_wrk = shutil.which("wrk") is not None
    generator = (
        f"wrk -t2 -c{CONNECTIONS} -d{SECONDS}s --latency"
        if use_wrk
        else f"python http.client, {CONNECTIONS} keep-alive threads, {SECONDS} s (wrk not on PATH)"
    )
    print(f"machine: {machine()}")
    print(f"generator: {generator}")
    print(f"servers: gunicorn -k gthread --workers {WORKERS} --threads {THREADS}, {ROUNDS} rounds, A then B")

    procs: list[subprocess.Popen[bytes]] = []
    ok = False
    try:
        prepare_database(env)
        app_port, bare_port = free_port(), free_port()
        while bare_port == app_port:
            bare_port = free_port()

        app_log = work / "gunicorn-app.log"
        procs.append(start_gunicorn("wsgi:app", ROOT, env, app_port, app_log))
        wait_until_up(procs[-1], app_port, app_log)
        status, content_type, body = fetch(app_port)
        if status != 200 or not content_type.startswith("text/html"):
            raise RuntimeError(f"GET {PATH} answered {status} {content_type!r}")
        (work / "page.html").write_bytes(body)
        (work / "bare_app.py").write_text(BARE_APP)

        bare_log = work / "gunicorn-bare.log"
        bare_env = {k: v for k, v in env.items() if not k.startswith("WINBACK_")}
        procs.append(start_gunicorn("bare_app:app", work, bare_env, bare_port, bare_log))
        wait_until_up(procs[-1], bare_port, bare_log)
        if fetch(bare_port)[2] != body:
            raise RuntimeError("the baseline does not return the same bytes as the app")
        print(f"page: {len(body)} bytes, {content_type}")

        for port in (app_port, bare_port):
            load(port, WARMUP_SECONDS, use_wrk)
        app_rounds: list[RoundResult] = []
        bare_rounds: list[RoundResult] = []
        for number in range(1, ROUNDS + 1):
            app_rounds.append(load(app_port, SECONDS, use_wrk))
            bare_rounds.append(load(bare_port, SECONDS, use_wrk))
            print(
                f"round {number}: app {app_rounds[-1].requests_per_second:8.1f} req/s   "
                f"baseline {bare_rounds[-1].requests_per_second:8.1f} req/s"
            )

        app, bare = median_of(app_rounds), median_of(bare_rounds)
        ratio = app.requests_per_second / bare.requests_per_second if bare.requests_per_second else 0.0
        print(figures("app page", app))
        print(figures("bare Flask", bare))
        print(f"ratio app/baseline: {ratio:.2f}")
        if app.errors or bare.errors:
            raise RuntimeError(f"errors during the load: app {app.errors}, baseline {bare.errors}")
        print(
            f"summary: the public page serves {app.requests_per_second:.0f} req/s, {ratio:.2f}x a bare Flask "
            f"route returning the same bytes ({bare.requests_per_second:.0f} req/s), "
            f"median of {ROUNDS} x {SECONDS} s rounds with {'wrk' if use_wrk else 'the Python generator'}"
        )
        ok = True
    finally:
        for proc in procs:
            stop(proc)
        finish_work_dir(work, ok)
    return 0


if __name__ == "__main__":
    sys.exit(main())
