"""RFM scoring: quintiles with ties, segments from the map, a win-back priority that ranks sensibly."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import Customer, CustomerStatus, utcnow
from app.services import scoring
from app.services.scoring import SEGMENT_MAP, Segment
from tests.factories import make_customer


def scored() -> dict[str, Customer]:
    """Every customer as stored now, by email."""
    db.session.expire_all()
    return {customer.email: customer for customer in db.session.scalars(sa.select(Customer))}


def scores(attribute: str) -> list[int | None]:
    """One score of every customer, in the order they were made."""
    db.session.expire_all()
    return list(db.session.scalars(sa.select(getattr(Customer, attribute)).order_by(Customer.id)))


def test_ten_distinct_values_fall_two_to_a_fifth(app):
    for n in range(1, 11):
        make_customer(
            f"c{n}@example.com", orders_count=n, total_spent=n * 1_000, days_since_purchase=110 - n * 10
        )
    assert scoring.recompute_scores(now=utcnow()) == 10
    assert scores("frequency_score") == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert scores("monetary_score") == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    # The last made bought most recently: 5 is the most recent fifth.
    assert scores("recency_score") == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]


def test_equal_values_share_a_score(app):
    """Six one-time buyers out of ten: all score 1, not spread over 1-3 as NTILE would."""
    for n, orders in enumerate([1, 1, 1, 1, 1, 1, 2, 2, 3, 4]):
        make_customer(f"c{n}@example.com", orders_count=orders, total_spent=5_000)
    # All bought at the very same moment but the last, a microsecond later.
    same_time = utcnow() - timedelta(days=300)
    db.session.execute(sa.update(Customer).values(last_purchase_at=same_time))
    db.session.execute(
        sa.update(Customer)
        .where(Customer.email == "c9@example.com")
        .values(last_purchase_at=same_time + timedelta(microseconds=1))
    )
    db.session.commit()
    scoring.recompute_scores(now=utcnow())
    # A score is 1 + the whole fifths of customers strictly below: 6/10 below the 2s is three fifths.
    assert scores("frequency_score") == [1, 1, 1, 1, 1, 1, 4, 4, 5, 5]
    assert set(scores("monetary_score")) == {1}
    assert scores("recency_score") == [1] * 9 + [5]


def test_uneven_counts_match_the_documented_rule(app):
    """Seven customers: score = 1 + floor(5 x customers strictly below / 7)."""
    for n in range(7):
        make_customer(f"c{n}@example.com", total_spent=(n + 1) * 100)
    scoring.recompute_scores(now=utcnow())
    assert scores("monetary_score") == [1 + (5 * below) // 7 for below in range(7)]


def test_segment_map_covers_every_cell_and_uses_every_segment():
    cells = {
        (r, f, m): scoring.segment_for(r, f, m) for r in range(1, 6) for f in range(1, 6) for m in range(1, 6)
    }
    assert set(cells.values()) == set(Segment)
    assert cells[(5, 5, 5)] == Segment.CHAMPIONS
    assert cells[(1, 1, 1)] == Segment.LOST
    assert cells[(1, 5, 5)] == Segment.CANT_LOSE_THEM
    assert cells[(5, 1, 1)] == Segment.NEW
    # FM is the mean of F and M rounded half up: (4 + 3) / 2 -> 4.
    assert scoring.segment_for(3, 4, 3) == SEGMENT_MAP[3][3] == Segment.LOYAL


def test_each_customer_gets_the_segment_the_map_gives_their_scores(app):
    now = utcnow()
    for n in range(25):
        make_customer(
            f"c{n}@example.com",
            orders_count=1 + (n * 7) % 11,
            total_spent=1_000 + (n * 3_001) % 40_000,
            days_since_purchase=5 + (n * 37) % 900,
        )
    scoring.recompute_scores(now=now)
    for customer in scored().values():
        expected = scoring.segment_for(
            customer.recency_score, customer.frequency_score, customer.monetary_score
        )
        assert customer.segment == expected.value


def test_best_worst_and_lapsed_big_spenders_land_in_the_named_segments(app):
    make_customer("best@example.com", orders_count=40, total_spent=900_000, days_since_purchase=2)
    make_customer("gone@example.com", orders_count=1, total_spent=500, days_since_purchase=1_500)
    make_customer("slipped@example.com", orders_count=35, total_spent=800_000, days_since_purchase=1_400)
    for n in range(7):
        make_customer(
            f"mid{n}@example.com", orders_count=3 + n, total_spent=20_000 + n, days_since_purchase=300 + n
        )
    scoring.recompute_scores(now=utcnow())
    customers = scored()
    assert customers["best@example.com"].segment == "Champions"
    assert customers["gone@example.com"].segment == "Lost"
    assert customers["slipped@example.com"].segment == "Can't lose them"


def test_a_frequent_big_spender_lapsed_200_days_outranks_a_small_one_off_buyer_lapsed_700_days(app):
    frequent = make_customer(
        "frequent@example.com", orders_count=12, total_spent=120_000, days_since_purchase=200
    )
    one_off = make_customer("oneoff@example.com", orders_count=1, total_spent=2_000, days_since_purchase=700)
    frequent.first_purchase_at = frequent.last_purchase_at - timedelta(days=730)
    one_off.first_purchase_at = one_off.last_purchase_at
    db.session.commit()
    scoring.recompute_scores(now=utcnow())
    customers = scored()
    assert (
        customers["frequent@example.com"].win_back_priority
        > 10 * customers["oneoff@example.com"].win_back_priority
    )
    assert customers["oneoff@example.com"].win_back_priority > 0


def test_the_chance_falls_with_time_away_and_rises_with_orders(app):
    now = utcnow()
    for days in (200, 400, 800):
        make_customer(f"away{days}@example.com", orders_count=4, total_spent=40_000, days_since_purchase=days)
    for orders in (1, 3, 9):
        make_customer(
            f"orders{orders}@example.com", orders_count=orders, total_spent=40_000, days_since_purchase=300
        )
    scoring.recompute_scores(now=now)
    customers = scored()
    away = [customers[f"away{days}@example.com"].win_back_priority for days in (200, 400, 800)]
    assert away == sorted(away, reverse=True)
    assert len(set(away)) == 3
    # The same total spread over more orders in the same 300 active days: a likelier return.
    by_orders = [customers[f"orders{orders}@example.com"].win_back_priority for orders in (1, 3, 9)]
    assert by_orders == sorted(by_orders)
    assert len(set(by_orders)) == 3


def test_the_stored_priority_is_the_documented_formula(app):
    now = utcnow()
    ada = make_customer("ada@example.com", orders_count=12, total_spent=45_600, days_since_purchase=274)
    ada.first_purchase_at = ada.last_purchase_at - timedelta(days=730)
    db.session.commit()
    scoring.recompute_scores(now=now)
    ada = scored()["ada@example.com"]
    # 456.00 over two active years = 228.00 a year; chance 12/13 x 365/(365 + 274).
    expected = 45_600 * 365 / 730 * (12 / 13) * (365 / (365 + 274))
    assert ada.win_back_priority == pytest.approx(expected, abs=1)
    assert ada.win_back_priority == pytest.approx(scoring.expected_return(ada, now=now), abs=1)


def test_erased_and_never_purchased_customers_are_not_scored(app):
    now = utcnow()
    make_customer("buyer@example.com")
    make_customer("browser@example.com", days_since_purchase=None)
    erased = make_customer("erased@example.com")
    assert scoring.recompute_scores(now=now) == 2
    assert scored()["erased@example.com"].segment is not None

    erased.status = CustomerStatus.ERASED
    erased.erased_at = now
    db.session.commit()
    assert scoring.recompute_scores(now=now) == 1
    customers = scored()
    for email in ("browser@example.com", "erased@example.com"):
        customer = customers[email]
        assert customer.recency_score is None
        assert customer.frequency_score is None
        assert customer.monetary_score is None
        assert customer.segment is None
        assert customer.win_back_priority is None
        assert customer.scored_at is None
    assert customers["buyer@example.com"].scored_at == now


def test_recompute_is_idempotent(app):
    now = utcnow()
    for n in range(12):
        make_customer(orders_count=1 + n % 4, total_spent=1_000 * (n + 1), days_since_purchase=30 * (n + 1))
    columns = [
        Customer.id,
        Customer.recency_score,
        Customer.frequency_score,
        Customer.monetary_score,
        Customer.segment,
        Customer.win_back_priority,
        Customer.scored_at,
    ]
    assert scoring.recompute_scores(now=now) == 12
    first = db.session.execute(sa.select(*columns).order_by(Customer.id)).all()
    assert scoring.recompute_scores(now=now) == 12
    db.session.expire_all()
    assert db.session.execute(sa.select(*columns).order_by(Customer.id)).all() == first


def test_an_empty_base_scores_nobody(app):
    assert scoring.recompute_scores(now=utcnow()) == 0


def test_the_explanation_speaks_in_a_shop_owners_terms(app):
    now = utcnow()
    ada = make_customer("ada@example.com", orders_count=12, total_spent=45_600, days_since_purchase=274)
    ada.first_purchase_at = ada.last_purchase_at - timedelta(days=730)
    explanation = scoring.explain_priority(ada, now=now)
    assert explanation.frequency_words == "about 6 times a year"
    assert explanation.money(explanation.average_order) == "£38"
    assert explanation.money(explanation.yearly_value) == "£228"
    assert explanation.away_words == "9 months"
    assert explanation.chance_words == "about 5 in 10"
    assert scoring.explain_priority(make_customer(days_since_purchase=None), now=now) is None


@pytest.mark.parametrize(
    ("days", "words"),
    [
        (0.2, "less than a day"),
        (1, "1 day"),
        (10, "10 days"),
        (21, "3 weeks"),
        (274, "9 months"),
        (800, "about 2 years"),
    ],
)
def test_durations_read_as_people_say_them(days, words):
    assert scoring.duration_words(days) == words
