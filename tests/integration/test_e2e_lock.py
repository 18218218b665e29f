# SPDX-License-Identifier: Apache-2.0
"""The whole loop of issue 3: a fleet (tools/fleetsim, with a scenario whose
phases raise and then lower CU's grey share) checks in through a real
gateway; the scorer counts the check-ins, locks CU once its grey share
crosses lock_at, and the gateway turns that record into `locked` answers
with the configured message; when the grey share falls, the scorer unlocks
CU and grey devices are `ok` again. A probe device (grey, in CU, checking in
every 100 ms) times decision -> directive: from the lock record's since to
its first `locked` answer, and from the unlock record's since to its first
`ok` again. Both must stay below DIRECTIVE_BOUND_S."""

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import fgtest
from fgtest import RedisServer
from test_scorer_decisions import (TEMPLATE, TTL_MS, Scorer, Topics,
                                   assert_no_repeats, expand, gateway,
                                   lock_records, now_ms, wait_lock)

DIRECTIVE_BOUND_S = 5.0  # CI bound on decision -> directive
PROBE_INTERVAL_S = 0.1

# CU: 5% grey, 90% from 3 s, 0% from 13 s; DE stays at 5% (never locks).
# The run is ended (SIGTERM) once the unlock reached the probe; the duration
# is only a bound.
SCENARIO = """\
duration 60s
seed 5
region CU devices=40 grey=0.05 interval=1s jitter=0.1 sku=CN ramp=1s
region DE devices=40 grey=0.05 interval=1s jitter=0.1 sku=CN ramp=1s
at 3s region CU grey=0.9
at 13s region CU grey=0
"""


