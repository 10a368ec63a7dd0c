"""The dashboard in a real headless Chromium: the key form, live figures from /admin/status, a screenshot that is
not blank, and a rejected policy edit showing up on the page.

Needs Debian's `chromium` (apt-get install chromium) and the `playwright` Python package; the browser that
Playwright would download is never used (`playwright install` cannot run here): the system one is launched
by path. Skipped when either is missing, unless GATEWAY_REQUIRE_BROWSER=1 (then it fails, so CI cannot
silently pass without a browser).
"""

from __future__ import annotations

import os
import shutil
import struct
import time
import zlib
from pathlib import Path

import httpx
import pytest

from conftest import ADMIN_KEY, Gateway

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _chromium() -> str | None:
    for name in (os.environ.get("CHROMIUM_PATH"), "chromium", "chromium-browser", "/usr/bin/chromium"):
        if name and (path := shutil.which(name)):
            return path
    return None


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the `playwright` Python package is not installed (pip install playwright; never `playwright install`)"
    if _chromium() is None:
        return "no chromium binary (apt-get install chromium)"
    return None


_REASON = _missing()
if _REASON and os.environ.get("GATEWAY_REQUIRE_BROWSER") == "1":
    raise RuntimeError(f"GATEWAY_REQUIRE_BROWSER=1 but {_REASON}")
pytestmark = pytest.mark.skipif(_REASON is not None, reason=f"dashboard browser test: {_REASON}")

POLICY = """
version: 1
models:
  edge-a:
    tier: edge
    litellm: {{model: openai/edge-a, api_base: "{url}", api_key: test}}
  cloud-a:
    tier: cloud
    litellm: {{model: openai/cloud-a, api_base: "{url}", api_key: test}}
    cost: {{input_per_mtok: 2.5, output_per_mtok: 10}}
  flaky:
    tier: cloud
    litellm: {{model: openai/flaky, api_base: "{url}", api_key: test}}
    cost: {{input_per_mtok: 2.5, output_per_mtok: 10}}
classifier: {{kind: length, threshold: 0.5}}
routes:
  - name: canned
    when: {{model: canned}}
    targets: [flaky]
  - name: auto
    when: {{model: auto}}
    simple: [edge-a, cloud-a]
    complex: [cloud-a, edge-a]
retry: {{attempts: 1}}
breaker: {{failures: 1, window: 30s, cooldown: 300s}}
degrade: {{reply: "Busy, try again soon.", retry_after: 5s}}
"""

BAD_POLICY_TAIL = """
  - name: broken
    when: {model: broken}
    targets: [no-such-model]
"""

LONG = "Prove that the sum of the first n odd numbers is n squared, step by step. " * 10


# ---- a minimal PNG decoder (8-bit RGB/RGBA, not interlaced: what Chromium writes), to avoid needing Pillow ----

def _png_pixels(data: bytes) -> tuple[int, int, int, bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        elif kind == b"IEND":
            break
    width, height, depth, color, _, _, interlace = header
    assert depth == 8 and color in (2, 6) and interlace == 0, f"unsupported PNG {header}"
    bpp = 3 if color == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    out = bytearray()
    prev = bytearray(stride)
    for y in range(height):
        base = y * (stride + 1)
        ftype, line = raw[base], bytearray(raw[base + 1:base + 1 + stride])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 0xFF
            elif ftype == 2:
                line[i] = (line[i] + b) & 0xFF
            elif ftype == 3:
                line[i] = (line[i] + ((a + b) >> 1)) & 0xFF
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        out += line
        prev = line
    return width, height, bpp, bytes(out)


def _colour_stats(png: bytes) -> tuple[int, float]:
    """(distinct colours, variance of the grey level) over a sample of pixels."""
    width, height, bpp, pixels = _png_pixels(png)
    colours, greys = set(), []
    for y in range(0, height, 3):
        row = y * width * bpp
        for x in range(0, width, 3):
            i = row + x * bpp
            r, g, b = pixels[i], pixels[i + 1], pixels[i + 2]
            colours.add((r >> 3, g >> 3, b >> 3))
            greys.append(0.299 * r + 0.587 * g + 0.114 * b)
    mean = sum(greys) / len(greys)
    return len(colours), sum((v - mean) ** 2 for v in greys) / len(greys)


# ---- fixtures ----

@pytest.fixture(scope="module")
def gw(upstream, tmp_module):
    gateway = Gateway(POLICY.format(url=upstream.url), tmp_module)
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def traffic(gw, upstream):
    """Some answered requests (edge and cloud) and one degraded (the only target fails, a canned reply)."""
    upstream.reset()
    upstream.script("flaky", [], default={"status": 500})

    def chat(model: str, content: str) -> httpx.Response:
        return httpx.post(gw.base + "/v1/chat/completions", timeout=30,
                          json={"model": model, "messages": [{"role": "user", "content": content}]})

    for i in range(3):
        r = chat("auto", f"Hi {i}")
        assert r.status_code == 200 and r.headers["x-gateway-tier"] == "edge", r.text
    r = chat("auto", LONG)
    assert r.status_code == 200 and r.headers["x-gateway-tier"] == "cloud", r.text
    r = chat("canned", "Hello?")
    assert r.status_code == 200 and r.headers.get("x-gateway-degraded") == "true", r.text
    upstream.reset()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # accounting runs after the answer is sent
        status = httpx.get(gw.base + "/admin/status", headers=gw.admin(), timeout=5).json()
        if status["requests"] >= 5 and status["cost_today_usd"] > 0:
            return status
        time.sleep(0.1)
    pytest.fail(f"the status never counted the traffic: {status}")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser, gw):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.requests_seen = []
    page.on("request", lambda request: page.requests_seen.append(request.url))
    yield page
    context.close()


