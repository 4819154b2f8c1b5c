"""RFM scores, segments and the win-back priority, recomputed set-based over the whole customer base.

The rules are written out for people in docs/scoring.md; this module is the one place they live in
code. The SQL and the Python explanation of the priority use the same constants below."""

from __future__ import annotations

import enum
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from app.database import write_intent
from app.extensions import db
from app.models import Customer, CustomerStatus
from app.models.base import UTCDateTime
from app.services.sql import days_between, greatest

SECONDS_PER_DAY = 86_400
DAYS_PER_YEAR = 365
# Spending is spread over at least a year, so a short burst of orders is not extrapolated.
MIN_ACTIVE_DAYS = 365
# The chance of coming back halves after this many days away (a third after twice as long).
AWAY_DAYS_HALVING = 365


class Segment(enum.StrEnum):
    """The named RFM segments, best first. The values are what staff see and filter by."""

    CHAMPIONS = "Champions"
    LOYAL = "Loyal"
    POTENTIAL_LOYALIST = "Potential loyalist"
    NEW = "New"
    PROMISING = "Promising"
    NEED_ATTENTION = "Need attention"
    ABOUT_TO_SLEEP = "About to sleep"
    CANT_LOSE_THEM = "Can't lose them"
    AT_RISK = "At risk"
    HIBERNATING = "Hibernating"
    LOST = "Lost"


# The segment map: recency score R (5 = bought most recently) -> the segment for each
# FM score 1..5, where FM is the mean of the frequency and monetary scores rounded half up.
#
#          FM 1             FM 2                FM 3                FM 4         FM 5
#   R 5    New              Potential loyalist  Potential loyalist  Champions    Champions
#   R 4    Promising        Potential loyalist  Potential loyalist  Loyal        Loyal
#   R 3    About to sleep   About to sleep      Need attention      Loyal        Loyal
#   R 2    Hibernating      Hibernating         At risk             At risk      Can't lose them
#   R 1    Lost             Lost                At risk             At risk      Can't lose them
SEGMENT_MAP: dict[int, tuple[Segment, Segment, Segment, Segment, Segment]] = {
    5: (
        Segment.NEW,
        Segment.POTENTIAL_LOYALIST,
        Segment.POTENTIAL_LOYALIST,
        Segment.CHAMPIONS,
        Segment.CHAMPIONS,
    ),
    4: (
        Segment.PROMISING,
        Segment.POTENTIAL_LOYALIST,
        Segment.POTENTIAL_LOYALIST,
        Segment.LOYAL,
        Segment.LOYAL,
    ),
    3: (
        Segment.ABOUT_TO_SLEEP,
        Segment.ABOUT_TO_SLEEP,
        Segment.NEED_ATTENTION,
        Segment.LOYAL,
        Segment.LOYAL,
    ),
    2: (
        Segment.HIBERNATING,
        Segment.HIBERNATING,
        Segment.AT_RISK,
        Segment.AT_RISK,
        Segment.CANT_LOSE_THEM,
    ),
    1: (
        Segment.LOST,
        Segment.LOST,
        Segment.AT_RISK,
        Segment.AT_RISK,
        Segment.CANT_LOSE_THEM,
    ),
}

SEGMENT_DESCRIPTIONS: dict[Segment, str] = {
    Segment.CHAMPIONS: "Bought recently, buy often and spend the most.",
    Segment.LOYAL: "Buy often and spend well; not the very latest buyers.",
    Segment.POTENTIAL_LOYALIST: "Recent customers with average frequency and spend.",
    Segment.NEW: "Bought very recently, but only a little so far.",
    Segment.PROMISING: "Fairly recent, small buyers so far.",
    Segment.NEED_ATTENTION: "Middling on every count; slipping away without a nudge.",
    Segment.ABOUT_TO_SLEEP: "Bought a while ago, rarely and little.",
    Segment.CANT_LOSE_THEM: "Were among the best customers, but have not bought for a long time.",
    Segment.AT_RISK: "Bought often and spent well, but a long time ago.",
    Segment.HIBERNATING: "Bought a long time ago, rarely and little.",
    Segment.LOST: "The longest gone, with the fewest orders and the lowest spend.",
}


