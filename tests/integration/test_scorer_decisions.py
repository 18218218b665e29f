# SPDX-License-Identifier: Apache-2.0
"""The scorer's decisions as an operator and a device see them (issue 3): a
real fleetgate-scorer with its own redis-server, fed by devices that check in
through a real gateway, publishing to per-test topics. A hot region gets one
lock record (fields, message template, fencing token, Redis mirror) and its
grey devices get `locked`; a cold region never locks; per-region modes
(never, monitor), shadow mode, the region cap, score rows in msgpack and JSON,
an operator pin, and no decision published twice across many ticks.

The helpers at the top (Topics, Scorer, Fleet, lock and score readers) are
shared with test_fault_evaluator.py and test_e2e_lock.py."""

import http.client
import json
import math
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import fgtest
from fgtest import RedisServer, msgpack

# Short windows and fast policies, so that a decision takes seconds.
TICK_S = 0.5
LEASE_S = 2.0
POLICY_FOR_S = 1.0
TTL_MS = 60000
TEMPLATE = "Use in {region} is paused until {until} ({share} of {devices} grey)"


def now_ms():
    return int(time.time() * 1000)


# ---------------------------------------------------------------------------
# Redis: one fgtest.RedisServer per test (the lease and the active-region
# index are global keys, so two tests must never share one)


def redis_hash(r, key):
    """HGETALL as {str: bytes}."""
    flat = r.call("HGETALL", key) or []
    return {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2)}


# ---------------------------------------------------------------------------
# Topics, records, rows


class Topics:
    """Fresh topics of one test: check-ins (6 partitions), locks (compacted),
    scores, dead letters."""

    def __init__(self):
        self.checkins = fgtest.unique_topic("sc-checkins", partitions=6)
        self.locks = fgtest.unique_topic("sc-locks", partitions=1,
                                         config={"cleanup.policy": "compact"})
        self.scores = fgtest.unique_topic("sc-scores", partitions=1)
        self.dlq = fgtest.unique_topic("sc-dlq", partitions=1)
        self.policies = fgtest.unique_topic("sc-policies", partitions=1,
                                            config={"cleanup.policy": "compact"})


def lock_records(topic):
    """Every record of the locks topic, decoded: [(raw value, dict)]."""
    out = []
    for rec in fgtest.consume(topic):
        if rec.value is None:
            out.append((None, {"region": rec.key.decode(), "tombstone": True}))
        else:
            out.append((rec.value, msgpack.unpackb(rec.value, raw=False)))
    return out


def wait_lock(topic, pred, what, timeout=20.0):
    """Polls the locks topic until a record satisfies pred(dict); returns
    (raw, dict) of the first one."""
    def poll():
        for raw, lk in lock_records(topic):
            if pred(lk):
                return raw, lk
        return None
    return fgtest.wait_until(poll, timeout=timeout, interval=0.2, what=what)


def score_rows(topic, fmt="msgpack"):
    """Every row of the scores topic, decoded."""
    rows = []
    for rec in fgtest.consume(topic):
        if fmt == "json":
            rows.append(json.loads(rec.value.decode()))
        else:
            rows.append(msgpack.unpackb(rec.value, raw=False))
    return rows


def latest_rows(rows):
    """{region: its newest row}."""
    out = {}
    for row in rows:
        if row["region"] not in out or row["ts"] >= out[row["region"]]["ts"]:
            out[row["region"]] = row
    return out


