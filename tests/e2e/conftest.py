"""Fixtures for the browser tests: one JupyterLab server and one Chromium for the session.

The tests skip, with the reason, when Playwright or a Chromium binary is missing
(`make system-deps` installs Debian's chromium when it runs as root or with sudo).
"""

from __future__ import annotations

import re

import pytest

from tests.e2e.jupyterlab import BROWSER_ARGS, SCREENSHOTS, LabServer, find_browser, screenshot


@pytest.fixture(scope="session")
def browser_path() -> str:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("Playwright is not installed (pip install -e '.[dev]')")
    path = find_browser()
    if path is None:
        pytest.skip(
            "no Chromium found: run `make system-deps` as root, `apt-get install chromium`, "
            "or set COURSE_E2E_BROWSER to a Chromium binary"
        )
    return path


@pytest.fixture(scope="session")
def browser(browser_path):
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(executable_path=browser_path, args=BROWSER_ARGS)
        try:
            yield browser
        finally:
            browser.close()
    finally:
        playwright.stop()


@pytest.fixture(scope="session")
def lab(browser, tmp_path_factory):
    """`make lab` on a free port (asked for after the browser, so a skip costs nothing)."""
    for stale in SCREENSHOTS.glob("FAILED-*"):
        stale.unlink()
    server = LabServer(tmp_path_factory.mktemp("e2e-lab"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def page(browser, lab, request):
    """A fresh browser context per test. On failure, tests/_artifacts/screenshots/ keeps
    FAILED-<test>.png and FAILED-<test>.log (browser console, JupyterLab log tail)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(30_000)
    page = context.new_page()
    console: list[str] = []
    page.on(
        "console",
        lambda m: console.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None,
    )
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    try:
        yield page
    finally:
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)
            try:
                screenshot(page, f"FAILED-{name}")
            except Exception:  # noqa: BLE001 - the page may be gone; keep the real error
                pass
            server_log = lab.log.read_text()[-6000:] if lab.log.exists() else ""
            (SCREENSHOTS / f"FAILED-{name}.log").write_text(
                "--- browser console (errors, warnings) ---\n"
                + "\n".join(console[-60:])
                + "\n\n--- JupyterLab log (tail) ---\n"
                + server_log
            )
        context.close()
        lab.shutdown_kernels()
