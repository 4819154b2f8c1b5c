"""Staff customers pages: search, filters, priority order, keyset pages, one customer's page."""

from __future__ import annotations

import re
from datetime import timedelta
from html import unescape

import pytest
import sqlalchemy as sa
from flask import abort

from app.extensions import db
from app.models import (
    ContactPreference,
    Customer,
    CustomerStatus,
    Invitation,
    Order,
    StaffRole,
    StopReason,
    SuppressionReason,
    WouldReturn,
    utcnow,
)
from app.services import campaigns, scoring, suppressions, survey
from app.services.customers import SORT_COLUMNS, CustomerFilters, CustomerSort, list_customers
from app.services.survey import Answers
from tests.conftest import log_in, make_staff
from tests.factories import make_customer


def text_of(response) -> str:
    """The page's text with tags dropped and whitespace collapsed, as a reader sees it."""
    html = response.get_data(as_text=True)
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S)
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def listed_ids(response) -> list[int]:
    """The customer ids linked from a customers page, in order."""
    return [
        int(found) for found in re.findall(r'href="/staff/customers/(\d+)"', response.get_data(as_text=True))
    ]


def next_link(response) -> str | None:
    match = re.search(r'<a href="([^"]+)" rel="next">', response.get_data(as_text=True))
    return unescape(match.group(1)) if match else None


def add_customers(count: int, *, prefix: str, days: int | None = 400, orders: int = 3, spent: int = 9_000):
    """Many customers with the very same figures, in one commit."""
    now = utcnow()
    last = now - timedelta(days=days) if days is not None else None
    db.session.add_all(
        Customer(
            email=f"{prefix}{n}@example.com",
            email_hash=suppressions.email_hash(f"{prefix}{n}@example.com"),
            first_name="Same",
            last_name=f"Figures {n}",
            first_purchase_at=last - timedelta(days=300) if last else None,
            last_purchase_at=last,
            orders_count=orders if last else 0,
            total_spent=spent if last else 0,
        )
        for n in range(count)
    )
    db.session.commit()


@pytest.fixture
def viewer_client(app, client):
    """A client logged in as a viewer (may look, may not download)."""
    make_staff("viewer@example.com", StaffRole.VIEWER)
    assert log_in(client, "viewer@example.com").status_code == 302
    return client


