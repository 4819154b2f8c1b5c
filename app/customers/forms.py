"""The customers page's search and filter form, read from the query string (GET, no CSRF)."""

from __future__ import annotations

from werkzeug.datastructures import MultiDict
from wtforms import BooleanField, Form, SearchField, SelectChoice, SelectField
from wtforms.validators import Length, Optional

from app.models import CustomerStatus
from app.services.customers import CustomerFilters, CustomerSort
from app.services.scoring import Segment
from app.survey.choices import label_for

SORT_LABELS = {
    CustomerSort.PRIORITY: "Win-back priority",
    CustomerSort.LAST_PURCHASE: "Last purchase",
    CustomerSort.TOTAL_SPENT: "Total spent",
}
SORT_DESCRIPTIONS = {
    CustomerSort.PRIORITY: "win-back priority, highest first",
    CustomerSort.LAST_PURCHASE: "last purchase, most recent first",
    CustomerSort.TOTAL_SPENT: "total spent, highest first",
}


class CustomerFilterForm(Form):
    """Search by email or name, filter by status, segment and lapse, choose the order."""

    q = SearchField("Search by email or name", validators=[Optional(), Length(max=100)])
    status = SelectField(
        "Status",
        choices=[SelectChoice("", "Any status")]
        + [SelectChoice(status.value, label_for(status)) for status in CustomerStatus],
        default="",
    )
    segment = SelectField(
        "Segment",
        choices=[SelectChoice("", "Any segment")] + [SelectChoice(segment.value) for segment in Segment],
        default="",
    )
    lapsed = BooleanField("Lapsed only", false_values=("", "0", "false"))
    sort = SelectField(
        "Sort by",
        choices=[SelectChoice("", "Default")]
        + [SelectChoice(sort.value, label) for sort, label in SORT_LABELS.items()],
        default="",
    )

    def __init__(self, args: MultiDict) -> None:
        super().__init__(formdata=args)
        # A bad value in a hand-edited URL drops that filter rather than failing the page.
        self.validate()
        for field in (self.status, self.segment, self.sort):
            if field.errors:
                field.data = ""
        if self.q.errors:
            self.q.data = (self.q.data or "")[:100]

    def filters(self) -> CustomerFilters:
        """The service's filters for what the form holds."""
        return CustomerFilters(
            search=(self.q.data or "").strip(),
            status=CustomerStatus(self.status.data) if self.status.data else None,
            segment=self.segment.data or None,
            lapsed_only=bool(self.lapsed.data),
            sort=CustomerSort(self.sort.data) if self.sort.data else None,
        )

    def query_args(self) -> dict[str, str]:
        """The filters as URL parameters, for the next-page and download links."""
        args = {
            "q": (self.q.data or "").strip(),
            "status": self.status.data or "",
            "segment": self.segment.data or "",
            "lapsed": "1" if self.lapsed.data else "",
            "sort": self.sort.data or "",
        }
        return {key: value for key, value in args.items() if value}