def segment_for(recency: int, frequency: int, monetary: int) -> Segment:
    """The segment for a set of scores, by the segment map."""
    return SEGMENT_MAP[recency][(frequency + monetary + 1) // 2 - 1]


def scorable() -> sa.ColumnElement[bool]:
    """Customers who get scores: at least one purchase, and not erased."""
    # Both erasure markers, not the status alone: besides covering a row marked only one way,
    # erased_at keeps SQLite from reading the rows through the (status, last purchase) index,
    # which for a scan of nearly every row is much slower than reading the table in order.
    return sa.and_(
        Customer.last_purchase_at.is_not(None),
        Customer.erased_at.is_(None),
        Customer.status != CustomerStatus.ERASED,
    )


# Customers rewritten per write transaction: at a million customers a chunk holds SQLite's
# write lock for about 0.1-0.2 s.
CHUNK_ROWS = 50_000
# SQLite has no queue for its write lock: a writer that finds it taken sleeps and tries again,
# up to 0.1 s between tries. It usually gets in while a chunk's commit is checkpointed, but it
# could keep missing those moments. So after holding the lock for WRITE_SLICE seconds in all,
# the recompute leaves it free for PAUSE seconds, longer than any such sleep: every writer that
# was waiting gets in. No writer waits much more than WRITE_SLICE + PAUSE, far below the
# busy timeout.
WRITE_SLICE = 1.0
PAUSE = 0.11
# On SQLite, when more than this share of all customers gets new scores, the two indexes on the
# segment and the priority are dropped for the rewrite and built again after it: moving a
# million entries one by one costs several times more than building the index from scratch.
REBUILD_SHARE = 0.25

_SCORE_COLUMNS = ("recency_score", "frequency_score", "monetary_score", "segment", "win_back_priority")
# Customers looked at to tell how many will get new scores (see REBUILD_SHARE).
SAMPLE_ROWS = 10_000


def recompute_scores(*, now: datetime, chunk_rows: int = CHUNK_ROWS) -> int:
    """Score every customer who bought and is not erased, in a few set-based statements.

    R, F and M are quintiles over the scored customers (ties share a score); the segment comes
    from SEGMENT_MAP and the priority from the expected-return formula. Customers who no longer
    qualify lose their scores. Returns how many customers were scored.

    The session's pending work is committed first. The cut points of the quintiles are read in
    one read transaction (on SQLite without the write lock). The customers are then rewritten in
    id order, `chunk_rows` ids per write transaction, so that other writers get the database
    between chunks; only customers whose scores change are written. A customer scored meanwhile
    by a later recompute is left as it is, and one erased meanwhile loses their scores."""
    db.session.commit()
    with db.engine.connect() as connection:
        with write_intent(False), connection.begin():
            count, first, last = _counts(connection)
            new = _new_scores(connection, now, count)
            share = _changing_share(connection, new, now, first, last)
        if first is None:
            return count
        writes = _WriteSlices(connection)
        with _indexes_rebuilt_after(writes, rebuild=share > REBUILD_SHARE):
            statement = _rewrite(new, now)
            for after in range(first - 1, last, chunk_rows):
                with writes.transaction():
                    connection.execute(statement, {"after": after, "upto": after + chunk_rows})
    return count


def provisional_scores(
    connection: sa.Connection, newcomers: sa.Select, count: int, *, now: datetime
) -> dict[str, sa.ColumnElement]:
    """The scores customers about to be created will get, as SQL over the customers' columns:
    what `recompute_scores(now=now)` gives them if the figures of the customers already stored
    stay as they are. `newcomers` selects the last purchase, orders count and total spent of
    each newcomer who bought; `count` is how many customers are scored then, the newcomers and
    the scored customers already stored.

    A bulk import creates customers with these, so that the recompute after its commit (which
    decides every score) finds them right and need not write each row a second time. On
    PostgreSQL every rewrite of a row is a new version of it in each of the table's indexes."""
    columns = Customer.__table__.c
    figures = ("last_purchase_at", "orders_count", "total_spent")
    stored = sa.select(*(columns[name] for name in figures)).where(scorable())
    population = sa.union_all(stored, newcomers).subquery("population")
    return _new_scores(connection, now, count, population)


def _counts(connection: sa.Connection) -> tuple[int, int | None, int | None]:
    """How many customers are to be scored, and the first and last customer id."""
    count, first, last = connection.execute(
        sa.select(
            sa.func.coalesce(sa.func.sum(sa.case((scorable(), 1), else_=0)), 0),
            sa.func.min(Customer.id),
            sa.func.max(Customer.id),
        )
    ).one()
    return int(count), first, last


def _new_scores(
    connection: sa.Connection, now: datetime, count: int, population: sa.Subquery | None = None
) -> dict[str, sa.ColumnElement]:
    """Each score column's new value as SQL over the customer's own row: the quintiles by the cut
    points read now, the segment, the priority and the time; None for those not to be scored.
    The cut points are those of the scored customers, or of `population` (the last purchase,
    orders count and total spent of each customer to be scored) when given."""
    eligible = scorable()
    columns = Customer.__table__.c
    if not count:
        return {name: sa.cast(sa.null(), columns[name].type) for name in (*_SCORE_COLUMNS, "scored_at")}
    cuts = population.c if population is not None else columns
    every = sa.true() if population is not None else eligible
    recency, frequency, monetary = (
        _quintile(connection, cuts[name], every, count, scored=columns[name])
        for name in ("last_purchase_at", "orders_count", "total_spent")
    )
    segment = sa.case(
        {
            r * 10 + position + 1: name.value
            for r, names in SEGMENT_MAP.items()
            for position, name in enumerate(names)
        },
        value=recency * 10 + (frequency + monetary + 1) // 2,
    )
    values = {
        "recency_score": recency,
        "frequency_score": frequency,
        "monetary_score": monetary,
        "segment": segment,
        "win_back_priority": _expected_return_sql(now),
        "scored_at": sa.literal(now, UTCDateTime()),
    }
    return {name: sa.case((eligible, value), else_=None) for name, value in values.items()}


def _changes(new: dict[str, sa.ColumnElement], now: datetime) -> sa.ColumnElement[bool]:
    """Whether a customer's row is to be written: their scores change (or they get scores for
    the first time, or lose them), and no later recompute has scored them meanwhile."""
    columns = Customer.__table__.c
    return sa.and_(
        sa.or_(scorable(), columns.scored_at.is_not(None)),
        sa.or_(columns.scored_at.is_(None), columns.scored_at <= now),
        sa.or_(
            *(new[name].is_distinct_from(columns[name]) for name in _SCORE_COLUMNS),
            new["scored_at"].is_(None) != columns.scored_at.is_(None),
        ),
    )


def _changing_share(
    connection: sa.Connection, new: dict[str, sa.ColumnElement], now: datetime, first, last
) -> float:
    """The share of customers whose row the recompute will write, from an even sample."""
    if first is None:
        return 0.0
    step = max(1, (last - first + 1) // SAMPLE_ROWS)
    sampled, changing = connection.execute(
        sa.select(
            sa.func.count(), sa.func.coalesce(sa.func.sum(sa.case((_changes(new, now), 1), else_=0)), 0)
        )
        .select_from(Customer)
        .where(Customer.id % step == 0)
    ).one()
    return int(changing) / sampled if sampled else 0.0


def _rewrite(new: dict[str, sa.ColumnElement], now: datetime) -> sa.Update:
    """The UPDATE of one chunk of customer ids (after, upto]: only the rows that change."""
    columns = Customer.__table__.c
    return (
        sa.update(Customer.__table__)
        .where(
            columns.id > sa.bindparam("after"),
            columns.id <= sa.bindparam("upto"),
            _changes(new, now),
        )
        .values({**new, "updated_at": columns.updated_at})  # derived figures: not an edit
    )


class _WriteSlices:
    """Short write transactions on one connection that, on SQLite, leave the write lock free for
    a moment after every WRITE_SLICE seconds of holding it (see PAUSE)."""

    def __init__(self, connection: sa.Connection) -> None:
        self.connection = connection
        self.sqlite = connection.dialect.name == "sqlite"
        self.held = 0.0  # seconds the write lock was held since the last pause

    @contextmanager
    def transaction(self) -> Iterator[sa.Connection]:
        """One write transaction (BEGIN IMMEDIATE on SQLite), then a pause if one is due."""
        began = time.monotonic()
        with write_intent(True), self.connection.begin():
            yield self.connection
        self.held += time.monotonic() - began
        if self.sqlite and self.held >= WRITE_SLICE:
            time.sleep(PAUSE)
            self.held = 0.0


@contextmanager
def _indexes_rebuilt_after(writes: _WriteSlices, *, rebuild: bool) -> Iterator[None]:
    """On SQLite, when `rebuild`, drop the indexes on the segment and priority for the duration
    of the block and build them again after it, each in a short write transaction of its own.

    Moving a million index entries one row at a time costs several times more than the rest of
    the recompute together; building the index again from sorted keys takes under a second.
    Meanwhile readers get the same answers from the table itself, only slower. The indexes are
    built again also when the block fails, and by the next recompute if the process died
    meanwhile. PostgreSQL keeps its indexes: dropping one would lock readers out of the table."""
    if not writes.sqlite:
        yield
        return
    rebuilt = [
        index
        for index in Customer.__table__.indexes
        if {column.name for column in index.columns} & {"segment", "win_back_priority"}
    ]
    if rebuild:
        with writes.transaction() as connection:
            for index in rebuilt:
                index.drop(connection, checkfirst=True)
    try:
        yield
    finally:
        with write_intent(False), writes.connection.begin():
            present = {row[1] for row in writes.connection.exec_driver_sql("PRAGMA index_list(customers)")}
        for index in rebuilt:
            if index.name not in present:
                with writes.transaction() as connection:
                    index.create(connection)


def _quintile(
    connection: sa.Connection,
    column: sa.ColumnElement,
    eligible: sa.ColumnElement[bool],
    count: int,
    *,
    scored: sa.ColumnElement | None = None,
) -> sa.ColumnElement:
    """A 1-5 score by quintile: 1 + the number of whole fifths of scored customers whose value
    is strictly lower. Equal values therefore share a score. The cut points are read from
    `column`; the score is of `scored` (the same column of customers) when given.

    The four cut points are read in one window query (the values at positions ceil(k*n/5) in
    ascending order); the score is then a CASE over the row's own value, so scoring is a
    single pass with no join back to a ranked copy of the table."""
    positions = [(k * count + 4) // 5 for k in range(1, 5)]
    ranked = (
        sa.select(
            column.label("value"),
            sa.func.row_number().over(order_by=column).label("position"),
        )
        .where(eligible)
        .subquery()
    )
    found = dict(
        connection.execute(
            sa.select(ranked.c.position, ranked.c.value).where(ranked.c.position.in_(sorted(set(positions))))
        ).all()
    )
    cuts = [found[position] for position in positions]
    scored = column if scored is None else scored
    return sa.case(
        *((scored > cut, score) for score, cut in zip((5, 4, 3, 2), reversed(cuts), strict=True)),
        else_=1,
    )


def _expected_return_sql(now: datetime) -> sa.ColumnElement[int]:
    """The expected return, in minor units, as SQL: the same formula as `expected_return`."""
    at = sa.literal(now, UTCDateTime())
    orders = sa.case((Customer.orders_count > 1, Customer.orders_count), else_=1)
    spent = greatest(Customer.total_spent, 0)
    away = greatest(days_between(Customer.last_purchase_at, at), 0.0)
    first = sa.func.coalesce(Customer.first_purchase_at, Customer.last_purchase_at)
    active = greatest(days_between(first, Customer.last_purchase_at), float(MIN_ACTIVE_DAYS))
    yearly = spent * float(DAYS_PER_YEAR) / active
    chance = orders * 1.0 / (orders + 1.0) * float(AWAY_DAYS_HALVING) / (away + float(AWAY_DAYS_HALVING))
    return sa.cast(sa.func.round(yearly * chance), sa.BigInteger)


# --- the same formula in Python, for the explanation on the customer page ---------------------

CURRENCY_SYMBOLS = {"GBP": "£", "EUR": "€", "USD": "$"}


@dataclass(frozen=True)
class PriorityExplanation:
    """The parts of a customer's win-back priority, in the units a shop owner thinks in."""

    orders: int
    average_order: int  # minor units
    orders_per_year: float
    yearly_value: int  # minor units
    days_away: float
    chance: float
    expected_return: int  # minor units: yearly_value x chance
    currency: str = "GBP"

    def money(self, minor_units: int) -> str:
        """A rounded amount as people say it: "£230", "1,200 SEK"."""
        whole = f"{round(minor_units / 100):,}"
        symbol = CURRENCY_SYMBOLS.get(self.currency)
        return f"{symbol}{whole}" if symbol else f"{whole} {self.currency}"

    @property
    def chance_words(self) -> str:
        """The chance of coming back as odds: "about 1 in 3", "about 7 in 10"."""
        if self.chance >= 0.5:
            return f"about {round(self.chance * 10)} in 10"
        return f"about 1 in {max(2, round(1 / self.chance))}"

    @property
    def frequency_words(self) -> str:
        """How often they ordered while they were buying: "about 6 times a year"."""
        per_year = self.orders_per_year
        if per_year < 0.75:
            return f"about once every {round(1 / per_year)} years"
        if round(per_year) == 1:
            return "about once a year"
        return f"about {round(per_year)} times a year"

    @property
    def away_words(self) -> str:
        """Time since the last order in words: "9 months", "3 weeks", "about 2 years"."""
        return duration_words(self.days_away)


def duration_words(days: float) -> str:
    """A span of days as people say it."""
    if days < 1:
        return "less than a day"
    if days < 14:
        whole = round(days)
        return f"{whole} day{'s' if whole != 1 else ''}"
    if days < 61:
        return f"{round(days / 7)} weeks"
    if days < 2 * DAYS_PER_YEAR:
        months = round(days / 30.44)
        return f"{months} month{'s' if months != 1 else ''}"
    return f"about {round(days / 365.25)} years"


def explain_priority(customer: Customer, *, now: datetime) -> PriorityExplanation | None:
    """How the customer's expected return comes about; None when they have never bought."""
    last = customer.last_purchase_at
    if last is None:
        return None
    orders = max(customer.orders_count, 1)
    spent = max(customer.total_spent, 0)
    first = customer.first_purchase_at or last
    away = max((now - last).total_seconds() / SECONDS_PER_DAY, 0.0)
    active = max((last - first).total_seconds() / SECONDS_PER_DAY, MIN_ACTIVE_DAYS)
    yearly = spent * DAYS_PER_YEAR / active
    chance = orders / (orders + 1) * AWAY_DAYS_HALVING / (away + AWAY_DAYS_HALVING)
    return PriorityExplanation(
        orders=orders,
        average_order=round(spent / orders),
        orders_per_year=orders * DAYS_PER_YEAR / active,
        yearly_value=round(yearly),
        days_away=away,
        chance=chance,
        expected_return=round(yearly * chance),
        currency=customer.currency or "GBP",
    )


def expected_return(customer: Customer, *, now: datetime) -> int | None:
    """The win-back priority `recompute_scores` stores for this customer, computed in Python."""
    explanation = explain_priority(customer, now=now)
    return explanation.expected_return if explanation else None
