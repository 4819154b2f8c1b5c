"""Winback: win back lapsed customers. `create_app()` assembles the application and does no work."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from config import Config, load_config


class Winback(Flask):
    """Flask, remembering which hooks and views are plain functions: Flask asks for each of them
    on every request (about ten times) whether it is a coroutine function."""

    _plain_limit = 4096

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._plain: set[Any] = set()

    def ensure_sync(self, func: Any) -> Any:
        try:
            if func in self._plain:
                return func
        except TypeError:  # an unhashable callable: asked every time, as Flask does
            return super().ensure_sync(func)
        synced = super().ensure_sync(func)
        if synced is func:
            if len(self._plain) >= self._plain_limit:  # functions made afresh each time
                self._plain.clear()
            self._plain.add(func)
        return synced


def create_app(config_class: type[Config] | None = None, **overrides: Any) -> Flask:
    """Build the app: configuration, extensions, blueprints, error pages and commands."""
    config_class = config_class or load_config()
    config_class.finalise()
    app = Winback(
        __name__,
        instance_path=config_class.INSTANCE_PATH,
        template_folder="../templates",
    )
    app.config.from_object(config_class)
    app.config.update(overrides)
    if app.config["PROXY_COUNT"]:
        count = app.config["PROXY_COUNT"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=count, x_proto=count)  # type: ignore[method-assign]

    register_logging(app)

    register_extensions(app)
    register_blueprints(app)
    register_errorhandlers(app)
    register_security(app)
    register_template_helpers(app)
    register_commands(app)
    return app


def register_logging(app: Flask) -> None:
    """Send the app's own log lines (logins, audit, sending) to standard error once."""
    logger = logging.getLogger("winback")
    logger.setLevel(str(app.config["LOG_LEVEL"]).upper())
    # Only when nothing else is set up: a root handler (gunicorn --log-config) would print twice.
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)


def register_extensions(app: Flask) -> None:
    """Bind every extension created unbound in app/extensions.py."""
    from app import database, i18n
    from app.auth.session import init_login
    from app.extensions import cache, csrf, db, limiter, mail, migrate
    from app.tasks import celery_init_app

    database.engine_options(app)
    db.init_app(app)
    database.init_app(app)
    migrate.init_app(app, db, directory=str(app.root_path + "/../migrations"), render_as_batch=True)
    mail.init_app(app)
    csrf.init_app(app)
    limiter.init_app(app)
    check_limits_in_views_only(app, limiter)
    cache.init_app(app)
    init_login(app)
    i18n.init_app(app)
    celery_init_app(app)


def check_limits_in_views_only(app: Flask, limiter: Any) -> None:
    """Drop Flask-Limiter's check before every request when there is nothing for it to check:
    no default, application or meta limits are configured, and every @limiter.limit view checks
    its own limits when it is called. Unlimited pages (the survey form among them) then skip
    its look-up; limited ones are limited exactly as before."""
    if any(app.config.get(key) for key in ("RATELIMIT_DEFAULT", "RATELIMIT_APPLICATION", "RATELIMIT_META")):
        return
    manager = limiter.limit_manager
    if manager.default_limits or manager.application_limits or limiter._meta_limits:
        return
    if manager._blueprint_limits:  # limits on a whole blueprint are checked only before the request
        return
    funcs = app.before_request_funcs.get(None, [])
    app.before_request_funcs[None] = [func for func in funcs if func != limiter._check_request_limit]


def register_blueprints(app: Flask) -> None:
    """Public pages, the staff area under /staff, the API and the health check."""
    from app.api.routes import bp as api_bp
    from app.auth.routes import bp as auth_bp
    from app.health.routes import bp as health_bp
    from app.staff.routes import bp as staff_bp
    from app.survey.routes import bp as survey_bp
    from app.unsubscribe.routes import bp as unsubscribe_bp
    from app.you_said_we_did.routes import bp as you_said_we_did_bp

    for blueprint in (survey_bp, unsubscribe_bp, you_said_we_did_bp, auth_bp, health_bp, staff_bp, api_bp):
        app.register_blueprint(blueprint)


def register_errorhandlers(app: Flask) -> None:
    from app import errors

    errors.init_app(app)


def register_security(app: Flask) -> None:
    from app import security, sessions

    app.session_interface = sessions.CookieSessions()
    security.init_app(app)


def register_template_helpers(app: Flask) -> None:
    from app import templating

    templating.init_app(app)


def register_commands(app: Flask) -> None:
    from app import cli

    cli.init_app(app)
