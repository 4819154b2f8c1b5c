"""Reminders: the same email and link again to those who have not answered, on the campaign's
reminder days, stopping on answer, unsubscribe, bounce, suppression or a new purchase."""

from __future__ import annotations

import re
import threading
from collections import Counter
from datetime import timedelta

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import (
    ContactPreference,
    Invitation,
    InvitationStatus,
    StopReason,
    SuppressionReason,
    WouldReturn,
    utcnow,
)
from app.services import bounces, campaigns, suppressions, survey, unsubscribe
from app.services.bounces import BounceKind
from app.tokens import make_unsubscribe_token, read_survey_token
from tests.factories import make_customer


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self):
        return self.now

    def at(self, **delta):
        """A clock that stands this long after this one's time."""
        later = Clock()
        later.now = self.now + timedelta(**delta)
        return later


def row(campaign_id: int, email: str) -> Invitation:
    db.session.rollback()  # end the read snapshot: see what the app wrote since
    return db.session.scalar(
        sa.select(Invitation)
        .where(Invitation.campaign_id == campaign_id)
        .join(Invitation.customer)
        .where(sa.text("customers.email = :email").bindparams(email=email))
    )


def sent_campaign(clock: Clock, *emails: str, reminder_days=(4, 10)) -> int:
    """A campaign to these customers, sent at the clock's time; returns its id."""
    for email in emails:
        make_customer(email)
    campaign, _ = campaigns.create_campaign(
        name="Reminded", lapsed_days=180, now=clock.now, reminder_days=list(reminder_days)
    )
    assert campaigns.send_campaign(campaign.id, clock=clock).sent == len(emails)
    return campaign.id


def addresses(smtp) -> list[str]:
    return [str(message["To"].addresses[0].addr_spec) for message in smtp.messages]


def survey_link(message) -> tuple[str, str]:
    """The invitation a message's survey link opens: its (reference, nonce). The token itself
    carries the second it was signed, so two sends of one link differ in it."""
    token = re.search(r"/s/(\S+)", message.get_body(preferencelist=("plain",)).get_content()).group(1)
    return read_survey_token(token)


def test_the_first_send_plans_the_first_reminder(app, smtp):
    clock = Clock()
    campaign_id = sent_campaign(clock, "ada@example.com")
    invitation = row(campaign_id, "ada@example.com")
    assert invitation.last_sent_at == invitation.sent_at == clock.now
    assert invitation.next_reminder_at == clock.now + timedelta(days=4)
    assert invitation.reminders_sent == 0


def test_reminders_go_on_their_days_with_the_same_link_and_at_most_as_many_as_planned(app, smtp):
    clock = Clock()
    campaign_id = sent_campaign(clock, "ada@example.com")
    (first,) = smtp.messages
    smtp.clear()

    assert campaigns.send_due_reminders(clock=clock.at(days=4, seconds=-1)).sent == 0  # not yet due
    assert smtp.messages == []

    summary = campaigns.tick(clock=clock.at(days=4))
    assert summary.reminders.sent == 1
    assert summary.line() == "0 stale claims requeued, 1 reminders sent, 0 retries due (0 sent)"
    (reminder,) = smtp.messages
    assert reminder["Subject"] == "Reminder: " + first["Subject"]
    assert survey_link(reminder) == survey_link(first)
    assert reminder["List-Unsubscribe"] == first["List-Unsubscribe"]
    assert reminder["Message-ID"] != first["Message-ID"]
    invitation = row(campaign_id, "ada@example.com")
    assert invitation.reminders_sent == 1
    assert invitation.last_sent_at == clock.now + timedelta(days=4)
    assert invitation.next_reminder_at == clock.now + timedelta(days=10)
    assert invitation.status == InvitationStatus.SENT

    assert campaigns.send_due_reminders(clock=clock.at(days=5)).sent == 0  # sent already
    assert campaigns.send_due_reminders(clock=clock.at(days=10)).sent == 1
    invitation = row(campaign_id, "ada@example.com")
    assert (invitation.reminders_sent, invitation.next_reminder_at) == (2, None)
    assert campaigns.send_due_reminders(clock=clock.at(days=30)).sent == 0  # two planned, two sent
    assert len(smtp.messages) == 2


def test_a_campaign_without_reminder_days_sends_none(app, smtp):
    clock = Clock()
    campaign_id = sent_campaign(clock, "ada@example.com", reminder_days=())
    assert row(campaign_id, "ada@example.com").next_reminder_at is None
    assert campaigns.send_due_reminders(clock=clock.at(days=30)).sent == 0


def test_reminder_days_default_to_the_setting(app):
    app.config["REMINDER_DAYS"] = [3]
    make_customer("ada@example.com")
    campaign, _ = campaigns.create_campaign(name="Default", lapsed_days=180, now=utcnow())
    assert campaign.reminder_days == [3]


@pytest.mark.parametrize("days", ["10,4", "0", "4,4", "soon"])
def test_bad_reminder_days_are_refused_with_a_message(app, days):
    from app.exceptions import InvalidInput

    with pytest.raises(InvalidInput, match="reminder days"):
        campaigns.create_campaign(name="Bad", lapsed_days=180, now=utcnow(), reminder_days=days)


