"""Browser tests: Playwright's Python package driving the system Chromium (never a downloaded
browser) against the app served over real HTTP on loopback. Every test here is marked `browser`
(`pytest -m browser` runs only these, `-m "not browser"` skips them).

Without Chromium the tests fail when CI is set, and are skipped with how to install it otherwise."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from werkzeug.serving import make_server

from app.extensions import db
from app.models import Invitation, utcnow
from app.services import campaigns
from app.tokens import make_survey_token
from tests.conftest import free_port
from tests.factories import make_customer

# DESIGN §8: the flags that keep Chromium off the network and quiet on this machine.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
INSTALL_HINT = (
    "Chromium was not found on PATH. Install the system browser to run the browser tests: "
    "`sudo apt-get install chromium chromium-driver` (Debian/Ubuntu). "
    "Playwright's own browser download is never used."
)


def pytest_collection_modifyitems(items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def database():
    """Browser tests check what people see: SQLite is enough (the services are tested on both)."""
    return {"name": "sqlite", "schema": None}


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(INSTALL_HINT, pytrace=False)
        pytest.skip(INSTALL_HINT)
    return path


@pytest.fixture(scope="session")
def browser(chromium_path, tmp_path_factory) -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path, headless=True, args=CHROMIUM_FLAGS
        )
        yield browser
        browser.close()


@pytest.fixture
def live_server(app) -> Iterator[str]:
    """The app served over real HTTP on loopback (a werkzeug server thread); links in emails
    point at it."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app.config["PUBLIC_BASE_URL"] = base
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield base
    server.shutdown()
    thread.join(timeout=5)


class Visit:
    """One browser context: its page, what it requested, and any dialog or page error."""

    def __init__(self, context, base: str) -> None:
        self.context = context
        self.base = base
        self.page = context.new_page()
        self.requests: list = []
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda request: self.requests.append(request))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))

        def on_dialog(dialog) -> None:
            self.dialogs.append(dialog.message)
            dialog.dismiss()

        self.page.on("dialog", on_dialog)

    def go(self, path: str):
        return self.page.goto(path if path.startswith("http") else self.base + path)


@pytest.fixture
def visit(browser, live_server) -> Iterator:
    """Open browser contexts (360 px wide by default, JavaScript on unless told)."""
    contexts = []

    def open_context(*, width: int = 360, javascript: bool = True) -> Visit:
        context = browser.new_context(
            viewport={"width": width, "height": 740}, java_script_enabled=javascript
        )
        context.set_default_timeout(10_000)
        contexts.append(context)
        return Visit(context, live_server)

    yield open_context
    for context in contexts:
        context.close()


@pytest.fixture
def invitation(app):
    make_customer("ada@example.com", first_name="Ada", phone="+44 20 0000 0001")
    campaign, _ = campaigns.create_campaign(name="Survey", lapsed_days=180, now=utcnow())
    invitation = db.session.scalar(sa.select(Invitation).where(Invitation.campaign_id == campaign.id))
    db.session.commit()
    return invitation


@pytest.fixture
def survey_path(invitation) -> str:
    return f"/s/{make_survey_token(invitation.reference, invitation.nonce)}"


def axe_violations(page, impacts: tuple[str, ...] = ("serious", "critical")) -> list[dict]:
    """axe-core's violations of these impacts on the page as it is now (axe.min.js is read from
    the installed axe-playwright-python package: no network)."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    return [
        {"id": item["id"], "impact": item["impact"], "nodes": [node["html"] for node in item["nodes"]]}
        for item in results.response["violations"]
        if item["impact"] in impacts
    ]
