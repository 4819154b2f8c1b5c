"""The `flask` commands: output, summaries and exit codes."""

from __future__ import annotations

import re

import sqlalchemy as sa

from app.extensions import db
from app.models import Customer, Improvement, Response, StaffRole, StaffUser
from app.services.demo import DEMO_EMAIL, DEMO_PASSWORD
from tests.conftest import log_in
from tests.factories import make_customer


def test_staff_create_reads_the_password_from_stdin(runner, client):
    result = runner.invoke(
        args=["staff", "create", "Boss@Example.com", "--role", "admin", "--password-stdin"],
        input="a long enough password\n",
    )
    assert result.exit_code == 0, result.output
    assert "Created admin boss@example.com" in result.output
    assert "a long enough password" not in result.output
    assert log_in(client, "boss@example.com", "a long enough password").status_code == 302


def test_staff_create_generates_and_prints_a_password_without_stdin(runner):
    result = runner.invoke(args=["staff", "create", "t@example.com", "--role", "triager"])
    assert result.exit_code == 0
    assert re.search(r"Password: \S{12,}", result.output)
    assert db.session.scalar(sa.select(StaffUser.role)) == StaffRole.TRIAGER


def test_staff_create_refuses_a_bad_address_or_short_password(runner):
    bad = runner.invoke(args=["staff", "create", "nobody", "--password-stdin"], input="long enough pw\n")
    short = runner.invoke(args=["staff", "create", "a@example.com", "--password-stdin"], input="short\n")
    assert bad.exit_code == 1
    assert "not a valid email address" in bad.output
    assert short.exit_code == 1
    assert "at least 10 characters" in short.output
    assert db.session.scalar(sa.select(sa.func.count(StaffUser.id))) == 0


def test_customers_import_reports_bad_rows_and_a_summary(runner, tmp_path):
    path = tmp_path / "shop.csv"
    path.write_text("email,total_spent\nada@example.com,10\nnope,10\n")
    result = runner.invoke(args=["customers", "import", str(path)])
    assert result.exit_code == 0
    assert f"{path}:3: column 'email': not a valid email address" in result.output
    assert result.output.strip().splitlines()[-1] == f"{path}: 1 imported, 0 updated, 0 unchanged, 1 skipped"


def test_customers_import_strict_exits_1_and_saves_nothing(runner, tmp_path):
    path = tmp_path / "shop.csv"
    path.write_text("email\nada@example.com\nnope\n")
    result = runner.invoke(args=["customers", "import", "--strict", str(path)])
    assert result.exit_code == 1
    assert "nothing was saved" in result.output
    assert db.session.scalar(sa.select(sa.func.count(Customer.id))) == 0


def test_customers_import_of_an_unreadable_file_exits_2(runner, tmp_path):
    missing = runner.invoke(args=["customers", "import", str(tmp_path / "missing.csv")])
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("name,phone\nAda,1\n")
    unrecognised = runner.invoke(args=["customers", "import", str(wrong)])
    assert missing.exit_code == 2
    assert "cannot be read" in missing.output
    assert unrecognised.exit_code == 2
    assert "no email column" in unrecognised.output
    assert "nothing was imported" in unrecognised.output


def test_campaigns_create_prints_the_id_first_and_list_shows_it(runner):
    make_customer("ada@example.com")
    result = runner.invoke(args=["campaigns", "create", "--name", "Autumn", "--lapsed-days", "90"])
    assert result.exit_code == 0
    first_number = int(re.search(r"\d+", result.output.splitlines()[0]).group())
    listing = runner.invoke(args=["campaigns", "list"])
    assert f"{first_number}\tdraft\tAutumn\t1 queued" in listing.output


def test_campaigns_create_takes_the_audience_options(runner):
    for email, segment, spent in [
        ("risk-big@example.com", "At risk", 90_000),
        ("risk-small@example.com", "At risk", 1_000),
        ("lost-big@example.com", "Lost", 90_000),
        ("champion@example.com", "Champions", 90_000),
    ]:
        make_customer(email, total_spent=spent).segment = segment
    db.session.commit()
    result = runner.invoke(
        args=[
            "campaigns", "create", "--name", "Big lapsed", "--segment", "at risk", "--segment", "Lost",
            "--min-spent", "£500", "--cooldown-days", "0", "--limit", "10",
        ]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "2 invitations queued" in result.output.splitlines()[0]
    assert result.output.splitlines()[1] == (
        "audience: not bought for 180 days; in At risk, Lost; spent at least 500.00; "
        "at most 10, best win-back priority first"
    )
    unknown = runner.invoke(args=["campaigns", "create", "--name", "X", "--segment", "Sleepy"])
    assert unknown.exit_code == 1
    assert "segment: no segment called 'Sleepy'" in unknown.output


def test_campaigns_create_refuses_bad_input(runner):
    result = runner.invoke(args=["campaigns", "create", "--name", "X", "--subject", "a\nb"])
    assert result.exit_code == 1
    assert "subject: must be a single line" in result.output


def test_campaigns_send_of_an_unknown_campaign_exits_1(runner):
    result = runner.invoke(args=["campaigns", "send", "999"])
    assert result.exit_code == 1
    assert "no campaign #999" in result.output


def test_demo_load_fills_an_empty_database_once(runner, app, tmp_path):
    app.config["MAIL_BACKEND"] = "outbox"
    result = runner.invoke(args=["demo", "load"])
    assert result.exit_code == 0, result.output
    assert f"Staff login: {DEMO_EMAIL} / {DEMO_PASSWORD}" in result.output
    assert db.session.scalar(sa.select(sa.func.count(Customer.id))) == 240
    assert db.session.scalar(sa.select(sa.func.count(Customer.id)).where(Customer.segment.is_(None))) == 0
    assert db.session.scalar(sa.select(sa.func.count(Response.id))) > 0
    assert db.session.scalar(sa.select(sa.func.count(Improvement.id))) > 0
    outbox = list((tmp_path / "instance" / "outbox").glob("*.eml"))
    assert outbox
    again = runner.invoke(args=["demo", "load"])
    assert "already has data" in again.output
    assert db.session.scalar(sa.select(sa.func.count(Customer.id))) == 240


def test_campaigns_tick_requeues_expired_claims(runner):
    from datetime import timedelta

    from app.models import Invitation, InvitationStatus, utcnow
    from app.services import campaigns

    make_customer("ada@example.com")
    campaign, _ = campaigns.create_campaign(name="Tick", lapsed_days=180, now=utcnow())
    invitation = db.session.scalar(sa.select(Invitation).where(Invitation.campaign_id == campaign.id))
    invitation.status = InvitationStatus.SENDING
    invitation.lease_expires_at = utcnow() - timedelta(minutes=1)
    db.session.commit()
    result = runner.invoke(args=["campaigns", "tick"])
    assert result.exit_code == 0
    assert result.output.startswith("1 stale claims requeued, 0 reminders sent, 0 retries due")
    db.session.rollback()
    assert db.session.get(Invitation, invitation.id).status == InvitationStatus.QUEUED
