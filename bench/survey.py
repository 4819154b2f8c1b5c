"""Benchmark: the survey (GET /s/<token> and POST /s/<token>) under gunicorn, against a bare Flask
baseline, in the same run.

The script builds a throwaway instance folder with the demo data plus SURVEY_INVITATIONS lapsed
customers invited by one campaign, then starts two gunicorn servers with identical settings on
loopback ports: the project's ``wsgi:app``, and a bare Flask app whose GET route returns the very
bytes of the survey form and whose POST route reads the form and answers the same 303 redirect.
Both are loaded with wrk in alternating rounds.

- GET: one survey link, opened again and again (the form, as a customer reloading it sees it).
- POST: every request answers a different invitation (a wrk Lua script walks a list of links,
  each round its own slice, and sends each with the CSRF token of that link's form), so each one
  verifies its link and CSRF token, validates, suggests an outcome and inserts a response. The
  run checks afterwards how many responses were stored.

Targets (issue 5): GET at least 0.5x and POST at least 0.3x the baseline's requests per second.

Environment knobs: ``BENCH_ROUNDS`` (default 5), ``BENCH_SECONDS`` per round (default 5),
``BENCH_CONNECTIONS`` (default 16), ``BENCH_WORKERS`` (default 2), ``BENCH_THREADS`` (default 4),
``SURVEY_INVITATIONS`` (default 60000), ``BENCH_DATABASE_URL`` (a PostgreSQL server, e.g.
``postgresql://postgres@127.0.0.1:5432/postgres``: the run then works in a database of its own,
created and dropped there, instead of SQLite).
"""

from __future__ import annotations

import contextlib
import http.client
import http.cookies
import os
import re
import shutil
import subprocess
import sys
import textwrap
import urllib.parse
import uuid
from pathlib import Path

from common import ROOT, finish_work_dir, machine, new_work_dir
from public_page import (
    CONNECTIONS,
    HOST,
    SECONDS,
    THREADS,
    WARMUP_SECONDS,
    WORKERS,
    RoundResult,
    free_port,
    median_of,
    ms,
    prepare_database,
    project_env,
    start_gunicorn,
    stop,
    to_ms,
)

# Five rounds, not the three of the other benchmarks: on the shared machine a disturbance at times
# halves whichever server is being measured for a round, and a median of three can take it in.
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
# Enough links for a slice per round, one for the warm-up and SPARE_SLICES for rounds run again
# (see balanced()), that no timed POST repeats one.
INVITATIONS = int(os.environ.get("SURVEY_INVITATIONS", "90000"))
SPARE_SLICES = 3
# A round in which one gunicorn worker did less than this share of the work is run again.
MIN_WORKER_SHARE = 0.2
ANSWERS = {
    "stop_reason": "price",
    "win_back_text": "A loyalty discount would bring me back.",
    "would_return": "maybe",
    "contact_via": "email",
}

BARE_APP = textwrap.dedent(
    '''\
    """A bare Flask app: GET returns the recorded bytes of the survey form; POST reads the form
    and answers the same 303 the survey does."""

    from pathlib import Path

    from flask import Flask, Response, redirect, request

    BODY = (Path(__file__).parent / "form.html").read_bytes()

    app = Flask(__name__)


    @app.get("/s/<token>")
    def form(token):
        """The recorded form, as is."""
        return Response(BODY, content_type="text/html; charset=utf-8")


    @app.post("/s/<token>")
    def submit(token):
        """Read the answers, send the browser back to the link."""
        request.form.get("stop_reason")
        return redirect(f"/s/{token}", code=303)
    '''
)

# Each wrk thread walks its own interleaved share of the lines of links.txt: "<link> <csrf token>",
# the token being the one the link's form carries.
POST_SCRIPT = textwrap.dedent(
    """\
    local counter = 0
    function setup(thread)
      counter = counter + 1
      thread:set("id", counter)
    end
    function init(args)
      links = {}
      tokens = {}
      for line in io.lines(args[1]) do
        local link, token = line:match("^(%S+) (%S+)$")
        links[#links + 1] = link
        tokens[#tokens + 1] = token
      end
      threads = tonumber(args[2])
      sent = 0
      answers = args[3]
      wrk.method = "POST"
      wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
      if args[4] ~= "" then wrk.headers["Cookie"] = args[4] end
    end
    function request()
      local index = (sent * threads + id - 1) % #links + 1
      sent = sent + 1
      return wrk.format(nil, "/s/" .. links[index], nil, answers .. "&csrf_token=" .. tokens[index])
    end
    """
)

