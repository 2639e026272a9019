"""A real browser on the example app's Swagger UI: Authorize with a token, call a protected
operation and see 200; without the token, 401.

Needs Debian's chromium (``.ci/run`` installs it and sets FASTAPI_ZITADEL_REQUIRE_BROWSER=1, so
in CI a missing browser fails the test instead of skipping it). Swagger UI's files normally come
from a CDN; the test serves the same files from the fastapi-offline package instead, as nothing
but loopback is reachable here.
"""

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import fastapi_offline
import pytest

from example_app.app import create_app
from fastapi_zitadel import set_default_zitadel
from fastapi_zitadel.testing import LoopbackServer, StandInProject

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
STATIC = Path(fastapi_offline.__file__).parent / "static"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

if CHROMIUM is None and os.environ.get("FASTAPI_ZITADEL_REQUIRE_BROWSER") == "1":
    raise RuntimeError("chromium is required here but not installed")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package")


@pytest.fixture
def docs_url(zitadel_project: StandInProject) -> Iterator[str]:
    app = create_app(zitadel_project.introspection())
    with LoopbackServer(app) as url:
        yield url + "/docs"
    set_default_zitadel(None)


def test_swagger_ui_authorize_and_call(docs_url: str, zitadel_project: StandInProject) -> None:
    from playwright.sync_api import Route, expect, sync_playwright

    token = zitadel_project.token("alice", roles=["admin"])

    def serve_cdn_file(route: Route) -> None:
        name = route.request.url.rsplit("/", 1)[-1]
        route.fulfill(path=STATIC / name)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            page = browser.new_page()
            page.route("https://cdn.jsdelivr.net/**", serve_cdn_file)
            page.route("https://fastapi.tiangolo.com/**", lambda route: route.abort())
            page.goto(docs_url)
            operation = page.locator("#operations-default-list_items_items_get")
            expect(operation).to_be_visible(timeout=20_000)
            operation.locator(".opblock-summary").click()
            operation.locator("button.try-out__btn").click()

            def call_status() -> str:
                operation.locator("button.execute").click()
                status = operation.locator(".live-responses-table tbody .response-col_status")
                expect(status).to_be_visible(timeout=10_000)
                return status.inner_text().strip()

            assert call_status().startswith("401")

            page.locator("button.authorize").first.click()
            dialog = page.locator(".dialog-ux")
            dialog.locator("input").first.fill(token)
            dialog.locator("button.authorize").click()
            dialog.locator("button.btn-done").click()
            operation.locator("button.btn-clear").click()
            assert call_status().startswith("200")
            body = operation.locator(
                ".live-responses-table tbody .response-col_description"
            ).inner_text()
            assert "apple" in body
        finally:
            browser.close()
