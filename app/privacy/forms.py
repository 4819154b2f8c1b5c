"""The confirmation an erasure needs."""

from flask_wtf import FlaskForm
from wtforms import HiddenField, SubmitField
from wtforms.validators import AnyOf, DataRequired


class ConfirmEraseForm(FlaskForm):
    """Posted only by the confirmation page: its hidden field says the admin saw what erasure
    removes. A bare button elsewhere lacks it and is shown that page first."""

    confirm = HiddenField(validators=[DataRequired(), AnyOf(["erase"])])
    submit = SubmitField("Erase this customer")
