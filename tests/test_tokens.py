"""Signed links: what a token carries, and every way a bad one is refused alike."""

from __future__ import annotations

import base64
import json
import string
import zlib
from datetime import datetime, timedelta
from unittest.mock import patch

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from itsdangerous import BadData
from itsdangerous.encoding import base64_decode

from app.extensions import db
from app.models import Customer, Invitation, utcnow
from app.services import campaigns, suppressions
from app.tokens import make_survey_token, make_unsubscribe_token
from tests.factories import make_customer

URLSAFE = string.ascii_letters + string.digits + "-_"


@pytest.fixture
def invitation(app) -> Invitation:
    make_customer("grace.hopper@example.com", first_name="Grace", last_name="Hopper")
    campaign, _ = campaigns.create_campaign(name="Tokens", lapsed_days=180, now=utcnow())
    return db.session.scalar(sa.select(Invitation).where(Invitation.campaign_id == campaign.id))


@pytest.fixture
def survey_token(invitation) -> str:
    return make_survey_token(invitation.reference, invitation.nonce)


@pytest.fixture
def unknown_link_page(client) -> bytes:
    """The page for a well-signed link naming no invitation: what every bad link must look like."""
    page = client.get(f"/s/{make_survey_token('no-such-reference', 'no-such-nonce')}")
    assert page.status_code == 404
    return page.data


def decoded_payload(token: str, trailing_segments: int) -> object:
    """The JSON inside a token, read the way anyone holding the link could read it."""
    payload = token.rsplit(".", trailing_segments)[0]
    compressed = payload.startswith(".")
    raw = base64.urlsafe_b64decode(payload.lstrip(".") + "=" * (-len(payload.lstrip(".")) % 4))
    return json.loads(zlib.decompress(raw) if compressed else raw)


def signed_at(moment: datetime, make_token):
    """Call a token maker as if the clock showed `moment` (itsdangerous stamps the signing time)."""
    with patch("itsdangerous.timed.time.time", return_value=moment.timestamp()):
        return make_token()


def all_rows() -> dict[str, list[dict]]:
    """Every row of every table, to show that a request changed nothing."""
    db.session.rollback()  # end the read snapshot: see what the app wrote since
    return {
        table.name: [dict(row) for row in db.session.execute(sa.select(table)).mappings()]
        for table in db.metadata.sorted_tables
    }


# --- what a token carries -----------------------------------------------------------------


def test_a_survey_token_carries_only_the_invitation_reference_and_nonce(invitation, survey_token):
    customer = db.session.get(Customer, invitation.customer_id)
    payload = decoded_payload(survey_token, trailing_segments=2)
    assert payload == [invitation.reference, invitation.nonce]
    text = json.dumps(payload).lower()
    for secret in (customer.email, customer.first_name, customer.last_name):
        assert secret.lower() not in text
    assert customer.id not in payload  # no customer id as a JSON number


def test_an_unsubscribe_token_carries_only_the_invitation_reference(invitation):
    customer = db.session.get(Customer, invitation.customer_id)
    payload = decoded_payload(make_unsubscribe_token(invitation.reference), trailing_segments=1)
    assert payload == [invitation.reference]
    text = json.dumps(payload).lower()
    for secret in (customer.email, customer.first_name, customer.last_name):
        assert secret.lower() not in text


# --- tampering ----------------------------------------------------------------------------

mutations = st.one_of(
    st.tuples(st.just("replace"), st.integers(min_value=0, max_value=10_000), st.sampled_from(URLSAFE)),
    st.tuples(st.just("drop"), st.integers(min_value=0, max_value=2)),
    st.tuples(st.just("swap"), st.permutations([0, 1, 2]).filter(lambda order: order != [0, 1, 2])),
)


def mutate(token: str, mutation: tuple) -> str:
    """The token with one character replaced, or one of its three segments dropped or moved."""
    kind, *args = mutation
    segments = token.rsplit(".", 2)  # payload (may itself start with "."), timestamp, signature
    if kind == "replace":
        position, char = args[0] % len(token), args[1]
        if token[position] == char:
            char = URLSAFE[(URLSAFE.index(char) + 1) % len(URLSAFE)]
        return token[:position] + char + token[position + 1 :]
    if kind == "drop":
        return ".".join(segment for index, segment in enumerate(segments) if index != args[0])
    return ".".join(segments[index] for index in args[0])


def same_signed_bytes(token: str, other: str) -> bool:
    """True when two spellings differ only in the unused low bits of the signature's last base64
    character: the very same signature, so not a tampered link."""
    mine, theirs = token.rsplit(".", 1), other.rsplit(".", 1)
    if len(theirs) != 2 or mine[0] != theirs[0] or mine[1] == theirs[1]:
        return False
    try:
        return base64_decode(mine[1]) == base64_decode(theirs[1])
    except BadData:  # not base64 at all: certainly not the same signature
        return False


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutation=mutations)
def test_a_tampered_survey_link_answers_like_an_unknown_one(
    client, survey_token, unknown_link_page, mutation
):
    tampered = mutate(survey_token, mutation)
    assert tampered != survey_token
    assume(not same_signed_bytes(survey_token, tampered))
    page = client.get(f"/s/{tampered}")
    assert page.status_code == 404
    assert page.data == unknown_link_page


