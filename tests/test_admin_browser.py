"""The dashboard in headless Chromium: log in, find a dead-lettered job, requeue it, watch it complete."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from rosetta_jobs.client import JobClient

from .conftest import WorkerProcess, worker_env
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


def _wait(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"condition not met within {timeout} s")


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
    _wait(lambda: client.store.is_final(lost))
    old.stop()
    # And a worker that knows every actor, where one more job fails for good
    start_worker()
    broken = client.send("tests.fail", ("the warehouse is read-only",))
    _wait(lambda: client.store.is_final(broken))

    # When an operator opens the dashboard
    wait = WebDriverWait(browser, 20)
    browser.get(service.url + "/admin")

    # Then a login form is shown; the right key opens the dashboard
    browser.find_element(By.ID, "key").send_keys(ADMIN_KEY)
    browser.find_element(By.ID, "login").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f'#dead-letters tr[data-task-id="{lost}"]'))
    assert browser.current_url.rstrip("/").endswith("/admin")

    # And the queue, the worker, both dead letters and the failure are on it
    wait.until(lambda d: "1 worker process alive" in d.find_element(By.ID, "status").text)
    queue = browser.find_element(By.CSS_SELECTOR, '#queues tr[data-queue="default"]').text
    assert queue.split()[:5] == ["default", "0", "0", "0", "2"]  # ready, delayed, in progress, dead-lettered
    lost_row = browser.find_element(By.CSS_SELECTOR, f'#dead-letters tr[data-task-id="{lost}"]')
    assert "NotRegistered" in lost_row.text and "tests.pid" in lost_row.text
    broken_row = browser.find_element(By.CSS_SELECTOR, f'#dead-letters tr[data-task-id="{broken}"]')
    assert "the warehouse is read-only" in broken_row.text
    assert "the warehouse is read-only" in browser.find_element(By.ID, "failures").text
    assert browser.find_elements(By.CSS_SELECTOR, "#chart svg polyline")

    # When the failed job's details are opened
    broken_row.find_element(By.CSS_SELECTOR, "button.show-details").click()

    # Then its arguments and traceback are shown
    details = wait.until(
        lambda d: next(
            (row for row in d.find_elements(By.CSS_SELECTOR, "#dead-letters tr.details") if row.is_displayed()), None
        )
    )
    assert "the warehouse is read-only" in details.text and "ValueError" in details.text
    assert "Traceback" in details.text

    # When the lost job is requeued
    lost_row = browser.find_element(By.CSS_SELECTOR, f'#dead-letters tr[data-task-id="{lost}"]')
    lost_row.find_element(By.CSS_SELECTOR, "button.requeue").click()

    # Then the dashboard follows it to SUCCESS, and it leaves the dead letters
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f'#followed tr[data-task-id="{lost}"] .state-SUCCESS'))
    wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, f'#dead-letters tr[data-task-id="{lost}"]'))
    assert client.get_task_status(lost)["status"] == "completed"

    screenshot = os.environ.get("RJ_ADMIN_SCREENSHOT") or str(tmp_path / "admin.png")
    browser.save_screenshot(screenshot)
    assert Path(screenshot).stat().st_size > 10_000