def wilson(k, n, z=1.96):
    """(lo, hi) of the Wilson score interval, as sc_policy.h defines it."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


def near(count, want):
    """Counts come from HyperLogLogs: for a few dozen devices a register
    collision can cost one (about 1% for 20 devices), never more in
    practice."""
    return abs(count - want) <= 1


def grey_behind(score, devices, z=1.96):
    """The grey count k whose Wilson lower bound over devices is score, or
    None."""
    for k in range(devices + 1):
        if abs(wilson(k, devices, z)[0] - score) < 1e-9:
            return k
    return None


def expand(template, region, until, grey, devices):
    """The message a device must show, expanded in Python from the template
    rules of sc_policy.h."""
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(until // 1000))
    share = f"{int(math.floor(grey / devices * 100 + 0.5))}%"
    return (template.replace("{region}", region).replace("{until}", iso)
            .replace("{share}", share).replace("{devices}", str(devices)))


def ops_record(region, state="unlocked", **extra):
    rec = {"region": region, "state": state, "scope": "grey", "source": "ops",
           "reason": "operator", "message": "", "since": now_ms(),
           "id": "ops-" + secrets.token_hex(6), "actor": "itest-operator"}
    rec.update(extra)
    return rec


# ---------------------------------------------------------------------------
# The scorer


class Scorer:
    """A fleetgate-scorer process configured with --set: per-test topics, its
    own consumer group (shared when given), Redis, a free admin port, and the
    fast defaults above; settings override them (None drops a key)."""

    def __init__(self, topics, redis, settings=None, group=None, sid=None,
                 start=True, binary=None):
        self.binary = binary or fgtest.build_path("fleetgate-scorer")
        self.sid = sid or "sc-" + secrets.token_hex(3)
        self.admin_port = fgtest.free_port()
        config = {
            "scorer.id": self.sid,
            "scorer.admin_listen": f"127.0.0.1:{self.admin_port}",
            "scorer.topic": topics.checkins,
            "scorer.locks_topic": topics.locks,
            "scorer.scores_topic": topics.scores,
            "scorer.dlq_topic": topics.dlq,
            "scorer.policies_topic": topics.policies,
            "scorer.group": group or "sc-group-" + secrets.token_hex(4),
            "scorer.bucket": "1s",
            "scorer.window": "6s",
            "scorer.tick": f"{int(TICK_S * 1000)}ms",
            "scorer.lease": f"{int(LEASE_S * 1000)}ms",
            "redis.port": redis.port,
            "kafka.bootstrap.servers": fgtest.kafka_bootstrap(),
            # A dead member's partitions move after this (broker minimum).
            "kafka.session.timeout.ms": 6000,
            "kafka.heartbeat.interval.ms": 1000,
            "policy.lock_at": "0.6",
            "policy.unlock_at": "0.3",
            "policy.min_devices": 5,
            "policy.for": f"{int(POLICY_FOR_S * 1000)}ms",
            "policy.ttl": f"{TTL_MS}ms",
            "policy.cooldown": "0s",
            "policy.message": TEMPLATE,
            "rails.enforce": "true",
        }
        config.update(settings or {})
        self.config = {k: v for k, v in config.items() if v is not None}
        self.dir = tempfile.mkdtemp(prefix="fg-scorer-")
        self.log_path = os.path.join(self.dir, "scorer.log")
        self.proc = None
        self._logf = None
        if start:
            self.start()

    def argv(self):
        args = [self.binary]
        for k, v in self.config.items():
            args += ["--set", f"{k}={v}"]
        return args

    def start(self, timeout=30.0):
        self._logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                     stdout=self._logf, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"scorer {self.sid} exited with "
                                     f"{self.proc.returncode} during start-up\n"
                                     + self.log_tail())
            try:
                if self.admin("/readyz", timeout=1.0)[0] == 200:
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"scorer {self.sid} not ready in {timeout}s\n"
                                     + self.log_tail())
            time.sleep(0.05)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig=signal.SIGKILL):
        if self.running():
            self.proc.send_signal(sig)
            self.proc.wait(15)

    def stop(self, timeout=20.0):
        """SIGTERM; returns the exit status (negative: killed by a signal).
        A scorer that does not exit in time is killed and reported."""
        if self.proc is None:
            return None
        try:
            return fgtest.stop_process(self.proc, signal.SIGTERM, timeout,
                                       lambda: AssertionError(
                                           f"scorer {self.sid} ignored SIGTERM for "
                                           f"{timeout}s\n" + self.log_tail()))
        finally:
            if self._logf:
                self._logf.close()
                self._logf = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is not None:
                print(f"--- scorer {self.sid} log ---\n{self.log_tail(60)}", flush=True)
            if self.running():
                rc = self.stop()
                if exc_type is None and rc != 0:
                    raise AssertionError(f"scorer {self.sid} exited with {rc} on "
                                         f"SIGTERM\n" + self.log_tail())
        finally:
            if self._logf:
                self._logf.close()
            shutil.rmtree(self.dir, ignore_errors=True)
        return False

    def log(self):
        return fgtest.read_log(self.log_path)

    def log_tail(self, lines=40):
        keep = [ln for ln in self.log().splitlines() if "librdkafka" not in ln]
        return "\n".join(keep[-lines:])

    def admin(self, path, timeout=5.0):
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def metrics(self):
        status, body = self.admin("/metrics")
        assert status == 200, status
        return fgtest.parse_metrics(body.decode())

    def metric(self, name, default=0.0):
        return fgtest.metric(self.metrics(), name, default)


# ---------------------------------------------------------------------------
# Devices (a Python device loop through the gateway)


def grey_sku(region):
    return "US" if region[:2] == "CN" else "CN"


class Fleet:
    """Devices that check in through a gateway's POST /v1/checkins (one batch
    of every device) every `interval` seconds from a thread, with increasing
    seq. directives[device] is the last answer item; locked_at[device] the
    wall time (ms) of its first `locked` answer."""

    def __init__(self, gw, interval=1.0):
        self.gw = gw
        self.interval = interval
        self.devices = {}  # id -> (region, sku)
        self.seq = {}
        self.directives = {}
        self.locked_at = {}
        self.errors = []
        self.rounds = 0
        self._mu = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self._conn = None

    def add(self, region, n, grey, tag=None):
        """Adds n devices in region, the first `grey` of them sold for
        another country. Returns (grey ids, other ids)."""
        tag = tag or secrets.token_hex(2)
        greys, others = [], []
        with self._mu:
            for i in range(n):
                dev = f"d-{region}-{tag}-{i:03d}"
                is_grey = i < grey
                self.devices[dev] = (region, grey_sku(region) if is_grey else region[:2])
                (greys if is_grey else others).append(dev)
        return greys, others

    def remove(self, ids):
        with self._mu:
            for dev in ids:
                self.devices.pop(dev, None)

    def checkin(self, ids=None):
        """One batch now (every device, or ids); returns {id: answer item}."""
        with self._mu:
            ids = list(self.devices) if ids is None else list(ids)
            items = []
            for dev in ids:
                region, sku = self.devices[dev]
                self.seq[dev] = self.seq.get(dev, 0) + 1
                items.append({"device_id": dev, "sku_region": sku, "region": region,
                              "seq": self.seq[dev], "model": "itest"})
        if not items:
            return {}
        body = json.dumps(items).encode()
        for attempt in range(2):
            try:
                if self._conn is None:
                    self._conn = http.client.HTTPConnection("127.0.0.1", self.gw.port,
                                                            timeout=10)
                self._conn.request("POST", "/v1/checkins", body,
                                   {"Content-Type": "application/json"})
                resp = self._conn.getresponse()
                data = resp.read()
                break
            except (OSError, http.client.HTTPException):
                self._conn = None
                if attempt:
                    raise
        if resp.status != 200:
            raise AssertionError(f"POST /v1/checkins answered {resp.status}: {data!r}")
        results = json.loads(data)["results"]
        t = now_ms()
        out = dict(zip(ids, results))
        with self._mu:
            for dev, res in out.items():
                self.directives[dev] = res
                if res.get("status") == "locked" and dev not in self.locked_at:
                    self.locked_at[dev] = t
        return out

    def _run(self):
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                self.checkin()
                self.rounds += 1
            except Exception as e:  # noqa: BLE001 (reported by stop())
                self.errors.append(repr(e))
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - t0)))

    def start(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread:
            self._thread.join(15)
        assert not self.errors, f"device loop errors: {self.errors[:3]}"

    def status(self, ids):
        """{status: count} of the last answers of ids."""
        out = {}
        with self._mu:
            for dev in ids:
                s = self.directives.get(dev, {}).get("status", "none")
                out[s] = out.get(s, 0) + 1
        return out

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        self._stop.set()
        if self._thread:
            self._thread.join(15)
        return False


def gateway(topics):
    """A gateway on the test's check-ins and locks topics."""
    return fgtest.Gateway({"gateway.topic": topics.checkins,
                           "gateway.locks_topic": topics.locks})