@pytest.mark.parametrize("path", ["/staff/customers/", "/staff/customers/1", "/staff/customers/export.csv"])
def test_anonymous_visitors_are_sent_to_log_in(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/staff/login")


def test_search_finds_customers_by_email_or_name_in_any_case(staff_client):
    make_customer("ada@example.com", first_name="Ada", last_name="Lovelace")
    make_customer("grace@navy.example", first_name="Grace", last_name="Hopper")
    by_name = text_of(staff_client.get("/staff/customers/?q=HOPPER"))
    assert "grace@navy.example" in by_name
    assert "ada@example.com" not in by_name
    by_email = text_of(staff_client.get("/staff/customers/?q=ada@exa"))
    assert "ada@example.com" in by_email
    assert "grace@navy.example" not in by_email
    full_name = text_of(staff_client.get("/staff/customers/?q=ada+lovelace"))
    assert "ada@example.com" in full_name


def test_search_wildcards_are_taken_literally(staff_client):
    make_customer("a_b@example.com")
    make_customer("axb@example.com")
    page = text_of(staff_client.get("/staff/customers/?q=a_b"))
    assert "a_b@example.com" in page
    assert "axb@example.com" not in page
    assert "No customers match." in text_of(staff_client.get("/staff/customers/?q=%25"))


def test_filters_by_status_segment_and_lapse(staff_client):
    make_customer("recent@example.com", days_since_purchase=10, orders_count=9, total_spent=90_000)
    make_customer("lapsed@example.com", days_since_purchase=500, orders_count=1, total_spent=1_000)
    make_customer("gone@example.com", days_since_purchase=450)
    suppressions.suppress("gone@example.com", SuppressionReason.UNSUBSCRIBED, utcnow())
    db.session.commit()
    scoring.recompute_scores(now=utcnow())
    recent_segment = db.session.scalar(
        sa.select(Customer.segment).where(Customer.email == "recent@example.com")
    )

    lapsed = text_of(staff_client.get("/staff/customers/?lapsed=1"))
    assert "lapsed@example.com" in lapsed
    assert "recent@example.com" not in lapsed
    assert "gone@example.com" not in lapsed  # suppressed: not contactable, so not in the lapsed list

    suppressed = text_of(staff_client.get("/staff/customers/?status=suppressed"))
    assert "gone@example.com" in suppressed
    assert "recent@example.com" not in suppressed

    by_segment = text_of(staff_client.get("/staff/customers/", query_string={"segment": recent_segment}))
    assert "recent@example.com" in by_segment
    assert "lapsed@example.com" not in by_segment


def test_unknown_filter_values_are_ignored_not_an_error(staff_client):
    make_customer("ada@example.com")
    response = staff_client.get("/staff/customers/?status=nonsense&segment=Nope&sort=evil&after=x:y:z")
    assert response.status_code == 200
    assert "ada@example.com" in text_of(response)


def test_lapsed_customers_are_listed_by_win_back_priority_highest_first(staff_client):
    low = make_customer("low@example.com", days_since_purchase=900, orders_count=1, total_spent=1_500)
    high = make_customer("high@example.com", days_since_purchase=200, orders_count=12, total_spent=150_000)
    middle = make_customer("middle@example.com", days_since_purchase=400, orders_count=4, total_spent=20_000)
    make_customer("recent@example.com", days_since_purchase=5, orders_count=30, total_spent=900_000)
    scoring.recompute_scores(now=utcnow())
    response = staff_client.get("/staff/customers/?lapsed=1")
    assert listed_ids(response) == [high.id, middle.id, low.id]
    assert "Sorted by win-back priority, highest first." in text_of(response)


def test_other_orders_total_spent_and_last_purchase(staff_client):
    small = make_customer("small@example.com", total_spent=1_000, days_since_purchase=30)
    big = make_customer("big@example.com", total_spent=90_000, days_since_purchase=300)
    never = make_customer("never@example.com", days_since_purchase=None, total_spent=0)
    assert listed_ids(staff_client.get("/staff/customers/?sort=total_spent")) == [big.id, small.id, never.id]
    # Without a last purchase comes last; the default order outside the lapsed list.
    assert listed_ids(staff_client.get("/staff/customers/")) == [small.id, big.id, never.id]


def test_keyset_pages_neither_repeat_nor_skip_customers_with_equal_priorities(staff_client):
    add_customers(115, prefix="tie")
    add_customers(8, prefix="never", days=None)
    scoring.recompute_scores(now=utcnow())
    all_ids = set(db.session.scalars(sa.select(Customer.id)))
    priorities = set(db.session.scalars(sa.select(Customer.win_back_priority)))
    assert len(priorities) == 2  # one shared priority, and None for those who never bought

    seen: list[int] = []
    url = "/staff/customers/?sort=priority"
    pages = 0
    while url:
        response = staff_client.get(url)
        assert response.status_code == 200
        seen.extend(listed_ids(response))
        url = next_link(response)
        pages += 1
    assert pages == 3
    assert len(seen) == len(set(seen)) == len(all_ids)
    assert set(seen) == all_ids
    # Ties go by id, highest first; those without a priority come after, also by id.
    assert seen == sorted(seen[:115], reverse=True) + sorted(seen[115:], reverse=True)


@pytest.mark.parametrize("sort", list(CustomerSort))
def test_small_keyset_pages_cover_every_customer_once_for_every_order(app, sort):
    now = utcnow()
    for n in range(7):
        make_customer(f"c{n}@example.com", days_since_purchase=400 + (n % 2), total_spent=5_000 * (n % 3))
    add_customers(3, prefix="same", days=400)
    add_customers(3, prefix="never", days=None)
    # Customers of every status, so that pages merge the statuses' indexes.
    db.session.execute(
        sa.update(Customer)
        .where(Customer.email.in_(["c1@example.com", "same0@example.com", "never1@example.com"]))
        .values(status=CustomerStatus.SUPPRESSED)
    )
    db.session.execute(
        sa.update(Customer).where(Customer.email == "c4@example.com").values(status=CustomerStatus.ERASED)
    )
    db.session.commit()
    scoring.recompute_scores(now=now)
    filters = CustomerFilters(sort=sort)
    seen, after = [], None
    while True:
        page = list_customers(filters, now=now, after=after, limit=3)
        seen.extend(customer.id for customer in page.customers)
        if page.next_cursor is None:
            break
        after = page.next_cursor
    assert len(seen) == len(set(seen)) == 13
    # The same order as one long page, and as the database sorts them all at once.
    one_page = list_customers(filters, now=now, limit=100).customers
    assert seen == [customer.id for customer in one_page]
    column = getattr(Customer, SORT_COLUMNS[sort].key)
    everyone = db.session.scalars(
        sa.select(Customer.id).order_by(column.is_(None), column.desc(), Customer.id.desc())
    )
    assert seen == list(everyone)


def test_hostile_names_are_shown_as_text(staff_client):
    customer = make_customer(
        "x@example.com", first_name='<script>alert("x")</script>', last_name="<b>bold</b>"
    )
    scoring.recompute_scores(now=utcnow())
    for path in ("/staff/customers/", f"/staff/customers/{customer.id}"):
        html = staff_client.get(path).get_data(as_text=True)
        assert "<script>alert" not in html
        assert "<b>bold</b>" not in html
        assert "&lt;script&gt;alert(" in html


def test_the_table_stacks_into_labelled_rows_on_phones(staff_client):
    make_customer("ada@example.com")
    html = staff_client.get("/staff/customers/").get_data(as_text=True)
    assert 'class="stack customers"' in html
    assert 'data-label="Priority"' in html
    assert "style=" not in html


def test_admins_get_a_download_link_with_the_same_filters(staff_client):
    make_customer("ada@example.com")
    html = staff_client.get("/staff/customers/?q=ada&lapsed=1&sort=total_spent").get_data(as_text=True)
    link = unescape(re.search(r'href="(/staff/customers/export\.csv[^"]*)"', html).group(1))
    assert "q=ada" in link
    assert "lapsed=1" in link
    assert "sort=total_spent" in link


def test_viewers_see_customers_but_no_download_link(viewer_client):
    customer = make_customer("ada@example.com")
    page = viewer_client.get("/staff/customers/")
    assert page.status_code == 200
    assert "export.csv" not in page.get_data(as_text=True)
    assert viewer_client.get(f"/staff/customers/{customer.id}").status_code == 200


def test_an_unknown_customer_is_404(staff_client):
    assert staff_client.get("/staff/customers/999999").status_code == 404


# --- one customer ------------------------------------------------------------------------


def ada_with_history() -> tuple[Customer, int]:
    """Ada: 12 orders over two years, last 274 days ago; invited, answered, then unsubscribed."""
    now = utcnow()
    ada = make_customer(
        "ada@example.com", first_name="Ada", orders_count=12, total_spent=45_600, days_since_purchase=274
    )
    ada.first_purchase_at = ada.last_purchase_at - timedelta(days=730)
    for n, days_ago in enumerate((274, 400, 600)):
        db.session.add(
            Order(
                external_id=f"A-{1001 + n}",
                customer_id=ada.id,
                placed_at=now - timedelta(days=days_ago),
                amount=3_800,
            )
        )
    db.session.commit()
    scoring.recompute_scores(now=now)
    campaign, _ = campaigns.create_campaign(name="Spring <win-back>", lapsed_days=180, now=now)
    invitation = db.session.scalar(sa.select(Invitation).where(Invitation.campaign_id == campaign.id))
    response = survey.submit_response(
        invitation.id,
        Answers(
            stop_reason=StopReason.PRICE,
            better_elsewhere="",
            win_back_text="Cheaper delivery & <i>fewer</i> emails",
            would_return=WouldReturn.MAYBE,
            contact_via=ContactPreference.EMAIL,
            phone="",
            may_quote=False,
        ),
        now=now,
    )
    suppressions.suppress("ada@example.com", SuppressionReason.UNSUBSCRIBED, now)
    db.session.commit()
    return ada, response.id


def test_the_customer_page_shows_orders_newest_first(staff_client):
    ada, _ = ada_with_history()
    page = text_of(staff_client.get(f"/staff/customers/{ada.id}"))
    assert page.index("A-1001") < page.index("A-1002") < page.index("A-1003")
    assert "38.00 GBP" in page


def test_the_customer_page_shows_invitations_and_answers(staff_client):
    ada, response_id = ada_with_history()
    response = staff_client.get(f"/staff/customers/{ada.id}")
    html = response.get_data(as_text=True)
    page = text_of(response)
    assert "Spring <win-back>" in page
    assert "Spring <win-back>" not in html  # escaped in the markup
    assert "Cheaper delivery & <i>fewer</i> emails" in page
    assert "<i>fewer</i>" not in html
    assert f'href="/staff/triage/{response_id}"' in html
    assert "Price" in page
    assert "Outcome: not triaged yet" in page


def test_the_customer_page_shows_the_suppression(staff_client):
    ada, _ = ada_with_history()
    page = text_of(staff_client.get(f"/staff/customers/{ada.id}"))
    assert "Suppressed: this address is never emailed again. Reason: Unsubscribed, since" in page


def test_the_customer_page_explains_the_priority_in_plain_words(staff_client):
    ada, _ = ada_with_history()
    db.session.expire_all()
    stored = db.session.get(Customer, ada.id)
    page = text_of(staff_client.get(f"/staff/customers/{ada.id}"))
    assert (
        "If Ada comes back, they are likely to spend about £228 a year: they ordered about 6 times a year, "
        "£38 on average, and last ordered 9 months ago." in page
    )
    assert "We put the chance that Ada comes back at about 5 in 10." in page
    assert f"Win-back priority: £{round(stored.win_back_priority / 100)}" in page
    assert stored.segment in page
    assert f"Recency {stored.recency_score} of 5" in page


def test_a_customer_who_never_bought_has_nothing_to_score(staff_client):
    customer = make_customer("browser@example.com", days_since_purchase=None, orders_count=0, total_spent=0)
    page = text_of(staff_client.get(f"/staff/customers/{customer.id}"))
    assert "No purchase on record, so there is nothing to score." in page
    assert "Not on the suppression list." in page
    assert "Not invited to any campaign yet." in page
    assert "No answers from this customer." in page


def test_privacy_actions_are_offered_to_admins_only_when_those_pages_exist(app, client):
    customer = make_customer("ada@example.com")
    make_staff()
    make_staff("viewer@example.com", StaffRole.VIEWER)
    for endpoint, rule, methods in (
        ("staff.privacy.erase", "/staff/privacy/<int:customer_id>/erase", ["POST"]),
        ("staff.privacy.export_json", "/staff/privacy/<int:customer_id>.json", ["GET"]),
    ):
        if endpoint not in app.view_functions:
            app.add_url_rule(
                rule, endpoint=endpoint, view_func=lambda customer_id: abort(404), methods=methods
            )

    log_in(client, "admin@example.com")
    html = client.get(f"/staff/customers/{customer.id}").get_data(as_text=True)
    assert "Erase this customer" in html
    assert re.search(r'<form method="post" action="[^"]+">\s*<input type="hidden" name="csrf_token"', html)
    assert "Download their data (JSON)" in html

    client.post(
        "/staff/logout", data={"csrf_token": re.search(r'name="csrf_token" value="([^"]+)"', html)[1]}
    )
    log_in(client, "viewer@example.com")
    html = client.get(f"/staff/customers/{customer.id}").get_data(as_text=True)
    assert "Erase this customer" not in html
    assert "Download their data" not in html


def test_erased_customers_show_as_erased(staff_client):
    customer = make_customer("ada@example.com")
    customer.status = CustomerStatus.ERASED
    customer.erased_at = utcnow()
    db.session.commit()
    assert "Erased" in text_of(staff_client.get(f"/staff/customers/{customer.id}"))
