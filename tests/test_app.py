"""The app factory, configuration and health check."""

import subprocess
import sys
from pathlib import Path

import pytest

import config
from app import create_app


def test_production_refuses_to_start_without_a_secret_key(monkeypatch):
    monkeypatch.setattr(config.ProductionConfig, "SECRET_KEY", None)
    with pytest.raises(RuntimeError, match="SECRET_KEY is not set"):
        create_app(config.ProductionConfig)


def test_production_refuses_to_start_without_public_base_url(monkeypatch):
    monkeypatch.setattr(config.ProductionConfig, "SECRET_KEY", "x" * 64)
    monkeypatch.setattr(config.ProductionConfig, "PUBLIC_BASE_URL_SET", False)
    with pytest.raises(RuntimeError, match="PUBLIC_BASE_URL is not set"):
        create_app(config.ProductionConfig)


def test_production_starts_with_a_secret_key_and_secure_cookies(monkeypatch, tmp_path):
    monkeypatch.setattr(config.ProductionConfig, "SECRET_KEY", "x" * 64)
    monkeypatch.setattr(config.ProductionConfig, "PUBLIC_BASE_URL_SET", True)
    monkeypatch.setattr(config.ProductionConfig, "INSTANCE_PATH", str(tmp_path))
    app = create_app(config.ProductionConfig, SQLALCHEMY_DATABASE_URI="sqlite://")
    assert app.config["SESSION_COOKIE_SECURE"] is True
    assert app.config["SESSION_COOKIE_HTTPONLY"] is True
    assert app.config["SESSION_COOKIE_SAMESITE"] == "Lax"
    response = app.test_client().get("/healthz")
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")


def test_development_generates_a_secret_key_once_into_the_instance_folder(monkeypatch, tmp_path):
    monkeypatch.setattr(config, "INSTANCE_DIR", tmp_path)
    monkeypatch.setattr(config.DevelopmentConfig, "SECRET_KEY", None)
    config.DevelopmentConfig.finalise()
    first = config.DevelopmentConfig.SECRET_KEY
    monkeypatch.setattr(config.DevelopmentConfig, "SECRET_KEY", None)
    config.DevelopmentConfig.finalise()
    assert len(first) == 64
    assert first == config.DevelopmentConfig.SECRET_KEY
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("postgresql://postgres@127.0.0.1:5432/test", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
        ("postgres://u:p@db/winback", "postgresql+psycopg://u:p@db/winback"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
    ],
)
def test_database_urls_use_psycopg_3(given, used):
    assert config.database_url(given) == used


def test_unknown_environment_name_is_refused(monkeypatch):
    monkeypatch.setenv("WINBACK_ENV", "staging")
    with pytest.raises(RuntimeError, match="staging"):
        config.load_config()


def test_healthz_answers_200_with_the_database_reachable(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "database": "ok"}


def test_healthz_answers_503_when_the_database_is_unreachable(app, tmp_path):
    broken = create_app(
        config.TestingConfig, SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path}/missing-dir/none.db"
    )
    response = broken.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["database"] == "unreachable"


def test_sqlite_runs_with_wal_busy_timeout_and_foreign_keys(tmp_path):
    from app.extensions import db

    app = create_app(config.TestingConfig, SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path}/t.db")
    with app.app_context(), db.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000


def test_behind_a_proxy_the_visitors_address_is_used(tmp_path):
    from flask import request

    app = create_app(config.TestingConfig, PROXY_COUNT=1, SQLALCHEMY_DATABASE_URI="sqlite://")
    seen = {}

    @app.get("/_probe")
    def probe():
        seen["address"] = request.remote_addr
        return "ok"

    app.test_client().get("/_probe", headers={"X-Forwarded-For": "203.0.113.9"})
    assert seen["address"] == "203.0.113.9"


def test_plain_hooks_are_remembered_and_coroutines_still_go_through_flask(app):
    def plain():
        return "plain"

    assert app.ensure_sync(plain) is plain
    assert plain in app._plain

    async def coroutine():
        return "async"

    # Never remembered as plain: Flask wants its async extra for it, which the app does not use.
    with pytest.raises(RuntimeError, match="async"):
        app.ensure_sync(coroutine)
    assert coroutine not in app._plain

    class Unhashable:
        __hash__ = None

        def __call__(self):
            return "called"

    unhashable = Unhashable()
    assert app.ensure_sync(unhashable) is unhashable


def test_starting_the_app_does_not_load_the_compiled_csv_reader():
    # pyarrow costs every process about 65 MiB; only an orders import needs it.
    script = (
        "import sys; from app import create_app; from config import TestingConfig; "
        "import app.cli, app.tasks; create_app(TestingConfig, SQLALCHEMY_DATABASE_URI='sqlite://'); "
        "print('pyarrow' in sys.modules)"
    )
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=root
    )
    assert done.stdout.strip() == "False"