def answer(invitation_id: int) -> None:
    answers = survey.Answers(
        stop_reason=StopReason.PRICE,
        better_elsewhere="",
        win_back_text="Lower prices",
        would_return=WouldReturn.MAYBE,
        contact_via=ContactPreference.EMAIL,
        phone="",
        may_quote=False,
    )
    survey.submit_response(invitation_id, answers, now=utcnow())


def stop_by_answer(campaign_id: int, email: str, _clock: Clock) -> None:
    answer(row(campaign_id, email).id)


def stop_by_unsubscribe(campaign_id: int, email: str, _clock: Clock) -> None:
    unsubscribe.unsubscribe(make_unsubscribe_token(row(campaign_id, email).reference), now=utcnow())


def stop_by_bounce(campaign_id: int, email: str, _clock: Clock) -> None:
    bounces.record_bounce(email, BounceKind.HARD, "550 5.1.1 gone", now=utcnow())


def stop_by_suppression(_campaign_id: int, email: str, _clock: Clock) -> None:
    suppressions.suppress(email, SuppressionReason.MANUAL, utcnow())
    db.session.commit()


def stop_by_purchase(campaign_id: int, email: str, clock: Clock) -> None:
    customer = row(campaign_id, email).customer
    customer.last_purchase_at = clock.now + timedelta(days=1)
    db.session.commit()


@pytest.mark.parametrize(
    "stop",
    [stop_by_answer, stop_by_unsubscribe, stop_by_bounce, stop_by_suppression, stop_by_purchase],
    ids=["answer", "unsubscribe", "bounce", "suppression", "purchase"],
)
def test_reminders_stop_for_good(app, smtp, stop):
    clock = Clock()
    campaign_id = sent_campaign(clock, "ada@example.com", "grace@example.com")
    smtp.clear()

    stop(campaign_id, "grace@example.com", clock)

    assert campaigns.send_due_reminders(clock=clock.at(days=4)).sent == 1
    assert addresses(smtp) == ["ada@example.com"]
    assert row(campaign_id, "grace@example.com").next_reminder_at is None  # stopped, not postponed
    assert campaigns.send_due_reminders(clock=clock.at(days=10)).sent == 1
    assert addresses(smtp) == ["ada@example.com", "ada@example.com"]


def test_an_answer_recorded_without_clearing_the_plan_still_stops_reminders(app, smtp):
    clock = Clock()
    campaign_id = sent_campaign(clock, "ada@example.com")
    invitation = row(campaign_id, "ada@example.com")
    invitation.answered_at = clock.now + timedelta(days=1)
    db.session.commit()
    smtp.clear()

    assert campaigns.send_due_reminders(clock=clock.at(days=4)).sent == 0
    assert row(campaign_id, "ada@example.com").next_reminder_at is None
    assert smtp.messages == []


def test_suppression_is_checked_again_right_before_each_reminder(app, smtp):
    clock = Clock()
    campaign_id = sent_campaign(clock, "ada@example.com", "grace@example.com")
    smtp.clear()

    def unsubscribe_grace_after_the_first(_done: int) -> None:
        suppressions.suppress("grace@example.com", SuppressionReason.UNSUBSCRIBED, utcnow())
        db.session.commit()

    summary = campaigns.send_due_reminders(clock=clock.at(days=4), progress=unsubscribe_grace_after_the_first)

    assert (summary.sent, summary.suppressed) == (1, 1)
    assert addresses(smtp) == ["ada@example.com"]
    grace = row(campaign_id, "grace@example.com")
    assert (grace.status, grace.next_reminder_at, grace.reminders_sent) == (InvitationStatus.SENT, None, 0)


def test_a_paused_campaign_keeps_its_reminders_until_it_resumes(app, smtp):
    clock = Clock()
    campaign_id = sent_campaign(clock, "ada@example.com")
    smtp.clear()
    campaigns.pause_campaign(campaign_id, reason="Paused by staff.", actor_id=None, now=utcnow())

    assert campaigns.send_due_reminders(clock=clock.at(days=4)).sent == 0
    assert row(campaign_id, "ada@example.com").next_reminder_at == clock.now + timedelta(days=4)

    campaigns.resume_campaign(campaign_id, actor_id=None, now=utcnow(), enqueue=False)
    assert campaigns.send_due_reminders(clock=clock.at(days=4)).sent == 1