def _log_in(page, gw, key: str) -> None:
    page.goto(gw.base + "/dashboard")
    page.wait_for_selector("#admin-key", state="visible")
    page.fill("#admin-key", key)
    page.click("#key-form button[type=submit]")


def _bar_shares(page, container: str) -> dict[str, str]:
    return page.eval_on_selector_all(
        f"{container} .bar-row",
        "rows => Object.fromEntries(rows.map(r => [r.dataset.name, r.querySelector('.bar-value b').textContent]))")


# ---- tests ----

def test_dashboard_is_self_contained():
    html = (Path(__file__).resolve().parent.parent / "gateway" / "api" / "static" / "dashboard.html").read_text()
    for marker in ("http://", "https://", "//cdn", "<link", "src=", "@import", "url("):
        assert marker not in html, f"the dashboard refers to an outside resource ({marker!r})"


def test_bad_key_shows_a_clear_401_message(page, gw):
    _log_in(page, gw, "wrong-key")
    message = page.wait_for_selector("#auth-message", state="visible")
    assert "401" in message.inner_text() and "rejected" in message.inner_text()
    assert page.is_visible("#admin-key")  # asks again
    assert page.evaluate("sessionStorage.getItem('gateway-admin-key')") is None


def test_live_figures_tier_shares_and_screenshot(page, gw, traffic, tmp_path):
    _log_in(page, gw, ADMIN_KEY)
    page.wait_for_function("document.querySelectorAll('#tiers .bar-row').length >= 2")
    page.wait_for_function("document.getElementById('policy-version').textContent.length > 3")
    status = httpx.get(gw.base + "/admin/status", headers=gw.admin(), timeout=5).json()

    total = sum(status["tiers"].values())
    expected = {tier: f"{100 * n / total:.0f} %" if 100 * n / total >= 10 else f"{100 * n / total:.1f} %"
                for tier, n in status["tiers"].items()}
    assert _bar_shares(page, "#tiers") == expected
    assert set(_bar_shares(page, "#models")) == set(status["models"])
    assert {"edge", "cloud"} <= set(expected)
    assert page.inner_text("#policy-version") == status["policy_version"]
    assert page.inner_text("#classifier-version") == status["classifier"]["version"]
    assert page.inner_text("#requests") == str(status["requests"])
    assert page.inner_text("#degraded-rate") != "0 %"           # the canned reply is counted
    assert page.inner_text("#p50").endswith("ms")
    assert page.inner_text("#cost").startswith("$") and page.inner_text("#cost") != "$0.00"
    assert page.inner_text("#savings").startswith("$")
    assert page.inner_text("#redis") == "no Redis"  # this gateway runs on in-memory state
    assert page.inner_text("#breakers tr[data-target^='flaky'] .pill") == "open"
    assert page.is_hidden("#reload-error")
    assert page.inner_text("#conn") == "live"
    assert page.evaluate("sessionStorage.getItem('gateway-admin-key')") == ADMIN_KEY
    # Only the gateway itself is ever asked for anything.
    assert page.requests_seen and all(url.startswith(gw.base + "/") for url in page.requests_seen)

    png = page.screenshot(full_page=True)
    (tmp_path / "dashboard.png").write_bytes(png)
    colours, variance = _colour_stats(png)
    assert colours >= 8, f"the screenshot looks blank ({colours} colours)"
    assert variance > 50, f"the screenshot looks blank (grey variance {variance:.1f})"


