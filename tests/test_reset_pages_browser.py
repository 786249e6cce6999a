"""Issue 12: the hosted reset pages in a real browser (headless Chromium through Selenium).

Everything real: ``identity serve`` (a subprocess on a free port, its public URL that port, so
the e-mailed link comes back to it), the relay and a Celery worker with a private broker, and
an SMTP sink the e-mail arrives in. In the browser: ask for a reset on the "forgot password"
page, read the e-mail, open its link, see the rules, send a weak password and read the error,
send a strong one, then log in with it through the API (``POST /v2/sessions``); and the
wrong-code and expired-code paths. Screenshots of every page go to
``test-artifacts/reset-pages/`` (printed at the end).

Needs Debian's ``chromium`` and ``chromium-driver`` (``scripts/ensure-services`` installs them
as root, so CI has them) and ``selenium`` (the ``test`` extra). Without them the test is
skipped with the reason, except in CI (``CI=true``), where it fails.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from api.settings import Settings
from tests.change_password_support import expire_code
from tests.support import STRONG_PASSWORD, Human, World
from tests.workers_support import (
    ROOT,
    Stack,
    stack_for,
)

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("IDENTITY_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("IDENTITY_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
ARTIFACTS = ROOT / "test-artifacts" / "reset-pages"
NEW_PASSWORD = "Browser!Passw0rd-7"
WAIT_S = 15


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _require_browser() -> None:
    """Skip (locally) or fail (in CI) when the browser or its driver is missing."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -e '.[test]')")
    if missing:
        reason = (
            f"the reset pages' browser test needs {', '.join(missing)}: apt-get install -y "
            "chromium chromium-driver (scripts/ensure-services does it as root)"
        )
        if _in_ci():
            pytest.fail(f"CI: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def served(
    base_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Stack, str]]:
    _require_browser()
    with stack_for(base_settings, tmp_path_factory.mktemp("reset-pages")) as stack:
        stack.start_worker()
        stack.start_relay()
        yield stack, stack.start_api(own_public_url=True)[1]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    # Debian's /usr/bin/chromium is a wrapper script; the binary is beside the driver's.
    binary = "/usr/lib/chromium/chromium" if CHROMIUM == "/usr/bin/chromium" else CHROMIUM
    options.binary_location = binary if os.access(binary, os.X_OK) else CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=900,1000",
        "--no-first-run",
        "--disable-extensions",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
async def bworld(served: tuple[Stack, str], base_settings: Settings) -> AsyncIterator[World]:
    """Users made through the served API, over real HTTP."""
    _, base = served
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        world = World(client, base_settings)
        await world.open()
        try:
            yield world
        finally:
            await world.close()


@pytest.fixture(scope="module")
def artifacts() -> Path:
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)
    return ARTIFACTS


def _shot(driver: Any, directory: Path, name: str) -> None:
    driver.save_screenshot(str(directory / f"{name}.png"))
    (directory / f"{name}.html").write_text(driver.page_source)


def _wait_for_heading(driver: Any, text: str) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, WAIT_S, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: d.find_element(By.TAG_NAME, "h1").text == text,
        f"a page titled {text!r}",
    )


