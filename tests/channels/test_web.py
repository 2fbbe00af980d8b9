"""`nanobot web` in a real headless browser: Debian's chromium, driven by Playwright.

Each test starts `nanobot web --port 0 --json` as its own process, which serves the real
app (`python -m nanobot_tui` under textual-serve) to the page. What the page shows is read
from the page's own xterm.js terminal (its screen buffer, which the page draws): an init
script keeps a handle on the terminal that textual-serve's script creates.

The app is given a config whose slots all go to a cloud provider at a closed local port,
never called here: no model server starts, since these tests are about the view.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from nanobot_tui.config import Config, save_config

playwright_sync = pytest.importorskip("playwright.sync_api", reason="pip install playwright")

CHROMIUM_HINT = "needs Debian's chromium for the browser tests: apt-get install chromium"
HELP_TITLE = "keys and commands"  # the help screen's header (F1)
NARROW_STRIP = "F2 next pane"  # the main screen's pane strip, below 114 columns
TIMEOUT_MS = 60_000

# textual-serve's script keeps its xterm.js Terminal in a closure; it assigns it to
# `this.terminal` of its own object, so a setter on Object.prototype sees it first.
KEEP_TERMINAL = """
Object.defineProperty(Object.prototype, "terminal", {
  configurable: true,
  set(value) {
    window.__xterm = value;
    Object.defineProperty(this, "terminal", {value, writable: true, configurable: true});
  },
});
window.__screenText = () => {
  const term = window.__xterm;
  if (!term) return "";
  const lines = [];
  for (let y = 0; y < term.rows; y++) {
    const line = term.buffer.active.getLine(y);
    lines.push(line ? line.translateToString(true) : "");
  }
  return lines.join("\\n");
};
"""


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip(CHROMIUM_HINT)
    return path


@pytest.fixture
def no_model_server(nanobot_home: Path) -> None:
    """Every slot on a cloud provider that no test here calls: the app starts no server."""
    config = Config.model_validate(
        {
            "providers": {"openai": {"apiBase": "http://127.0.0.1:9/v1", "apiKey": "unused"}},
            "local": {
                slot: {"provider": "openai", "remoteModel": "unused"}
                for slot in ("main", "rlm", "memory")
            },
        }
    )
    save_config(config, nanobot_home / "config.json")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium_path()
    with playwright_sync.sync_playwright() as playwright:
        # --no-sandbox: the tests run as root, where chromium's sandbox refuses to start.
        chromium = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@contextmanager
def nanobot_web(*flags: str) -> Iterator[dict[str, Any]]:
    """`nanobot web --port 0 --json FLAGS` running; yields its one JSON line, with the
    process's pid added. On leaving, SIGTERM, and it must exit 0 within 30 s."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "nanobot_tui", "web", "--port", "0", "--json", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline()
        assert line, f"nanobot web exited ({proc.wait()}): {proc.stderr.read()}"
        yield {**json.loads(line), "pid": proc.pid}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""


def open_app_page(browser: Any, url: str) -> Any:
    """A page on `url` whose terminal shows the app's first frame."""
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.add_init_script(KEEP_TERMINAL)
    response = page.goto(url)
    assert response is not None and response.status == 200
    wait_for_text(page, "Chat · new session")
    return page


@contextmanager
def app_page(browser: Any, url: str) -> Iterator[Any]:
    page = open_app_page(browser, url)
    try:
        yield page
    finally:
        page.close()


def screen_text(page: Any) -> str:
    return str(page.evaluate("window.__screenText()"))


def wait_for_text(page: Any, text: str) -> None:
    try:
        page.wait_for_function(
            "text => window.__screenText().includes(text)", arg=text, timeout=TIMEOUT_MS
        )
    except playwright_sync.TimeoutError:
        pytest.fail(f"{text!r} never showed; the page shows:\n{screen_text(page)}")


def press(page: Any, key: str) -> None:
    page.focus(".xterm-helper-textarea")  # xterm.js takes keys in its hidden textarea
    page.keyboard.press(key)


