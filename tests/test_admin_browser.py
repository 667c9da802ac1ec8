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
from selenium.webdriver.support.ui import Select, WebDriverWait

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


def _ids(driver: WebDriver, selector: str) -> list[str] | None:
    """The ``data-task-id`` of the rows ``selector`` finds, or ``None`` while they are being redrawn."""
    try:
        return [row.get_attribute("data-task-id") or "" for row in driver.find_elements(By.CSS_SELECTOR, selector)]
    except StaleElementReferenceException:
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


def test_tasks_tab_finds_a_task_by_id_filters_by_state_and_a_queue_is_purged(
    browser: WebDriver,
    service: ServiceProcess,
    start_worker: Callable[..., WorkerProcess],
    client: JobClient,
    tmp_path: Path,
) -> None:
    # Given a worker, a job that succeeded for user u1, one that failed, and one cancelled
    start_worker()
    done = client.send("worker.test.echo", ("hello",), user_id="u1")
    failed = client.send("tests.fail", ("the warehouse is read-only",))
    wait_until(lambda: client.store.is_final(done) and client.store.is_final(failed))
    # And three jobs waiting on a queue that no worker consumes
    stranded = [client.send("tests.pid", (0.0,), queue_name="orchestration") for _ in range(3)]

    def wait_for(condition: Callable[[WebDriver], Any], what: str) -> Any:
        try:
            return WebDriverWait(browser, 20).until(condition)
        except TimeoutException:
            browser.save_screenshot(str(tmp_path / "failure.png"))
            page = browser.find_element(By.TAG_NAME, "body").text
            raise AssertionError(f"{what}; the page shows:\n{page[:3000]}") from None

    browser.get(service.url + "/admin")
    browser.find_element(By.ID, "key").send_keys(ADMIN_KEY)
    browser.find_element(By.ID, "login").click()

    # Then the stranded queue is flagged, with a warning naming it
    wait_for(lambda d: "orchestration" in (_text(d, "#warnings") or ""), "no warning about the unconsumed queue")
    row = wait_for(lambda d: _text(d, '#queues tr[data-queue="orchestration"]'), "no orchestration row")
    assert "no consumer" in row and row.split()[:2] == ["orchestration", "no"]

    # When its waiting jobs are opened
    _click(browser, '#queues tr[data-queue="orchestration"] button.show-jobs')

    # Then they are listed in order
    wait_for(lambda d: _ids(d, "#waiting tbody tr[data-task-id]") == stranded, "jobs not listed in order")

    # When the queue is purged (two clicks)
    _click(browser, "#waiting-section button.purge")
    _click(browser, "#waiting-section button.purge")

    # Then nothing waits any more, and every poller reads REVOKED
    wait_for(lambda d: "Nothing is waiting" in (_text(d, "#waiting") or ""), "jobs still listed")
    wait_for(lambda d: not d.find_elements(By.CSS_SELECTOR, '#queues tr[data-queue="orchestration"]'), "queue shown")
    assert not (_text(browser, "#warnings") or "")
    assert [client.result(task).state for task in stranded] == ["REVOKED"] * 3
    assert [client.get_task_status(task)["status"] for task in stranded] == ["cancelled"] * 3

    # When the Tasks tab is opened and a finished task is searched by its id
    _click(browser, "#tab-tasks")
    browser.find_element(By.ID, "task-search").send_keys(done)
    _click(browser, "#filter-apply")

    # Then that task alone is shown, with its state, actor and user
    wait_for(lambda d: _ids(d, "#tasks tbody tr") == [done], "search by id")
    found = wait_for(lambda d: _text(d, f'#tasks tr[data-task-id="{done}"]'), "the task's row")
    assert "SUCCESS" in found and "worker.test.echo" in found and "u1" in found

    # When the search is cleared and the tasks filtered by state FAILURE
    _click(browser, "#filter-clear")
    Select(browser.find_element(By.ID, "filter-state")).select_by_visible_text("FAILURE")
    _click(browser, "#filter-apply")

    # Then only the failed task is shown, with its error type
    wait_for(lambda d: _ids(d, "#tasks tbody tr") == [failed], "filter by state")
    assert "ValueError" in wait_for(lambda d: _text(d, f'#tasks tr[data-task-id="{failed}"]'), "the failed row")

    # And without a filter, the purged jobs are in the history as REVOKED
    Select(browser.find_element(By.ID, "filter-state")).select_by_visible_text("Any state")
    _click(browser, "#filter-apply")
    wait_for(lambda d: len(_ids(d, "#tasks tbody tr[data-task-id]") or ()) == 5, "history rows")

    # (RJ_TASKS_SCREENSHOT=docs/admin-tasks.png refreshes the screenshot in the docs.)
    screenshot = os.environ.get("RJ_TASKS_SCREENSHOT") or str(tmp_path / "tasks.png")
    browser.set_window_size(1280, int(browser.execute_script("return document.body.scrollHeight")) + 140)
    time.sleep(0.5)
    browser.save_screenshot(screenshot)
    assert Path(screenshot).stat().st_size > 10_000