def _submit(driver: Any) -> None:
    """Send the page's form and wait until the browser has left the page."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    page = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(driver, WAIT_S).until(expected_conditions.staleness_of(page), "the answer")


def _submit_password(driver: Any, password: str) -> None:
    from selenium.webdriver.common.by import By

    for field in ("password", "confirm"):
        box = driver.find_element(By.ID, field)
        box.clear()
        box.send_keys(password)
    _submit(driver)


def _wait_for_alert(driver: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, WAIT_S).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "[role=alert]"), "an error on the page"
    )


def _alert_text(driver: Any) -> str:
    from selenium.webdriver.common.by import By

    return " ".join(e.text for e in driver.find_elements(By.CSS_SELECTOR, "[role=alert]"))


def _styled(driver: Any) -> None:
    """The page's own style applied (its hash is in the CSP) and no policy violation logged
    (other than the favicon, which the policy refuses on purpose)."""
    from selenium.webdriver.common.by import By

    assert driver.find_element(By.TAG_NAME, "main").value_of_css_property("max-width") == "480px"
    violations = [
        entry["message"]
        for entry in driver.get_log("browser")
        if "Content Security Policy" in entry["message"] and "favicon" not in entry["message"]
    ]
    assert not violations, violations


async def _ask_for_link(
    driver: Any, base: str, stack: Stack, user: Human, directory: Path | None, count: int
) -> str:
    """Ask on the "forgot password" page; the link of the e-mail that arrives."""
    from selenium.webdriver.common.by import By

    driver.get(f"{base}/ui/password/forgot")
    _wait_for_heading(driver, "Forgot your password?")
    _styled(driver)
    if directory is not None:
        _shot(driver, directory, "01-forgot-password")
    driver.find_element(By.ID, "loginName").send_keys(user.username)
    _submit(driver)
    _wait_for_heading(driver, "Check your e-mail")
    assert driver.current_url == f"{base}/ui/password/sent"
    if directory is not None:
        _shot(driver, directory, "02-check-your-email")

    message = (await stack.wait_for_mails(user.email, count))[-1]
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    links = re.findall(re.escape(base) + r"/ui/password/reset\?\S+", body.get_content())
    assert len(links) == 1, body.get_content()
    return str(links[0])


async def test_reset_through_the_hosted_pages_in_a_browser(
    served: tuple[Stack, str],
    bworld: World,
    browser: Any,
    artifacts: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from selenium.webdriver.common.by import By

    stack, base = served
    org_id, admin = await bworld.admin()
    user = await bworld.human(admin, org_id)

    link = await _ask_for_link(browser, base, stack, user, artifacts, 1)
    query = parse_qs(urlsplit(link).query)
    assert query["userID"] == [user.user_id] and query["orgID"] == [org_id]

    browser.get(link)
    _wait_for_heading(browser, "Set a new password")
    _styled(browser)
    rules = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#rules li")]
    assert rules[0] == "At least 8 characters", rules
    assert "An upper-case letter (A to Z)" in rules and "Not a commonly used password" in rules
    form = browser.find_element(By.TAG_NAME, "form")
    assert form.get_attribute("action") == f"{base}/ui/password/reset"  # no code in it
    assert browser.find_element(By.CSS_SELECTOR, "label[for=password]").text == "New password"
    _shot(browser, artifacts, "03-set-a-new-password")

    _submit_password(browser, "weakpass1")
    _wait_for_heading(browser, "Set a new password")
    _wait_for_alert(browser)
    assert "The password needs an upper-case letter (A to Z)." in _alert_text(browser)
    password = browser.find_element(By.ID, "password")
    assert password.get_attribute("aria-invalid") == "true"
    assert "password-error" in (password.get_attribute("aria-describedby") or "")
    unmet = browser.find_element(By.CSS_SELECTOR, "#rules li.unmet").text
    assert unmet == "An upper-case letter (A to Z) (not met)", unmet
    assert browser.current_url == f"{base}/ui/password/reset"  # the code left the address
    _shot(browser, artifacts, "04-weak-password-refused")

    _submit_password(browser, NEW_PASSWORD)
    _wait_for_heading(browser, "Your password is changed")
    assert browser.current_url == f"{base}/ui/password/changed"
    _styled(browser)
    _shot(browser, artifacts, "05-password-changed")

    assert (await bworld.try_login(user.username, NEW_PASSWORD)).status_code == 201
    assert (await bworld.try_login(user.username, STRONG_PASSWORD)).status_code == 400

    # The link is spent: opening it again and sending a password says so.
    browser.get(link)
    _wait_for_heading(browser, "Set a new password")
    _submit_password(browser, "Another!Passw0rd-8")
    _wait_for_heading(browser, "This link cannot be used")
    assert "This link can no longer be used" in _alert_text(browser)
    assert browser.find_element(By.LINK_TEXT, "Ask for a new link").get_attribute("href") == (
        f"{base}/ui/password/forgot"
    )
    _shot(browser, artifacts, "06-link-already-used")
    # Neither the code (it was in the address) nor a password is in any process's log.
    code = query["code"][0]
    for log in stack.directory.glob("*.log"):
        text = log.read_text(errors="replace")
        assert not re.search(rf"\b{code}\b", text), log.name
        assert NEW_PASSWORD not in text and "weakpass1" not in text, log.name
    with capsys.disabled():
        print(f"\nreset pages: screenshots in {artifacts}")


async def test_wrong_and_expired_codes_in_a_browser(
    served: tuple[Stack, str], bworld: World, browser: Any, artifacts: Path
) -> None:
    stack, base = served
    org_id, admin = await bworld.admin()
    user = await bworld.human(admin, org_id)

    link = await _ask_for_link(browser, base, stack, user, None, 1)
    code = parse_qs(urlsplit(link).query)["code"][0]
    wrong = "ZZZZZZ" if code != "ZZZZZZ" else "YYYYYY"
    browser.get(link.replace(f"code={code}", f"code={wrong}"))
    _wait_for_heading(browser, "Set a new password")
    _submit_password(browser, NEW_PASSWORD)
    _wait_for_heading(browser, "This link cannot be used")
    assert "The code in this link is not correct" in _alert_text(browser)
    _shot(browser, artifacts, "07-wrong-code")

    await expire_code(bworld.settings, user.user_id)
    browser.get(link)
    _wait_for_heading(browser, "Set a new password")
    _submit_password(browser, NEW_PASSWORD)
    _wait_for_heading(browser, "This link cannot be used")
    assert "This link has expired. Ask for a new link below." in _alert_text(browser)
    _shot(browser, artifacts, "08-expired-code")
    assert (await bworld.try_login(user.username, STRONG_PASSWORD)).status_code == 201

    # A link cut short by a mail program: a page that says so, not an error of the API.
    browser.get(f"{base}/ui/password/reset?userID={user.user_id}")
    _wait_for_heading(browser, "This link is incomplete")
    _shot(browser, artifacts, "09-incomplete-link")
