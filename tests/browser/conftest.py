"""Browser tests: the console in Debian's headless Chromium, driven by Playwright for Python,
against the real `vmx` binary in front of the stub providers.

The processes (vmx, vmx-stub, vmx-bedrock-stub) come from tests/e2e/conftest.py, loaded here
as a module so both suites share one harness. Chromium is /usr/bin/chromium (or
$VMX_CHROMIUM); nothing is downloaded. axe-core is read from $VMX_AXE_JS or
~/.cache/vmx-axe/node_modules/axe-core/axe.min.js (scripts/test.sh installs it there).

Every page a test opens is watched (see Watch): console errors, uncaught exceptions,
failed requests and JavaScript dialogs fail the test, and so does the canary provider key
in any response body the browser received or in any page's HTML.
"""

import importlib.util
import json
import os
import pathlib
import re
import urllib.request

import pytest
from playwright.sync_api import sync_playwright

ROOT = pathlib.Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("vmx_e2e_harness", ROOT / "tests" / "e2e" / "conftest.py")
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)

# The stub fixtures are the e2e suite's own.
stubs = harness.stubs
bedrock_stub = harness.bedrock_stub
ADMIN_TOKEN = harness.ADMIN_TOKEN

# Every provider key typed into the console in these tests contains this marker.
CANARY = "CANARY-browser-7e51d0"
# Every run saves a screenshot of each screen here (outside the tree git tracks, so a test run
# leaves `git status` clean); VMX_SCREENSHOT_DIR=docs/console refreshes the copies the docs show.
SHOTS = pathlib.Path(os.environ.get("VMX_SCREENSHOT_DIR") or ROOT / "target" / "console-screenshots")
if not SHOTS.is_absolute():
    SHOTS = ROOT / SHOTS
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def canary_key(prefix="sk-", tag=""):
    return f"{prefix}{CANARY}{tag}"


def _extra_env():
    # VMX_CONSOLE_DIR (development): serve the pages from the source tree, no rebuild.
    env = {}
    if os.environ.get("VMX_CONSOLE_DIR"):
        env["VMX_CONSOLE_DIR"] = os.environ["VMX_CONSOLE_DIR"]
    return env


@pytest.fixture(scope="session")
def server(stubs, bedrock_stub):
    with harness.start_vmx(stubs, bedrock_stub, _extra_env()) as s:
        yield s


@pytest.fixture
def fresh_server(stubs, bedrock_stub):
    """A second vmx with an empty store (for the empty states)."""
    with harness.start_vmx(stubs, bedrock_stub, _extra_env()) as s:
        yield s


@pytest.fixture(scope="session")
def playwright_instance():
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright_instance):
    exe = os.environ.get("VMX_CHROMIUM", "/usr/bin/chromium")
    if not os.path.exists(exe):
        pytest.fail(f"{exe} is missing: scripts/test.sh installs Debian's chromium")
    b = playwright_instance.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
    yield b
    b.close()


@pytest.fixture(scope="session")
def axe_source():
    path = os.environ.get("VMX_AXE_JS") or os.path.expanduser("~/.cache/vmx-axe/node_modules/axe-core/axe.min.js")
    if not os.path.exists(path):
        pytest.fail(f"{path} is missing: scripts/test.sh installs axe-core")
    return pathlib.Path(path).read_text(encoding="utf-8")


class Watch:
    """Everything a page did that a test must not see."""

    def __init__(self):
        self.console_errors = []
        self.page_errors = []
        self.failed = []
        self.dialogs = []
        self.leaks = []
        self.allowed_status = set()
        # True while the test itself navigates (goto/reload): a request the page still had
        # in flight (e.g. the details page's periodic refresh) is then aborted by the
        # browser, which is the test's doing, not a failure of the page.
        self.navigating = False

    def attach(self, page):
        def on_console(msg):
            if msg.type != "error":
                return
            m = re.match(r"Failed to load resource: the server responded with a status of (\d+)", msg.text)
            if m and int(m.group(1)) in self.allowed_status:
                return
            self.console_errors.append(f"{page.url}: {msg.text}")

        def on_response(resp):
            try:
                body = resp.body()
            except Exception:  # redirects and aborted loads have no body
                return
            if CANARY.encode() in body:
                self.leaks.append(resp.url)

        def on_dialog(d):
            self.dialogs.append(d.message)
            d.dismiss()

        page.on("console", on_console)
        page.on("pageerror", lambda e: self.page_errors.append(f"{page.url}: {e}"))
        def on_failed(r):
            if self.navigating and "ERR_ABORTED" in (r.failure or ""):
                return
            self.failed.append(f"{r.method} {r.url}: {r.failure}")

        page.on("requestfailed", on_failed)
        page.on("response", on_response)
        page.on("dialog", on_dialog)

    def check(self):
        assert not self.page_errors, self.page_errors
        assert not self.console_errors, self.console_errors
        assert not self.failed, self.failed
        assert not self.dialogs, f"a JavaScript dialog opened: {self.dialogs}"
        assert not self.leaks, f"the canary key was in these responses: {self.leaks}"


class Console:
    """A signed-in (or not) browser context on one vmx, with helpers."""

    def __init__(self, browser, server, watch, **ctx_opts):
        self.server = server
        self.base = server.base
        self.watch = watch
        self.context = browser.new_context(base_url=server.base, **{"viewport": {"width": 1280, "height": 900}, **ctx_opts})
        self.context.set_default_timeout(15_000)
        self.page = self.context.new_page()
        watch.attach(self.page)
        self.pages_seen = []

    def sign_in(self):
        r = self.context.request.post("/console/session", data=json.dumps({"token": ADMIN_TOKEN}),
                                      headers={"Content-Type": "application/json"})
        assert r.status == 200, r.text()

    def goto(self, path):
        self.watch.navigating = True
        try:
            self.page.goto(path)
        finally:
            self.watch.navigating = False
        self.page.wait_for_selector("main :is(h1, h2)")
        return self.page

    def reload(self):
        self.watch.navigating = True
        try:
            self.page.reload()
        finally:
            self.watch.navigating = False

    def settle(self):
        self.page.wait_for_load_state("networkidle")

    def html_has_no_canary(self):
        html = self.page.content()
        assert CANARY not in html, f"the canary key is in the HTML of {self.page.url}"

    def shot(self, name, full_page=True):
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full_page)

    def close(self):
        self.context.close()


@pytest.fixture
def watch():
    return Watch()


@pytest.fixture
def console(browser, server, watch):
    """A signed-in console at 1280x900. The test fails on anything Watch records."""
    c = Console(browser, server, watch)
    c.sign_in()
    yield c
    try:
        c.html_has_no_canary()
    finally:
        c.close()
    watch.check()


@pytest.fixture
def anon(browser, server, watch):
    """A console context without a session."""
    c = Console(browser, server, watch)
    yield c
    c.close()
    watch.check()


def wait_until(fn, timeout=15.0, what="condition"):
    """Polls `fn` (no fixed sleeps racing background work) until it returns a truthy value."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def api_json(server, method, path, body=None, headers=None):
    data = None if body is None else json.dumps(body).encode()
    h = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json", **(headers or {})}
    req = urllib.request.Request(server.base + path, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            t = r.read().decode()
            return r.status, (json.loads(t) if t else None), dict(r.headers)
    except urllib.error.HTTPError as e:
        t = e.read().decode()
        return e.code, (json.loads(t) if t else None), dict(e.headers)