def test_rejected_policy_edit_shows_the_reload_error(page, gw, traffic, tmp_path):
    good = gw.policy_path.read_text()
    _log_in(page, gw, ADMIN_KEY)
    page.wait_for_function("document.getElementById('policy-version').textContent.length > 3")
    version = page.inner_text("#policy-version")
    try:
        gw.policy_path.write_text(good.replace("routes:\n", "routes:" + BAD_POLICY_TAIL, 1))
        box = page.wait_for_selector("#reload-error", state="visible", timeout=20_000)
        text = box.inner_text()
        assert "no-such-model" in text and gw.policy_path.name in text, text
        assert ":" in page.inner_text("#reload-error-list li")  # file:line: message
        colour = page.eval_on_selector("#reload-error", "e => getComputedStyle(e).color")
        r, g, b = (int(v) for v in colour[colour.index("(") + 1:colour.index(")")].split(",")[:3])
        assert r > 150 and g < 100 and b < 100, f"the reload error is not red: {colour}"
        assert page.inner_text("#policy-version") == version  # the last good policy keeps serving
        (tmp_path / "dashboard-reload-error.png").write_bytes(page.screenshot(full_page=True))
    finally:
        gw.policy_path.write_text(good.replace("degrade:", "# fixed\ndegrade:"))
    # A later good reload: the old error is kept but no longer shown as the current state.
    page.wait_for_function(
        f"document.getElementById('policy-version').textContent !== {version!r}", timeout=20_000)
    page.wait_for_selector("#reload-error.resolved", timeout=10_000)


def test_admin_off_and_unreachable_gateway_are_explained(page, gw):
    # Admin endpoints off (no GATEWAY_ADMIN_KEY): the gateway answers 403.
    page.route("**/admin/status", lambda route: route.fulfill(
        status=403, content_type="application/json",
        body='{"error": {"message": "Admin endpoints are off", "code": "admin_disabled"}}'))
    _log_in(page, gw, ADMIN_KEY)
    message = page.wait_for_selector("#auth-message", state="visible")
    assert "403" in message.inner_text() and "GATEWAY_ADMIN_KEY" in message.inner_text()
    page.unroute("**/admin/status")

    # The gateway goes away after the page had figures: the last figures stay, marked as stale.
    _log_in(page, gw, ADMIN_KEY)
    page.wait_for_function("document.getElementById('conn').textContent === 'live'")
    page.route("**/admin/status", lambda route: route.abort("connectionrefused"))
    stale = page.wait_for_selector("#stale", state="visible", timeout=10_000)
    assert "Cannot reach the gateway" in stale.inner_text()
    assert page.inner_text("#conn") == "unreachable"
    assert page.is_visible("#tiers") and page.inner_text("#policy-version") != "–"
    page.unroute("**/admin/status")
    page.wait_for_function("document.getElementById('conn').textContent === 'live'", timeout=10_000)
    assert page.is_hidden("#stale")


def test_states_render_as_text_from_a_crafted_status(page, gw):
    """Redis degraded, breakers half-open, a reload error holding markup: rendered as text, never as HTML."""
    import json

    status = {
        "window_s": 300, "requests": 3, "tiers": {"edge": 1, "<b>cloud</b>": 2}, "models": {"m<i>x</i>": 3},
        "latency_ms": {"p50": 12.5, "p90": 250.0, "p99": 12000.0}, "error_rate": 0.5, "degraded_rate": 0.0,
        "breakers": {"a#0": "half_open", "b#0": "closed"}, "cost_today_usd": 12.3456,
        "reference_cost_today_usd": 20.0, "savings_today_usd": 7.6544, "policy_version": "v-test",
        "last_reload_error": ["p.yaml:3: <img src=x onerror=\"window.pwned=1\">"], "redis": "degraded",
        "budgets": [{"scope": "key", "name": "<b>team</b>", "budget_usd": 5.0, "spent_usd": 6.25, "reached": True}],
        "shadow": {"rate": 0.1, "daily_budget_usd": 2.0, "spent_today_usd": 0.5}}
    page.route("**/admin/status", lambda route: route.fulfill(
        status=200, content_type="application/json", body=json.dumps(status)))
    page.route("**/admin/policy", lambda route: route.fulfill(
        status=200, content_type="application/json", body=json.dumps({"last_reload": {"ok": False}})))
    _log_in(page, gw, ADMIN_KEY)
    page.wait_for_function("document.getElementById('policy-version').textContent === 'v-test'")
    assert page.inner_text("#redis") == "Redis degraded"
    assert "local state" in page.inner_text("#redis-note")
    assert page.inner_text("#breakers tr[data-target='a#0'] .pill") == "half-open"
    assert _bar_shares(page, "#tiers") == {"<b>cloud</b>": "67 %", "edge": "33 %"}
    assert page.inner_text("#p99") == "12.0 s" and page.inner_text("#p90") == "250 ms"
    assert page.inner_text("#error-rate") == "50 %"
    assert page.inner_text("#cost") == "$12.35" and page.inner_text("#savings-pct") == "(38 %)"
    assert 'onerror="window.pwned=1"' in page.inner_text("#reload-error-list")
    assert page.evaluate("window.pwned") is None and page.query_selector("#reload-error img") is None
    assert page.query_selector("#tiers b b") is None
    team = "#budgets tr[data-budget='key <b>team</b>']"
    assert page.inner_text(team + " .pill") == "reached" and "$6.25" in page.inner_text(team)
    assert page.inner_text("#budgets tr[data-budget='shadow comparisons'] .pill") == "open"
    assert page.query_selector("#budgets b") is None