class Probe:
    """One device checking in alone (POST /v1/checkin, keep-alive) every
    PROBE_INTERVAL_S; answers[] holds (wall ms when answered, answer)."""

    def __init__(self, gw, device, sku, region):
        self.gw, self.device, self.sku, self.region = gw, device, sku, region
        self.answers = []
        self.errors = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        conn, seq = None, 0
        while not self._stop.is_set():
            seq += 1
            body = json.dumps({"device_id": self.device, "sku_region": self.sku,
                               "region": self.region, "seq": seq}).encode()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.gw.port,
                                                      timeout=10)
                conn.request("POST", "/v1/checkin", body,
                             {"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                if resp.status == 200:
                    self.answers.append((now_ms(), json.loads(data)))
                else:
                    self.errors.append((resp.status, data))
            except (OSError, http.client.HTTPException) as e:
                self.errors.append(repr(e))
                conn = None
            self._stop.wait(PROBE_INTERVAL_S)

    def first(self, status, after):
        """(wall ms, answer) of the first answer with status at or after
        `after` (ms), or None."""
        for t, ans in self.answers:
            if t >= after and ans["status"] == status:
                return t, ans
        return None

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(15)
        return False


def run_fleetsim(gw, scenario, out_json):
    """Starts fleetsim against gw with scenario; returns the Popen."""
    path = out_json + ".scenario"
    with open(path, "w") as f:
        f.write(scenario)
    cmd = [fgtest.build_path("fleetsim"), "-s", path, "-t", f"127.0.0.1:{gw.port}",
           "-c", "8", "-q", "--report-interval", "500ms", "--json-out", out_json,
           "--id-prefix", "e2e"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_lock_reaches_devices_and_lifts():
    if not os.access(fgtest.build_path("fleetsim"), os.X_OK):
        raise AssertionError("fleetsim is not built")
    topics = Topics()
    tmp = tempfile.mkdtemp(prefix="fg-e2e-")
    summary_path = os.path.join(tmp, "summary.json")
    with RedisServer() as r, gateway(topics) as gw, Scorer(topics, r) as sc:
        sim = run_fleetsim(gw, SCENARIO, summary_path)
        try:
            with Probe(gw, "probe-grey-CU", "CN", "CU") as grey, \
                    Probe(gw, "probe-home-CU", "CU", "CU") as home:
                _, lock = wait_lock(topics.locks, lambda lk: lk["region"] == "CU",
                                    "CU locked", timeout=20)
                assert lock["state"] == "locked", lock
                first = fgtest.wait_until(lambda: grey.first("locked", lock["since"]),
                                          timeout=DIRECTIVE_BOUND_S + 5, interval=0.05,
                                          what="the grey probe's first locked answer")
                t_locked, ans = first
                lock_latency = (t_locked - lock["since"]) / 1000
                print(f"decision -> directive (lock): {lock_latency:.3f} s "
                      f"(record since {lock['since']}, first locked answer {t_locked})",
                      flush=True)
                _, unlock = wait_lock(topics.locks, lambda lk: lk["region"] == "CU" and
                                      lk["state"] == "unlocked", "CU unlocked",
                                      timeout=25)
                again = fgtest.wait_until(lambda: grey.first("ok", unlock["since"]),
                                          timeout=DIRECTIVE_BOUND_S + 5, interval=0.05,
                                          what="the grey probe's first ok after the unlock")
                unlock_latency = (again[0] - unlock["since"]) / 1000
                print(f"decision -> directive (unlock): {unlock_latency:.3f} s",
                      flush=True)
                # One more fleet interval, so every device saw the unlock.
                time.sleep(1.5)
            sim.send_signal(signal.SIGTERM)
            out, err = sim.communicate(timeout=30)
        finally:
            if sim.poll() is None:
                sim.kill()
                sim.communicate()
        assert sim.returncode == 0, (sim.returncode, out, err)
        assert not grey.errors and not home.errors, (grey.errors[:3], home.errors[:3])
        records = lock_records(topics.locks)
        assert sc.metric("fleetgate_scorer_decisions_total") == 2

    # The lock, as the scorer published it.
    assert lock["scope"] == "grey" and lock["source"] == "auto", lock
    assert lock["until"] == lock["since"] + TTL_MS, lock
    assert 38 <= lock["devices"] <= 42, lock  # 40 + the probes, HLL-estimated
    assert lock["message"].startswith("Use in CU is paused until "), lock
    # The directive: the configured message, as the record carries it.
    assert ans == {"status": "locked", "region": "CU", "scope": "grey",
                   "reason": lock["reason"], "message": lock["message"],
                   "until": lock["until"], "next_checkin_s": ans["next_checkin_s"]}, ans
    iso = re.search(r"until (\S+Z) ", ans["message"]).group(1)
    assert iso == time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                time.gmtime(lock["until"] // 1000)), ans["message"]
    assert re.fullmatch(r"Use in CU is paused until \S+ \(\d+% of \d+ grey\)",
                        ans["message"]), ans["message"]
    # The template expanded for CU, its until and devices, and a grey share
    # of at least 30 of them (the share is the scorer's count, not ours).
    assert ans["message"] in {expand(TEMPLATE, "CU", lock["until"], k, lock["devices"])
                              for k in range(30, lock["devices"] + 1)}, ans["message"]
    assert lock_latency < DIRECTIVE_BOUND_S, \
        f"lock reached the device {lock_latency:.3f} s after the decision"
    # The unlock: decided on the upper bound, not by expiry.
    assert unlock["source"] == "auto" and unlock["scope"] == "grey", unlock
    assert re.fullmatch(r"grey share upper bound 0\.\d\d <= 0\.30 over 1s with "
                        r"\d+ devices", unlock["reason"]), unlock["reason"]
    assert unlock["since"] < lock["until"], "unlocked by expiry, not by the share"
    assert unlock["id"] == f"CU:unlocked:{unlock['since']}", unlock
    assert unlock_latency < DIRECTIVE_BOUND_S, \
        f"unlock reached the device {unlock_latency:.3f} s after the decision"
    # The grey probe: ok before the lock, locked in between, ok after.
    statuses = [(t, a["status"]) for t, a in grey.answers]
    assert all(s == "ok" for t, s in statuses if t < lock["since"]), "locked too early"
    assert all(s == "locked" for t, s in statuses if t_locked <= t < unlock["since"]), \
        "the grey probe was not locked for the whole lock"
    assert all(s == "ok" for t, s in statuses if t >= again[0]), "locked after the unlock"
    # The home device (sold for CU) is never locked: scope grey.
    assert {a["status"] for _, a in home.answers} == {"ok"}, "scope grey locked a local device"
    # Exactly two records, each once: CU locked, CU unlocked.
    assert [(lk["region"], lk["state"]) for _, lk in records] == \
        [("CU", "locked"), ("CU", "unlocked")], records
    assert_no_repeats(records)

    # What the fleet saw (fleetsim's JSON summary).
    with open(summary_path) as f:
        summary = json.load(f)
    shutil.rmtree(tmp, ignore_errors=True)
    regions = {reg["region"]: reg for reg in summary["regions"]}
    cu, de = regions["CU"], regions["DE"]
    assert summary["totals"]["errors"] == 0, summary["totals"]
    assert summary["stop_reason"] == "signal", summary["stop_reason"]
    assert cu["lock"] and cu["lock"]["message"] == lock["message"], cu["lock"]
    assert cu["lock"]["until"] == lock["until"], cu["lock"]
    # At some point every one of CU's 36 grey devices (90% of 40) was locked.
    peak = max(p["locked"] for p in cu["series"])
    assert peak == 36, f"at most {peak} of CU's 36 grey devices were locked at once"
    assert cu["answered_locked"] > 0 and cu["locked"] == 0, cu
    assert cu["series"][-1]["locked"] == 0, cu["series"][-3:]
    assert de["answered_locked"] == 0 and de["lock"] is None, de
    print(f"fleet: CU peak locked {peak}/40, CU answered_locked "
          f"{cu['answered_locked']}, check-ins {summary['totals']['checkins_sent']}",
          flush=True)


if __name__ == "__main__":
    fgtest.run()
