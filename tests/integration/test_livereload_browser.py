"""`prefork APP --reload --livereload` in a real headless Chromium: pages refresh, failures show.

The server is a real `prefork` process in its own session (killed by process group at teardown);
the browser is Debian's chromium driven by its chromedriver through selenium (both installed by
.ci/run). Every wait is a WebDriverWait on a condition, with a deadline.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from tests.integration.integration_util import PYTHON, REPO, children_by_title, http_get, save, wait_for

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

DEADLINE = 20.0  # seconds; only matters when something is broken
POLL = 0.02      # how often a WebDriverWait looks

APP = '''\
import content


def application(environ, start_response):
    if environ["PATH_INFO"] == "/data.json":
        body = b'{"ok": true}'
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    method = environ["REQUEST_METHOD"]
    body = ("<!doctype html><html><head><title>live</title></head><body>"
            f"<h1 id='message'>{content.MESSAGE}</h1><p id='method'>{method}</p></body></html>").encode()
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''


ASGI_APP = '''\
import content


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = ("<!doctype html><html><head><title>live</title></head><body>"
            f"<h1 id='message'>{content.MESSAGE}</h1><p id='method'>{scope['method']}</p></body></html>").encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/html; charset=utf-8"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body[:40], "more_body": True})
    await send({"type": "http.response.body", "body": body[40:]})
'''


def _binary(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser():
    chromium = _binary("chromium", "chromium-browser")
    driver_path = _binary("chromedriver")
    if not chromium or not driver_path:
        message = "needs Debian's chromium and chromium-driver (installed by .ci/run)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                 "--window-size=1000,700"):
        options.add_argument(flag)
    # An explicit driver and browser: selenium never looks for (or downloads) one of its own.
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def site(tmp_path: Path) -> Path:
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "hello.py").write_text(APP)
    (folder / "content.py").write_text('MESSAGE = "first"\n')
    return folder


def serve(launcher, site: Path, *flags: str, workers: int = 2):
    return launcher.start_http(lambda port: [PYTHON, "-m", "prefork", "hello:application", "--reload",
                                             *flags, "-w", str(workers), "-p", str(port)],
                               1, cwd=site)  # one shared port


def documented_command() -> list[str]:
    """The command of docs/integration.md's "Live reload in the browser" (this module runs it)."""
    section = (REPO / "docs" / "integration.md").read_text().split("## Live reload in the browser\n", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return block.split()


def wait(driver, condition, what: str, timeout: float = DEADLINE):
    """Wait for ``condition``; an element of a page that reloaded meanwhile is looked up again."""
    return WebDriverWait(driver, timeout, poll_frequency=POLL, ignored_exceptions=(
        NoSuchElementException, StaleElementReferenceException)).until(condition, what)


def message(driver) -> str:
    return driver.execute_script("var m = document.getElementById('message'); return m ? m.textContent : ''")


def overlay(driver):
    found = driver.find_elements("id", "prefork-livereload-overlay")
    return found[0] if found and found[0].is_displayed() else None


def page_generation(driver) -> int:
    return int(driver.find_element("css selector", "script[data-prefork-livereload]")
               .get_attribute("data-generation"))


def open_page(driver, port: int) -> None:
    """Open the page and wait until its script has polled once (it is live)."""
    driver.get(f"http://127.0.0.1:{port}/")
    wait(driver, lambda d: d.execute_script("return (window.__preforkLiveReload || {}).polls > 0"),
         "the live reload script to poll")
    driver.execute_script("window.__sameDocument = true")  # gone once the page has reloaded


def test_a_save_refreshes_the_open_page_and_a_failed_reload_shows_until_the_fix(launcher, site, browser):
    command = documented_command()
    assert command[:2] == ["prefork", "hello:application"] and command[-2:] == ["-w", "2"], command
    server = launcher.start_http(lambda port: [PYTHON, "-m", *command, "-p", str(port)], 1, cwd=site)
    open_page(browser, server.port)
    assert message(browser) == "first" and page_generation(browser) == 0

    saved = time.time()
    save(site / "content.py", 'MESSAGE = "second"\n')
    wait(browser, lambda d: message(d) == "second", "the page to show the saved code")
    shown = browser.execute_script("return performance.timeOrigin + performance.now()") / 1000
    assert browser.execute_script("return window.__sameDocument") is None  # it reloaded itself
    assert page_generation(browser) == 1
    started = browser.execute_script("return performance.timeOrigin") / 1000
    print(f"\nsave -> the page reloads itself: {(started - saved) * 1000:.0f} ms, -> new content "
          f"shown: {(shown - saved) * 1000:.0f} ms")
    browser.execute_script("window.__sameDocument = true")

    # A typo: the page keeps the old content and shows the file and line over it.
    save(site / "content.py", 'MESSAGE = "third"\nBROKEN = (\n')
    box = wait(browser, overlay, "the failure overlay")
    assert "content.py:2" in box.find_element("class name", "prefork-livereload-where").text
    assert "SyntaxError" in box.find_element("class name", "prefork-livereload-error").text
    assert message(browser) == "second" and browser.execute_script("return window.__sameDocument")
    browser.save_screenshot(str(site.parent / "overlay.png"))

    # A page opened while the failure stands shows it too.
    open_page(browser, server.port)
    wait(browser, overlay, "the failure overlay on a page opened after the failure")

    # The fix: the page reloads onto it and the overlay is gone.
    save(site / "content.py", 'MESSAGE = "third"\n')
    wait(browser, lambda d: message(d) == "third", "the page to show the fix")
    assert overlay(browser) is None and browser.execute_script("return window.__sameDocument") is None
    assert page_generation(browser) == 2


def test_an_asgi_app_s_page_refreshes_after_a_save_and_shows_a_failed_reload(launcher, site, browser):
    """The same with an ASGI app (detected; each worker runs uvicorn): its HTML gets the script."""
    (site / "asgi_hello.py").write_text(ASGI_APP)
    server = launcher.start_http(lambda port: [PYTHON, "-m", "prefork", "asgi_hello:app", "--reload", "--livereload",
                                               "-w", "2", "-p", str(port)], 1, cwd=site)
    server.wait_log(r"all 2 workers ready \(ASGI, uvicorn\)")
    open_page(browser, server.port)
    assert message(browser) == "first"
    first = page_generation(browser)  # 0, or 1 once the base has uvicorn & co. preloaded (the same code)

    save(site / "content.py", 'MESSAGE = "second"\n')
    wait(browser, lambda d: message(d) == "second", "the page to show the saved code")
    assert browser.execute_script("return window.__sameDocument") is None and page_generation(browser) > first
    second = page_generation(browser)
    browser.execute_script("window.__sameDocument = true")

    save(site / "content.py", 'MESSAGE = "third"\nBROKEN = (\n')
    box = wait(browser, overlay, "the failure overlay")
    assert "content.py:2" in box.find_element("class name", "prefork-livereload-where").text
    assert message(browser) == "second" and browser.execute_script("return window.__sameDocument")

    save(site / "content.py", 'MESSAGE = "third"\n')
    wait(browser, lambda d: message(d) == "third", "the page to show the fix")
    assert overlay(browser) is None and page_generation(browser) > second


def test_generation_0_replaced_from_the_warm_base_serves_the_same_code_so_pages_stay(launcher, site):
    """Once the base has preloaded uvicorn & co., generation 0's workers are replaced by ones from the
    warm base: the same code, so the status (which open pages poll) keeps generation 0; a save moves it on."""
    (site / "asgi_hello.py").write_text(ASGI_APP)
    server = launcher.start_http(lambda port: [PYTHON, "-m", "prefork", "asgi_hello:app", "--reload", "--livereload",
                                               "-w", "1", "-p", str(port)], 1, cwd=site)
    server.wait_log(r"generation 1, forked from the warm base, replaced generation 0")
    new = wait_for(lambda: _only_worker(server.proc.pid), what="generation 0's worker to be gone")
    code, body = http_get(server.port, "/__prefork__/livereload")
    status = json.loads(body)
    assert code == 200 and status["pid"] == new and status["generation"] == 0, status
    assert b'data-generation="0"' in http_get(server.port, "/")[1]

    save(site / "content.py", 'MESSAGE = "second"\n')
    wait_for(lambda: b"second" in http_get(server.port, "/")[1], what="the saved code")
    assert json.loads(http_get(server.port, "/__prefork__/livereload")[1])["generation"] > 0


def _only_worker(master_pid: int) -> int | None:
    """The pid of the master's one worker process, when there is exactly one."""
    workers = [pid for title, pid in children_by_title(master_pid).items() if title.startswith("prefork worker")]
    return workers[0] if len(workers) == 1 else None


def test_an_open_page_does_not_hold_a_single_threaded_worker(launcher, site, browser):
    """With threads=1 requests run on the worker's loop: the page's polls must never block it."""
    server = serve(launcher, site, "--livereload", "--threads", "1", workers=1)
    open_page(browser, server.port)
    first = browser.current_window_handle
    browser.switch_to.new_window("tab")  # a second open page on the one worker (the first, hidden, polls slower)
    try:
        open_page(browser, server.port)
        polls_before = browser.execute_script("return window.__preforkLiveReload.polls")
        slowest = 0.0
        for _ in range(40):
            started = time.monotonic()
            code, body = http_get(server.port, "/data.json", timeout=2.0)
            slowest = max(slowest, time.monotonic() - started)
            assert code == 200 and body == b'{"ok": true}'  # not HTML: untouched
        # The page kept polling the same worker meanwhile (the requests above took turns with it).
        wait(browser, lambda d: d.execute_script("return window.__preforkLiveReload.polls") > polls_before + 2,
             "the page to keep polling")
        assert slowest < 1.0, f"a request waited {slowest:.2f} s behind the pages' polls"
    finally:
        browser.close()
        browser.switch_to.window(first)


def test_the_page_of_a_post_is_fetched_again_not_resubmitted(launcher, site, browser):
    server = serve(launcher, site, "--livereload", workers=1)
    browser.get(f"http://127.0.0.1:{server.port}/")
    browser.execute_script("""
        var form = document.createElement("form");
        form.method = "POST"; form.action = "/";
        document.body.appendChild(form); form.submit();""")
    wait(browser, lambda d: d.execute_script(
        "var m = document.getElementById('method'); return m && m.textContent === 'POST'"
        " && (window.__preforkLiveReload || {}).polls > 0"), "the page of the POST, live")
    save(site / "content.py", 'MESSAGE = "after post"\n')
    wait(browser, lambda d: message(d) == "after post", "the page to show the saved code")
    assert browser.find_element("id", "method").text == "GET"


def test_a_restarted_server_reloads_the_page(launcher, site, browser):
    server = serve(launcher, site, "--livereload", workers=1)
    open_page(browser, server.port)
    instance = browser.find_element("css selector", "script[data-prefork-livereload]").get_attribute("data-instance")
    server.signal(signal.SIGTERM)
    assert server.proc.wait(timeout=DEADLINE) == 0
    save(site / "content.py", 'MESSAGE = "restarted"\n')  # seen by nobody: the server is down
    # The same port, generation 0 again: the page tells the servers apart by their instance.
    _, log_path = launcher.spawn([PYTHON, "-m", "prefork", "hello:application", "--reload", "--livereload",
                                  "-w", "1", "-p", str(server.port)], cwd=site, log_name="restarted.log")
    try:
        wait(browser, lambda d: message(d) == "restarted", "the page to reload from the new server")
    except Exception:
        print(log_path.read_text(errors="replace"))
        raise
    assert browser.execute_script("return window.__sameDocument") is None
    new = browser.find_element("css selector", "script[data-prefork-livereload]")
    assert new.get_attribute("data-instance") != instance and new.get_attribute("data-generation") == "0"


def test_a_worker_that_replaces_a_dead_one_reports_the_failure_that_stands(launcher, site):
    server = serve(launcher, site, "--livereload", workers=1)

    def status() -> dict:
        code, body = http_get(server.port, "/__prefork__/livereload")
        assert code == 200
        return json.loads(body)

    save(site / "content.py", "MESSAGE = (\n")
    failed = wait_for(lambda: (lambda s: s if s["failure"] else None)(status()), DEADLINE, "the failure")
    assert failed["failure"]["file"].endswith("content.py") and failed["failure"]["line"] == 1
    os.kill(failed["pid"], signal.SIGKILL)
    # The master sends it the failure once it is ready (it may answer a request or two before that).
    replaced = wait_for(lambda: (lambda s: s if s["pid"] != failed["pid"] and s["failure"] else None)(status()),
                        DEADLINE, "a new worker that knows the failure")
    assert replaced["generation"] == failed["generation"] and replaced["failure"] == failed["failure"]


def test_off_by_default(launcher, site):
    server = serve(launcher, site)
    code, body = http_get(server.port, "/")
    assert code == 200 and b"prefork-livereload" not in body and b"<h1 id='message'>first</h1>" in body
    code, body = http_get(server.port, "/__prefork__/livereload")  # no endpoint: the app's own page
    assert code == 200 and body.startswith(b"<!doctype html>")
