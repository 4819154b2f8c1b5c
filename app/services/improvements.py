"""Improvements: actionable answers become changes; done, published ones go public."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from markupsafe import Markup
from sqlalchemy.orm import selectinload

from app.exceptions import InvalidInput, NotFound
from app.extensions import cache, db
from app.markup import render_markdown
from app.models import Improvement, ImprovementStatus, Outcome, Response, improvement_responses
from app.services import audit

MAX_QUOTES = 3
PUBLIC_PAGE_CACHE_KEY = "public/you-said-we-did"


def _public_page_changed() -> None:
    """Drop the cached public page so a change shows at once (in other processes: within
    CACHE_DEFAULT_TIMEOUT, or at once with a shared cache such as Redis)."""
    cache.delete(PUBLIC_PAGE_CACHE_KEY)


@dataclass(frozen=True)
class ImprovementData:
    """What staff enter for an improvement."""

    you_said: str
    we_did: str
    status: ImprovementStatus
    published: bool


def _validate(data: ImprovementData) -> None:
    if not data.you_said.strip():
        raise InvalidInput("You said: describe what customers asked for")
    if len(data.you_said) > 500:
        raise InvalidInput("You said: at most 500 characters")
    if data.published and data.status == ImprovementStatus.DONE and not data.we_did.strip():
        raise InvalidInput("We did: say what changed before publishing a done improvement")


def _apply(improvement: Improvement, data: ImprovementData, now: datetime) -> None:
    improvement.you_said = data.you_said.strip()
    improvement.we_did = data.we_did.strip()
    improvement.we_did_html = str(render_markdown(improvement.we_did))
    if data.status == ImprovementStatus.DONE and improvement.status != ImprovementStatus.DONE:
        improvement.done_at = now
    elif data.status != ImprovementStatus.DONE:
        improvement.done_at = None
    improvement.status = data.status
    improvement.published = data.published


def create_improvement(
    data: ImprovementData, *, response_ids: list[int], actor_id: int | None, now: datetime
) -> Improvement:
    """A new improvement, linked to the actionable responses that asked for it."""
    _validate(data)
    responses = list(db.session.scalars(sa.select(Response).where(Response.id.in_(response_ids))))
    if len(responses) != len(set(response_ids)):
        raise NotFound("one of the responses does not exist")
    if any(response.outcome != Outcome.ACTIONABLE for response in responses):
        raise InvalidInput("only responses triaged as actionable can start an improvement")
    improvement = Improvement(created_at=now, responses=responses)
    _apply(improvement, data, now)
    db.session.add(improvement)
    db.session.flush()
    audit.record("improvement.create", "improvement", improvement.id, actor_id=actor_id, now=now)
    db.session.commit()
    _public_page_changed()
    return improvement


def update_improvement(
    improvement_id: int, data: ImprovementData, *, actor_id: int | None, now: datetime
) -> Improvement:
    """Change an improvement's text, status or publication."""
    _validate(data)
    improvement = get_improvement(improvement_id)
    _apply(improvement, data, now)
    audit.record(
        "improvement.update",
        "improvement",
        improvement.id,
        actor_id=actor_id,
        now=now,
        detail=f"{data.status.value}, published={data.published}",
    )
    db.session.commit()
    _public_page_changed()
    return improvement


def get_improvement(improvement_id: int) -> Improvement:
    """One improvement with its responses, or NotFound."""
    improvement = db.session.get(Improvement, improvement_id, options=[selectinload(Improvement.responses)])
    if improvement is None:
        raise NotFound(f"no improvement #{improvement_id}")
    return improvement


def list_improvements() -> list[Improvement]:
    """Every improvement for staff, newest first."""
    return list(
        db.session.scalars(
            sa.select(Improvement)
            .options(selectinload(Improvement.responses))
            .order_by(Improvement.id.desc())
        )
    )


@dataclass(frozen=True)
class PublicImprovement:
    """What the public page may show: no names, addresses, or words not allowed to be quoted."""

    id: int
    you_said: str
    we_did_html: Markup
    done_at: datetime | None
    quotes: list[str]
    asked_by: int


def public_improvements(limit: int = 100) -> list[PublicImprovement]:
    """Done, published improvements, most recent first, with quotes customers allowed.

    Two plain queries and no ORM objects: this is the busiest public page."""
    rows = db.session.execute(
        sa.select(Improvement.id, Improvement.you_said, Improvement.we_did_html, Improvement.done_at)
        .where(Improvement.published.is_(True), Improvement.status == ImprovementStatus.DONE)
        .order_by(Improvement.done_at.desc(), Improvement.id.desc())
        .limit(limit)
    ).all()
    ids = [row.id for row in rows]
    links = db.session.execute(
        sa.select(
            improvement_responses.c.improvement_id,
            Response.may_quote,
            Response.win_back_text,
        )
        .join(Response, Response.id == improvement_responses.c.response_id)
        .where(improvement_responses.c.improvement_id.in_(ids))
        .order_by(improvement_responses.c.improvement_id, Response.id)
    ).all()
    quotes: dict[int, list[str]] = {id_: [] for id_ in ids}
    asked_by: dict[int, int] = dict.fromkeys(ids, 0)
    for improvement_id, may_quote, text in links:
        asked_by[improvement_id] += 1
        shown = quotes[improvement_id]
        if may_quote and text.strip() and text not in shown and len(shown) < MAX_QUOTES:
            shown.append(text)
    return [
        PublicImprovement(
            id=row.id,
            you_said=row.you_said,
            we_did_html=Markup(row.we_did_html),  # noqa: S704 - sanitised when saved
            done_at=row.done_at,
            quotes=quotes[row.id],
            asked_by=asked_by[row.id],
        )
        for row in rows
    ]