def test_the_page_shows_the_apps_first_frame(browser: Any, no_model_server: None) -> None:
    with nanobot_web() as address, app_page(browser, address["url"]) as page:
        screen = screen_text(page)
        for pane in ("Process", "Chat · new session", "Hardware", "Votes", "Volumes"):
            assert pane in screen, screen
        wait_for_text(page, "^p palette")  # the footer, drawn once its bindings are known
        assert address["host"] == "127.0.0.1" and address["control"] is False


def test_with_control_a_key_press_reaches_the_app(browser: Any, no_model_server: None) -> None:
    with nanobot_web("--control") as address, app_page(browser, address["url"]) as page:
        assert address["control"] is True
        assert HELP_TITLE not in screen_text(page)
        press(page, "F1")
        wait_for_text(page, HELP_TITLE)


def test_read_only_by_default_the_same_key_changes_nothing(
    browser: Any, no_model_server: None
) -> None:
    """The key leaves for the server before two resizes that do reach the app (below 114
    columns the main screen shows its pane strip, above it not); the app would have drawn
    its help screen long before the second of those frames comes back."""
    with nanobot_web() as address, app_page(browser, address["url"]) as page:
        press(page, "F1")
        page.set_viewport_size({"width": 760, "height": 800})
        wait_for_text(page, NARROW_STRIP)
        page.set_viewport_size({"width": 1280, "height": 800})
        page.wait_for_function("strip => !window.__screenText().includes(strip)", arg=NARROW_STRIP)
        screen = screen_text(page)
        assert HELP_TITLE not in screen, screen
        assert "Chat · new session" in screen and "Votes" in screen, screen


def test_stopping_the_server_ends_each_browsers_app(browser: Any, no_model_server: None) -> None:
    """SIGTERM while a page is still connected: the server closes its websocket, its app
    process ends, and the server exits 0 (which `nanobot_web` checks)."""
    with nanobot_web() as address:
        page = open_app_page(browser, address["url"])
        children = psutil.Process(address["pid"]).children(recursive=True)
        apps = [child for child in children if child.cmdline()[-2:] == ["-m", "nanobot_tui"]]
        assert len(apps) == 1, [child.cmdline() for child in children]
    try:
        _gone, alive = psutil.wait_procs(apps, timeout=30)
        assert not alive
        page.wait_for_selector("body.-closed", state="attached")  # "Session ended."
    finally:
        page.close()


def test_a_wrong_or_missing_token_is_refused(browser: Any, no_model_server: None) -> None:
    with nanobot_web() as address:
        base = f"http://127.0.0.1:{address['port']}"
        page = browser.new_page()
        try:
            for url in (f"{base}/", f"{base}/?token=wrong", f"{base}/?token="):
                response = page.goto(url)
                assert response is not None and response.status == 403, url
                assert "wrong or missing token" in page.content()
        finally:
            page.close()
        # The page's websocket, scripts and downloads too: only the URL's token (or the
        # cookie it sets) opens them.
        for path in ("/ws", "/static/js/textual.js", "/download/x"):
            assert httpx.get(base + path).status_code == 403, path
        token = address["url"].split("token=", 1)[1]
        assert httpx.get(f"{base}/static/js/textual.js?token={token}").status_code == 200
        cookie = httpx.get(address["url"]).cookies.get("nanobot_web_token")
        assert cookie == token
        with_cookie = {"Cookie": f"nanobot_web_token={token}"}
        assert httpx.get(f"{base}/static/js/textual.js", headers=with_cookie).status_code == 200
        # A websocket from a page of another site is refused even with the cookie.
        other_site = httpx.get(
            f"{base}/ws", headers={**with_cookie, "Origin": "http://evil.example"}
        )
        assert other_site.status_code == 403


def test_a_public_address_is_warned_about_and_a_busy_port_is_one_line() -> None:
    """--host 0.0.0.0 on a port already taken on 127.0.0.1: the warning, then the error;
    nothing ever listens beyond this machine."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "nanobot_tui", "web", "--host", "0.0.0.0", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    lines = done.stderr.splitlines()
    assert done.returncode == 1, done.stderr
    assert len(lines) == 2, lines
    assert lines[0].startswith("nanobot: warning: web: 0.0.0.0 is reachable from other machines")
    assert lines[1] == f"nanobot: web: cannot listen on 0.0.0.0:{port}: Address already in use"
    assert done.stdout == ""


def test_loopback_hosts() -> None:
    from nanobot_tui.channels.web import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("::")
