"""``otelab demo``'s HTML report in a real browser: at 1440 × 900 nothing scrolls sideways.

The report of a quick demo run on a tiny model (the same sections, tables and run labels as a
SmolLM2 run; only the numbers differ) is opened from disk in Debian's chromium through Playwright.
The page must not be wider than the window, and no table's box may scroll (the summary once hid
its drift, probe and ΔW columns behind a scrollbar at this width). A screenshot goes to
``artifacts/``. Skipped without chromium or playwright, except under CI (``$CI`` set).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from otelab.demo import run as demo

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
WIDTH, HEIGHT = 1440, 900


def _missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} not found (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install playwright)"
    return None


def test_demo_report_fits_a_1440_px_window(tmp_path, offline_texts, corpus_file, monkeypatch):
    why = _missing()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"browser test cannot run in CI: {why}")
        pytest.skip(why)
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("OTELAB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    assert demo.main(["--quick", "--out", str(out), "--no-progress", "--model", "tiny-llama",
                      "--corpus", corpus_file, "--cov-tokens", "1500"]) == 0
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
            page.goto((out / "report.html").as_uri())
            page.wait_for_selector(".js-plotly-plot")
            sizes = page.evaluate("""() => ({
                page: document.documentElement.scrollWidth, window: window.innerWidth,
                tables: [...document.querySelectorAll('.tw')].map(d => {
                    let h = d; while (h && !/^H[23]$/.test(h.tagName)) h = h.previousElementSibling || h.parentElement;
                    return {near: h ? h.textContent : '?', scroll: d.scrollWidth, box: d.clientWidth};
                })})""")
            summary = page.locator("h2", has_text="Summary").first
            summary.scroll_into_view_if_needed()
            (ROOT / "artifacts").mkdir(exist_ok=True)
            page.screenshot(path=str(ROOT / "artifacts" / "demo_report_1440.png"))
        finally:
            browser.close()
    assert sizes["window"] == WIDTH
    assert sizes["page"] <= WIDTH, f"the report is {sizes['page']} px wide in a {WIDTH} px window"
    assert sizes["tables"], "no tables found in the report"
    wide = [t for t in sizes["tables"] if t["scroll"] > t["box"]]
    assert not wide, f"tables that scroll sideways at {WIDTH} px: {wide}"
