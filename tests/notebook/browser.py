"""Drive a real JupyterLab in a real Chromium, the way a scientist would use it.

The notebook tests use this to prove, end to end, that a server altus started
can be reached over HTTPS, refuses a wrong password, lets the right one in, and
runs and saves a notebook. It clicks and types instead of calling Jupyter's
REST API because the point is what a browser sees: the login page, the
self-signed certificate, the kernel reached over a websocket.

The selectors are JupyterLab 4's (checked with 4.6) and the login form is
jupyter_server 2's; they are gathered in ``Selectors`` so that a JupyterLab
upgrade that renames a class is fixed in one place.

Chromium is Debian's (``/usr/bin/chromium``), never one Playwright downloads:
the machines that run these tests reach no browser download site.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urljoin

from playwright.sync_api import BrowserContext, Page, Playwright, expect

CHROMIUM = Path("/usr/bin/chromium")

# Headless, no sandbox (tests run as root in containers), and nothing that phones
# home: on a closed network those connections are refused and slow Chromium down.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
)

# JupyterLab's first load parses a few MB of JavaScript and a kernel takes
# seconds to start; a loaded 2-core CI machine needs far more than a laptop.
# Every click, navigation and wait below gets this long unless it says otherwise.
TIMEOUT_MS = 60_000

PYTHON_KERNEL = "Python 3 (ipykernel)"


class Selectors:
    """CSS selectors of jupyter_server's login page and JupyterLab 4's shell."""

    password = "#password_input"
    log_in = "#login_submit"
    login_error = ".message.error"
    notebook_card = f'.jp-LauncherCard[data-category="Notebook"][title="{PYTHON_KERNEL}"]'
    notebook = ".jp-NotebookPanel"
    first_cell = ".jp-Notebook .jp-Cell >> nth=0"
    editor = ".cm-content"
    output = ".jp-OutputArea-output"
    current_tab = ".lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current"
    tab_label = ".lm-TabBar-tabLabel"
    dialog_accept = ".jp-Dialog .jp-mod-accept"
    status_bar = "#jp-main-statusbar"


def launch_chromium(playwright: Playwright, user_data_dir: Path) -> BrowserContext:
    """Start Debian's headless Chromium with a fresh profile that trusts any certificate.

    ``ignore_https_errors`` because an altus server on a public address uses a
    self-signed certificate; the browser must still speak TLS to it.
    """
    if not CHROMIUM.exists():
        raise FileNotFoundError(
            f"{CHROMIUM} is missing: install Debian's Chromium (apt-get install chromium); "
            "the browser tests need it and never download a browser"
        )
    context = playwright.chromium.launch_persistent_context(
        user_data_dir=user_data_dir,
        executable_path=CHROMIUM,
        headless=True,
        args=list(CHROMIUM_ARGS),
        ignore_https_errors=True,
    )
    context.set_default_timeout(TIMEOUT_MS)
    return context


def log_in(page: Page, url: str, password: str) -> None:
    """Open ``url``, which must land on the login page, and submit ``password``.

    Cookies are cleared first so that an earlier login in the same browser
    context cannot let this one through without a password.
    """
    page.context.clear_cookies()
    page.goto(url)
    page.fill(Selectors.password, password)
    page.click(Selectors.log_in)


def check_password_refused(context: BrowserContext, base_url: str, password: str) -> None:
    """Assert that ``password`` does not get past the login page of the server at ``base_url``.

    Also asserts that the server's root redirects to the login page: nothing is
    readable before logging in.
    """
    page = context.new_page()
    try:
        log_in(page, base_url, password)
        expect(page.locator(Selectors.login_error)).to_contain_text(
            "Invalid credentials", timeout=TIMEOUT_MS
        )
        expect(page.locator(Selectors.password)).to_be_visible()
        assert "/login" in page.url, page.url
    finally:
        page.close()


def run_one_plus_one(
    context: BrowserContext, base_url: str, password: str, screenshot: Path
) -> str:
    """Log in, run ``1+1`` in a new Python notebook, save it, and return its file name.

    ``base_url`` is the server's root (``https://127.0.0.1:PORT/``). A
    screenshot of the saved notebook showing ``2`` is written to ``screenshot``.
    """
    page = context.new_page()
    try:
        # ``?reset`` starts from JupyterLab's default layout (a Launcher) even
        # where a workspace from an earlier session would restore other tabs.
        log_in(page, urljoin(base_url, "lab?reset"), password)
        _open_new_notebook(page)
        _run_in_first_cell(page, "1+1", expected_output="2")
        name = _save(page)
        page.screenshot(path=screenshot)
        return name
    finally:
        page.close()


def _open_new_notebook(page: Page) -> None:
    """Open a notebook from the Launcher and wait until its kernel is idle.

    Until its kernel has started and connected, JupyterLab silently drops a
    cell run (the prompt stays ``[ ]``) instead of queueing it; the status bar
    is what says ``Idle`` only once the kernel is really there.
    """
    page.click(Selectors.notebook_card)
    expect(page.locator(Selectors.status_bar)).to_contain_text(
        f"{PYTHON_KERNEL} | Idle", timeout=TIMEOUT_MS
    )


def _run_in_first_cell(page: Page, code: str, expected_output: str) -> None:
    """Type ``code`` into the first cell, run it, and wait for its output."""
    cell = page.locator(f"{Selectors.notebook} {Selectors.first_cell}")
    editor = cell.locator(Selectors.editor)
    editor.click()
    editor.press_sequentially(code)
    expect(editor).to_have_text(code)
    editor.press("Shift+Enter")
    expect(cell.locator(Selectors.output)).to_have_text(expected_output, timeout=TIMEOUT_MS)


def _save(page: Page) -> str:
    """Save the current notebook with Ctrl+S and return the name it was saved under.

    JupyterLab 4 asks for a new name on the first save of an ``Untitled``
    file (``renameUntitledFileOnSave``); the proposed name is accepted.
    """
    tab = page.locator(Selectors.current_tab)
    saved_tab = page.locator(f"{Selectors.current_tab}:not(.jp-mod-dirty)")
    rename_dialog = page.locator(Selectors.dialog_accept)
    page.keyboard.press("Control+s")
    expect(saved_tab.or_(rename_dialog)).to_be_visible(timeout=TIMEOUT_MS)
    if rename_dialog.is_visible():
        rename_dialog.click()
    expect(saved_tab).to_be_visible(timeout=TIMEOUT_MS)
    return tab.locator(Selectors.tab_label).inner_text().strip()
