"""The survey form: five questions, labels exactly as in DESIGN."""

from __future__ import annotations

import re

from flask import current_app, g, request
from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    HiddenField,
    RadioField,
    SelectChoice,
    StringField,
    SubmitField,
    TelField,
    TextAreaField,
)
from wtforms.csrf.core import CSRF, CSRFTokenField
from wtforms.validators import DataRequired, Length, Optional, ValidationError

from app import tokens
from app.exceptions import ExpiredLink, InvalidLink
from app.models import ContactPreference, Response, StopReason, WouldReturn
from app.services.survey import MAX_FOLLOW_UP, Answers
from app.survey import choices

MAX_TEXT = 2000
PHONE_NEEDED = "Please give a phone number, or choose another way to reach you."
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _options(labels: dict) -> list[SelectChoice]:
    return [SelectChoice(key.value, label) for key, label in labels.items()]


def _strip_controls(value: str | None) -> str:
    """Remove control characters (keeping newlines and tabs); otherwise stored as typed."""
    return _CONTROL.sub("", value or "")


class LinkTokenField(CSRFTokenField):
    """The CSRF field, its token made when the page shows it rather than for every form built:
    a form that is only read and checked (an answer sent) signs nothing."""

    _token: str | None = None

    def process(self, *args, **kwargs) -> None:
        HiddenField.process(self, *args, **kwargs)  # what CSRFTokenField does, less the token

    @property
    def current_token(self) -> str:
        if self._token is None:
            self._token = self.csrf_impl.generate_csrf_token(self)
        return self._token

    @current_token.setter
    def current_token(self, value: str) -> None:
        self._token = value


class LinkCSRF(CSRF):
    """The survey form's CSRF token, bound to the survey link it was served for rather than to a
    cookie session.

    On these pages the link itself is what gives the right to answer: whoever holds it can open
    the form and send it, so a token kept in the session would protect nothing more, and it cost
    every opening a session cookie to write and sign. The token is signed with the app's keys
    (SECRET_KEY_FALLBACKS still verify), dated (WTF_CSRF_TIME_LIMIT, as for every other form)
    and good for its own link only; a page left open too long is refused as before, and the form
    shows the answers again."""

    field_class = LinkTokenField

    def setup_form(self, form):
        self.link = form.meta.csrf_context
        return super().setup_form(form)

    def generate_csrf_token(self, csrf_token_field) -> str:
        return form_token(self.link)

    def validate_csrf_token(self, form, field) -> None:
        if not field.data:
            raise ValidationError("The CSRF token is missing.")
        try:
            tokens.check_form_token(
                field.data, self.link, max_age=int(current_app.config["WTF_CSRF_TIME_LIMIT"])
            )
        except ExpiredLink as exc:
            raise ValidationError("The CSRF token has expired.") from exc
        except InvalidLink as exc:
            raise ValidationError("The CSRF token is invalid.") from exc


def form_token(link: str) -> str:
    """This request's CSRF token for the form behind `link`: one per request, as Flask-WTF does,
    so that every rendering of the page in one request carries the same token."""
    cached = g.get("survey_form_token")
    if cached is None or cached[0] != link:
        cached = g.survey_form_token = (link, tokens.make_form_token(link))
    return cached[1]


class SurveyForm(FlaskForm):
    """What would it take to win you back?"""

    class Meta:
        csrf_class = LinkCSRF

        @property
        def csrf_context(self) -> str:
            """The survey link of this request (the URL's token)."""
            return (request.view_args or {}).get("token", "")

    stop_reason = RadioField(
        choices.QUESTION_STOP_REASON,
        choices=_options(choices.STOP_REASON_LABELS),
        validators=[DataRequired(message="Please choose what made you stop.")],
    )
    better_elsewhere = StringField(
        choices.LABEL_BETTER_ELSEWHERE, validators=[Optional(), Length(max=200)], filters=[_strip_controls]
    )
    win_back_text = TextAreaField(
        choices.QUESTION_WIN_BACK,
        validators=[Optional(), Length(max=MAX_TEXT)],
        filters=[_strip_controls],
    )
    would_return = RadioField(
        choices.QUESTION_WOULD_RETURN,
        choices=_options(choices.WOULD_RETURN_LABELS),
        validators=[DataRequired(message="Please tell us whether you would buy from us again.")],
    )
    contact_via = RadioField(
        choices.QUESTION_CONTACT,
        choices=_options(choices.CONTACT_LABELS),
        validators=[DataRequired(message="Please choose how we should get back to you.")],
    )
    phone = TelField(
        choices.LABEL_PHONE,
        validators=[Optional(), Length(max=40)],
        filters=[_strip_controls],
        render_kw={"autocomplete": "tel"},
    )
    may_quote = BooleanField(choices.QUESTION_MAY_QUOTE)
    # "1" when changing answers already sent: only then may a submission replace them.
    edit = HiddenField()
    submit = SubmitField("Send my answers")

    @classmethod
    def from_response(cls, response: Response) -> SurveyForm:
        """The form filled with stored answers, to change them."""
        form = cls(
            data={
                "stop_reason": response.stop_reason.value,
                "better_elsewhere": response.better_elsewhere,
                "win_back_text": response.win_back_text,
                "would_return": response.would_return.value,
                "contact_via": response.contact_via.value,
                "phone": response.phone,
                "may_quote": response.may_quote,
                "edit": "1",
            }
        )
        return form

    @property
    def only_csrf_failed(self) -> bool:
        """True when the answers are fine and only the form's time ran out."""
        return bool(self.csrf_token.errors) and all(
            not errors for name, errors in self.errors.items() if name != "csrf_token"
        )

    def validate(self, extra_validators=None) -> bool:
        """The fields' own checks, then: a phone number is needed when "Phone" is chosen (an
        Optional() field skips its inline validators when empty, so this is checked here)."""
        valid = super().validate(extra_validators)
        if self.contact_via.data == ContactPreference.PHONE.value and not (self.phone.data or "").strip():
            self.phone.errors = [*self.phone.errors, PHONE_NEEDED]
            return False
        return valid

    def answers(self) -> Answers:
        """The validated answers for the service."""
        stop_reason = StopReason(self.stop_reason.data)
        contact = ContactPreference(self.contact_via.data)
        return Answers(
            stop_reason=stop_reason,
            better_elsewhere=(self.better_elsewhere.data or "").strip()
            if stop_reason == StopReason.BETTER_ELSEWHERE
            else "",
            win_back_text=self.win_back_text.data or "",
            would_return=WouldReturn(self.would_return.data),
            contact_via=contact,
            phone=(self.phone.data or "").strip() if contact == ContactPreference.PHONE else "",
            may_quote=bool(self.may_quote.data),
        )


class FollowUpForm(FlaskForm):
    """The one optional question after "No, never"."""

    follow_up_text = TextAreaField(
        choices.QUESTION_FOLLOW_UP,
        validators=[Optional(), Length(max=MAX_FOLLOW_UP)],
        filters=[_strip_controls],
    )
    submit = SubmitField("Send")
