"""Browser fixtures: Debian's Chromium driven by Playwright against the `live_server`.

Every page a test opens runs in a fresh browser context that lets requests reach only
the live server's own origin: anything else is aborted and recorded, and a test that
loaded anything from another host fails. Console errors (a CSP violation, a script
error) and sub-resources that fail to load fail the test too. Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORTS: dict[str, dict[str, Any]] = {
    "phone": {
        "viewport": {"width": 390, "height": 844},
        "is_mobile": True,
        "has_touch": True,
        "device_scale_factor": 1,
    },
    "desktop": {"viewport": {"width": 1280, "height": 900}, "device_scale_factor": 1},
}


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"browser tests need Chromium at {CHROMIUM}")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class Tab:
    """One browser context and its page, plus what it tried to load and complained about."""

    page: Any
    origin: str
    viewport: str
    offsite: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return self.origin + path

    def goto(self, path: str) -> Any:
        return self.page.goto(self.url(path))

    def shot(self, name: str) -> Path:
        """A full-page screenshot, named for the step and the viewport."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}-{self.viewport}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def assert_fits_the_screen(self) -> None:
        """Nothing wider than the viewport: no sideways scrolling of the whole page."""
        overflow = self.page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{self.page.url} scrolls sideways by {overflow}px"

    def assert_clean(self) -> None:
        assert self.offsite == [], f"requests to other hosts: {self.offsite}"
        assert self.console_errors == [], f"console errors: {self.console_errors}"

    def focused(self) -> dict[str, Any]:
        """What has keyboard focus, and whether it shows a focus indicator."""
        return self.page.evaluate(
            """() => {
                const el = document.activeElement;
                const style = getComputedStyle(el);
                return {
                    tag: el.tagName.toLowerCase(),
                    id: el.id,
                    text: (el.innerText || el.value || "").trim().slice(0, 60),
                    outline: style.outlineStyle !== "none" && parseFloat(style.outlineWidth) >= 2,
                    visible: (() => {
                        const r = el.getBoundingClientRect();
                        return r.width > 0 && r.height > 0 && r.left >= 0 && r.top >= 0
                            && r.right <= innerWidth;
                    })(),
                };
            }"""
        )


@pytest.fixture
def open_tab(browser: Any, live_server: Any) -> Iterator[Callable[[str], Tab]]:
    """open_tab("phone" | "desktop") -> a Tab on a fresh context; all closed afterwards."""
    contexts: list[Any] = []
    tabs: list[Tab] = []
    origin = live_server.url
    own = re.compile(re.escape(origin) + r"(/|$)")

    def open_(viewport: str = "phone") -> Tab:
        context = browser.new_context(**VIEWPORTS[viewport], java_script_enabled=True)
        context.set_default_timeout(5_000)
        contexts.append(context)
        page = context.new_page()
        tab = Tab(page=page, origin=origin, viewport=viewport)

        def gatekeeper(route: Any) -> None:
            url = route.request.url
            if own.match(url):
                route.continue_()
            else:
                tab.offsite.append(url)
                route.abort()

        context.route("**/*", gatekeeper)

        def console(msg: Any) -> None:
            # A page answered 4xx on purpose (422 for a form with errors) is not a fault;
            # failed sub-resources are caught by `response` below instead.
            if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
                tab.console_errors.append(msg.text)

        def response(resp: Any) -> None:
            if resp.request.resource_type != "document" and resp.status >= 400:
                tab.console_errors.append(f"{resp.status} for {resp.url}")

        page.on("console", console)
        page.on("response", response)
        page.on("pageerror", lambda exc: tab.console_errors.append(str(exc)))
        tabs.append(tab)
        return tab

    try:
        yield open_
    finally:
        for context in contexts:
            context.close()
    for tab in tabs:
        tab.assert_clean()
