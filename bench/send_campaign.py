"""Benchmark: sending a 10,000-invitation campaign with `send_campaign`, against a minimal smtplib
loop sending pre-rendered messages of the same size over one kept-open connection.

Both send to the same kind of local SMTP sink: an aiosmtpd server in a process of its own that
accepts every message and discards it. Ours runs on SQLite with the SMTP backend and every
guarantee on: each invitation claimed, checked against the suppression list just before its
message, rendered (text and HTML, signed links), sent, and its outcome committed after the 250.
The baseline only sends bytes. The ratio printed is baseline seconds / our seconds: 1.0 means as
fast as the bare loop, 0.8 the target. Two rounds, alternating; the median of each is reported.

Knobs: BENCH_INVITATIONS (10,000), BENCH_ROUNDS (2), BENCH_PROFILE=1 (profile our first send
and print where the time went; BENCH_PROFILE_SORT=tottime to sort by own time).
"""

from __future__ import annotations

import os
import smtplib
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

from common import ROOT, finish_work_dir, machine, new_work_dir

INVITATIONS = int(os.environ.get("BENCH_INVITATIONS", "10000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
PROFILE = os.environ.get("BENCH_PROFILE") == "1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_sink(port: int) -> None:
    """Inside the sink process: accept and discard every message until stdin closes."""
    from aiosmtpd.controller import Controller

    class Discard:
        async def handle_DATA(self, server, session, envelope):
            return "250 Message accepted for delivery"

    controller = Controller(Discard(), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    sys.stdin.read()
    controller.stop()


def start_sink() -> tuple[subprocess.Popen, int]:
    port = free_port()
    sink = subprocess.Popen(
        [sys.executable, __file__, "--sink", str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    if sink.stdout.readline().strip() != "ready":
        raise RuntimeError("the SMTP sink did not start")
    return sink, port


def make_customers(count: int) -> None:
    """`count` lapsed customers, inserted in one executemany."""
    import sqlalchemy as sa

    from app.extensions import db
    from app.models import Customer
    from app.services import suppressions

    now = datetime.now(UTC)
    key = suppressions.hash_keys()[0]
    rows = []
    for number in range(count):
        email = f"customer{number:05d}@example.com"
        rows.append(
            {
                "email": email,
                "email_hash": suppressions.keyed_hash(key, email),
                "first_name": "Ada",
                "last_name": f"Lovelace {number}",
                "phone": "",
                "preferred_contact": "email",
                "orders_count": 3,
                "total_spent": 12_000,
                "currency": "GBP",
                "status": "active",
                "last_purchase_at": now - timedelta(days=400),
                "created_at": now,
                "updated_at": now,
                "soft_bounce_count": 0,
            }
        )
    db.session.execute(sa.insert(Customer.__table__), rows)
    db.session.commit()


def sample_message() -> tuple[bytes, str]:
    """One invitation as our sender renders it: its bytes and its sender address."""
    import sqlalchemy as sa

    from app import emails
    from app.extensions import db
    from app.models import Campaign, Invitation

    invitation = db.session.scalars(sa.select(Invitation).limit(1)).one()
    campaign = db.session.get(Campaign, invitation.campaign_id)
    prepared = emails.compose_campaign_message(
        campaign, invitation.customer, reference=invitation.reference, nonce=invitation.nonce, offer_code=""
    )
    return prepared.data, prepared.sender


def baseline(port: int, message: bytes, sender: str) -> float:
    """The bare loop: the same bytes to INVITATIONS recipients over one connection."""
    began = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as connection:
        for number in range(INVITATIONS):
            connection.sendmail(sender, [f"customer{number:05d}@example.com"], message)
    return time.perf_counter() - began


def ours(round_number: int) -> tuple[float, str]:
    """A new campaign to every customer, sent by send_campaign; seconds and its summary line."""
    from app.models import utcnow
    from app.services import campaigns

    campaign, queued = campaigns.create_campaign(
        name=f"Bench {round_number}", lapsed_days=180, cooldown_days=0, now=utcnow()
    )
    if queued != INVITATIONS:
        raise RuntimeError(f"queued {queued}, not {INVITATIONS}")
    began = time.perf_counter()
    if PROFILE and round_number == 0:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        summary = profiler.runcall(campaigns.send_campaign, campaign.id)
        seconds = time.perf_counter() - began
        stats = pstats.Stats(profiler, stream=sys.stderr)
        stats.sort_stats(os.environ.get("BENCH_PROFILE_SORT", "cumulative")).print_stats(30)
    else:
        summary = campaigns.send_campaign(campaign.id)
        seconds = time.perf_counter() - began
    if summary.sent != INVITATIONS:
        raise RuntimeError(f"sent {summary.sent}, not {INVITATIONS}: {summary.line(campaign.id)}")
    return seconds, summary.line(campaign.id)


def main() -> int:
    """Start the sink, make the data, then alternate baseline and ours."""
    from app import create_app
    from app.extensions import db
    from config import TestingConfig

    work = new_work_dir("send_campaign")
    sink, port = start_sink()
    ok = False
    try:
        print(f"machine: {machine()}")
        app = create_app(
            TestingConfig,
            SQLALCHEMY_DATABASE_URI=f"sqlite:///{work / 'bench.db'}",
            MAIL_SERVER="127.0.0.1",
            MAIL_PORT=port,
            MAIL_BACKEND="smtp",
            INSTANCE_PATH=str(work),
        )
        with app.app_context():
            db.create_all()
            make_customers(INVITATIONS)
            baselines, ours_seconds = [], []
            message = sender = None
            for round_number in range(ROUNDS):
                seconds, line = ours(round_number)
                ours_seconds.append(seconds)
                print(f"round {round_number + 1}: ours {seconds:.2f} s ({line})")
                if message is None:
                    message, sender = sample_message()
                    print(f"message: {len(message):,} bytes (text and HTML parts)")
                seconds = baseline(port, message, sender)
                baselines.append(seconds)
                print(f"round {round_number + 1}: smtplib loop {seconds:.2f} s")
        base, mine = statistics.median(baselines), statistics.median(ours_seconds)
        print(f"send_campaign: {mine:.2f} s ({INVITATIONS / mine:,.0f} messages/s)")
        print(f"smtplib loop, pre-rendered: {base:.2f} s ({INVITATIONS / base:,.0f} messages/s)")
        print(f"ratio baseline/ours {base / mine:.2f} (target 0.80)")
        ok = True
    finally:
        sink.stdin.close()
        sink.wait(timeout=30)
        finish_work_dir(work, ok)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    if len(sys.argv) == 3 and sys.argv[1] == "--sink":
        run_sink(int(sys.argv[2]))
        sys.exit(0)
    sys.exit(main())
