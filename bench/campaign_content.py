"""Benchmark: a campaign's email content and its unique offer codes.

Two measurements, each beside its baseline in the same run:

* **Rendering**: the subject, text part and HTML part of ``BENCH_MESSAGES`` emails (default
  10,000), each for a different customer, through ``campaign_content`` (sandboxed templates,
  Markdown converted once per shape of the email, every value escaped). Baseline: the floor for
  the same output, ``str.format`` of the same words into a text and an HTML string prepared in
  advance, with the values HTML-escaped. Also shown: converting the Markdown for every message
  (what the shared skeleton saves), and a whole ``emails.compose_invitation`` (tokens, URLs,
  layout, headers) for scale.
* **Unique codes**: ``create_campaign`` for ``BENCH_CODES_CUSTOMERS`` lapsed customers (default
  100,000) with as many unique codes, against the same campaign with no offer (the audience
  alone), on SQLite, and on PostgreSQL when ``BENCH_DATABASE_URL`` is set (a database the script
  may fill and empty).
"""

from __future__ import annotations

import html
import os
import statistics
import sys
import time
from datetime import timedelta

from common import ROOT, finish_work_dir, machine, new_work_dir

sys.path.insert(0, str(ROOT))

import sqlalchemy as sa

from app import create_app, emails
from app.extensions import db
from app.markup import render_markdown
from app.models import Campaign, Customer, Invitation, utcnow
from app.services import campaign_content, campaigns
from app.services.campaign_content import Values
from config import TestingConfig, database_url

MESSAGES = int(os.environ.get("BENCH_MESSAGES", "10000"))
CODES_CUSTOMERS = int(os.environ.get("BENCH_CODES_CUSTOMERS", "100000"))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
POSTGRESQL_URL = os.environ.get("BENCH_DATABASE_URL")
FIRST = ["Amelia", "Oliver", "Isla", "George", "Ava", "Noah", "Mia", "Leo", "Freya", "Arthur"]
SUBJECT = "{{ first_name }}, we miss you at {{ business_name }}"
LINK = "https://winback.example.com/s/" + "x" * 110


def values(number: int) -> Values:
    return Values(f"{FIRST[number % 10]}{number}", "Test Shop", f"{LINK}{number}", f"CODE-{number:07d}")


def render_ours(count: int) -> float:
    started = time.perf_counter()
    for number in range(count):
        value = values(number)
        campaign_content.render_subject(SUBJECT, value)
        campaign_content.render_body_text("", value)
        campaign_content.render_body_html("", value)
    return time.perf_counter() - started


def render_markdown_each(count: int) -> float:
    """The same, converting the Markdown of every message instead of once per shape."""
    started = time.perf_counter()
    for number in range(count):
        value = values(number)
        campaign_content.render_subject(SUBJECT, value)
        text = campaign_content.render_body_text("", value)
        render_markdown(text, hard_breaks=True)
    return time.perf_counter() - started


def render_floor(count: int) -> float:
    """str.format into prepared text and HTML, values escaped: the floor for the same output."""
    text_template = campaign_content.render_body_text("", Values("{first}", "{business}", "{link}", "{code}"))
    html_template = str(
        campaign_content.render_body_html("", Values("{first}", "{business}", "{link}", "{code}"))
    )
    assert "{first}" in text_template
    assert "{link}" in html_template
    started = time.perf_counter()
    for number in range(count):
        value = values(number)
        f"{value.first_name}, we miss you at {value.business_name}"
        text_template.format(
            first=value.first_name, business=value.business_name, link=value.link, code=value.offer_code
        )
        html_template.format(
            first=html.escape(value.first_name),
            business=html.escape(value.business_name),
            link=html.escape(value.link),
            code=html.escape(value.offer_code),
        )
    return time.perf_counter() - started


def compose_whole(count: int) -> float:
    """Whole invitation emails, as the sender builds them, for scale."""
    customer = Customer(first_name="Ada", last_name="Lovelace", email="ada@example.com")
    campaign = Campaign(id=1, name="Bench", subject=SUBJECT, body="", lapsed_days=180)
    started = time.perf_counter()
    for number in range(count):
        customer.first_name = f"Ada{number}"
        invitation = Invitation(reference=f"{number:032x}", nonce="n" * 32, offer_code=None)
        emails.compose_invitation(invitation, customer, campaign)
    return time.perf_counter() - started