def test_a_reminder_refused_for_now_is_retried_and_a_permanent_refusal_ends_the_reminders(app, smtp):
    clock = Clock()
    campaign_id = sent_campaign(clock, "ada@example.com", "grace@example.com")
    smtp.clear()
    smtp.refuse.extend([("ada@", "451 4.3.0 Try again later"), ("grace@", "550 5.7.1 Policy")])
    due = clock.at(days=4)

    summary = campaigns.send_due_reminders(clock=due)

    assert (summary.sent, summary.deferred, summary.failed) == (0, 1, 1)
    ada, grace = row(campaign_id, "ada@example.com"), row(campaign_id, "grace@example.com")
    assert ada.next_reminder_at == due.now + timedelta(seconds=60)
    assert ada.last_smtp_reply == "451 4.3.0 Try again later"
    # The first email got through: the invitation stays sent, only the reminders end.
    assert (grace.status, grace.next_reminder_at) == (InvitationStatus.SENT, None)
    assert grace.last_smtp_reply == "550 5.7.1 Policy"

    smtp.refuse.clear()
    assert campaigns.send_due_reminders(clock=due.at(seconds=60)).sent == 1
    ada = row(campaign_id, "ada@example.com")
    assert (ada.reminders_sent, ada.next_reminder_at) == (1, clock.now + timedelta(days=10))


def test_a_reminder_claimed_by_a_sender_that_died_is_due_again_after_the_lease(app, smtp):
    clock = Clock()
    campaign_id = sent_campaign(clock, "ada@example.com")
    smtp.clear()
    due = clock.at(days=4)
    assert [job.invitation.id for job in campaigns._claim_reminders(due.now)] == [
        row(campaign_id, "ada@example.com").id
    ]  # ...and the sender dies here

    assert campaigns.send_due_reminders(clock=due.at(seconds=1)).sent == 0  # still claimed
    lease = app.config["SEND_LEASE_SECONDS"]
    assert campaigns.send_due_reminders(clock=due.at(seconds=lease)).sent == 1
    assert addresses(smtp) == ["ada@example.com"]


def test_two_tickers_send_each_reminder_once(app, smtp, database):
    if database["name"] != "postgresql":
        pytest.skip("concurrent senders are a PostgreSQL deployment (RELIABILITY 32)")
    clock = Clock()
    count = 200
    emails = [f"c{number:03d}@example.com" for number in range(count)]
    campaign_id = sent_campaign(clock, *emails, reminder_days=(1,))
    smtp.clear()
    due = clock.at(days=1)
    errors: list[BaseException] = []
    sent_by: list[int] = []
    barrier = threading.Barrier(2)

    def ticker() -> None:
        with app.app_context():
            try:
                barrier.wait()
                sent_by.append(campaigns.tick(clock=due).reminders.sent)
            except BaseException as exc:  # reported below, with the test's own assertion
                errors.append(exc)

    threads = [threading.Thread(target=ticker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    assert min(sent_by) > 0  # both tickers sent
    assert sum(sent_by) == count
    arrived = Counter(addresses(smtp))
    assert set(arrived) == set(emails)
    assert set(arrived.values()) == {1}
    db.session.rollback()
    reminded = db.session.execute(
        sa.select(Invitation.reminders_sent, sa.func.count())
        .where(Invitation.campaign_id == campaign_id)
        .group_by(Invitation.reminders_sent)
    ).all()
    assert reminded == [(1, count)]


def test_the_command_line_plans_reminders_and_the_tick_sends_them(runner, smtp):
    make_customer("ada@example.com")
    created = runner.invoke(args=["campaigns", "create", "--name", "CLI", "--reminder-days", "2"])
    assert created.exit_code == 0, created.output
    campaign_id = int(created.output.split()[0])
    assert runner.invoke(args=["campaigns", "send", str(campaign_id)]).exit_code == 0
    invitation = row(campaign_id, "ada@example.com")
    assert invitation.next_reminder_at == invitation.sent_at + timedelta(days=2)
    invitation.next_reminder_at = utcnow() - timedelta(seconds=1)  # two days went by
    db.session.commit()

    ticked = runner.invoke(args=["campaigns", "tick"])

    assert ticked.exit_code == 0, ticked.output
    assert ticked.output == "0 stale claims requeued, 1 reminders sent, 0 retries due (0 sent)\n"
    assert [message["Subject"].strip().startswith("Reminder: ") for message in smtp.messages] == [False, True]
    assert row(campaign_id, "ada@example.com").next_reminder_at is None


def test_the_command_line_refuses_bad_reminder_days(runner):
    result = runner.invoke(args=["campaigns", "create", "--name", "CLI", "--reminder-days", "10,4"])
    assert result.exit_code == 1
    assert "reminder days: each from 1 to 365 days, increasing" in result.output


def test_the_tick_can_hand_reminders_to_a_background_worker(worker_app, smtp):
    import time

    with worker_app.app_context():
        clock = Clock()
        campaign_id = sent_campaign(clock, "ada@example.com")
        smtp.clear()
        invitation = row(campaign_id, "ada@example.com")
        invitation.next_reminder_at = utcnow() - timedelta(seconds=1)  # four days went by
        db.session.commit()

        summary = campaigns.tick(enqueue=True)

        assert summary.line().startswith("0 stale claims requeued, due reminders handed to the worker")

        def reminded() -> int:
            count = row(campaign_id, "ada@example.com").reminders_sent
            db.session.rollback()  # hold no lock while the worker writes
            return count

        deadline = time.monotonic() + 30
        while reminded() < 1:
            assert time.monotonic() < deadline, "the worker sent no reminder"
            time.sleep(0.1)
        (reminder,) = smtp.messages
        assert reminder["Subject"].strip().startswith("Reminder: ")
