"""The web UI in a real browser: Playwright driving Debian's Chromium (no browser download).

Run by tests/tests/it/web_ui.rs against a `driftwood up` whose store the real loop filled
(period 1 trained, period 2 streamed, drift confirmed, a retrain promoted). It signs in as a
viewer and as an admin, visits every page (a screenshot of each into OUT/screenshots), checks
the figures shown against the /v1 routes, promotes and rolls back through the forms, tries a
forged and a cross-site POST, and runs axe-core on every page. Any failure exits non-zero with
the reason; the last line printed is a JSON summary.

usage: browser_ui.py BASE_URL OUT_DIR MODEL
env:   DRIFTWOOD_CHROMIUM (the browser), UI_VIEWER_PASSWORD, UI_ADMIN_PASSWORD
"""

import json
import os
import re
import sys

import requests
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import sync_playwright

BASE, OUT, MODEL = sys.argv[1], sys.argv[2], sys.argv[3]
SHOTS = os.path.join(OUT, "screenshots")
os.makedirs(SHOTS, exist_ok=True)
axe = Axe()
summary = {"pages": [], "axe": {}}


def fail(message):
    print(f"FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def bearer(user, password):
    r = requests.post(f"{BASE}/oauth/token",
                      data={"grant_type": "password", "username": user, "password": password}, timeout=10)
    check(r.status_code == 200, f"token for {user}: {r.status_code} {r.text}")
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def v1(path, headers):
    r = requests.get(f"{BASE}{path}", headers=headers, timeout=30)
    check(r.status_code == 200, f"GET {path}: {r.status_code} {r.text}")
    return r.json()


def sign_in(page, user, password):
    page.goto(f"{BASE}/ui")
    check("/ui/login" in page.url, f"without a session /ui goes to the login form, not {page.url}")
    page.fill("#username", user)
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{BASE}/ui")
    check(page.locator("header .who").inner_text().startswith(user), "the header names the user")


def visit(page, path, name, violations):
    response = page.goto(f"{BASE}{path}")
    check(response.status == 200, f"{path}: {response.status}")
    page.wait_for_load_state("networkidle")
    page.screenshot(path=os.path.join(SHOTS, f"{name}.png"), full_page=True)
    result = axe.run(page)
    bad = [v for v in result.response["violations"] if v.get("impact") in ("serious", "critical")]
    summary["axe"][name] = len(bad)
    for v in bad:
        violations.append(f"{path}: {v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes']][:3]}")
    summary["pages"].append(path)
    return page.content()


def number(text):
    return float(re.sub(r"[^0-9.\-]", "", text))


with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=os.environ["DRIFTWOOD_CHROMIUM"], headless=True,
                                args=["--no-sandbox", "--disable-gpu"])
    csp_errors = []

    def watch(page):
        page.on("console", lambda m: csp_errors.append(m.text) if "Content Security Policy" in m.text else None)
        page.on("pageerror", lambda e: csp_errors.append(f"script error: {e}"))
        # An injected script would show itself by calling alert().
        page.on("dialog", lambda d: (csp_errors.append(f"a dialog opened: {d.message}"), d.dismiss()))

    # --- a viewer ------------------------------------------------------------------------------
    viewer_ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = viewer_ctx.new_page()
    watch(page)
    sign_in(page, "viewer", os.environ["UI_VIEWER_PASSWORD"])
    auth = bearer("viewer", os.environ["UI_VIEWER_PASSWORD"])
    cookie = [c for c in viewer_ctx.cookies() if c["name"] == "driftwood_session"][0]
    check(cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui", f"cookie {cookie}")

    models = v1(f"/v1/models/{MODEL}", auth)
    runs = v1("/v1/search/runs?limit=500", auth)
    datasets = v1("/v1/datasets", auth)
    production = models["aliases"]["production"]
    check(production >= 2, f"the loop promoted a retrained model (production is v{production})")
    violations = []

    html = visit(page, "/ui", "overview", violations)
    live = page.locator("#live").inner_text()
    check(f"{MODEL} v{production}" in live, "the overview names the served version")
    newest = v1(f"/v1/drift/windows?model={MODEL}&version={production}&limit=1", auth)["windows"]
    check((f"window {newest[0]['index']} closed" in live) if newest else ("no window yet" in live),
          f"the overview shows v{production}'s newest drift window: {newest[:1]}")
    # The live part refreshes itself (htmx) without a reload, and the chart script ran.
    with page.expect_response(lambda r: r.url == f"{BASE}/ui" and r.request.headers.get("hx-request") == "true",
                              timeout=15000):
        pass

    html = visit(page, "/ui/runs", "runs", violations)
    pager = page.locator("nav.pager").first.inner_text()
    check(f"of {runs['total']}" in pager, f"the runs page counts {runs['total']} runs: {pager}")
    # Sorting by a metric is done by the server: the page's first run is the route's.
    page.goto(f"{BASE}/ui/runs?sort=metrics.test_accuracy&order=desc")
    top = v1("/v1/search/runs?sort=metrics.test_accuracy&order=desc&limit=1", auth)["runs"][0]["run_id"]
    check(page.locator("tbody tr td.mono a").first.inner_text() == top, "sorted as the route sorts")
    # Compare two runs: tick them, submit.
    page.goto(f"{BASE}/ui/runs")
    boxes = page.locator("input[name=run]")
    check(boxes.count() >= 2, "at least two runs to compare")
    boxes.nth(0).check()
    boxes.nth(1).check()
    page.click("text=Compare selected runs")
    page.wait_for_load_state("networkidle")
    check("runs compared" in page.locator("h1").inner_text(), "the compare page opens")
    page.screenshot(path=os.path.join(SHOTS, "compare.png"), full_page=True)
    check(page.locator("figure.chart canvas").count() >= 1 or page.locator("figure.chart").count() == 0,
          "uPlot drew the curves")

    run_id = top
    html = visit(page, f"/ui/runs/{run_id}", "run", violations)
    run = v1(f"/v1/runs/{run_id}", auth)
    shown = {r.locator("td").nth(0).inner_text(): r.locator("td").nth(1).inner_text()
             for r in page.locator("h2:has-text('Metrics') + table tbody tr").all()}
    for key, value in run["metrics"].items():
        check(abs(number(shown[key]) - value) < 1e-4, f"run {run_id} {key}: page {shown.get(key)} vs route {value}")

    visit(page, "/ui/models", "models", violations)
    html = visit(page, f"/ui/models/{MODEL}", "model", violations)
    check(page.locator("form#promote").count() == 0 and page.locator("form#rollback").count() == 0,
          "a viewer sees no promote or roll back form")
    check("retrain" in page.locator("ol.timeline").inner_text(), "the timeline shows the retrain's promotion")
    visit(page, f"/ui/models/{MODEL}/{production}", "model_version", violations)
    check(page.locator("table.cm").count() == 1, "the model card shows a confusion matrix")
    card = v1(f"/v1/models/{MODEL}/versions/{production}", auth)
    acc = card["version"]["metrics"]["test_accuracy"]
    check(f"{acc:.4f}" in page.content(), f"test_accuracy {acc:.4f} is shown")

    # A forged promote from the viewer's session (a hand-made POST with the page's token): 403.
    token = page.locator("input[name=csrf]").first.get_attribute("value")
    r = viewer_ctx.request.post(f"{BASE}/ui/models/{MODEL}/promote",
                                form={"csrf": token, "version": "1"}, max_redirects=0)
    check(r.status == 403, f"a viewer's forged promote gets 403, not {r.status}")

    visit(page, "/ui/data", "data", violations)
    for d in datasets:
        check(page.locator(f"a[href='/ui/data/{d['name']}']").count() == 1, f"dataset {d['name']} listed")
    text = next(d for d in datasets if d["name"] == "text")
    visit(page, "/ui/data/text", "dataset", violations)
    # The row-level diff the form asks for (the two newest versions) is the route's.
    versions = v1("/v1/datasets/text/versions", auth)
    check(len(versions) >= 2, f"the loop wrote several versions of text: {len(versions)}")
    page.click("text=Compare rows")
    page.wait_for_load_state("networkidle")
    api = v1(f"/v1/datasets/text/diff?from={versions[-2]['id']}&to={versions[-1]['id']}", auth)
    cards = {c.locator(".label").inner_text(): int(c.locator(".value").inner_text()) for c in page.locator(".card").all()}
    check(cards == {"Added": api["added"], "Removed": api["removed"], "Changed": api["changed"],
                    "Unchanged": api["unchanged"]}, f"diff page {cards} vs route {api}")
    whole = v1(f"/v1/datasets/text/diff?from=v1&to=latest", auth)
    check(whole["added"] == versions[-1]["rows"] - versions[0]["rows"], f"v1 → latest adds the streamed rows: {whole}")
    visit(page, "/ui/data/text/diff?from=v1&to=latest", "data_diff", violations)
    html = visit(page, "/ui/data/text/latest", "data_version", violations)
    check(f"of {text['rows']}" in page.locator("nav.pager").first.inner_text(), "the rows pager counts the version's rows")
    # User data renders as text: the raw rows that carry markup show it, and no element came of it.
    for x in ["<script>alert('xss')</script>", '"><img src=x onerror=alert(1)>']:
        at, offset = None, 0
        while at is None:
            rows = v1(f"/v1/datasets/text_raw/versions/v1/rows?offset={offset}&limit=500", auth)
            at = next((offset + i for i, r in enumerate(rows["rows"]) if r["text"].startswith(x)), None)
            check(at is not None or rows["more"], f"the raw version holds the row starting {x}")
            offset += 500
        visit(page, f"/ui/data/text_raw/v1?offset={at}", "raw_version", violations)
        check(page.locator("tbody td.text").get_by_text(x, exact=False).count() >= 1, f"{x} is shown as text")
        check(page.locator("main img, main svg, main script").count() == 0, "no element was injected")
    visit(page, "/ui/audit", "audit", violations)

    # Drift: the windows the live monitor kept for v1, with the drift that caused the retrain.
    kept = v1(f"/v1/drift/windows?model={MODEL}&version=1&limit=1000", auth)["windows"]
    check(any(w["report"]["drift_confirmed"] for w in kept), f"the monitor kept v1's drifting windows: {len(kept)}")
    visit(page, f"/ui/drift?model={MODEL}&version=1", "drift", violations)
    check(f"Every window ({len(kept)}, newest first)" in page.content(), "the page shows every kept window")
    check("drift confirmed" in page.locator("main").inner_text(), "the drift events are listed")
    check(page.locator("figure.chart canvas").count() >= 3, "uPlot drew the PSI, KS and chi-square charts")

    # Predictions: the stream's, newest first, as the route lists them; one opens with its text.
    recent = v1(f"/v1/predictions?model={MODEL}&channel=stream&limit=50", auth)["predictions"]
    check(len(recent) > 0, "the scorer logged stream predictions")
    visit(page, f"/ui/predictions?model={MODEL}&channel=stream", "predictions", violations)
    shown = page.locator("tbody tr td.mono a").all_inner_texts()
    check(shown == [p["id"] for p in recent if p["id"]], "the page lists the route's predictions in its order")
    doubtful = v1(f"/v1/predictions?model={MODEL}&max_confidence=0.6&limit=500", auth)["predictions"]
    page.goto(f"{BASE}/ui/predictions?model={MODEL}&doubtful=on&limit=500")
    check(page.locator("tbody tr").count() == max(len(doubtful), 1), f"{len(doubtful)} doubtful predictions")
    # A prediction whose record the scored snapshot has versioned: its lineage and text.
    for p in recent:
        r = requests.get(f"{BASE}/v1/lineage/predictions/{p['id']}", headers=auth, timeout=30)
        if r.status_code == 200 and r.json()["prediction"]["raw_version"]:
            visit(page, f"/ui/predictions/{p['id']}", "prediction", violations)
            check(len(page.locator("pre.text").inner_text().strip()) > 0, "the prediction's text is shown")
            break
    else:
        fail("no recent prediction has a versioned raw record yet")

    # Dead letters: the reasons counted as the route counts them, the newest listed, inert.
    dead = v1("/v1/dead-letters?limit=20", auth)
    check(len(dead["by_reason"]) >= 5, f"the bad records were dead-lettered with their reasons: {dead['by_reason']}")
    visit(page, "/ui/dead-letters", "dead_letters", violations)
    cards = {c.locator(".label").inner_text(): int(c.locator(".value").inner_text()) for c in page.locator(".card").all()}
    check(cards == dead["by_reason"], f"dead-letter counts {cards} vs route {dead['by_reason']}")
    check(page.locator("main table").last.locator("tbody tr").count() == len(dead["latest"]), "the newest are listed")
    check(page.locator("main img, main svg, main script").count() == 0, "no element was injected")

    # --- an admin ------------------------------------------------------------------------------
    admin_ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = admin_ctx.new_page()
    watch(page)
    sign_in(page, "admin", os.environ["UI_ADMIN_PASSWORD"])
    admin = bearer("admin", os.environ["UI_ADMIN_PASSWORD"])
    page.goto(f"{BASE}/ui/models/{MODEL}")
    page.select_option("#promote-version", str(1))
    page.fill("#promote-reason", "browser test: back to v1")
    page.click("form#promote button[type=submit]")
    page.wait_for_url(f"{BASE}/ui/models/{MODEL}")
    check(v1(f"/v1/models/{MODEL}", admin)["aliases"]["production"] == 1, "the promote form moved production to v1")
    check("browser test: back to v1" in page.locator("ol.timeline").inner_text(), "the timeline shows the promotion")
    page.screenshot(path=os.path.join(SHOTS, "model_admin.png"), full_page=True)
    page.fill("#rollback-reason", "browser test: undo")
    page.click("form#rollback button[type=submit]")
    page.wait_for_url(f"{BASE}/ui/models/{MODEL}")
    after = v1(f"/v1/models/{MODEL}", admin)["aliases"]["production"]
    check(after == production, f"the rollback returned production to v{production}, not v{after}")
    check("browser test: undo" in page.locator("ol.timeline").inner_text(), "the timeline shows the rollback")

    # A cross-site page posting to the promote form (no token, another origin): refused, and
    # SameSite=Strict keeps the cookie off it anyway.
    evil = admin_ctx.new_page()
    evil.set_content(f"""<form id=f method=post action="{BASE}/ui/models/{MODEL}/promote">
        <input name=version value=1></form>""")
    with evil.expect_navigation() as nav:
        evil.evaluate("document.getElementById('f').submit()")
    status = nav.value.status if nav.value else None
    check(status in (401, 403), f"a cross-site POST is refused, not {status}")
    check(v1(f"/v1/models/{MODEL}", admin)["aliases"]["production"] == production, "nothing moved")

    check(not csp_errors, f"the browser reported: {csp_errors}")
    check(not violations, "axe-core found serious or critical violations:\n" + "\n".join(violations))
    browser.close()

print(json.dumps(summary))
