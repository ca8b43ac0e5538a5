"""A real headless browser for the dashboard's tests: Debian's chromium through its
chromedriver and Selenium, with the few steps every dashboard test takes (sign in, wait for
what the page shows, click what it re-renders, confirm an action)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import TypeVar

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

T = TypeVar("T")


class NotSeen(AssertionError):
    """A wait for the page ran out; says what the page showed instead."""


def chromium() -> WebDriver:
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in (
        "--headless=new",
        "--no-sandbox",  # as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
        "--force-prefers-reduced-motion",
        "--force-dark-mode",  # the default theme in the screenshots
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # for page_state
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    return webdriver.Chrome(options=options, service=ChromeService(executable_path=driver))


def until(
    b: WebDriver, what: Callable[[WebDriver], T], timeout_s: float, poll_s: float = 0.05
) -> T:
    """`what` until it returns something true. The page re-renders its tables on every
    event, so an element may go stale between finding and reading it: that is tried again."""
    wait = WebDriverWait(
        b, timeout_s, poll_frequency=poll_s, ignored_exceptions=[StaleElementReferenceException]
    )
    try:
        return wait.until(what)  # type: ignore[no-any-return]
    except TimeoutException:
        raise NotSeen(f"not within {timeout_s}s; the page: {page_state(b)}") from None


def page_state(b: WebDriver) -> str:
    """What a failed wait saw: the URL, the views shown, the stored token's presence, the
    page's text and the browser console's errors."""
    script = (
        "return {url: location.href, ready: document.readyState,"
        " shown: Array.from(document.querySelectorAll('section.view')).filter((v) => !v.hidden)"
        ".map((v) => v.id), stored: sessionStorage.length,"
        " text: document.body.innerText.slice(0, 1500)}"
    )
    try:
        seen = b.execute_script(script)
        logs = [e["message"] for e in b.get_log("browser")][-10:]
    except Exception as exc:
        return f"(could not be read: {exc})"
    return f"{seen} console: {logs}"


def click(b: WebDriver, css: str, timeout_s: float = 10) -> None:
    """Find and click in one try (found a moment earlier, it may be stale by now)."""

    def clicked(b: WebDriver) -> bool:
        b.find_element(By.CSS_SELECTOR, css).click()
        return True

    until(b, clicked, timeout_s)


def text(b: WebDriver, css: str) -> str:
    """The visible text of the first element `css` selects ("" if none). Read again when the
    page replaced the element while it was being read."""
    for _ in range(10):
        try:
            found = b.find_elements(By.CSS_SELECTOR, css)
            return found[0].text if found else ""
        except StaleElementReferenceException:
            continue
    return ""


def sign_in(b: WebDriver, url: str, token: str) -> None:
    """Open the dashboard at `url` signed out (the tab's stored token dropped first) and
    submit `token`."""
    # Cleared from a page of the same origin that runs no script: cleared on the dashboard
    # itself, a sign-in still in flight there could store its token again.
    b.get(f"{url}/livez")
    b.execute_script("sessionStorage.clear()")
    b.get(f"{url}/ui/")
    until(b, lambda b: b.find_element(By.ID, "token").is_displayed(), 10)
    assert b.execute_script("return sessionStorage.length") == 0
    b.find_element(By.ID, "token").send_keys(token)
    b.find_element(By.ID, "login-submit").click()


def signed_in(b: WebDriver, url: str, token: str) -> None:
    sign_in(b, url, token)
    until(b, lambda b: b.find_element(By.ID, "status").is_displayed(), 10)
    until(b, lambda b: text(b, "#leader-name") not in ("", "…"), 10)


def go(b: WebDriver, view: str) -> None:
    b.find_element(By.CSS_SELECTOR, f'#nav a[data-view="{view}"]').click()
    until(b, lambda b: b.find_element(By.ID, f"view-{view}").is_displayed(), 5)


def confirm(b: WebDriver) -> None:
    until(b, lambda b: b.find_element(By.ID, "confirm").is_displayed(), 5)
    b.find_element(By.ID, "confirm-ok").click()


def rows(b: WebDriver, css: str) -> list[list[str]]:
    """A table's rows as lists of cell texts (`css` selects the rows), read in one script:
    a re-render cannot leave half of them stale."""
    script = (
        "return Array.from(document.querySelectorAll(arguments[0]))"
        ".map((tr) => Array.from(tr.cells).map((td) => td.innerText.trim()))"
    )
    return b.execute_script(script, css)  # type: ignore[no-any-return]
