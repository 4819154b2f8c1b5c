"""The settings form."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import SubmitField, TextAreaField
from wtforms.validators import Length


class UnfeasibleListForm(FlaskForm):
    """Things the business cannot offer, one per line."""

    unfeasible_list = TextAreaField(
        "Things we cannot offer",
        description=(
            "One per line, for example \u201cfree delivery\u201d or \u201cshop in Manchester\u201d. "
            "An answer that mentions one of them is suggested as unfeasible in the inbox."
        ),
        validators=[Length(max=40_000)],
    )
    submit = SubmitField("Save")