def test_a_revoked_survey_link_answers_like_an_unknown_one(
    client, invitation, survey_token, unknown_link_page
):
    invitation.revoked = True
    db.session.commit()
    page = client.get(f"/s/{survey_token}")
    assert page.status_code == 404
    assert page.data == unknown_link_page


# --- one salt per purpose -----------------------------------------------------------------


def test_an_unsubscribe_token_does_not_open_the_survey(client, invitation, unknown_link_page):
    page = client.get(f"/s/{make_unsubscribe_token(invitation.reference)}")
    assert page.status_code == 404
    assert page.data == unknown_link_page


def test_a_survey_token_neither_shows_nor_performs_an_unsubscribe(client, invitation, survey_token):
    assert client.get(f"/u/{survey_token}").status_code == 404
    assert client.post(f"/u/{survey_token}").status_code == 404
    assert not suppressions.is_suppressed("grace.hopper@example.com")


# --- key rotation -------------------------------------------------------------------------


def rotate_key(app, new_key: str = "the-new-secret-key") -> str:
    """Move the current key to the fallbacks and set a new one, as an operator would."""
    old_key = app.config["SECRET_KEY"]
    app.config["SECRET_KEY_FALLBACKS"] = [old_key]  # a new list: the config class's stays untouched
    app.config["SECRET_KEY"] = new_key
    return old_key


def test_links_signed_with_the_old_key_still_work_after_rotation(app, client, invitation, survey_token):
    unsubscribe_token = make_unsubscribe_token(invitation.reference)
    rotate_key(app)
    assert client.get(f"/s/{survey_token}").status_code == 200
    assert client.get(f"/u/{unsubscribe_token}").status_code == 200


def test_a_link_made_after_rotation_verifies_with_the_new_key_alone(app, client, invitation):
    old_key = rotate_key(app)
    token = make_survey_token(invitation.reference, invitation.nonce)
    app.config["SECRET_KEY_FALLBACKS"] = []
    assert client.get(f"/s/{token}").status_code == 200
    app.config["SECRET_KEY"] = old_key  # it was signed with the new key, not the old one
    assert client.get(f"/s/{token}").status_code == 404


def test_a_link_signed_with_a_key_no_longer_configured_is_refused(
    app, client, survey_token, unknown_link_page
):
    rotate_key(app)
    app.config["SECRET_KEY_FALLBACKS"] = []
    page = client.get(f"/s/{survey_token}")
    assert page.status_code == 404
    assert page.data == unknown_link_page


# --- lifetime -----------------------------------------------------------------------------


def test_a_survey_link_older_than_its_lifetime_answers_like_an_unknown_one(
    app, client, invitation, unknown_link_page
):
    days = app.config["INVITATION_LINK_DAYS"]
    token = signed_at(
        utcnow() - timedelta(days=days, hours=1),
        lambda: make_survey_token(invitation.reference, invitation.nonce),
    )
    page = client.get(f"/s/{token}")
    assert page.status_code == 404
    assert page.data == unknown_link_page


def test_a_survey_link_dated_in_the_future_answers_like_an_unknown_one(client, invitation, unknown_link_page):
    token = signed_at(
        utcnow() + timedelta(hours=1), lambda: make_survey_token(invitation.reference, invitation.nonce)
    )
    page = client.get(f"/s/{token}")
    assert page.status_code == 404
    assert page.data == unknown_link_page


def test_a_survey_link_near_the_end_of_its_lifetime_still_opens(app, client, invitation):
    days = app.config["INVITATION_LINK_DAYS"]
    token = signed_at(
        utcnow() - timedelta(days=days, hours=-1),
        lambda: make_survey_token(invitation.reference, invitation.nonce),
    )
    assert client.get(f"/s/{token}").status_code == 200


def test_an_unsubscribe_link_never_expires(client, invitation):
    token = signed_at(utcnow() - timedelta(days=3650), lambda: make_unsubscribe_token(invitation.reference))
    assert client.get(f"/u/{token}").status_code == 200


# --- GET changes nothing ------------------------------------------------------------------


def test_opening_a_survey_link_records_the_first_opening_and_nothing_else(client, invitation, survey_token):
    before = all_rows()
    assert client.get(f"/s/{survey_token}").status_code == 200
    after = all_rows()

    (invitation_before,) = before.pop("invitations")
    (invitation_after,) = after.pop("invitations")
    assert invitation_before.pop("opened_at") is None
    opened_at = invitation_after.pop("opened_at")
    assert opened_at is not None
    assert invitation_after == invitation_before
    assert after == before  # no response, no suppression, no audit event, no other change
    assert after["responses"] == []
    assert after["suppressions"] == []

    assert client.get(f"/s/{survey_token}").status_code == 200
    (invitation_later,) = all_rows()["invitations"]
    assert invitation_later["opened_at"] == opened_at  # only the first opening is kept


def test_opening_an_unsubscribe_link_does_not_unsubscribe(client, invitation):
    before = all_rows()
    page = client.get(f"/u/{make_unsubscribe_token(invitation.reference)}")
    assert page.status_code == 200
    assert 'method="post"' in page.get_data(as_text=True).lower()  # it asks to confirm
    assert all_rows() == before
    assert not suppressions.is_suppressed("grace.hopper@example.com")
