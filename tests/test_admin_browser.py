"""The dashboard in headless Chromium: log in, find a dead-lettered job, requeue it, watch it complete."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from rosetta_jobs.client import JobClient

from .conftest import WorkerProcess, wait_until, worker_env
from .support.ops_service import ADMIN_KEY, ServiceProcess, start_service

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    """Debian's headless Chromium with a fresh profile; Selenium gets the driver's path, so it downloads nothing."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail("Debian's chromium and chromium-driver are needed: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,1500",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    yield driver
    driver.quit()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ServiceProcess]:
    env = worker_env(ADMIN_API_KEY=ADMIN_KEY, ROSETTA_DEPTH_SAMPLE_SECONDS="1")
    svc = start_service(env, tmp_path / "service.log")
    yield svc
    svc.stop()


def _click(driver: WebDriver, selector: str) -> None:
    """Click, again if the dashboard redrew the element in between (it refreshes every few seconds)."""
    for _ in range(5):
        try:
            driver.find_element(By.CSS_SELECTOR, selector).click()
            return
        except StaleElementReferenceException:
            time.sleep(0.2)
    raise AssertionError(f"{selector} kept going stale")


def _text(driver: WebDriver, selector: str) -> str | None:
    """The visible text of ``selector``, or ``None`` while it is hidden, missing or being redrawn."""
    try:
        element = driver.find_element(By.CSS_SELECTOR, selector)
        return element.text if element.is_displayed() else None
    except (NoSuchElementException, StaleElementReferenceException):
        return None


def test_log_in_requeue_a_dead_letter_and_see_it_complete(
    browser: WebDriver,
    service: ServiceProcess,
    start_worker: Callable[..., WorkerProcess],
    client: JobClient,
    tmp_path: Path,
) -> None:
    # Given a job dead-lettered by a worker that did not know its actor (a missing deploy)
    old = start_worker(modules=())
    lost = client.send("tests.pid", (0.0,))
    wait_until(lambda: client.store.is_final(lost))
    old.stop()
    # And a backlog of echo jobs (for the depth chart) drained by a worker that knows every actor
    for i in range(6):
        client.send("worker.test.echo", (str(i),), {"steps": 1, "step_seconds": 0.3})
    time.sleep(2.0)
    start_worker()
    # Where one more job fails for good
    broken = client.send("tests.fail", ("the warehouse is read-only",))
    wait_until(lambda: client.store.is_final(broken))

    # When an operator opens the dashboard
    def wait_for(condition: Callable[[WebDriver], Any], what: str) -> Any:
        try:
            return WebDriverWait(browser, 20).until(condition)
        except TimeoutException:
            browser.save_screenshot(str(tmp_path / "failure.png"))
            page = browser.find_element(By.TAG_NAME, "body").text
            raise AssertionError(f"{what}; the page shows:\n{page[:3000]}") from None

    browser.get(service.url + "/admin")

    # Then a login form is shown; the right key opens the dashboard
    browser.find_element(By.ID, "key").send_keys(ADMIN_KEY)
    browser.find_element(By.ID, "login").click()
    wait_for(lambda d: d.find_elements(By.CSS_SELECTOR, f'#dead-letters tr[data-task-id="{lost}"]'), "no dead letter")
    assert browser.current_url.rstrip("/").endswith("/admin")

    # And the queue, the worker, both dead letters and the failure are on it
    wait_for(lambda d: "1 worker process alive" in (_text(d, "#status") or ""), "worker not shown")
    queue = browser.find_element(By.CSS_SELECTOR, '#queues tr[data-queue="default"]').text
    assert queue.split()[:5] == ["default", "0", "0", "0", "2"]  # ready, delayed, in progress, dead-lettered
    lost_row = browser.find_element(By.CSS_SELECTOR, f'#dead-letters tr[data-task-id="{lost}"]')
    assert "NotRegistered" in lost_row.text and "tests.pid" in lost_row.text
    broken_row = browser.find_element(By.CSS_SELECTOR, f'#dead-letters tr[data-task-id="{broken}"]')
    assert "the warehouse is read-only" in broken_row.text
    assert "the warehouse is read-only" in browser.find_element(By.ID, "failures").text
    assert browser.find_elements(By.CSS_SELECTOR, "#chart svg polyline")

    # When the failed job's details are opened
    _click(browser, f'#dead-letters tr[data-task-id="{broken}"] button.show-details')

    # Then its arguments and traceback are shown
    details = wait_for(lambda d: _text(d, f'#dead-letters tr[data-task-id="{broken}"] + tr.details'), "no details")
    assert "the warehouse is read-only" in details and "ValueError" in details
    assert "Traceback" in details

    # When the lost job is requeued
    _click(browser, f'#dead-letters tr[data-task-id="{lost}"] button.requeue')

    # Then the dashboard follows it to SUCCESS, and it leaves the dead letters
    followed = f'#followed tr[data-task-id="{lost}"] .state-SUCCESS'
    wait_for(lambda d: d.find_elements(By.CSS_SELECTOR, followed), "requeued job not followed to SUCCESS")
    gone = f'#dead-letters tr[data-task-id="{lost}"]'
    wait_for(lambda d: not d.find_elements(By.CSS_SELECTOR, gone), "requeued job still dead-lettered")
    assert client.get_task_status(lost)["status"] == "completed"

    # (A whole-page screenshot; RJ_ADMIN_SCREENSHOT=docs/admin.png refreshes the one in the docs.)
    screenshot = os.environ.get("RJ_ADMIN_SCREENSHOT") or str(tmp_path / "admin.png")
    browser.set_window_size(1280, int(browser.execute_script("return document.body.scrollHeight")) + 140)
    time.sleep(0.5)
    browser.save_screenshot(screenshot)
    assert Path(screenshot).stat().st_size > 10_000
