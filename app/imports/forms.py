"""The upload form."""

from flask_wtf import FlaskForm
from flask_wtf.file import FileAllowed, FileField, FileRequired
from wtforms import BooleanField, SelectChoice, SelectField, StringField, SubmitField, TextAreaField
from wtforms.validators import Length, Optional, Regexp

from app.models import ImportKind

KIND_LABELS = {
    ImportKind.CUSTOMERS: "Customers",
    ImportKind.ORDERS: "Orders",
    ImportKind.SUPPRESSIONS: "Suppression list (addresses never to email)",
}


class UploadForm(FlaskForm):
    """A CSV file, what it holds, and how to read it."""

    kind = SelectField(
        "What the file holds", choices=[SelectChoice(k.value, v) for k, v in KIND_LABELS.items()]
    )
    file = FileField(
        "CSV file",
        validators=[
            FileRequired("Choose a file."),
            FileAllowed(["csv", "txt", "tsv"], "Upload a .csv file."),
        ],
        description="UTF-8, with a header row; commas, semicolons or tabs. Shopify exports work as they are.",
    )
    day_first = BooleanField("Dates are day first (03/04/2025 is 3 April)")
    strict = BooleanField("Import nothing if any row is bad")
    mapping = TextAreaField(
        "Column names (optional)",
        validators=[Optional(), Length(max=800)],
        description=(
            "Only for files whose headers are not recognised: one COLUMN=FIELD per line, "
            "e.g. E-Mail=email or Order Number=order_id. The fields are listed in the CSV formats guide."
        ),
        render_kw={"rows": 3, "spellcheck": "false", "autocapitalize": "off"},
    )
    source = StringField(
        "Orders come from (optional)",
        validators=[
            Optional(),
            Length(max=40),
            Regexp(r"^[A-Za-z0-9_.\-]+$", message="Letters, digits, dots, dashes and underscores only."),
        ],
        description=(
            'For orders: "shopify", "csv" (the default) or your own name. Order ids are unique per '
            "source, so the same file imported twice changes nothing."
        ),
    )
    submit = SubmitField("Upload and import")