def fill_customers(count: int) -> None:
    now = utcnow()
    last = now - timedelta(days=400)
    table = Customer.__table__
    for start in range(0, count, 50_000):
        db.session.execute(
            sa.insert(table),
            [
                {
                    "email": f"c{number}@example.com",
                    "email_hash": f"{number:064x}",
                    "first_name": FIRST[number % 10],
                    "last_name": "Smith",
                    "phone": "",
                    "last_purchase_at": last,
                    "orders_count": 1,
                    "total_spent": 1_000 + number,
                }
                for number in range(start, min(count, start + 50_000))
            ],
        )
    db.session.commit()


def time_campaigns(label: str) -> None:
    codes = [f"WB-{number:08d}" for number in range(CODES_CUSTOMERS)]
    plain, coded = [], []
    for _ in range(RUNS):
        started = time.perf_counter()
        _, queued = campaigns.create_campaign(name="Plain", lapsed_days=180, now=utcnow())
        plain.append(time.perf_counter() - started)
        started = time.perf_counter()
        _, coded_queued = campaigns.create_campaign(
            name="Coded", lapsed_days=180, now=utcnow(), offer_codes=codes
        )
        coded.append(time.perf_counter() - started)
        assert queued == coded_queued == CODES_CUSTOMERS, (queued, coded_queued)
        db.session.execute(sa.delete(Campaign))
        db.session.commit()
    plain_s, coded_s = statistics.median(plain), statistics.median(coded)
    print(
        f"{label}: {CODES_CUSTOMERS:,} invitations: audience alone {plain_s:.2f} s, with "
        f"{CODES_CUSTOMERS:,} unique codes {coded_s:.2f} s (codes add {coded_s - plain_s:.2f} s; "
        f"ratio {coded_s / plain_s:.2f}x; median of {RUNS})"
    )


def main() -> int:
    work = new_work_dir("campaign-content")
    instance = work / "instance"
    instance.mkdir()

    class BenchConfig(TestingConfig):
        INSTANCE_PATH = str(instance)
        SQLALCHEMY_DATABASE_URI = f"sqlite:///{work / 'bench.db'}"

    print(f"machine: {machine()}")
    ok = False
    try:
        app = create_app(BenchConfig)
        with app.app_context(), app.test_request_context():
            db.create_all()
            render_ours(100)  # compile the templates and convert the skeleton once
            ours = statistics.median(render_ours(MESSAGES) for _ in range(RUNS))
            each = statistics.median(render_markdown_each(MESSAGES) for _ in range(RUNS))
            floor = statistics.median(render_floor(MESSAGES) for _ in range(RUNS))
            whole = statistics.median(compose_whole(MESSAGES) for _ in range(RUNS))
            per = 1e6 / MESSAGES
            print(f"rendering {MESSAGES:,} emails (subject, text and HTML parts), median of {RUNS}:")
            print(f"  baseline: str.format, values escaped    {floor * per:7.1f} us/email")
            for label, seconds in (
                ("campaign_content (sandbox, skeleton)  ", ours),
                ("Markdown converted for every email    ", each),
            ):
                print(f"  {label} {seconds * per:7.1f} us/email ({seconds / floor:.1f}x)")
            print(
                f"  whole compose_invitation, for scale    {whole * per:7.1f} us/email "
                f"(content is {ours / whole:.0%} of it)"
            )
            fill_customers(CODES_CUSTOMERS)
            time_campaigns("SQLite")
        if POSTGRESQL_URL:
            pg = create_app(BenchConfig, SQLALCHEMY_DATABASE_URI=database_url(POSTGRESQL_URL))
            with pg.app_context():
                db.drop_all()
                db.create_all()
                fill_customers(CODES_CUSTOMERS)
                time_campaigns("PostgreSQL")
                db.drop_all()
        ok = True
    finally:
        finish_work_dir(work, ok)
    return 0


if __name__ == "__main__":
    sys.exit(main())
