"""A real browser on the example app's Swagger UI: Authorize with a token, call a protected
operation and see 200; without the token, 401. And the PKCE login through the stand-in's
login page, end to end.

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
from fastapi_zitadel.defaults import set_default_zitadel
from fastapi_zitadel.testing import LoopbackServer, StandInProject, base_url, bind_socket

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
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package"),
]


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


def test_swagger_ui_pkce_login_on_the_standin(zitadel_project: StandInProject) -> None:
    """The whole authorization code flow with PKCE, as a developer clicks it: Authorize in
    /docs opens the stand-in's login page, picking a user sends the browser back with a code,
    Swagger UI exchanges it (S256 verifier, cross-origin call to the token endpoint) and the
    protected call then answers 200 with that user's roles."""
    from playwright.sync_api import Route, expect, sync_playwright

    sock = bind_socket("127.0.0.1", 0)
    base = base_url("127.0.0.1", sock.getsockname()[1])
    zitadel_project.user("alice", roles=["admin"])
    zitadel_project.user("bob", roles=["reader"])
    web = zitadel_project.web_app([base + "/docs/oauth2-redirect"])
    app = create_app(zitadel_project.introspection(swagger_client_id=web.client_id))
    standin = zitadel_project.standin
    calls_before = standin.token_calls

    def serve_cdn_file(route: Route) -> None:
        name = route.request.url.rsplit("/", 1)[-1]
        route.fulfill(path=STATIC / name)

    try:
        with LoopbackServer(app, sock=sock) as url, sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS
            )
            try:
                context = browser.new_context()
                context.route("https://cdn.jsdelivr.net/**", serve_cdn_file)
                context.route("https://fastapi.tiangolo.com/**", lambda route: route.abort())
                page = context.new_page()
                page.goto(url + "/docs")
                operation = page.locator("#operations-default-list_items_items_get")
                expect(operation).to_be_visible(timeout=20_000)

                page.locator("button.authorize").first.click()
                dialog = page.locator(".dialog-ux")
                expect(dialog).to_contain_text("authorizationCode with PKCE")
                with page.expect_popup() as opened:
                    dialog.locator("button.authorize").first.click()
                login = opened.value
                login.wait_for_load_state()
                assert login.url.startswith(standin.issuer + "/oauth/v2/authorize?")
                assert "code_challenge_method=S256" in login.url
                expect(login.locator("h1")).to_contain_text("Sign in to shop")
                login.get_by_role("button", name="bob (reader)").click()

                # Back in Swagger UI: logged in (the dialog offers to log out).
                expect(dialog.locator("button.authorize", has_text="Logout")).to_be_visible(
                    timeout=20_000
                )
                dialog.locator("button.close-modal").click()

                operation.locator(".opblock-summary").click()
                operation.locator("button.try-out__btn").click()
                operation.locator("button.execute").click()
                status = operation.locator(".live-responses-table tbody .response-col_status")
                expect(status).to_be_visible(timeout=10_000)
                assert status.inner_text().strip().startswith("200")
                body = operation.locator(
                    ".live-responses-table tbody .response-col_description"
                ).inner_text()
                assert "apple" in body

                # bob is a reader: adding an item is refused with his token.
                add = page.locator("#operations-default-add_item_items_post")
                add.locator(".opblock-summary").click()
                add.locator("button.try-out__btn").click()
                add.locator("input[placeholder='name']").fill("kiwi")
                add.locator("button.execute").click()
                denied = add.locator(".live-responses-table tbody .response-col_status")
                expect(denied).to_be_visible(timeout=10_000)
                assert denied.inner_text().strip().startswith("403")
            finally:
                browser.close()
    finally:
        set_default_zitadel(None)
    assert standin.token_calls == calls_before + 1  # one code exchange