TOKENS_SCRIPT = textwrap.dedent(
    """\
    import sys

    import sqlalchemy as sa

    from app import create_app
    from app.extensions import db
    from app.models import Invitation, Response
    from app.tokens import make_form_token, make_survey_token

    app = create_app()
    with app.app_context():
        rows = db.session.execute(
            sa.select(Invitation.reference, Invitation.nonce)
            .outerjoin(Response, Response.invitation_id == Invitation.id)
            .where(Response.id.is_(None), Invitation.revoked.is_(False))
            .order_by(Invitation.id)
        ).all()
        with open(sys.argv[1], "w") as handle:
            for reference, nonce in rows:
                link = make_survey_token(reference, nonce)
                # The CSRF token the link's form carries (bound to the link: app/survey/forms.py).
                handle.write(f"{link} {make_form_token(link)}\\n")
    """
)

COUNT_SCRIPT = textwrap.dedent(
    """\
    import sqlalchemy as sa

    from app import create_app
    from app.extensions import db
    from app.models import Response

    app = create_app()
    with app.app_context():
        print(db.session.scalar(sa.select(sa.func.count(Response.id))))
    """
)


@contextlib.contextmanager
def bench_database(env: dict[str, str]):
    """With BENCH_DATABASE_URL, a fresh PostgreSQL database for this run (dropped after it);
    otherwise the instance folder's SQLite file. Yields a label for the output."""
    server = os.environ.get("BENCH_DATABASE_URL")
    if not server:
        yield "SQLite"
        return
    import psycopg

    name = f"winback_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    parts = urllib.parse.urlsplit(server)
    env["DATABASE_URL"] = urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))
    try:
        yield "PostgreSQL"
    finally:
        with psycopg.connect(server, autocommit=True) as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def flask(env: dict[str, str], *args: str) -> str:
    """Run one `flask --app wsgi` command; its output, or an error naming it."""
    command = [sys.executable, "-m", "flask", "--app", "wsgi", *args]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"flask {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def python(env: dict[str, str], script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", script, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0:
        raise RuntimeError(f"script failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def invite_customers(env: dict[str, str], work: Path) -> None:
    """INVITATIONS lapsed customers, imported, and one campaign inviting them all."""
    csv_file = work / "customers.csv"
    with csv_file.open("w") as handle:
        handle.write("email,first_name,last_purchase_at,orders_count,total_spent\n")
        for number in range(INVITATIONS):
            handle.write(f"bench{number}@example.com,Bench{number},2023-01-15,3,120.00\n")
    flask(env, "customers", "import", str(csv_file))
    flask(env, "campaigns", "create", "--name", "Survey benchmark", "--lapsed-days", "180")


def get(port: int, path: str, cookie: str = "") -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def post(port: int, path: str, body: str, cookie: str) -> int:
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if cookie:
            headers["Cookie"] = cookie
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def wait_until_up(proc: subprocess.Popen[bytes], port: int, path: str, log: Path) -> None:
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn on port {port} exited early:\n{log.read_text()}")
        try:
            status, _, _ = get(port, path)
        except OSError:
            time.sleep(0.1)
            continue
        if status == 200:
            return
        raise RuntimeError(f"GET {path} on port {port} answered {status}:\n{log.read_text()}")
    raise RuntimeError(f"gunicorn on port {port} did not answer within 30 s")


def wrk(
    url: str, seconds: int, script: Path | None = None, script_args: list[str] | None = None
) -> RoundResult:
    """One wrk round; requests/s, p50/p99 and errors (anything but 2xx/3xx counts as one)."""
    command = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency"]
    if script is not None:
        command += ["-s", str(script)]
    command.append(url)
    if script_args:
        command += ["--", *script_args]
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if rps is None or total is None:
        raise RuntimeError(f"could not read wrk output:\n{out}")
    latency = {
        pct: to_ms(value, unit)
        for pct, value, unit in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\b", out, re.M)
    }
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses:\s+(\d+)", out))
    socket_errors = re.search(r"Socket errors:(.*)", out)
    if socket_errors:
        errors += sum(int(n) for n in re.findall(r"\d+", socket_errors.group(1)))
    result = RoundResult(float(rps.group(1)), latency.get("50"), latency.get("99"), errors)
    result.total = int(total.group(1))  # type: ignore[attr-defined]
    return result


def worker_seconds(proc: subprocess.Popen[bytes]) -> list[float]:
    """CPU seconds used so far by each worker of a gunicorn master."""
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    ticks = os.sysconf("SC_CLK_TCK")
    seconds = []
    for child in sorted(children):
        fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
        seconds.append((int(fields[11]) + int(fields[12])) / ticks)
    return seconds


def balanced(proc: subprocess.Popen[bytes], run, *args) -> tuple[RoundResult, list[float]]:
    """Run one round; its result and each worker's share of the CPU the round took.

    gunicorn's workers take connections from one listening socket, and now and then one of the
    two takes all sixteen of wrk's: the round then measures one process, at about half the rate
    (seen for the app and the baseline alike, 0.00 CPU seconds in the idle worker). Such a round
    says nothing about the code, so the caller runs it again."""
    before = worker_seconds(proc)
    result = run(*args)
    used = [after - earlier for after, earlier in zip(worker_seconds(proc), before, strict=True)]
    total = sum(used) or 1.0
    return result, [share / total for share in used]


def line(label: str, result: RoundResult) -> str:
    figures = f"p50 {ms(result.p50_ms)}  p99 {ms(result.p99_ms)}"
    return f"{label:<16} {result.requests_per_second:8.1f} req/s  {figures}"


def main() -> int:
    """Set up, serve both, load both in alternating rounds, print the figures."""
    if shutil.which("wrk") is None:
        print("wrk is needed (its Lua scripts post a different link each time): apt-get install wrk")
        return 1
    work = new_work_dir("survey")
    env = project_env(work / "instance")
    print(f"machine: {machine()}")
    print(f"generator: wrk -t2 -c{CONNECTIONS} -d{SECONDS}s --latency (POST: Lua, one link per request)")
    print(f"servers: gunicorn -k gthread --workers {WORKERS} --threads {THREADS}, {ROUNDS} rounds, A then B")
    procs: list[subprocess.Popen[bytes]] = []
    ok = False
    database = contextlib.ExitStack()
    try:
        print(f"database: {database.enter_context(bench_database(env))}")
        prepare_database(env)
        invite_customers(env, work)
        links_file = work / "all-links.txt"
        python(env, TOKENS_SCRIPT, str(links_file))
        pairs = [line.split(" ") for line in links_file.read_text().splitlines()]
        get_link, links = pairs[0][0], [f"{link} {token}" for link, token in pairs[1:]]
        print(f"invitations without an answer: {len(links) + 1}")

        app_port, bare_port = free_port(), free_port()
        while bare_port == app_port:
            bare_port = free_port()
        path = f"/s/{get_link}"
        app_log = work / "gunicorn-app.log"
        procs.append(start_gunicorn("wsgi:app", ROOT, env, app_port, app_log))
        wait_until_up(procs[-1], app_port, path, app_log)
        status, headers, body = get(app_port, path)
        # Whatever cookie the form sets goes back with every POST, as a browser would send it.
        cookie = http.cookies.SimpleCookie(headers.get("Set-Cookie", ""))
        session_cookie = "; ".join(f"{key}={morsel.value}" for key, morsel in cookie.items())
        if status != 200 or b'name="csrf_token"' not in body:
            raise RuntimeError(f"the survey form did not load (status {status})")
        answers = urllib.parse.urlencode(ANSWERS)
        # The form as a customer who reloads it sees it, recorded for the baseline.
        body = get(app_port, path, session_cookie)[2]
        (work / "form.html").write_bytes(body)
        (work / "bare_app.py").write_text(BARE_APP)
        link, token = links[0].split(" ")
        if post(app_port, f"/s/{link}", f"{answers}&csrf_token={token}", session_cookie) != 303:
            raise RuntimeError("a survey POST did not answer 303")
        links = links[1:]

        bare_log = work / "gunicorn-bare.log"
        bare_env = {k: v for k, v in env.items() if not k.startswith("WINBACK_")}
        procs.append(start_gunicorn("bare_app:app", work, bare_env, bare_port, bare_log))
        wait_until_up(procs[-1], bare_port, path, bare_log)
        if get(bare_port, path)[2] != body:
            raise RuntimeError("the baseline does not return the same bytes as the app")
        print(f"form: {len(body)} bytes")

        script = work / "post.lua"
        script.write_text(POST_SCRIPT)
        # A warm-up slice, one per round and spares for rounds run again: no link is answered twice.
        slices = ROUNDS + 1 + SPARE_SLICES
        size = len(links) // slices
        slice_files = []
        for number in range(slices):
            slice_file = work / f"links-{number}.txt"
            slice_file.write_text("\n".join(links[number * size : (number + 1) * size]) + "\n")
            slice_files.append(slice_file)
        unused_slices = iter(slice_files[1:])
        slice_file = slice_files[0]

        def post_round(port: int, seconds: int, slice_file: Path) -> RoundResult:
            return wrk(
                f"http://{HOST}:{port}/s/x",
                seconds,
                script,
                [str(slice_file), "2", answers, session_cookie],
            )

        for port in (app_port, bare_port):
            wrk(f"http://{HOST}:{port}{path}", WARMUP_SECONDS)
            post_round(port, WARMUP_SECONDS, slice_files[0])
        servers = {"app": (app_port, procs[0]), "bare": (bare_port, procs[1])}
        rounds: dict[str, list[RoundResult]] = {
            name: [] for name in ("app GET", "bare GET", "app POST", "bare POST")
        }
        posted = 0
        rerun = 0
        for number in range(1, ROUNDS + 1):
            for name in rounds:
                server, method = name.split()
                port, proc = servers[server]
                for attempt in range(3):
                    if method == "GET":
                        result, shares = balanced(proc, wrk, f"http://{HOST}:{port}{path}", SECONDS)
                    else:
                        # The app's answers each need a link not answered before; the baseline
                        # stores nothing, so it walks the slice the app last had.
                        if server == "app":
                            slice_file = next(unused_slices, None)
                            if slice_file is None:
                                raise RuntimeError("no links left: raise SURVEY_INVITATIONS")
                        result, shares = balanced(proc, post_round, port, SECONDS, slice_file)
                        if server == "app":
                            posted += result.total  # type: ignore[attr-defined]
                            if result.total > size:  # type: ignore[attr-defined]
                                print(f"  note: more POSTs than the {size} links of a slice")
                    if min(shares) >= MIN_WORKER_SHARE or attempt == 2:
                        break
                    rerun += 1
                    print(f"  {name}: one worker took {max(shares):.0%} of the work; run again")
                rounds[name].append(result)
            shown = (f"{name} {results[-1].requests_per_second:7.1f}" for name, results in rounds.items())
            print(f"round {number}: " + "   ".join(shown))
        if rerun:
            print(f"rounds run again because one worker had all the connections: {rerun}")

        medians = {name: median_of(results) for name, results in rounds.items()}
        for name, result in medians.items():
            print(line(name, result))
        get_ratio = medians["app GET"].requests_per_second / medians["bare GET"].requests_per_second
        post_ratio = medians["app POST"].requests_per_second / medians["bare POST"].requests_per_second
        print(f"ratio GET app/baseline: {get_ratio:.2f} (target 0.5)")
        print(f"ratio POST app/baseline: {post_ratio:.2f} (target 0.3)")
        stored = int(python(env, COUNT_SCRIPT).strip())
        print(f"responses stored: {stored} (demo answers, the check POST, warm-up and {posted} timed POSTs)")
        errors = {name: result.errors for name, result in medians.items() if result.errors}
        if errors:
            raise RuntimeError(f"errors during the load: {errors}")
        print(
            f"summary: survey GET {medians['app GET'].requests_per_second:.0f} req/s "
            f"({get_ratio:.2f}x bare), "
            f"POST {medians['app POST'].requests_per_second:.0f} req/s ({post_ratio:.2f}x bare), "
            f"median of {ROUNDS} x {SECONDS} s rounds"
        )
        ok = True
    finally:
        for proc in procs:
            stop(proc)
        database.close()
        finish_work_dir(work, ok)
    return 0


if __name__ == "__main__":
    sys.exit(main())
