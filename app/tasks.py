"""Background work on Celery. Tasks take ids, read everything else from the database, and are
safe to run twice. `celery_init_app` binds Celery to the Flask app; `flask worker` runs one."""

from __future__ import annotations

import logging
from pathlib import Path

from celery import Celery, Task, shared_task
from flask import Flask

from app.models import utcnow

log = logging.getLogger("winback.send")

RUN_IMPORT = "winback.run_import"
SEND_CAMPAIGN = "winback.send_campaign"
SEND_REMINDERS = "winback.send_reminders"
TICK = "winback.tick"
SEND_TEST = "winback.send_test"


def celery_init_app(app: Flask) -> Celery:
    """A Celery app whose tasks run inside this Flask app's context.

    With CELERY_BROKER_URL (Redis in production) tasks go to that broker. Without it they go
    through a folder in instance/ (kombu's filesystem transport): good for one machine, where
    `make run` starts a worker beside the web server."""

    class FlaskTask(Task):
        def __call__(self, *args, **kwargs):
            with app.app_context():
                return self.run(*args, **kwargs)

    celery = Celery(app.name, task_cls=FlaskTask)
    celery.config_from_object(_celery_settings(app))
    celery.set_default()
    app.extensions["celery"] = celery
    return celery


def _celery_settings(app: Flask) -> dict:
    settings = {
        "task_ignore_result": True,
        "task_acks_late": True,  # a worker killed mid-task leaves the task for another
        "worker_prefetch_multiplier": 1,
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
    }
    broker = app.config.get("CELERY_BROKER_URL")
    if broker:
        settings["broker_url"] = broker
    else:
        folder = Path(app.instance_path) / "celery"
        folder.mkdir(parents=True, exist_ok=True)
        settings["broker_url"] = "filesystem://"
        settings["broker_transport_options"] = {
            "data_folder_in": str(folder),
            "data_folder_out": str(folder),
            "control_folder": str(folder / "control"),
        }
    settings.update(app.config.get("CELERY_OVERRIDES", {}))
    return settings


@shared_task(name=RUN_IMPORT)
def run_import(job_id: int) -> None:
    """Run one uploaded import to the end (see app.services.import_jobs)."""
    from app.services import import_jobs

    import_jobs.run_import_job(job_id, now=utcnow())


@shared_task(name=SEND_CAMPAIGN)
def send_campaign(campaign_id: int) -> None:
    """Send a campaign's queued invitations. If the mail server fails, the unsent stay queued
    (the failure is logged and shown on the campaign page) for the next run."""
    import smtplib

    from app.exceptions import InvalidInput
    from app.services import campaigns

    try:
        campaigns.send_campaign(campaign_id)
    except (InvalidInput, smtplib.SMTPException, OSError) as exc:
        log.warning("campaign %s: sending stopped: %s", campaign_id, exc)


@shared_task(name=SEND_TEST)
def send_test(campaign_id: int, actor_id: int) -> None:
    """Send a test of a campaign's email to the staff member who asked (the outcome is recorded
    for the campaign page)."""
    from app.services import campaign_preview

    campaign_preview.run_test(campaign_id, actor_id, now=utcnow())


@shared_task(name=SEND_REMINDERS)
def send_reminders() -> None:
    """Send the reminders that are due, across campaigns (safe beside other workers)."""
    import smtplib

    from app.services import campaigns

    try:
        campaigns.send_due_reminders()
    except (smtplib.SMTPException, OSError) as exc:
        log.warning("reminders: sending stopped: %s", exc)


@shared_task(name=TICK)
def tick() -> None:
    """The periodic tick (for Celery beat): requeue stale claims, send due reminders and retries."""
    import smtplib

    from app.services import campaigns

    try:
        log.info("tick: %s", campaigns.tick().line())
    except (smtplib.SMTPException, OSError) as exc:
        log.warning("tick: sending stopped: %s", exc)
