"""`flask campaigns create` with an email body from a file and an offer (shared or unique codes)."""

from __future__ import annotations

import re

import sqlalchemy as sa

from app.extensions import db
from app.models import Invitation, OfferKind
from app.services import campaigns
from tests.factories import make_customer


def test_body_file_and_shared_offer_code(runner, tmp_path):
    make_customer("ada@example.com")
    body = tmp_path / "body.md"
    body.write_text("Hi {{ first_name }}, use {{ offer_code }}\n\n{{ link }}\n", encoding="utf-8")
    result = runner.invoke(
        args=["campaigns", "create", "--name", "Coded", "--body-file", str(body), "--offer-code", "HELLO"]
    )
    assert result.exit_code == 0, result.output
    first_number = int(re.search(r"\d+", result.output.splitlines()[0]).group())
    assert result.output.splitlines()[0] == f"{first_number} created: 'Coded', 1 invitations queued"
    db.session.rollback()
    campaign = campaigns.get_campaign(first_number)
    assert campaign.body == "Hi {{ first_name }}, use {{ offer_code }}\n\n{{ link }}"
    assert (campaign.offer_kind, campaign.offer_code) == (OfferKind.SHARED, "HELLO")


def test_offer_codes_file_hands_out_one_code_each(runner, tmp_path):
    for _ in range(2):
        make_customer()
    codes = tmp_path / "codes.csv"
    codes.write_text("code\nONE\nTWO\nTHREE\n")
    result = runner.invoke(args=["campaigns", "create", "--name", "Unique", "--offer-codes-file", str(codes)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[2] == "2 offer codes handed out, 1 left over"
    db.session.rollback()
    handed = db.session.scalars(sa.select(Invitation.offer_code))
    assert sorted(handed) == ["ONE", "TWO"]


def test_bad_offers_and_bodies_exit_1_and_unreadable_files_exit_2(runner, tmp_path):
    for _ in range(3):
        make_customer()
    codes = tmp_path / "codes.txt"
    codes.write_text("A\nB\n")
    too_few = runner.invoke(args=["campaigns", "create", "--name", "X", "--offer-codes-file", str(codes)])
    assert too_few.exit_code == 1
    assert "offer codes: 2 codes for 3 recipients" in too_few.output

    both = runner.invoke(
        args=["campaigns", "create", "--name", "X", "--offer-code", "A", "--offer-codes-file", str(codes)]
    )
    assert both.exit_code == 2
    assert "--offer-code and --offer-codes-file cannot be used together" in both.output

    body = tmp_path / "body.txt"
    body.write_text("Hello\n{{ link }}\n{% for x in first_name %}{% endfor %}\n")
    bad_body = runner.invoke(args=["campaigns", "create", "--name", "X", "--body-file", str(body)])
    assert bad_body.exit_code == 1
    assert "body: {% for %} on line 3 is not allowed" in bad_body.output

    missing = runner.invoke(
        args=["campaigns", "create", "--name", "X", "--body-file", str(tmp_path / "missing.txt")]
    )
    assert missing.exit_code == 2
    assert "cannot be read" in missing.output
    binary = tmp_path / "codes.bin"
    binary.write_bytes(b"\xff\xfe\x00\x00")
    not_text = runner.invoke(args=["campaigns", "create", "--name", "X", "--offer-codes-file", str(binary)])
    assert not_text.exit_code == 2
    assert "is not UTF-8 text; nothing was created" in not_text.output
    db.session.rollback()
    assert campaigns.list_campaigns() == []
