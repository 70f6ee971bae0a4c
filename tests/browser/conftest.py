"""Fixtures of the browser tests: headless Chromium (Debian's ``chromium`` driven by Playwright for
Python), an annotator logged in to the session's real Label Studio, and the backend under test.

Where no browser can be driven the tests skip and say why, unless ``DEXTR_REQUIRE_BROWSER=1``
(CI), which turns that into a failure. On a failed test the report lists the screenshots taken at
its key moments (under the test's temporary folder), the page's interactive calls and the
backend's log.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
for path in (str(HERE.parent), str(HERE)):  # services, labelstudio_server; lsui
    if path not in sys.path:
        sys.path.insert(0, path)

import lsui  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "browser: drives Label Studio's labeling page in headless Chromium")


def _unavailable(reason: str):
    if os.environ.get("DEXTR_REQUIRE_BROWSER") == "1":
        pytest.fail(f"DEXTR_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
    pytest.skip(f"browser tests skipped: {reason}")


@pytest.fixture(scope="session")
def chromium():
    """One headless Chromium for the session (each test gets a fresh context of its own)."""
    reason = lsui.browser_unavailable()
    if reason:
        _unavailable(reason)
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    try:
        browser = lsui.launch(playwright)
    except Exception as exc:  # noqa: BLE001 - e.g. missing shared libraries
        playwright.stop()
        _unavailable(f"{lsui.find_chromium()} did not start: {str(exc).splitlines()[0][:300]}")
    yield browser
    browser.close()
    playwright.stop()


@pytest.fixture(scope="session")
def inprocess_backend(chromium, label_studio, tmp_path_factory):
    """``dextr-backend serve`` (in-process predictions) from this checkout, shared by the in-process cases."""
    from services import Backend

    root = tmp_path_factory.mktemp("browser-backend")
    backend = Backend(lsui.backend_env(label_studio, root), log=root / "backend.log").start()
    yield backend
    backend.stop()


@pytest.fixture()
def annotator(chromium, label_studio, tmp_path):
    """A logged-in annotator in a fresh browser context: Label Studio's remembered toggles
    (Auto-Annotation, Auto-Accept) start off. Screenshots go to ``tmp_path/screens``."""
    from labelstudio_server import PASSWORD, USER

    person = lsui.Annotator(chromium, label_studio, tmp_path / "screens")
    person.login(USER, PASSWORD)
    yield person
    person.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.passed or report.when not in ("call", "setup"):
        return
    person = getattr(item, "funcargs", {}).get("annotator")
    lines = []
    if person is not None:
        try:
            person.screenshot("at-failure")
        except Exception as exc:  # noqa: BLE001 - the page may be gone
            lines.append(f"(no screenshot at failure: {str(exc).splitlines()[0][:200]})")
        lines += [str(p) for p in person.screenshots]
        report.sections.append(("screenshots", "\n".join(lines) or "(none)"))
        calls = [
            f"{len(i.points)} point(s) {i.kinds[:1]} -> HTTP {i.status}, "
            f"{'no result' if i.result is None else f'{len(i.result)} region(s)'}"
            f"{f', errors {i.errors}' if i.errors else ''}, {i.seconds:.2f} s"
            for i in person.interactions
        ]
        if person.lost_clicks:
            calls.append(f"{person.lost_clicks} click(s) placed nothing and were made again: {person.lost_click_notes}")
        report.sections.append(("interactive-annotating calls", "\n".join(calls) or "(none)"))
        if person.api_errors:
            report.sections.append(("Label Studio API errors seen by the page", "\n".join(person.api_errors[-20:])))
    logs = [
        str(b.log)
        for name in ("inprocess_backend", "queue_stack")
        for b in _backends(getattr(item, "funcargs", {}).get(name))
        if getattr(b, "log", None)
    ]
    if logs:
        report.sections.append(("logs", "\n".join(logs)))


def _backends(value):
    if value is None:
        return []
    if isinstance(value, dict):
        return [v for v in value.values() if hasattr(v, "log")] + list(value.get("workers", []))
    return [value]
