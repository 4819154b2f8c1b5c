"""Settings staff edit in the app, stored in the settings table (deployment settings live in
config.py). Today: the list of things the business cannot offer, one phrase per line."""

from __future__ import annotations

import re
from datetime import datetime

import sqlalchemy as sa

from app.exceptions import InvalidInput
from app.extensions import db
from app.models import Setting

UNFEASIBLE_LIST = "unfeasible_list"
MAX_PHRASES = 200
MAX_PHRASE_LENGTH = 200


def get_setting(key: str) -> str:
    """A setting's text, or "" when it was never saved."""
    return db.session.scalar(sa.select(Setting.value).where(Setting.key == key)) or ""


def save_setting(key: str, value: str, *, now: datetime) -> None:
    """Store a setting's text (insert or replace) and commit."""
    setting = db.session.get(Setting, key)
    if setting is None:
        db.session.add(Setting(key=key, value=value, updated_at=now))
    else:
        setting.value = value
        setting.updated_at = now
    db.session.commit()


def parse_phrases(text: str) -> list[str]:
    """One phrase per line: blank lines dropped, spaces tidied, duplicates (any case) once."""
    phrases: list[str] = []
    seen: set[str] = set()
    for line in (text or "").splitlines():
        phrase = " ".join(line.split())
        if phrase and phrase.casefold() not in seen:
            seen.add(phrase.casefold())
            phrases.append(phrase)
    return phrases


def unfeasible_phrases() -> list[str]:
    """The things the business cannot offer, as staff listed them."""
    return parse_phrases(get_setting(UNFEASIBLE_LIST))


def save_unfeasible_list(text: str, *, now: datetime) -> list[str]:
    """Replace the list of things the business cannot offer; returns the phrases kept."""
    phrases = parse_phrases(text)
    if len(phrases) > MAX_PHRASES:
        raise InvalidInput(
            f"unfeasible_list: at most {MAX_PHRASES} phrases, one per line ({len(phrases)} given)."
        )
    for number, phrase in enumerate(phrases, start=1):
        if len(phrase) > MAX_PHRASE_LENGTH:
            raise InvalidInput(
                f"unfeasible_list: phrase {number} is longer than {MAX_PHRASE_LENGTH} characters."
            )
    save_setting(UNFEASIBLE_LIST, "\n".join(phrases), now=now)
    return phrases


def matching_phrase(text: str, phrases: list[str]) -> str | None:
    """The first phrase found in the text as whole words, ignoring case; None if none is."""
    for phrase in phrases:
        words = [re.escape(word) for word in phrase.split()]
        if re.search(r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)", text, flags=re.IGNORECASE):
            return phrase
    return None
