# SPDX-License-Identifier: Apache-2.0
"""fleetsim (tools/fleetsim.c), the device fleet simulator of issue 3: run
against a real gateway whose locks topic carries a grey lock for one region,
its report must show exactly that region's grey devices locked (0 elsewhere),
the lock's message, and check-ins that landed in Kafka one for one. A small
fake server checks what a gateway does not do on demand: 503 + Retry-After,
answers the strict reader refuses, --rate, --count, SIGTERM and exit codes."""

import http.server
import json
import os
import re
import secrets
import signal
import subprocess
import tempfile
import threading
import time

import fgtest
from fgtest import msgpack

LOCK_MESSAGE = "Use in this region is not allowed \u2014 fleetsim"


def fleetsim(args, timeout=60, scenario=None):
    """Runs fleetsim with args; returns (exit code, summary dict or None,
    stdout, stderr). scenario: text written to a temp file for -s."""
    with tempfile.TemporaryDirectory(prefix="fleetsim-") as tmp:
        out = os.path.join(tmp, "summary.json")
        cmd = [fgtest.build_path("fleetsim"), "--json-out", out, *args]
        if scenario is not None:
            path = os.path.join(tmp, "run.scenario")
            with open(path, "w") as f:
                f.write(scenario)
            cmd += ["-s", path]
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout)
        summary = None
        if os.path.exists(out):
            with open(out) as f:
                summary = json.load(f)
    return p.returncode, summary, p.stdout.decode(), p.stderr.decode()


def regions(summary):
    return {r["region"]: r for r in summary["regions"]}


def now_ms():
    return int(time.time() * 1000)


def grey_lock(region):
    return {"region": region, "state": "locked", "scope": "grey", "source": "ops",
            "reason": "grey_share", "message": LOCK_MESSAGE, "since": now_ms() - 1000,
            "until": now_ms() + 3600 * 1000, "id": "lk-" + secrets.token_hex(6),
            "actor": "itest"}


class Gateway(fgtest.Gateway):
    """A gateway that must exit 0 on SIGTERM when the block did not raise."""

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None and self.running():
            rc = self.stop()
            if rc != 0:
                tail = self.log_tail()
                super().__exit__(None, None, None)
                raise AssertionError(f"gateway exited with {rc} on SIGTERM\n{tail}")
        return super().__exit__(exc_type, exc, tb)


def locked_gateway(region):
    """A started gateway whose locks topic holds a grey lock for region
    (read before /readyz, so the first check-in already sees it); returns
    (gateway, lock record)."""
    gw = Gateway({"gateway.threads": 2}, start=False)
    rec = grey_lock(region)
    fgtest.produce(gw.locks_topic, region.encode(), msgpack.packb(rec, use_bin_type=True))
    gw.start()
    return gw, rec


def landed(topic):
    """The check-in records of topic, decoded."""
    return [msgpack.unpackb(r.value, raw=False) for r in fgtest.consume(topic)]


# ---------------------------------------------------------------------------
# Against the real gateway


def test_grey_lock_share_and_records_landed():
    """CU carries a grey lock: exactly CU's grey devices end up locked, with
    the lock's message; DE (half grey, no lock) and US stay at 0. Every
    answered check-in is a record in the gateway's topic, with per-device
    seq 1, 2, 3... and the grey sku on exactly the grey devices."""
    scenario = ("# issue 3 seed story, small\n"
                "duration 4s\n"
                "region CU devices=40 grey=0.25 interval=1s jitter=0.2 sku=CN\n"
                "region DE devices=30 grey=50% interval=1s\n"
                "region US devices=20 interval=1s   # grey 0 by default\n")
    gw, rec = locked_gateway("CU")
    with gw:
        rc, s, out, err = fleetsim(["-t", f"127.0.0.1:{gw.port}", "-c", "8"],
                                   scenario=scenario)
        assert rc == 0, (rc, out, err)
        records = landed(gw.topic)
    r = regions(s)
    cu, de, us = r["CU"], r["DE"], r["US"]
    assert (cu["devices"], cu["grey"], de["grey"], us["grey"]) == (40, 10, 15, 0), r
    # The locked share is the grey share in CU, and 0 where nothing is locked.
    assert (cu["locked"], cu["ok"], cu["locked_share"]) == (10, 30, 0.25), cu
    assert (de["locked"], de["ok"], de["locked_share"]) == (0, 30, 0.0), de
    assert (us["locked"], us["ok"]) == (0, 20), us
    assert cu["lock"] == {"region": "CU", "scope": "grey", "reason": "grey_share",
                          "message": LOCK_MESSAGE, "until": rec["until"]}, cu["lock"]
    assert de["lock"] is None and us["lock"] is None, (de, us)
    for reg in (cu, de, us):
        assert reg["errors"] == 0 and reg["retried"] == 0, reg
        # Three or more rounds of check-ins in 4 s at a 1 s interval.
        assert reg["checkins_sent"] >= 3 * reg["devices"], reg
        assert reg["stored"] == reg["checkins_sent"], reg
        assert reg["series"] and all(0 <= p["locked_share"] <= 0.25 for p in reg["series"])
    assert all(p["locked_share"] == 0 for p in de["series"] + us["series"]), de["series"]
    assert cu["series"][-1]["locked_share"] == 0.25, cu["series"]
    assert s["totals"]["locked"] == 10 and s["totals"]["status"] == {
        "200": s["totals"]["stored"]}, s["totals"]
    assert s["reachable"] is True and s["stop_reason"] == "duration", s

    # What landed in Kafka: one record per 200, nothing else.
    assert len(records) == s["totals"]["stored"], (len(records), s["totals"])
    seqs, skus = {}, {}
    for v in records:
        m = re.fullmatch(r"sim-(CU|DE|US)-(\d{6})", v["device_id"])
        assert m and m.group(1) == v["region"], v
        seqs.setdefault(v["device_id"], []).append(v["seq"])
        skus.setdefault(v["device_id"], set()).add(v["sku_region"])
    assert len(seqs) == 90, len(seqs)
    for dev, got in seqs.items():
        assert sorted(got) == list(range(1, len(got) + 1)), (dev, got)
    grey = {d for d, k in skus.items() if k != {d.split("-")[1]}}
    assert all(skus[d] == {"CN"} for d in grey), skus
    assert sum(d.startswith("sim-CU-") for d in grey) == 10, grey
    assert sum(d.startswith("sim-DE-") for d in grey) == 15, grey
    assert not any(d.startswith("sim-US-") for d in grey), grey