def ids_of(records):
    """{id: how many records carry it}."""
    out = {}
    for _, lk in records:
        if "id" in lk:
            out[lk["id"]] = out.get(lk["id"], 0) + 1
    return out


def assert_no_repeats(records):
    twice = {i: c for i, c in ids_of(records).items() if c > 1}
    assert not twice, f"decision ids published more than once: {twice}"


# ---------------------------------------------------------------------------
# Tests


def test_hot_region_locks_modes_rows_and_no_repeats():
    """CU (19 of 20 grey) locks with a complete record mirrored in Redis and
    its grey devices get `locked`; DE (1 of 20) never locks; KP (mode never)
    gets no record; IR (mode monitor) gets a shadow record its devices
    ignore; score rows carry every region's numbers; over many more ticks no
    decision is published again."""
    topics = Topics()
    with RedisServer() as r, gateway(topics) as gw, \
            Scorer(topics, r, {"policy.KP.mode": "never",
                               "policy.IR.mode": "monitor"}) as sc:
        fleet = Fleet(gw)
        cu_grey, cu_other = fleet.add("CU", 20, 19)
        de_grey, de_other = fleet.add("DE", 20, 1)
        kp_grey, _ = fleet.add("KP", 20, 19)
        ir_grey, _ = fleet.add("IR", 20, 19)
        with fleet:
            raw, cu = wait_lock(topics.locks, lambda lk: lk["region"] == "CU",
                                "a CU record")
            wait_lock(topics.locks, lambda lk: lk["region"] == "IR", "an IR record")
            # The lock as an operator reads it.
            assert cu["state"] == "locked", cu
            assert cu["scope"] == "grey" and cu["source"] == "auto", cu
            assert cu["actor"] == "scorer", cu
            n = cu["devices"]
            assert near(n, 20), cu
            # The score is the Wilson lower bound of the grey count behind it.
            k = grey_behind(cu["score"], n)
            assert k is not None and near(k, 19), (cu["score"], n)
            assert re.fullmatch(r"grey share lower bound %.2f >= 0\.60 over 1s with "
                                r"%d devices" % (cu["score"], n), cu["reason"]), cu["reason"]
            assert cu["until"] == cu["since"] + TTL_MS, cu
            assert cu["id"] == f"CU:locked:{cu['since']}", cu
            assert cu["message"] == expand(TEMPLATE, "CU", cu["until"], k, n), cu
            assert abs(cu["since"] - now_ms()) < 15000, cu
            token = int(r.call("GET", "fg:{lease}:token"))
            assert cu["token"] == token and token >= 1, (cu, token)
            # The mirror in Redis: the same record bytes under the same token.
            mirror = redis_hash(r, "fg:{CU}:decision")
            assert mirror.get("token") == str(token).encode(), mirror
            assert mirror.get("record") == raw, (mirror, raw)
            # The devices: grey ones in CU are locked at their next check-in.
            fgtest.wait_until(lambda: fleet.status(cu_grey) == {"locked": 19},
                              timeout=10, what="CU's grey devices locked")
            d = fleet.directives[cu_grey[0]]
            assert d["region"] == "CU" and d["scope"] == "grey", d
            assert d["message"] == cu["message"] and d["until"] == cu["until"], d
            # Many more ticks: nothing new may be decided.
            time.sleep(12 * TICK_S)
            assert fleet.status(cu_other) == {"ok": 1}, fleet.status(cu_other)
            assert fleet.status(ir_grey) == {"ok": 19}, "shadow must not lock"
            assert fleet.status(kp_grey) == {"ok": 19}
            assert fleet.status(de_grey + de_other) == {"ok": 20}
        fleet.stop()
        records = lock_records(topics.locks)
        by_region = {}
        for _, lk in records:
            by_region.setdefault(lk["region"], []).append(lk)
        assert sorted(by_region) == ["CU", "IR"], \
            f"only CU and IR may have records: {sorted(by_region)}"
        assert len(by_region["CU"]) == 1, by_region["CU"]
        assert len(by_region["IR"]) == 1, by_region["IR"]
        ir = by_region["IR"][0]
        assert ir["state"] == "shadow", ir
        assert ir["reason"].endswith("; shadow: monitor mode"), ir["reason"]
        assert ir["until"] == ir["since"] + TTL_MS, ir
        assert_no_repeats(records)
        assert redis_hash(r, "fg:{KP}:decision") == {}
        assert redis_hash(r, "fg:{DE}:decision") == {}
        assert sc.metric("fleetgate_scorer_decisions_total") == 2
        assert sc.metric("fleetgate_scorer_leader") == 1
        # Score rows (msgpack): the numbers behind every region's state. The
        # fleet has stopped, so rows written after its last check-ins left the
        # window count no devices: take each region's newest row from while
        # the devices were still checking in.
        rows = latest_rows([r for r in score_rows(topics.scores)
                            if r["devices"] > 0])
        want = {"CU": (19, "auto", "locked"), "DE": (1, "auto", "unlocked"),
                "KP": (19, "never", "unlocked"), "IR": (19, "monitor", "shadow")}
        for region, (grey, mode, state) in want.items():
            row = rows.get(region)
            assert row, f"no score row for {region}"
            assert near(row["devices"], 20) and near(row["grey"], grey), row
            assert abs(row["share"] - row["grey"] / row["devices"]) < 1e-9, row
            lo, hi = wilson(row["grey"], row["devices"])
            assert abs(row["lo"] - lo) < 1e-6 and abs(row["hi"] - hi) < 1e-6, row
            assert row["mode"] == mode and row["state"] == state, row
            assert row["source"] == "auto", row
            assert abs(row["ts"] - now_ms()) < 15000, row


