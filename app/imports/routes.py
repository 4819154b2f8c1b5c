"""Staff: upload a CSV and watch it import in the background."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, abort, flash, redirect, render_template, send_file, url_for
from flask_login import current_user

from app.auth.session import role_required
from app.exceptions import InvalidInput
from app.imports.forms import KIND_LABELS, UploadForm
from app.models import ImportKind, StaffRole, utcnow
from app.services import csvfiles, import_jobs

bp = Blueprint("imports", __name__, url_prefix="/imports")


@bp.route("/", methods=["GET", "POST"])
@role_required(StaffRole.ADMIN)
def index():
    """The upload form and the latest imports."""
    form = UploadForm()
    if form.validate_on_submit():
        upload = form.file.data
        try:
            job = import_jobs.start_import(
                ImportKind(form.kind.data),
                upload.filename,
                upload.stream,
                day_first=form.day_first.data,
                strict=form.strict.data,
                mapping=csvfiles.parse_mapping((form.mapping.data or "").splitlines()),
                source=(form.source.data or "").strip() or None,
                actor_id=current_user.id,
                now=utcnow(),
            )
        except InvalidInput as exc:
            flash(str(exc), "error")
        else:
            return redirect(url_for("staff.imports.show", job_id=job.id))
    status = 400 if form.is_submitted() else 200
    return render_template(
        "imports/index.html", form=form, jobs=import_jobs.list_jobs(), kinds=KIND_LABELS
    ), status


@bp.get("/<int:job_id>")
@role_required(StaffRole.ADMIN)
def show(job_id: int):
    """One import: progress while it runs (the page refreshes itself), then what it did."""
    job = import_jobs.get_job(job_id)
    percent = import_jobs.percent_done(job)
    return render_template("imports/show.html", job=job, percent=percent, kinds=KIND_LABELS)


@bp.get("/<int:job_id>/errors.csv")
@role_required(StaffRole.ADMIN)
def errors(job_id: int):
    """The bad rows of an import: line, column, value and reason."""
    job = import_jobs.get_job(job_id)
    if not job.error_report_path or not Path(job.error_report_path).exists():
        abort(404)
    return send_file(
        job.error_report_path,
        mimetype="text/csv",
        as_attachment=True,
        download_name=f"{Path(job.filename).stem}-errors.csv",
    )