def test_phase_drops_locked_share_msgpack_batch():
    """A phase lowers CU's grey share from 80% to 20% at 2 s: the locked
    share follows it down, over msgpack batches on /v1/checkins."""
    scenario = ("duration 4.5s\n"
                "seed 11\n"
                "region CU devices=50 grey=0.8 interval=500ms jitter=0.1\n"
                "region DE devices=20 grey=0.8 interval=500ms\n"
                "at 2s region CU grey=0.2\n")
    gw, _ = locked_gateway("CU")
    with gw:
        rc, s, out, err = fleetsim(["-t", f"127.0.0.1:{gw.port}", "-c", "4",
                                    "--format", "msgpack", "--batch", "8",
                                    "--report-interval", "500ms"], scenario=scenario)
        assert rc == 0, (rc, out, err)
        records = landed(gw.topic)
    r = regions(s)
    cu, de = r["CU"], r["DE"]
    assert s["format"] == "msgpack" and s["batch"] == 8, s
    by_t = {p["t"]: p for p in cu["series"]}
    assert by_t[1.5]["locked_share"] == 0.8 and by_t[1.5]["grey_share"] == 0.8, cu["series"]
    assert (cu["grey"], cu["locked"], cu["locked_share"]) == (10, 10, 0.2), cu
    assert cu["series"][-1]["locked_share"] == 0.2, cu["series"]
    assert de["locked"] == 0 and de["ok"] == 20, de
    assert cu["lock"]["message"] == LOCK_MESSAGE, cu["lock"]
    assert s["totals"]["errors"] == 0 and s["totals"]["protocol_errors"] == 0, s["totals"]
    assert len(records) == s["totals"]["stored"], (len(records), s["totals"])
    # The phase's log line names the region and the new share.
    assert re.search(r"msg=phase at_ms=2000 region=CU grey_share=0\.2000 grey=10", err), err


# ---------------------------------------------------------------------------
# Against a fake server


class FakeGateway:
    """A keep-alive HTTP/1.1 server on loopback that answers check-ins as
    told by answer(device_id, seq, attempt) -> "ok", "busy" (503 with
    Retry-After: 2) or "chunked" (a 200 framed with chunked encoding, which
    fleetsim must refuse). It records (time, device_id, seq) per request."""

    def __init__(self, answer):
        self.answer = answer
        self.seen = []
        self.attempts = {}
        self.lock = threading.Lock()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # One write per answer and no Nagle: otherwise the body waits
            # for fleetsim's delayed ACK (40 ms a request).
            wbufsize = 65536
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                ci = json.loads(body)
                with fake.lock:
                    n = fake.attempts.get(ci["device_id"], 0) + 1
                    fake.attempts[ci["device_id"]] = n
                    fake.seen.append((time.monotonic(), ci["device_id"], ci["seq"]))
                what = fake.answer(ci["device_id"], ci["seq"], n)
                if what == "busy":
                    data = b'{"error":"unavailable","detail":"retry"}'
                    self.send_response(503)
                    self.send_header("Retry-After", "2")
                elif what == "chunked":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    self.wfile.write(b"15\r\n{\"status\":\"ok\",\"a\":1}\r\n0\r\n\r\n")
                    return
                else:
                    data = b'{"status":"ok","next_checkin_s":300}'
                    self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        return False


