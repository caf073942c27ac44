"""A real JupyterLab, started by ``altus notebook start --public``, used from a real Chromium.

The screenshot of the saved notebook showing ``2`` is kept as a CI artefact at
``test-artifacts/notebook-1plus1.png`` in the repository, so that a reviewer can
see what the browser saw.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from browser import check_password_refused, run_one_plus_one

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext

    from conftest import PublicNotebook

SCREENSHOT = Path(__file__).resolve().parents[2] / "test-artifacts" / "notebook-1plus1.png"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
WRONG_PASSWORD = "not the password"


@pytest.mark.slow
def test_browser_logs_in_runs_one_plus_one_and_saves(
    public_notebook: PublicNotebook, chromium_context: BrowserContext
) -> None:
    """Over HTTPS a wrong password is refused, the right one runs ``1+1`` and saves it.

    The saved notebook is read back from disk, because a page showing ``2`` does
    not prove the server wrote the user's work where they asked for it. Neither
    password typed into the login form may reach the server's log.
    """
    assert public_notebook.info["url"].startswith("https://")
    assert "token" not in public_notebook.info["url"]
    check_password_refused(chromium_context, public_notebook.base_url, WRONG_PASSWORD)

    SCREENSHOT.parent.mkdir(exist_ok=True)
    name = run_one_plus_one(
        chromium_context, public_notebook.base_url, public_notebook.password, SCREENSHOT
    )

    cells = json.loads((public_notebook.root / name).read_text())["cells"]
    assert any(_text(cell["source"]) == "1+1" and "2" in _outputs(cell) for cell in cells), cells
    assert SCREENSHOT.read_bytes().startswith(PNG_SIGNATURE)
    log = Path(public_notebook.info["log"]).read_text()
    assert public_notebook.password not in log
    assert WRONG_PASSWORD not in log


def _text(lines: str | list[str]) -> str:
    """nbformat stores multi-line text either as one string or as a list of lines."""
    return lines if isinstance(lines, str) else "".join(lines)


def _outputs(cell: dict[str, Any]) -> list[str]:
    return [
        _text(output.get("data", {}).get("text/plain", "")) for output in cell.get("outputs", [])
    ]
