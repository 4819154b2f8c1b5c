"""Staff: /staff/settings, the settings kept in the database (admins only)."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, url_for

from app.auth.session import role_required
from app.exceptions import InvalidInput
from app.models import StaffRole, utcnow
from app.services import settings
from app.settings.forms import UnfeasibleListForm

bp = Blueprint("settings", __name__, url_prefix="/settings")


@bp.route("/", methods=["GET", "POST"])
@role_required(StaffRole.ADMIN)
def index():
    """The list of things the business cannot offer."""
    form = UnfeasibleListForm()
    if form.validate_on_submit():
        try:
            phrases = settings.save_unfeasible_list(form.unfeasible_list.data or "", now=utcnow())
        except InvalidInput as error:
            form.unfeasible_list.errors.append(str(error).partition(": ")[2])
        else:
            flash(f"Saved: {len(phrases)} things we cannot offer.", "success")
            return redirect(url_for("staff.settings.index"), code=303)
    elif not form.is_submitted():
        form.unfeasible_list.data = "\n".join(settings.unfeasible_phrases())
    return render_template("settings/index.html", form=form)
