# SPDX-License-Identifier: Apache-2.0
"""The scorer counts each check-in exactly once (issue 3, "Exact counts";
docs/design-scorer.md): known streams with duplicates, replays, check-ins
without seq, events older than the window and undecodable records, produced
straight to the check-in topic or through a real gateway, give exact counts
in Redis, also across a restart, a kill -9 mid-stream, a second scorer
joining and leaving the group, and a stalled (zombie) scorer coming back.

Each test has its own topics, consumer group and private redis-server
(fgtest.RedisServer: Redis state is isolated and can be killed). The helpers
here (Scorer, Stack, record encoding, the expected-count model) are also used
by test_fault_scorer.py."""

import http.client
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zlib

import fgtest
from fgtest import msgpack

BUCKET = "1s"
WINDOW_MS = 120_000  # long enough to read the counts before keys expire
TOO_OLD_MS = WINDOW_MS + 600_000  # recv_ts this far back is out of the window


def now_ms():
    return int(time.time() * 1000)


# ---------------------------------------------------------------------------
# The scorer process


class ScorerError(Exception):
    pass


class Scorer:
    """A fleetgate-scorer process with its own INI file and log; config is
    {"section.key": value}. Stopped by PID."""

    def __init__(self, config, name="scorer"):
        self.binary = fgtest.build_path("fleetgate-scorer")
        self.config = {"scorer.admin_listen": f"127.0.0.1:{fgtest.free_port()}",
                       "kafka.bootstrap.servers": fgtest.kafka_bootstrap(),
                       "log.level": "info"}
        self.config.update(config)
        self.name = name
        self.proc = None
        self._logf = None
        self.dir = tempfile.mkdtemp(prefix=f"fg-sct-{name}-")
        self.config_path = os.path.join(self.dir, "scorer.ini")
        self.log_path = os.path.join(self.dir, "scorer.log")

    @property
    def admin_port(self):
        return int(self.config["scorer.admin_listen"].rpartition(":")[2])

    def write_config(self):
        sections = {}
        for dotted, value in self.config.items():
            section, _, key = dotted.partition(".")
            sections.setdefault(section, []).append(f"{key} = {value}")
        with open(self.config_path, "w") as f:
            f.write("".join(f"[{s}]\n" + "\n".join(v) + "\n\n"
                            for s, v in sections.items()))

    def start(self, timeout=30.0):
        """Starts the process and waits until GET /readyz answers 200."""
        if not os.access(self.binary, os.X_OK):
            raise ScorerError(f"{self.binary} not built")
        self.write_config()
        self._logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen([self.binary, "-c", self.config_path],
                                     stdin=subprocess.DEVNULL, stdout=self._logf,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while self.readyz() != 200:
            if self.proc.poll() is not None:
                raise ScorerError(f"{self.name} exited with {self.proc.returncode}"
                                  " during start-up\n" + self.log_tail())
            if time.monotonic() > deadline:
                self.kill9()
                raise ScorerError(f"{self.name} not ready in {timeout}s\n"
                                  + self.log_tail())
            time.sleep(0.05)
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def request(self, path, timeout=5.0):
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port,
                                          timeout=timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def readyz(self):
        """Status of GET /readyz, or None when nothing answers."""
        try:
            return self.request("/readyz", timeout=1.0)[0]
        except OSError:
            return None

    def metrics(self):
        status, body = self.request("/metrics")
        if status != 200:
            raise ScorerError(f"GET /metrics answered {status}")
        return fgtest.parse_metrics(body.decode())

    def metric(self, name, **labels):
        return fgtest.metric(self.metrics(), name, 0.0, **labels)

    def checkins(self, result):
        return self.metric("fleetgate_scorer_checkins_total", result=result)

    def seen(self):
        """Check-ins read so far, whatever became of them."""
        m = self.metrics()
        return sum(fgtest.metric(m, "fleetgate_scorer_checkins_total", result=r)
                   for r in ("counted", "duplicate", "too_old", "already_applied"))

    def wait_quiet(self, quiet=1.0, timeout=30.0):
        """Waits until the scorer has read nothing new for quiet seconds."""
        last = [self.seen(), time.monotonic()]

        def settled():
            n = self.seen()
            if n != last[0]:
                last[:] = [n, time.monotonic()]
            return time.monotonic() - last[1] >= quiet
        fgtest.wait_until(settled, timeout, 0.1, f"{self.name} to settle")

    def stop(self, sig=signal.SIGTERM, timeout=20.0):
        """Sends sig to the PID and waits for the exit; returns the status."""
        if self.proc is None:
            return None
        try:
            return fgtest.stop_process(self.proc, sig, timeout, lambda: ScorerError(
                f"{self.name} did not exit in {timeout}s of signal {sig}\n"
                + self.log_tail()))
        finally:
            if self._logf:
                self._logf.close()
                self._logf = None

    def kill9(self):
        return self.stop(signal.SIGKILL)

    def log(self):
        return fgtest.read_log(self.log_path)

    def log_tail(self, lines=30):
        return "\n".join(self.log().splitlines()[-lines:])

    def close(self):
        if self.running():
            self.kill9()
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------------------
# One test's world: topics, group, private Redis, scorers


class Stack:
    """Unique topics (check-ins, compacted locks, scores, DLQ), a unique
    consumer group and a private Redis; scorer() starts members of the
    group. A context manager: on failure it prints the logs."""

    def __init__(self, partitions=6):
        self.partitions = partitions
        self.redis = fgtest.RedisServer()
        try:
            self.topic = fgtest.unique_topic("sct.checkins", partitions)
            self.locks_topic = fgtest.unique_topic(
                "sct.locks", 1, {"cleanup.policy": "compact"})
            self.scores_topic = fgtest.unique_topic("sct.scores", 1)
            self.dlq_topic = fgtest.unique_topic("sct.dlq", 1)
        except BaseException:
            self.redis.close()
            raise
        self.group = f"sct.{os.getpid()}.{secrets.token_hex(4)}"
        self.scorers = []

    def scorer(self, start=True, name=None, **extra):
        """A new member of the group (started unless start=False); extra:
        {"section.key": value} overrides, e.g. scorer.batch_max."""
        name = name or f"scorer{len(self.scorers) + 1}"
        config = {
            "scorer.id": f"{name}-{self.group}",
            "scorer.topic": self.topic,
            "scorer.group": self.group,
            "scorer.locks_topic": self.locks_topic,
            "scorer.scores_topic": self.scores_topic,
            "scorer.dlq_topic": self.dlq_topic,
            "scorer.bucket": BUCKET,
            "scorer.window": f"{WINDOW_MS // 1000}s",
            "redis.host": "127.0.0.1",
            "redis.port": self.redis.port,
            # A member killed with -9 gives its partitions up in 6 s.
            "kafka.session.timeout.ms": 6000,
            "kafka.heartbeat.interval.ms": 500,
            "markets.EU": "DE,FR",
        }
        config.update({k.replace("__", "."): v for k, v in extra.items()})
        s = Scorer(config, name)
        self.scorers.append(s)
        if start:
            s.start()
        return s

    # -- where the scorer is

    def resume(self, p):
        """The partition's resume point in Redis (-1 when none)."""
        v = self.redis.call("GET", f"fg:{{p:{self.topic}:{p}}}:resume")
        return -1 if v is None else int(v)

    def applied(self):
        """Records applied so far: sum over partitions of resume + 1."""
        return sum(self.resume(p) + 1 for p in range(self.partitions))

    def wait_applied(self, total, timeout=60.0, scorers=None):
        """Waits until every one of the topic's total records is behind a
        resume point (each partition's resume is its last offset)."""
        def done():
            n = self.applied()
            if n > total:
                raise AssertionError(f"{n} records applied, only {total} produced")
            return n == total
        try:
            fgtest.wait_until(done, timeout, 0.1, f"{total} records applied")
        except AssertionError:
            for s in scorers or self.scorers:
                sys.stderr.write(f"--- {s.name} log ---\n{s.log_tail()}\n")
            raise AssertionError(f"only {self.applied()} of {total} records applied "
                                 f"in {timeout}s")

    def end_offsets(self):
        """{partition: offset of its last record} of the check-in topic
        (partitions without records left out), from the broker."""
        cmd = ["kcat", "-Q", "-b", fgtest.kafka_bootstrap()]
        for p in range(self.partitions):
            cmd += ["-t", f"{self.topic}:{p}:-1"]
        out = subprocess.run(cmd, stdout=subprocess.PIPE, check=True,
                             timeout=30).stdout.decode()
        ends = {}
        for line in out.splitlines():
            # "<topic> [<p>] offset <end>"
            _, part, _, end = line.split()
            if int(end) > 0:
                ends[int(part.strip("[]"))] = int(end) - 1
        assert len(ends) >= 1, out
        return ends

    def wait_fenced(self, regions, timeout=60.0):
        """Waits until, for every partition, the highest fence of regions is
        the partition's last offset: every record applied (for streams with
        no bad or too-old record last). Unlike wait_applied it does not
        trust the resume points, which a late checkpoint may move back."""
        ends = self.end_offsets()

        def done():
            for p, last in ends.items():
                fences = [self.redis.call("HGET", f"fg:{{{r}}}:fence", p) for r in regions]
                if max(int(f) if f is not None else -1 for f in fences) != last:
                    return False
            return True
        fgtest.wait_until(done, timeout, 0.1, "every partition fenced at its end")

    # -- what Redis holds

    def regions(self):
        """Regions with counter keys in Redis."""
        out = set()
        for k in self.redis.call("KEYS", "fg:{*}:[ndg]:*"):
            out.add(k.decode().split("{", 1)[1].split("}", 1)[0])
        return out

    def window(self, region):
        """(check-ins, distinct devices, grey devices) of region: the sum of
        its counters and the PFCOUNT (union) of its HLLs, over every bucket
        key present."""
        nkeys = self.redis.call("KEYS", f"fg:{{{region}}}:n:*")
        n = sum(int(v) for v in self.redis.call("MGET", *nkeys)) if nkeys else 0
        out = [n]
        for kind in "dg":
            keys = self.redis.call("KEYS", f"fg:{{{region}}}:{kind}:*")
            out.append(self.redis.call("PFCOUNT", *keys) if keys else 0)
        return tuple(out)

    def hll_of(self, devices):
        """PFCOUNT of a reference HLL holding exactly devices."""
        if not devices:
            return 0
        key = f"sct:ref:{secrets.token_hex(6)}"
        self.redis.call("PFADD", key, *sorted(devices))
        n = self.redis.call("PFCOUNT", key)
        self.redis.call("DEL", key)
        return n

    def assert_counts(self, expect, what=""):
        """Redis holds exactly expect's counts, region by region: the sum of
        the counters is the expected number of check-ins, and the device and
        grey HLLs count what an HLL of exactly the expected set counts (same
        registers). That is the true set size unless HyperLogLog itself is
        off for that set; then a note is printed (seen for a 60-device set)."""
        got_regions = self.regions()
        assert got_regions == set(expect.regions()), \
            f"{what}: regions in Redis {sorted(got_regions)}, expected {sorted(expect.regions())}"
        errors = []
        for r in sorted(expect.regions()):
            ref = (self.hll_of(expect.d[r]), self.hll_of(expect.g[r]))
            true = (len(expect.d[r]), len(expect.g[r]))
            got = self.window(r)
            if got != (expect.n[r], *ref):
                errors.append(f"{r}: got (checkins, devices, grey) {got}, expected "
                              f"{(expect.n[r], *true)} (an HLL of the expected sets "
                              f"counts {ref})")
            elif ref != true:
                print(f"note: {what}: {r}: HyperLogLog counts {ref} for "
                      f"{true} distinct (devices, grey); the scorer's HLLs agree "
                      "with a reference HLL of the expected sets", flush=True)
        assert not errors, f"{what}: wrong counts:\n  " + "\n  ".join(errors)

    def close(self):
        for s in self.scorers:
            s.close()
        self.redis.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                # A crash, a hang or a sanitizer report at shutdown fails the
                # test that caused it.
                for s in self.scorers:
                    if s.running():
                        rc = s.stop()
                        assert rc == 0, f"{s.name} exited with {rc} on SIGTERM\n" \
                                        + s.log_tail()
            else:
                for s in self.scorers:
                    sys.stderr.write(f"--- {s.name} log ({s.log_path}) ---\n"
                                     f"{s.log_tail()}\n")
                sys.stderr.write(f"--- redis log ---\n{self.redis.log_tail()}\n")
        finally:
            self.close()
        return False


# ---------------------------------------------------------------------------
# Records and the expected counts


def record(device, region, sku=None, seq=None, recv_ts=None, gw="sct-gw",
           model="Pixel 7", fw="14.1", mcc=None, ts=None):
    """A record value exactly as fg_checkin_encode writes it: a msgpack map
    device_id, sku_region, region, [model, fw, mcc, seq, ts], v, recv_ts, gw
    (python dicts keep insertion order)."""
    m = {"device_id": device, "sku_region": sku or region[:2], "region": region}
    for k, v in (("model", model), ("fw", fw), ("mcc", mcc), ("seq", seq),
                 ("ts", ts)):
        if v is not None:
            m[k] = v
    m["v"] = 1
    m["recv_ts"] = now_ms() if recv_ts is None else recv_ts
    m["gw"] = gw
    return msgpack.packb(m, use_bin_type=True)


MARKETS = {"EU": {"DE", "FR"}}


def is_grey(sku, region):
    country = region[:2]
    return country != sku[:2] and country not in MARKETS.get(sku, ())


class Expect:
    """The counts the scorer must reach for a stream, fed in offset order
    per device (a device's records share a partition): a check-in counts
    when it has no seq or its seq is above the device's highest so far;
    every fresh check-in (duplicates too) puts its device in the region's
    devices, and in grey when grey; too-old ones count nowhere."""

    def __init__(self):
        self.n = {}
        self.d = {}
        self.g = {}
        self.maxseq = {}
        self.counted = self.duplicates = self.too_old = self.bad = 0

    def add(self, device, region, sku=None, seq=None, old=False):
        sku = sku or region[:2]
        if old:
            self.too_old += 1
            return
        self.n.setdefault(region, 0)
        self.d.setdefault(region, set()).add(device)
        self.g.setdefault(region, set())
        if is_grey(sku, region):
            self.g[region].add(device)
        if seq is not None:
            if seq <= self.maxseq.get(device, -1):
                self.duplicates += 1
                return
            self.maxseq[device] = seq
        self.n[region] += 1
        self.counted += 1

    def regions(self):
        return self.d.keys()


class Stream:
    """Builds (key, value) messages and the expected counts together."""

    def __init__(self, expect=None):
        self.expect = expect or Expect()
        self.msgs = []

    def checkin(self, device, region, sku=None, seq=None, old=False, **kw):
        ts = now_ms() - TOO_OLD_MS if old else None
        self.msgs.append((device.encode(),
                          record(device, region, sku, seq, recv_ts=ts, **kw)))
        self.expect.add(device, region, sku, seq, old)

    def raw(self, key, value):
        """A record that does not decode (goes to the DLQ)."""
        self.msgs.append((key.encode(), value))
        self.expect.bad += 1

    def take(self):
        msgs, self.msgs = self.msgs, []
        return msgs


def partition_of(key, partitions):
    """librdkafka's default (consistent_random) partitioner for a key."""
    return zlib.crc32(key) % partitions


def produce(stack, msgs, chunk=5000):
    for i in range(0, len(msgs), chunk):
        fgtest.produce_many(stack.topic, msgs[i:i + chunk])


class Producer(threading.Thread):
    """Produces msgs in chunks in the background (one kcat per chunk), so a
    scorer consumes a stream that is still arriving. .produced counts what
    the broker acknowledged."""

    def __init__(self, stack, msgs, chunk=2500, pause=0.0):
        super().__init__(daemon=True)
        self.stack, self.msgs, self.chunk, self.pause = stack, msgs, chunk, pause
        self.produced = 0
        self.error = None

    def run(self):
        try:
            for i in range(0, len(self.msgs), self.chunk):
                part = self.msgs[i:i + self.chunk]
                fgtest.produce_many(self.stack.topic, part)
                self.produced += len(part)
                if self.pause:
                    time.sleep(self.pause)
        except BaseException as e:  # reported by finish()
            self.error = e

    def wait_produced(self, n, timeout=60.0):
        fgtest.wait_until(lambda: self.produced >= n or self.error, timeout,
                          what=f"{n} records produced")
        if self.error:
            raise self.error

    def finish(self, timeout=120.0):
        self.join(timeout)
        assert not self.is_alive(), "producer did not finish"
        if self.error:
            raise self.error


def big_stream(total=50_000, regions=("DE", "FR", "US", "BR", "JP", "UA-43", "IN", "MX"),
               devices_per_region=60):
    """A large stream: devices_per_region devices per region (a quarter of
    them grey, a few without seq), each sending increasing seqs, round
    robin, until total records. No duplicates: a duplicate straddling a
    restart is test_duplicates_straddling_a_restart_count_once's business.
    Returns a Stream."""
    st = Stream()
    devs = []
    for r in regions:
        for i in range(devices_per_region):
            sku = ("US" if r != "US" else "DE") if i % 4 == 0 else r[:2]
            devs.append((f"{r}-dev-{i:03d}", r, sku, i % 10 != 7))
    seq = {}
    i = 0
    while len(st.msgs) < total:
        dev, r, sku, has_seq = devs[i % len(devs)]
        i += 1
        seq[dev] = seq.get(dev, 100) + 1
        st.checkin(dev, r, sku, seq[dev] if has_seq else None)
    return st


def assert_dlq(stack, expect_bad, timeout=10.0):
    """The DLQ holds expect_bad records, each with an error and a source
    header naming the check-in topic; returns them."""
    recs = fgtest.consume(stack.dlq_topic, expect_bad, timeout=timeout)
    assert len(recs) == expect_bad, (len(recs), expect_bad, recs)
    for r in recs:
        assert r.headers.get("error"), r
        assert r.headers.get("source", b"").startswith(stack.topic.encode() + b"/"), r
    return recs


# ---------------------------------------------------------------------------
# Tests


def known_stream():
    """Several regions, grey and non-grey devices, (device, seq) duplicates
    at other offsets, check-ins without seq, events older than the window,
    records that do not decode, a record with its map keys in another
    order, a device roaming across regions. Returns (Stream, bad keys)."""
    st = Stream()
    natives = {"DE": 8, "FR": 6, "US": 10, "UA-43": 4}
    greys = {"DE": ("US", 4), "FR": ("JP", 3), "UA-43": ("RU", 2), "US": ("EU", 2)}
    devices = []
    for r, k in natives.items():
        devices += [(f"{r}-n-{i}", r, r[:2]) for i in range(k)]
    devices += [(f"{r}-eu-{i}", r, "EU") for r in ("DE", "FR") for i in range(3)]
    for r, (sku, k) in greys.items():
        devices += [(f"{r}-g-{i}", r, sku) for i in range(k)]
    # Records that do not decode, before later records of their partitions.
    bad = {"DE-n-0": b"\xc1 not msgpack",
           "FR-n-0": msgpack.packb({"device_id": "FR-n-0", "sku_region": "FR",
                                     "v": 1, "recv_ts": now_ms(), "gw": "x"}),
           "US-n-0": record("US-n-0", "US", seq=1)[:-4]}
    bad_v2 = msgpack.packb({"device_id": "UA-43-n-0", "sku_region": "UA",
                            "region": "UA-43", "v": 2, "recv_ts": now_ms(),
                            "gw": "x"}, use_bin_type=True)
    for key, value in bad.items():
        st.raw(key, value)
    st.raw("UA-43-n-0", bad_v2)
    for s in (1, 2, 3):
        for dev, r, sku in devices:
            st.checkin(dev, r, sku, seq=s)
    # Duplicates at later offsets (a retry after a lost answer).
    for dev, r, sku in devices[::3]:
        st.checkin(dev, r, sku, seq=2)
        st.checkin(dev, r, sku, seq=3)
    # No seq: each one counts.
    for i in range(3):
        for r in ("DE", "FR"):
            st.checkin(f"{r}-noseq-{i}", r)
            st.checkin(f"{r}-noseq-{i}", r)
    # Older than the window: counted nowhere, even devices only seen so.
    for i in range(4):
        st.checkin(f"JP-old-{i}", "JP", seq=1, old=True)
        st.checkin(f"DE-old-{i}", "DE", sku="US", seq=1, old=True)
    # A device roaming DE -> FR, with a duplicate in FR.
    st.checkin("roam-0", "DE", "DE", seq=1)
    st.checkin("roam-0", "FR", "DE", seq=2)
    st.checkin("roam-0", "FR", "DE", seq=2)
    # Map keys in another order than fg_checkin_encode's: the decoder does
    # not care.
    m = msgpack.unpackb(record("DE-n-1", "DE", seq=9), raw=False)
    st.msgs.append((b"DE-n-1", msgpack.packb(dict(reversed(list(m.items()))),
                                             use_bin_type=True)))
    st.expect.add("DE-n-1", "DE", "DE", 9)
    # Later records in the partitions of the bad ones are counted.
    for key in list(bad) + ["UA-43-n-0"]:
        r = key.rsplit("-n-", 1)[0]
        st.checkin(key, r, r[:2], seq=4)
    return st, list(bad) + ["UA-43-n-0"]


def test_known_stream_counts_exactly_once():
    with Stack() as stack:
        st, bad_keys = known_stream()
        e = st.expect
        msgs = st.take()
        sc = stack.scorer()
        produce(stack, msgs)
        stack.wait_applied(len(msgs))
        stack.assert_counts(e, "first pass")
        # Metrics of what became of each record.
        fgtest.wait_until(lambda: sc.metric("fleetgate_scorer_dead_letters_total") >= e.bad,
                          5, what="dead letters counted")
        m = sc.metrics()
        assert fgtest.metric(m, "fleetgate_scorer_checkins_total", result="counted") == e.counted
        assert fgtest.metric(m, "fleetgate_scorer_checkins_total", result="duplicate") == e.duplicates
        assert fgtest.metric(m, "fleetgate_scorer_checkins_total", result="too_old") == e.too_old
        assert fgtest.metric(m, "fleetgate_scorer_dead_letters_total") == e.bad
        # Dead letters: error header, and their partitions did not stall
        # (each had later records, and its resume point is its last offset).
        recs = assert_dlq(stack, e.bad)
        assert sorted(r.key.decode() for r in recs) == sorted(bad_keys)
        why = {b"DE-n-0": b"invalid_msgpack", b"FR-n-0": b"missing_field region",
               b"US-n-0": b"invalid_msgpack", b"UA-43-n-0": b"invalid_value v"}
        for r in recs:
            assert r.headers["error"].startswith(why[r.key]), r
            p = int(r.headers["source"].split(b"/")[-2])
            assert p == partition_of(r.key, stack.partitions), r
        # No key for the too-old events' buckets.
        first = (now_ms() - WINDOW_MS) // 1000
        buckets = [int(k.rsplit(b":", 1)[1]) for k in stack.redis.call("KEYS", "fg:{*}:[ndg]:*")]
        assert min(buckets) >= first, f"bucket {min(buckets)} is before the window"

        # Restart with the resume points kept: nothing counted twice.
        assert sc.stop() == 0, sc.log_tail()
        sc = stack.scorer()
        # It re-reads the look-back (the whole topic here) without counting.
        fgtest.wait_until(lambda: sc.checkins("already_applied") + sc.checkins("too_old")
                          >= e.counted + e.duplicates + e.too_old, 10,
                          what="the look-back re-read")
        stack.assert_counts(e, "after a restart")
        assert sc.checkins("counted") == 0
        # Each undecodable record is a dead letter once, not once per
        # assignment (the look-back re-reads them).
        assert sc.metric("fleetgate_scorer_dead_letters_total") == 0
        recs = fgtest.consume(stack.dlq_topic)
        assert len(recs) == e.bad, \
            f"{len(recs)} dead letters for {e.bad} bad records: re-sent on replay"
        # Restart with the resume points deleted: the whole topic is replayed
        # and the fences skip every record already applied.
        assert sc.stop() == 0, sc.log_tail()
        for p in range(stack.partitions):
            stack.redis.call("DEL", f"fg:{{p:{stack.topic}:{p}}}:resume")
        sc = stack.scorer()
        stack.wait_applied(len(msgs))
        stack.assert_counts(e, "after a replay from offset 0")
        assert sc.checkins("counted") == 0, sc.metrics()
        # (A too-old record below its region's fence is "already_applied".)
        skipped = sc.checkins("already_applied") + sc.checkins("too_old")
        assert skipped == e.counted + e.duplicates + e.too_old, sc.metrics()


def test_duplicates_straddling_a_restart_count_once():
    """design-scorer.md: "A duplicate that straddles a rebalance is
    therefore still caught" (the seq memory is rebuilt from the partition's
    last window on assignment)."""
    with Stack() as stack:
        st = Stream()
        devs = [(f"DE-s-{i}", "DE") for i in range(6)] + [(f"FR-s-{i}", "FR") for i in range(6)]
        for s in (1, 2, 3):
            for dev, r in devs:
                st.checkin(dev, r, seq=s)
        first = st.take()
        sc = stack.scorer()
        produce(stack, first)
        stack.wait_applied(len(first))
        stack.assert_counts(st.expect, "before the restart")
        assert sc.stop() == 0
        sc = stack.scorer()
        # Device retries of (device, 2) and (device, 3), then news.
        for dev, r in devs:
            st.checkin(dev, r, seq=2)
            st.checkin(dev, r, seq=3)
            st.checkin(dev, r, seq=4)
        second = st.take()
        produce(stack, second)
        stack.wait_applied(len(first) + len(second))
        stack.assert_counts(st.expect, "after the restart")


def test_counts_through_the_gateway():
    """Check-ins POSTed to a real gateway (JSON and msgpack batches, device
    retries of the same (device, seq), check-ins without seq) are counted
    exactly once."""
    with Stack() as stack:
        e = Expect()
        cfg = {"gateway.topic": stack.topic, "gateway.locks_topic": stack.locks_topic}
        sc = stack.scorer()
        items = []
        for s in (1, 2):
            for i in range(20):
                r = ("DE", "FR", "US", "UA-43")[i % 4]
                sku = "US" if i % 5 == 0 and r != "US" else r[:2]
                items.append({"device_id": f"gw-{i}", "sku_region": sku, "region": r,
                              "model": "Pixel 7", "seq": s})
        items += [{"device_id": f"gw-ns-{i % 3}", "sku_region": "EU", "region": "FR"}
                  for i in range(9)]
        with fgtest.Gateway(cfg) as gw:
            sent = 0
            for batch, fmt in ((items[:25], "json"), (items[25:], "msgpack"),
                               (items[10:30], "json")):  # the last is a retry
                if fmt == "json":
                    status, _, body = gw.post_json("/v1/checkins", batch)
                else:
                    status, _, body = gw.post_msgpack("/v1/checkins", batch)
                assert status == 200, (status, body)
                for it in batch:
                    e.add(it["device_id"], it["region"], it["sku_region"], it.get("seq"))
                sent += len(batch)
        stack.wait_applied(sent)
        stack.assert_counts(e, "through the gateway")
        # record() writes the bytes the gateway's fg_checkin_encode writes.
        recs = fgtest.consume(stack.topic)
        assert len(recs) == sent
        for r in recs:
            m = msgpack.unpackb(r.value, raw=False)
            assert r.key == m["device_id"].encode(), r
            mine = record(m["device_id"], m["region"], m["sku_region"], m.get("seq"),
                          m["recv_ts"], m["gw"], model=m.get("model"), fw=m.get("fw"),
                          mcc=m.get("mcc"), ts=m.get("ts"))
            assert mine == r.value, (mine, r.value)
        assert sc.checkins("duplicate") == e.duplicates > 0
        assert sc.checkins("counted") == e.counted


def test_kill9_mid_stream_then_restart():
    """kill -9 of the scorer while a 50k-record stream over 6 partitions is
    consumed; a new scorer finishes it: exact counts, and Redis work is per
    batch, not per check-in."""
    with Stack() as stack:
        st = big_stream()
        msgs = st.take()
        sc = stack.scorer(scorer__batch_max=2000)
        prod = Producer(stack, msgs)
        prod.start()
        fgtest.wait_until(lambda: stack.applied() >= len(msgs) // 3, 60, 0.02,
                          "a third of the stream applied")
        sc.kill9()
        at_kill = stack.applied()
        assert at_kill < len(msgs), "the stream was consumed before the kill"
        prod.finish()
        sc2 = stack.scorer()
        stack.wait_applied(len(msgs))
        stack.assert_counts(st.expect, "after kill -9 and restart")
        m = sc2.metrics()
        seen = sum(fgtest.metric(m, "fleetgate_scorer_checkins_total", result=r)
                   for r in ("counted", "duplicate", "already_applied"))
        batches = fgtest.metric(m, "fleetgate_scorer_batches_total", result="applied")
        assert seen >= len(msgs) - at_kill, (seen, at_kill)
        assert 0 < batches * 20 <= seen, f"{batches} batches for {seen} check-ins"
        assert fgtest.metric(m, "fleetgate_scorer_dead_letters_total") == 0


def test_second_scorer_joins_and_first_leaves():
    """Two scorers in one group: the second joins mid-stream (cooperative
    rebalance), then the first leaves with SIGTERM: exact counts."""
    with Stack() as stack:
        st = big_stream(40_000)
        msgs = st.take()
        a = stack.scorer(name="a", scorer__batch_max=1000)
        prod = Producer(stack, msgs, chunk=2000, pause=0.1)
        prod.start()
        prod.wait_produced(len(msgs) // 4)
        b = stack.scorer(name="b", scorer__batch_max=1000)
        fgtest.wait_until(lambda: b.checkins("counted") > 0, 30,
                          what="the second scorer counting")
        prod.wait_produced(len(msgs) * 3 // 4)
        assert a.checkins("counted") > 0
        assert a.stop() == 0, a.log_tail()
        # a gave partitions up twice: to b when it joined, all when it left.
        assert a.log().count("msg=partitions_revoked") >= 2, a.log()
        prod.finish()
        stack.wait_applied(len(msgs), scorers=[b])
        stack.assert_counts(st.expect, "two scorers, join and leave")


def test_zombie_scorer_frozen_and_thawed():
    """A scorer frozen (SIGSTOP) with a batch in flight and the next one
    full loses its partitions to another member after its session timeout;
    when it thaws it rejoins the group: exact counts throughout."""
    with Stack() as stack:
        st = big_stream(30_000)
        msgs = st.take()
        produce(stack, msgs)
        a = stack.scorer(name="a", scorer__batch_max=500, redis__timeout="60s")
        fgtest.wait_until(lambda: stack.applied() >= 2000, 30, 0.01,
                          "the first scorer applying")
        # Freeze Redis so a's batch stays in flight and the next one fills.
        stack.redis.signal(signal.SIGSTOP)
        try:
            time.sleep(0.5)
            a.proc.send_signal(signal.SIGSTOP)
        finally:
            stack.redis.signal(signal.SIGCONT)
        try:
            b = stack.scorer(name="b")
            stack.wait_applied(len(msgs), scorers=[b])
            stack.assert_counts(st.expect, "while the zombie is frozen")
        finally:
            a.proc.send_signal(signal.SIGCONT)
        active = a.log().count("msg=partition_active")
        fgtest.wait_until(lambda: a.log().count("msg=partition_active") > active, 20,
                          what="the thawed scorer to get partitions again")
        # What a had in flight when frozen may be checkpointed late, moving
        # resume points back (harmless: the fences skip the replay), so the
        # end is read from the fences.
        stack.wait_fenced(st.expect.regions())
        a.wait_quiet()
        stack.assert_counts(st.expect, "after the zombie thawed and rejoined")


def test_apply_with_a_stale_fence_changes_nothing():
    """The apply script moves counters and fence only when the stored fence
    is the one the scorer expects. Another owner (as after a rebalance
    behind a zombie's back) moves the fence of (DE, partition 0) past the
    next records; the scorer's apply of them is refused and changes no
    counter. After a reassignment, records past that fence count."""
    with Stack() as stack:
        p = 0
        devs = [d for d in (f"DE-z-{i}" for i in range(300))
                if partition_of(d.encode(), stack.partitions) == p][:5]
        st = Stream()
        for dev in devs:
            st.checkin(dev, "DE", seq=1)
        first = st.take()
        sc = stack.scorer()
        produce(stack, first)
        stack.wait_applied(len(first))
        stack.assert_counts(st.expect, "before")
        fence = int(stack.redis.call("HGET", "fg:{DE}:fence", p))
        assert fence == len(devs) - 1
        # The other owner applied the next len(devs) records of (DE, p).
        moved = fence + len(devs)
        stack.redis.call("HSET", "fg:{DE}:fence", p, moved)
        produce(stack, [(d.encode(), record(d, "DE", seq=2)) for d in devs])
        stack.wait_applied(2 * len(devs))
        stack.assert_counts(st.expect, "after the refused apply")
        assert int(stack.redis.call("HGET", "fg:{DE}:fence", p)) == moved
        assert sc.metric("fleetgate_scorer_fence_conflicts_total") == 1
        assert sc.stop() == 0
        sc = stack.scorer()
        for dev in devs:
            st.checkin(dev, "DE", seq=3)
        third = st.take()
        produce(stack, third)
        stack.wait_applied(2 * len(devs) + len(third))
        stack.assert_counts(st.expect, "past the moved fence")
        assert int(stack.redis.call("HGET", "fg:{DE}:fence", p)) == moved + len(devs)


if __name__ == "__main__":
    fgtest.run()
