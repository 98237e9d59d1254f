"""Notebook 06 in a real browser: JupyterLab on localhost, driven by Playwright with Debian's chromium.

Runs every cell of notebook 06 at CI size (a copy without outputs, in a temporary root: autosave never
touches the repository), waits for the workbench widget to render, and checks in the DOM:
no two subplot titles overlap; a double click on Step runs one step (the edit-metrics plot
gains one point per curve); Enter in the probe box generates; a named paper pair asks before
discarding the steps and then rebuilds both sessions, session A solid and B dashed; one step
of the replay-mode workbench (banked values); the scrubber's slider cuts the recorded runs'
curves. Screenshots go to ``artifacts/`` at the repository root.

Skipped when chromium or playwright is missing, except under CI (``$CI`` set), where
that is a failure.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = "06_sequential_editing_workbench.ipynb"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SERVER_START_S = 240      # a loaded machine starts JupyterLab slowly
PAGE_LOAD_S = 120
RUN_ALL_S = 2400         # every cell of notebook 06 at CI size (two workbenches of SmolLM2 on two CPU cores)
STEP_S = 600             # one more step of both sessions, clicked in the page
EDIT_POINTS = ".scatterlayer .trace .points path"
WORKBENCH = ".otelab-workbench:not(.otelab-replay)"   # CSS classes the widgets carry (otelab.views.widgets)
REPLAY = ".otelab-replay"
SCRUBBER = ".otelab-scrubber"
RECT_PAIR = "Algorithm 1: RECT with vs without error correction"   # otelab.views.widgets.PAIRS
RECT_A, RECT_B = "RECT aligned", "RECT no-ec"                        # otelab.workbench.bench.track_label


def _missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} not found (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install playwright)"
    return None


@pytest.fixture(scope="module")
def browser_ready():
    why = _missing()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"browser test cannot run in CI: {why}")
        pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_server(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError(f"JupyterLab did not answer {url} within {SERVER_START_S} s:\n{log.read_text()[-3000:]}")


def _isolated_env(tmp: Path) -> dict:
    """The server's environment: its own config, settings, runtime and IPython dirs; CI size."""
    env = dict(os.environ)
    for name, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_RUNTIME_DIR", "runtime"),
                      ("JUPYTERLAB_SETTINGS_DIR", "settings"), ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"),
                      ("IPYTHONDIR", "ipython")):
        (tmp / sub).mkdir(parents=True, exist_ok=True)
        env[name] = str(tmp / sub)
    # no "would you like news?" toast over the page
    notif = tmp / "settings" / "@jupyterlab" / "apputils-extension"
    notif.mkdir(parents=True, exist_ok=True)
    (notif / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false",
                                                                         "checkForUpdates": False}))
    env["OTELAB_CI_SIZE"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    if "OTELAB_DATA_DIR" not in env and (ROOT.parent / "shared" / "data").is_dir():
        env["OTELAB_DATA_DIR"] = str(ROOT.parent / "shared" / "data")
    return env


def _copy_without_outputs(src: Path, dst: Path) -> None:
    """Copy a notebook with its outputs and prompt numbers cleared.

    The committed outputs carry execution counts and no widget state: left in, every prompt
    would read "[n]:" before anything ran, and no Step button would exist until its cell runs.
    """
    nb = json.loads(src.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    dst.write_text(json.dumps(nb))


def _accept_dialogs(page) -> None:
    """Accept any modal dialog JupyterLab opens on first load (e.g. the kernel choice), naming it in the log.

    A modal dialog swallows every click under it, so the menu clicks would time out.
    """
    dialogs = page.locator(".jp-Dialog")
    for _ in range(3):
        if not dialogs.count():
            return
        print("\nJupyterLab dialog accepted:", " ".join(dialogs.first.inner_text().split())[:200])
        dialogs.first.locator(".jp-mod-accept").first.click()
        page.wait_for_timeout(500)


def _run_all_cells(page, attempts: int = 5) -> None:
    """Run > Run All Cells, until a cell is seen running.

    A click that lands while the menu is still opening, or before the notebook's commands are
    enabled, is silently lost; so the click is checked and repeated. On a loaded machine the first
    prompt can take a while to show "[*]", hence the generous wait per attempt.
    """
    started = """() => [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')]
        .some(e => /^\\[(\\*|\\d+)\\]:$/.test(e.textContent.trim()))"""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for _ in range(attempts):
        _accept_dialogs(page)
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        item = page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$"))
        item.wait_for(state="visible")
        page.wait_for_timeout(500)
        item.click()
        try:
            page.wait_for_function(started, timeout=30_000, polling=500)
            return
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
    raise AssertionError(f"Run All Cells did not start any cell after {attempts} attempts")


def _plot_points(page, widget: str = WORKBENCH) -> int:
    """Plotly marker paths in the first plot of a widget (the workbench's edit-metrics panel, the scrubber's curves)."""
    return page.evaluate("""([widget, sel]) => {
        const plots = document.querySelectorAll(`.jp-OutputArea ${widget} .js-plotly-plot`);
        return plots.length ? plots[0].querySelectorAll(sel).length : -1;
    }""", [widget, EDIT_POINTS])


def _click_step(page, widget: str, done: str, double: bool = False) -> tuple[int, int, float]:
    """Click (or double-click) a workbench's Step button; wait until its edit plot gains points and its
    message says ``done``.

    Returns:
        (points before, points after, seconds).
    """
    step = page.locator(f".jp-OutputArea {widget} .widget-button", has_text=re.compile(r"^\s*Step\s*$"))
    step.wait_for(state="visible", timeout=60_000)
    before = _plot_points(page, widget)
    assert before > 0, f"the edit-metrics plot of {widget} shows no points after Run All"
    step.scroll_into_view_if_needed()
    t = time.monotonic()
    step.dblclick() if double else step.click()
    page.wait_for_function(
        """([widget, sel, n]) => { const p = document.querySelectorAll(`.jp-OutputArea ${widget} .js-plotly-plot`);
           return p.length && p[0].querySelectorAll(sel).length > n; }""",
        arg=[widget, EDIT_POINTS, before], timeout=STEP_S * 1000, polling=1000)
    seconds = time.monotonic() - t
    page.wait_for_function("([widget, done]) => [...document.querySelectorAll(`.jp-OutputArea ${widget} .widget-html`)]"
                           ".some(e => e.textContent.includes(done))", arg=[widget, done], timeout=60_000)
    return before, _plot_points(page, widget), seconds


def _overlapping_titles(page, widget: str) -> list:
    """Pairs of paper-anchored annotations (subplot titles, keys) whose boxes intersect, per plot of a widget."""
    return page.evaluate("""(widget) => {
        const bad = [];
        document.querySelectorAll(`.jp-OutputArea ${widget} .js-plotly-plot`).forEach((gd, p) => {
            const anns = (gd.layout.annotations || []).map((a, i) => [a, i])
                .filter(([a]) => a.xref === 'paper' && a.yref === 'paper');
            const boxes = anns.map(([a, i]) => {
                const el = gd.querySelector(`.annotation[data-index="${i}"] .annotation-text-g`);
                return el ? [a.text, el.getBoundingClientRect()] : null;
            }).filter(Boolean);
            for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
                const [ta, a] = boxes[i], [tb, b] = boxes[j];
                if (a.width && b.width && a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom)
                    bad.push([p, ta, tb]);
            }
        });
        return bad;
    }""", widget)


def _dashes(page, widget: str) -> dict:
    """{trace name: line dash} of a widget's first plot (the edit-metrics panel)."""
    return page.evaluate("""(widget) => {
        const gd = document.querySelector(`.jp-OutputArea ${widget} .js-plotly-plot`);
        return Object.fromEntries(gd._fullData.map(t => [t.name, t.line ? t.line.dash : null]));
    }""", widget)


def _message(page, widget: str) -> str:
    """The text of the workbench's message line (the widget-html that says what happened last)."""
    return page.evaluate("""(widget) => [...document.querySelectorAll(`.jp-OutputArea ${widget} .widget-html`)]
        .map(e => e.textContent).join(' | ')""", widget)


def _drag_scrubber(page, to: float) -> str:
    """Drag the scrubber's slider handle to the fraction ``to`` of its track; returns the readout (edits)."""
    track = page.locator(f".jp-OutputArea {SCRUBBER} .noUi-target").first
    handle = page.locator(f".jp-OutputArea {SCRUBBER} .noUi-handle").first
    track.scroll_into_view_if_needed()
    box, hb = track.bounding_box(), handle.bounding_box()
    y = hb["y"] + hb["height"] / 2
    page.mouse.move(hb["x"] + hb["width"] / 2, y)
    page.mouse.down()
    page.mouse.move(box["x"] + to * box["width"], y, steps=12)
    page.mouse.up()
    return page.locator(f".jp-OutputArea {SCRUBBER} .widget-readout").first.inner_text().strip()


def test_notebook_06_workbench_steps_in_a_real_browser(browser_ready, tmp_path):
    from playwright.sync_api import sync_playwright

    t_start = time.monotonic()
    work = tmp_path / "root"
    work.mkdir()
    _copy_without_outputs(ROOT / "notebooks" / NOTEBOOK, work / NOTEBOOK)
    env = _isolated_env(tmp_path)
    port, token = _free_port(), secrets.token_hex(16)
    log = tmp_path / "jupyter.log"
    artifacts = ROOT / "artifacts"
    artifacts.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}", "--ServerApp.port_retries=0",
           "--ServerApp.terminals_enabled=False", "--allow-root"]   # CI containers run as root
    with open(log, "w") as logf:
        server = subprocess.Popen(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT, cwd=work)
    try:
        _wait_for_server(f"http://127.0.0.1:{port}/api/status?token={token}", server, log)
        with sync_playwright() as p:
            ctx = p.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                viewport={"width": 1600, "height": 1300})
            try:
                page = ctx.new_page()
                page.set_default_timeout(60_000)
                page.goto(f"http://127.0.0.1:{port}/lab/tree/{NOTEBOOK}?reset&token={token}",
                          timeout=PAGE_LOAD_S * 1000)
                page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=PAGE_LOAD_S * 1000)
                page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']",  # kernel is up
                                       state="attached", timeout=PAGE_LOAD_S * 1000)
                page.keyboard.press("Control+b")   # hide the file browser: more room for the widget
                _run_all_cells(page)
                t_run = time.monotonic()
                # every code cell has run: no "[*]" / "[ ]" prompt left, and the last one has a number
                from playwright.sync_api import TimeoutError as PlaywrightTimeout
                try:
                    page.wait_for_function("""() => {
                        const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')]
                            .map(e => e.textContent.trim());
                        return prompts.length > 0 && prompts.every(t => /^\\[\\d+\\]:$/.test(t));
                    }""", timeout=RUN_ALL_S * 1000, polling=2000)
                except PlaywrightTimeout:   # say where it stood: the prompts and a screenshot
                    prompts = page.evaluate("() => [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')]"
                                            ".map(e => e.textContent.trim())")
                    page.screenshot(path=str(artifacts / "browser_run_all_timeout.png"), full_page=True)
                    raise AssertionError(f"Run All did not finish within {RUN_ALL_S} s; prompts: {prompts}") from None
                run_all_s = time.monotonic() - t_run
                errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
                                      has_text="Traceback")
                assert errors.count() == 0, errors.first.inner_text()
                page.wait_for_function("() => document.querySelectorAll('.jp-OutputArea .js-plotly-plot').length >= 4",
                                       timeout=60_000)
                overlaps = _overlapping_titles(page, WORKBENCH)
                assert not overlaps, f"subplot titles overlap: {overlaps}"
                # a double click on Step runs ONE step: every curve (2 sessions × 5 edit metrics) gains one point
                before, after, step_s = _click_step(page, WORKBENCH, "step 2 done", double=True)
                assert after - before == 10, (before, after)
                time.sleep(4)   # a second step would have started by now
                assert _plot_points(page, WORKBENCH) == after and "working" not in _message(page, WORKBENCH)
                page.locator(f".jp-OutputArea {WORKBENCH} .js-plotly-plot").first.scroll_into_view_if_needed()
                page.screenshot(path=str(artifacts / "browser_workbench.png"))
                # Enter in the probe box generates
                probe = page.locator(f".jp-OutputArea {WORKBENCH} .widget-text input[type='text']").first
                probe.fill("The Eiffel Tower stands in the city of")
                probe.press("Enter")
                page.wait_for_function("(w) => [...document.querySelectorAll(`.jp-OutputArea ${w} .widget-html`)]"
                                       ".some(e => e.textContent.includes('generated') )", arg=WORKBENCH, timeout=120_000)
                assert "Eiffel Tower stands" in _message(page, WORKBENCH)
                # a named pair asks before discarding the steps; Rebuild sets both sessions at once
                pair = page.locator(f".jp-OutputArea {WORKBENCH} .widget-dropdown", has_text="paper pair").locator("select")
                pair.select_option(label=RECT_PAIR)
                confirm = page.locator(f".jp-OutputArea {WORKBENCH} .widget-button", has_text=re.compile(r"^\s*Rebuild\s*$"))
                confirm.wait_for(state="visible", timeout=60_000)
                assert "discards 2 steps" in _message(page, WORKBENCH)
                assert _plot_points(page, WORKBENCH) == after   # nothing discarded before the answer
                confirm.click()
                page.wait_for_function("(w) => [...document.querySelectorAll(`.jp-OutputArea ${w} .widget-html`)]"
                                       ".some(e => e.textContent.includes('rebuilt'))", arg=WORKBENCH, timeout=STEP_S * 1000)
                page.wait_for_function("([w, n]) => { const p = document.querySelectorAll(`.jp-OutputArea ${w} .js-plotly-plot`);"
                                       " return p.length && p[0].querySelectorAll('" + EDIT_POINTS + "').length < n; }",
                                       arg=[WORKBENCH, after], timeout=60_000)
                # A solid, B dashed: the line style follows the session, whatever the editors' names
                dashes = _dashes(page, WORKBENCH)
                a = {d for n, d in dashes.items() if n.endswith(" · " + RECT_A)}
                b = {d for n, d in dashes.items() if n.endswith(" · " + RECT_B)}
                assert a == {"solid"} and b == {"dash"}, dashes
                assert not _overlapping_titles(page, WORKBENCH)
                page.screenshot(path=str(artifacts / "browser_pair.png"))
                # replay mode: one more banked step (the notebook made the first)
                r_before, r_after, replay_s = _click_step(page, REPLAY, "step 2 done")
                assert r_after - r_before == 10, (r_before, r_after)
                page.locator(f".jp-OutputArea {REPLAY} .js-plotly-plot").first.scroll_into_view_if_needed()
                page.screenshot(path=str(artifacts / "browser_replay.png"))
                # the scrubber: drag the slider near the start; its curves are cut there (fewer points)
                page.wait_for_selector(f".jp-OutputArea {SCRUBBER} .js-plotly-plot", timeout=60_000)
                s_before = _plot_points(page, SCRUBBER)
                readout = page.locator(f".jp-OutputArea {SCRUBBER} .widget-readout").first.inner_text().strip()
                moved = _drag_scrubber(page, 0.12)
                page.wait_for_function(
                    """([w, sel, n]) => { const p = document.querySelectorAll(`.jp-OutputArea ${w} .js-plotly-plot`);
                       return p.length && p[0].querySelectorAll(sel).length < n; }""",
                    arg=[SCRUBBER, EDIT_POINTS, s_before], timeout=60_000, polling=500)
                s_after = _plot_points(page, SCRUBBER)
                assert int(moved) < int(readout), (readout, moved)
                page.wait_for_function("([w, t]) => [...document.querySelectorAll(`.jp-OutputArea ${w} .widget-html`)]"
                                       ".some(e => e.textContent.includes(t))",
                                       arg=[SCRUBBER, f"after {moved} edits"], timeout=60_000)
                page.screenshot(path=str(artifacts / "browser_scrubber.png"))
                print(f"\nrun all {run_all_s:.0f} s, browser step {step_s:.0f} s, replay step {replay_s:.0f} s, "
                      f"total {time.monotonic() - t_start:.0f} s; points {before} -> {after}, replay {r_before} -> "
                      f"{r_after}; scrubber {readout} -> {moved} edits, points {s_before} -> {s_after}")
            finally:
                ctx.close()
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)
