"""survey.answer: the survey POST's one service call (one read, then one short write)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from app.exceptions import ExpiredLink, InvalidLink
from app.extensions import db
from app.models import (
    ContactPreference,
    Invitation,
    Outcome,
    Response,
    StopReason,
    SuppressionReason,
    WouldReturn,
    utcnow,
)
from app.services import campaigns, settings, suppressions, survey
from app.tokens import make_survey_token
from tests.factories import make_customer


def make_answers(**overrides) -> survey.Answers:
    values = {
        "stop_reason": StopReason.PRICE,
        "better_elsewhere": "",
        "win_back_text": "Free delivery would bring me back.",
        "would_return": WouldReturn.MAYBE,
        "contact_via": ContactPreference.EMAIL,
        "phone": "",
        "may_quote": True,
    }
    values.update(overrides)
    return survey.Answers(**values)


@pytest.fixture
def invitation(app):
    make_customer("ada@example.com")
    campaign, _ = campaigns.create_campaign(name="Survey", lapsed_days=180, now=utcnow())
    return db.session.scalar(sa.select(Invitation).where(Invitation.campaign_id == campaign.id))


def token_of(invitation: Invitation) -> str:
    return make_survey_token(invitation.reference, invitation.nonce)


def responses() -> list[Response]:
    db.session.rollback()
    return list(db.session.scalars(sa.select(Response)))


def test_an_answer_is_stored_once_with_its_suggestion_and_the_invitation_marked(invitation):
    settings.save_unfeasible_list("free delivery", now=utcnow())
    now = utcnow()
    survey.answer(token_of(invitation), make_answers(), now=now)
    survey.answer(token_of(invitation), make_answers(win_back_text="Something else"), now=now)
    (stored,) = responses()
    assert stored.invitation_id == invitation.id
    assert stored.win_back_text == "Free delivery would bring me back."
    assert stored.may_quote is True
    assert stored.follow_up_text == ""
    assert stored.suggested_outcome == Outcome.UNFEASIBLE
    assert "free delivery" in stored.suggested_reason
    assert db.session.get(Invitation, invitation.id).answered_at is not None


def test_an_answer_from_the_link_ends_the_invitations_reminders(invitation):
    invitation.next_reminder_at = utcnow() + timedelta(days=4)
    db.session.commit()
    survey.answer(token_of(invitation), make_answers(), now=utcnow())
    db.session.rollback()
    assert db.session.get(Invitation, invitation.id).next_reminder_at is None


def test_an_edit_replaces_untriaged_answers(invitation):
    survey.answer(token_of(invitation), make_answers(), now=utcnow())
    db.session.commit()  # a new request: no read snapshot from before the answer
    survey.answer(token_of(invitation), make_answers(win_back_text="Changed"), now=utcnow(), edit=True)
    (stored,) = responses()
    assert stored.win_back_text == "Changed"
    assert stored.suggested_outcome == Outcome.ACTIONABLE


def test_no_never_suppresses_the_address(invitation):
    survey.answer(token_of(invitation), make_answers(would_return=WouldReturn.NEVER), now=utcnow())
    suppression = suppressions.suppression_for("ada@example.com")
    assert suppression is not None
    assert suppression.reason == SuppressionReason.NEVER
    assert responses()[0].suggested_outcome == Outcome.NEVER


def test_a_revoked_or_tampered_link_stores_nothing(invitation):
    token = token_of(invitation)
    with pytest.raises(InvalidLink):
        survey.answer(token[:-2] + ("AA" if not token.endswith("AA") else "BB"), make_answers(), now=utcnow())
    invitation.revoked = True
    db.session.commit()
    with pytest.raises(InvalidLink):
        survey.answer(token, make_answers(), now=utcnow())
    assert responses() == []


def test_an_expired_link_is_refused(app, invitation):
    app.config["INVITATION_LINK_DAYS"] = -1
    with pytest.raises(ExpiredLink):
        survey.answer(token_of(invitation), make_answers(), now=utcnow())
    assert responses() == []
