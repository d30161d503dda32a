"""Headless Chromium for the tests: Debian's `chromium` (installed here when missing), driven by Playwright.

Playwright only drives the browser over its protocol; it downloads nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "tests" / "artifacts"


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    # A fresh machine: install Debian's package (what `make test` does first, too).
    result = subprocess.run([str(REPO / "scripts" / "install-system-packages.sh")], capture_output=True, text=True,
                            timeout=900)
    found = shutil.which("chromium")
    if not found:
        pytest.fail(f"chromium is not installed and could not be installed:\n{result.stdout}\n{result.stderr}")
    return found


@contextmanager
def browser_page(viewport=(1280, 900)):
    from playwright.sync_api import sync_playwright

    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), headless=True,
                                             args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            yield page
        finally:
            browser.close()


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


# The fill of each named node's box at the zoom that fits the whole graph (green: materialized).
NODE_COLOURS = """names => Object.fromEntries(names.map(name => {
  const node = [...document.querySelectorAll('foreignObject')]
    .find(f => f.querySelector('[class*="AssetNode_assetName"]')?.textContent.trim() === name);
  const box = node && node.querySelector('[class*="AssetNode_minimalAssetNodeBox"]');
  return [name, box ? box.getAttribute('style') : 'not drawn'];
}))"""