def test_shadow_when_enforcement_is_off_json_rows():
    """rails.enforce=false: a hot region gets a shadow record, never a lock,
    and its devices stay ok; scores_format=json gives JSON rows."""
    topics = Topics()
    with RedisServer() as r, gateway(topics) as gw, \
            Scorer(topics, r, {"rails.enforce": "false",
                               "scorer.scores_format": "json"}):
        fleet = Fleet(gw)
        grey, _ = fleet.add("CU", 20, 18)
        with fleet:
            _, lk = wait_lock(topics.locks, lambda lk: lk["region"] == "CU",
                              "a CU record")
            assert lk["state"] == "shadow", lk
            assert lk["reason"].endswith("; shadow: enforce off"), lk["reason"]
            assert lk["token"] >= 1, lk
            time.sleep(6 * TICK_S)
            assert fleet.status(grey) == {"ok": 18}, fleet.status(grey)
        fleet.stop()
        records = lock_records(topics.locks)
        assert [lk["state"] for _, lk in records] == ["shadow"], records
        rows = score_rows(topics.scores, fmt="json")
        assert rows, "no score rows"
        # Newest row from while the fleet was checking in (see above).
        row = latest_rows([r for r in rows if r["devices"] > 0])["CU"]
        assert near(row["devices"], 20) and near(row["grey"], 18), row
        assert abs(row["share"] - row["grey"] / row["devices"]) < 1e-6, row
        lo, hi = wilson(row["grey"], row["devices"])
        assert abs(row["lo"] - lo) < 1e-5 and abs(row["hi"] - hi) < 1e-5, row
        assert row["mode"] == "auto" and row["state"] == "shadow", row
        assert row["source"] == "auto" and "ts" in row, row