def test_retry_after_keeps_seq_and_waits():
    """A 503 with Retry-After: 2 makes the device come back two seconds
    later (not after the 1 s fleetsim waits by default) with the same seq;
    counted as retried, not as an error."""
    def answer(dev, seq, attempt):
        return "busy" if attempt == 1 else "ok"
    with FakeGateway(answer) as fake:
        rc, s, out, err = fleetsim(
            ["-t", f"127.0.0.1:{fake.port}", "-c", "2", "-d", "3s"],
            scenario="region FR devices=5 interval=1h jitter=0 ramp=0\n")
        seen = list(fake.seen)
    assert rc == 0, (rc, out, err)
    fr = regions(s)["FR"]
    assert (fr["retried"], fr["errors"], fr["answered_ok"], fr["ok"]) == (5, 0, 5, 5), fr
    assert s["totals"]["status"] == {"200": 5, "503": 5}, s["totals"]
    by_dev = {}
    for t, dev, seq in seen:
        by_dev.setdefault(dev, []).append((t, seq))
    assert len(by_dev) == 5 and all(len(v) == 2 for v in by_dev.values()), by_dev
    for dev, ((t1, s1), (t2, s2)) in by_dev.items():
        assert s1 == s2 == 1, (dev, s1, s2)
        assert 1.9 <= t2 - t1 <= 2.6, (dev, t2 - t1)


def test_strict_reader_refuses_chunked_answers():
    """Answers without a Content-Length (chunked) are errors: the devices
    that get them never count as ok; the others are unaffected."""
    def answer(dev, seq, attempt):
        return "chunked" if int(dev[-6:]) % 2 == 0 else "ok"
    with FakeGateway(answer) as fake:
        rc, s, out, err = fleetsim(
            ["-t", f"127.0.0.1:{fake.port}", "-c", "3", "-d", "1.5s"],
            scenario="region FR devices=6 interval=1h ramp=200ms\n")
    assert rc == 0, (rc, out, err)
    fr = regions(s)["FR"]
    assert fr["ok"] == 3 and fr["answered_ok"] == 3, fr
    assert fr["errors"] >= 3 and s["totals"]["protocol_errors"] >= 3, s["totals"]
    assert "bad_response" in err, err


def test_rate_count_and_sigterm():
    """--rate holds the pace, --count stops the run, SIGTERM ends it early
    with the summary and exit 0."""
    with FakeGateway(lambda dev, seq, attempt: "ok") as fake:
        target = ["-t", f"127.0.0.1:{fake.port}", "-c", "8", "-q"]
        rc, s, out, err = fleetsim(target + ["--rate", "50", "-d", "2s"])
        assert rc == 0, (rc, out, err)
        assert 80 <= s["totals"]["checkins_sent"] <= 110, s["totals"]
        assert s["mode"] == "rate" and s["totals"]["errors"] == 0, s

        rc, s, out, err = fleetsim(target + ["--max", "--count", "25", "-d", "30s"])
        assert rc == 0, (rc, out, err)
        assert s["totals"]["checkins_sent"] == 25 and s["stop_reason"] == "count", s
        assert s["elapsed_s"] < 10, s

        with tempfile.TemporaryDirectory(prefix="fleetsim-") as tmp:
            out_path = os.path.join(tmp, "sig.json")
            p = subprocess.Popen([fgtest.build_path("fleetsim"), *target, "--rate", "20",
                                  "-d", "60s", "--json-out", out_path],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            time.sleep(1.0)
            t0 = time.monotonic()
            p.send_signal(signal.SIGTERM)
            stdout, stderr = p.communicate(timeout=15)
            assert p.returncode == 0, (p.returncode, stderr)
            assert time.monotonic() - t0 < 5
            assert b"fleetsim: run ended (signal)" in stdout, stdout
            with open(out_path) as f:
                s = json.load(f)
        assert s["stop_reason"] == "signal" and s["elapsed_s"] < 5, s
        assert s["totals"]["checkins_sent"] > 0, s


# ---------------------------------------------------------------------------
# Exit codes


def test_exit_codes():
    """2 for usage and scenario errors (naming file and line), refusal of a
    non-loopback target; 1 when nothing ever answered; 0 for --help."""
    binary = fgtest.build_path("fleetsim")
    p = subprocess.run([binary, "--help"], stdout=subprocess.PIPE, timeout=10)
    assert p.returncode == 0 and b"--scenario" in p.stdout, p

    rc, s, out, err = fleetsim(["-t", "192.0.2.1:8080", "-d", "1s"])
    assert rc == 2 and s is None and "loopback" in err, (rc, err)

    rc, s, out, err = fleetsim(["-d", "1s"], scenario="region CU devices=3\n"
                                                     "at 1s region XX grey=1\n")
    assert rc == 2 and re.search(r"run\.scenario:2: region XX is not declared", err), err

    rc, s, out, err = fleetsim(["-d", "1s"], scenario="region CU devices=3 grey=1.5\n")
    assert rc == 2 and "run.scenario:1: bad grey share" in err, err

    port = fgtest.free_port()
    rc, s, out, err = fleetsim(["-t", f"127.0.0.1:{port}", "-d", "1s", "-c", "2"],
                               scenario="region CU devices=3 interval=100ms\n")
    assert rc == 1, (rc, out, err)
    assert s["reachable"] is False and s["totals"]["connect_errors"] > 0, s
    assert s["totals"]["stored"] == 0, s


if __name__ == "__main__":
    fgtest.run()
