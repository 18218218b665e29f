# SPDX-License-Identifier: Apache-2.0
"""The control service's dashboard (served at / from the binary) as a
browser and an operator see it. Without a browser: the page, script and
style come without a token, byte for byte as in consumers/web, under a
strict Content-Security-Policy, and the API behind them still wants one. In
headless Chromium (tests/browser/dashboard.test.mjs): sign in, a lock made
through the API appears on the page without a reload, actions run as a dry
run first (unlock previews too: the server's dry run, audited as such, and
no refused request on fleet.audit), and a screenshot lands in
$FG_BUILD_DIR/artifacts/dashboard.png.
Chromium and tests/browser/node_modules come from deploy/install; when they
are missing the test fails (it does not skip). With FG_SCREENSHOT_DOCS=PATH
the same screenshot is also written there (docs/dashboard.png, the README's
picture)."""

import math
import os
import shutil
import subprocess
import time

import fgtest
from fgtest import msgpack
from test_control import TOKENS, Control, Topics, audit_records, wait_audit
from test_scorer_decisions import ops_record

SOURCE_DIR = os.environ.get("FG_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
WEB_DIR = os.path.join(SOURCE_DIR, "consumers", "web")
BROWSER_DIR = os.path.join(SOURCE_DIR, "tests", "browser")
CHROMIUM = os.environ.get("FG_CHROMIUM", "/usr/bin/chromium")

# (region, devices, grey share now, policy mode): the table the page shows.
REGIONS = [
    ("CU", 200, 0.95, "auto"),
    ("US", 5200, 0.012, "auto"),
    ("DE", 3100, 0.013, "auto"),
    ("IR", 800, 0.33, "monitor"),
    ("SY", 420, 0.71, "auto"),
    ("BR", 1500, 0.06, "auto"),
    ("UA-43", 640, 0.02, "never"),
]


def now_ms():
    return int(time.time() * 1000)


def wilson(grey, devices, z=1.96):
    """The 95 % Wilson score interval of grey / devices."""
    if devices == 0:
        return 0.0, 0.0
    p = grey / devices
    den = 1 + z * z / devices
    mid = (p + z * z / (2 * devices)) / den
    half = z * math.sqrt(p * (1 - p) / devices + z * z / (4 * devices * devices)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def publish_history(topics, points=12, step_ms=30000):
    """points score rows per region, step_ms apart and ending now, each
    region's grey share rising towards its value in REGIONS (a wave), so
    the detail view has a history to draw."""
    t_end = now_ms()
    msgs = []
    for i in range(points):
        ts = t_end - (points - 1 - i) * step_ms
        ramp = 0.35 + 0.65 * (i / (points - 1)) ** 2
        for region, devices, share, mode in REGIONS:
            n = int(devices * (0.8 + 0.2 * i / (points - 1)))
            grey = round(n * share * ramp)
            lo, hi = wilson(grey, n)
            row = {"region": region, "ts": ts, "devices": n, "grey": grey,
                   "share": grey / n, "lo": lo, "hi": hi, "mode": mode,
                   "state": "unlocked", "source": "auto"}
            msgs.append((region.encode(), msgpack.packb(row, use_bin_type=True)))
    fgtest.produce_many(topics.scores, msgs)


def publish_scorer_locks(topics):
    """SY locked and IR in shadow by the scorer (source auto)."""
    until = now_ms() + 40 * 60 * 1000
    sy = ops_record("SY", state="locked", source="auto", actor="fleetgate-scorer",
                    reason="grey share 0.71 over lock_at 0.30 for 5m",
                    message="Service is paused in this region.", until=until,
                    since=now_ms() - 2 * 60 * 1000)
    ir = ops_record("IR", state="shadow", source="auto", actor="fleetgate-scorer",
                    reason="grey share 0.33 over lock_at 0.30 (monitor)", until=until)
    fgtest.produce_many(topics.locks, [(b"SY", msgpack.packb(sy, use_bin_type=True)),
                                       (b"IR", msgpack.packb(ir, use_bin_type=True))])


def test_dashboard_files_are_served_without_a_token():
    """GET / answers the embedded page (the source file's bytes) with
    text/html, a default-src 'self' CSP, nosniff and no-cache; the script,
    style and icon likewise with their types; HEAD gives the headers only;
    other methods 405; an unknown file is the API's 404; the API itself
    still answers 401 without a token."""
    with Control(Topics()) as ctl:
        files = {"/": ("dashboard.html", "text/html"),
                 "/dashboard.js": ("dashboard.js", "text/javascript"),
                 "/dashboard.css": ("dashboard.css", "text/css"),
                 "/favicon.svg": ("favicon.svg", "image/svg+xml")}
        for path, (name, ctype) in files.items():
            status, hdrs, body = ctl.request("GET", path)
            assert status == 200, (path, status, body[:200])
            with open(os.path.join(WEB_DIR, name), "rb") as f:
                assert body == f.read(), f"{path} differs from consumers/web/{name}: rebuild?"
            assert hdrs["content-type"].startswith(ctype), (path, hdrs)
            csp = hdrs.get("content-security-policy", "")
            assert "default-src 'self'" in csp and "script-src 'self'" in csp, (path, hdrs)
            assert "unsafe-inline" not in csp, csp
            assert hdrs.get("x-content-type-options") == "nosniff", hdrs
            assert "no-cache" in hdrs.get("cache-control", ""), hdrs
            status, hhdrs, hbody = ctl.request("HEAD", path)
            assert status == 200 and hbody == b"", (path, status, hbody[:100])
            assert hhdrs["content-length"] == str(len(body)), (path, hhdrs)
        status, hdrs, _ = ctl.request("POST", "/", b"{}", {"Content-Type": "application/json"})
        assert status == 405 and hdrs.get("allow") == "GET, HEAD", (status, hdrs)
        status, _, body = ctl.call("GET", "/dashboard.jsx", "vic")
        assert status == 404 and body["error"] == "not_found", (status, body)
        status, hdrs, body = ctl.call("GET", "/v1/regions")
        assert status == 401 and body["error"] == "unauthorized", (status, body)


def test_dashboard_in_chromium():
    """The operator's walk through the page (see dashboard.test.mjs) in
    headless Chromium against a real fleetgate-control with seven regions
    (two held by the scorer); the screenshot is kept as an artifact."""
    node = shutil.which("node")
    assert node, "node is missing: run deploy/install"
    assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing: run deploy/install"
    assert os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", "playwright-core")), \
        "tests/browser/node_modules is missing: run deploy/install (npm ci there)"
    build = os.environ.get("FG_BUILD_DIR") or os.path.join(SOURCE_DIR, "build")
    shot = os.path.join(build, "artifacts", "dashboard.png")
    if os.path.exists(shot):
        os.unlink(shot)
    topics = Topics()
    # A two-person threshold the page can meet: US has 5200 devices.
    with Control(topics, {"control.two_person_devices": "4000"}) as ctl:
        publish_scorer_locks(topics)
        publish_history(topics)
        fgtest.wait_until(
            lambda: (lambda b: b and b.get("count") == len(REGIONS) and
                     any(r["state"] == "locked" for r in b["regions"]))(
                ctl.call("GET", "/v1/regions", "vic")[2]),
            timeout=15, what="every region and the scorer's lock in the table")
        env = dict(os.environ,
                   FG_DASHBOARD_URL=f"http://127.0.0.1:{ctl.port}/",
                   FG_TOKEN_VIEWER=TOKENS["vic"][1],
                   FG_TOKEN_OPERATOR=TOKENS["alice"][1],
                   FG_TOKEN_ADMIN=TOKENS["root"][1],
                   FG_SCREENSHOT=shot, FG_CHROMIUM=CHROMIUM)
        p = subprocess.run([node, os.path.join(BROWSER_DIR, "dashboard.test.mjs")],
                           cwd=BROWSER_DIR, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=120)
        out = p.stdout.decode(errors="replace")
        print(out, end="", flush=True)
        assert p.returncode == 0, f"dashboard.test.mjs exited {p.returncode}"
        assert os.path.getsize(shot) > 10000, shot
        print(f"artifact: {shot}", flush=True)
        # The unlock previews were the server's dry runs: each is on
        # fleet.audit as one, with the devices the page showed.
        previews = [ln.split()[1:] for ln in out.splitlines()
                    if ln.startswith("dry-run ")]
        assert sorted(action for action, _, _ in previews) == ["unlock", "unlock_all"], out
        for action, rid, devices in previews:
            au = wait_audit(topics.audit, lambda a, rid=rid: a["request_id"] == rid,
                            f"the {action} preview's audit")
            assert au["outcome"] == "dry_run" and au["dry_run"] is True, au
            assert au["action"] == action and au["status"] == 200, au
            assert au["estimated_devices"] == int(devices), (au, devices)
        # ... and no preview was refused as bad input (the page once sent
        # dry_run to a server that took it for an unknown field).
        invalid = [a for a in audit_records(topics.audit) if a["outcome"] == "invalid"]
        assert invalid == [], invalid


if __name__ == "__main__":
    fgtest.run()