def test_cap_locks_one_region_and_suppresses_the_other():
    """max_auto_locked_regions=1 with two hot regions: one locked, one
    suppressed (reason naming the cap); only the locked one's grey devices
    are locked."""
    topics = Topics()
    with RedisServer() as r, gateway(topics) as gw, \
            Scorer(topics, r, {"rails.max_auto_locked_regions": 1}):
        fleet = Fleet(gw)
        grey = {"CU": fleet.add("CU", 20, 20)[0], "SY": fleet.add("SY", 20, 18)[0]}
        with fleet:
            wait_lock(topics.locks, lambda lk: lk["region"] == "CU", "a CU record")
            wait_lock(topics.locks, lambda lk: lk["region"] == "SY", "an SY record")
            time.sleep(6 * TICK_S)
            records = lock_records(topics.locks)
            states = {lk["region"]: lk for _, lk in records}
            assert sorted(lk["state"] for lk in states.values()) == \
                ["locked", "suppressed"], records
            locked = next(lk for lk in states.values() if lk["state"] == "locked")
            supp = next(lk for lk in states.values() if lk["state"] == "suppressed")
            assert supp["reason"].endswith(
                "; suppressed: 1 of max 1 auto-locked regions"), supp["reason"]
            if locked["since"] == supp["since"]:
                # Decided in one tick: the highest lower bound goes first.
                assert locked["region"] == "CU", (locked, supp)
            fgtest.wait_until(lambda: fleet.status(grey[locked["region"]]) ==
                              {"locked": len(grey[locked["region"]])},
                              timeout=10, what="the locked region's devices locked")
            assert fleet.status(grey[supp["region"]]) == \
                {"ok": len(grey[supp["region"]])}, "a suppressed record must not lock"
        fleet.stop()
        records = lock_records(topics.locks)
        assert len(records) == 2, records
        assert_no_repeats(records)


