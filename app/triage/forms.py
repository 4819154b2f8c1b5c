"""Triage form."""

from flask_wtf import FlaskForm
from wtforms import HiddenField
from wtforms.validators import AnyOf, DataRequired

from app.models import Outcome


class OutcomeForm(FlaskForm):
    """Confirm an outcome: one button per outcome, each posting its value."""

    outcome = HiddenField(validators=[DataRequired(), AnyOf([outcome.value for outcome in Outcome])])