def test_operator_pin_blocks_automation_until_it_ends():
    """An ops record for CU with pin_until in 8 s keeps the scorer from
    placing any automatic record for CU until then (SY, as hot, locks at
    once), and CU's rows show the operator's record; after the pin, CU
    locks."""
    topics = Topics()
    pin_s = 8.0
    with RedisServer() as r, gateway(topics) as gw, Scorer(topics, r) as sc:
        pin_until = now_ms() + int(pin_s * 1000)
        pin = ops_record("CU", pin_until=pin_until)
        fgtest.produce(topics.locks, b"CU", msgpack.packb(pin, use_bin_type=True))
        # Both followers of the topic (the gateway's is observable) see it.
        fgtest.wait_until(lambda: gw.metric("fleetgate_lock_table_regions") == 1,
                          timeout=10, what="the pin in the gateway's table")
        time.sleep(0.5)
        fleet = Fleet(gw)
        fleet.add("CU", 20, 19)
        fleet.add("SY", 20, 19)
        with fleet:
            _, sy = wait_lock(topics.locks, lambda lk: lk["region"] == "SY",
                              "an SY lock")
            assert sy["state"] == "locked", sy
            row = fgtest.wait_until(lambda: latest_rows(score_rows(topics.scores)).get("CU"),
                                    timeout=10, what="a CU score row")
            assert row["source"] == "ops" and row["state"] == "unlocked", row
            assert near(row["grey"], 19), row
            _, cu = wait_lock(topics.locks, lambda lk: lk["region"] == "CU" and
                              lk["source"] == "auto", "a CU lock after the pin",
                              timeout=pin_s + 15)
        fleet.stop()
        assert cu["state"] == "locked", cu
        assert cu["since"] >= pin_until, \
            f"automatic record {cu['since'] - pin_until} ms before the pin ended"
        records = lock_records(topics.locks)
        assert len(records) == 3, records  # pin, SY, CU
        assert_no_repeats(records)
        assert sc.metric("fleetgate_scorer_decisions_total") == 2


if __name__ == "__main__":
    fgtest.run()
