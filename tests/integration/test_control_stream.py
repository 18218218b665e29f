# SPDX-License-Identifier: Apache-2.0
"""Live events of the control service (GET /v1/stream, server-sent events)
as a dashboard sees them, against a real fleetgate-control (the Control
starter of test_control.py, per-test topics) and the test broker: a token is
required; the first event is a snapshot of every region; a lock made through
the API and a score row on the scores topic arrive as "lock" and "score"
events (and as JSON on the dashboard topic); a client reconnecting with
Last-Event-ID gets exactly what it missed, or a snapshot when the ring no
longer holds it; the client cap answers 503; a client that never reads is
dropped while the others keep up and the service's memory stays bounded;
SIGTERM with streams open ends them and exits promptly; and start-up refuses
stream settings that cannot work."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import fgtest
from fgtest import msgpack
from test_control import TOKENS, Control, Topics, now_ms


class Stream:
    """One GET /v1/stream on a raw socket (http.client would buffer the
    body), with a server-sent-events parser."""

    def __init__(self, ctl, actor="vic", last_id=None, rcvbuf=None, token=None):
        self.s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.s.settimeout(10)
        self.s.connect(("127.0.0.1", ctl.port))
        lines = ["GET /v1/stream HTTP/1.1", "Host: control.test",
                 "Accept: text/event-stream"]
        if actor:
            token = TOKENS[actor][1]
        if token:
            lines.append(f"Authorization: Bearer {token}")
        if last_id is not None:
            lines.append(f"Last-Event-ID: {last_id}")
        self.s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.buf = b""
        self.status = None
        self.headers = {}
        self.comments = []

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("nothing from the stream in time")
        self.s.settimeout(left)
        data = self.s.recv(65536)
        if not data:
            raise EOFError("the stream closed")
        self.buf += data

    def head(self, timeout=5.0):
        """Reads the status line and headers; returns the status."""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            self._fill(deadline)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        self.status = int(lines[0].split()[1])
        for ln in lines[1:]:
            name, _, value = ln.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        return self.status

    def body(self, timeout=5.0):
        """The body of a non-streamed answer (Content-Length)."""
        deadline = time.monotonic() + timeout
        n = int(self.headers["content-length"])
        while len(self.buf) < n:
            self._fill(deadline)
        return json.loads(self.buf[:n])

    def event(self, timeout=5.0):
        """The next event as {"id", "event", "data"}; comments (": ping")
        are collected in self.comments."""
        deadline = time.monotonic() + timeout
        if self.status is None:
            self.head(timeout)
        while True:
            while b"\n\n" not in self.buf:
                self._fill(deadline)
            block, self.buf = self.buf.split(b"\n\n", 1)
            ev = parse_block(block, self.comments)
            if ev:
                return ev

    def no_event(self, wait=0.5):
        """Asserts that no event arrives within wait seconds."""
        try:
            ev = self.event(timeout=wait)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected event {ev}")

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


# A stream reader in a process of its own, so that it keeps up with a flood
# (a thread of this one would share its interpreter lock): it writes every
# byte of the answer to a file.
READER = r"""
import os, socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(("GET /v1/stream HTTP/1.1\r\nHost: control.test\r\n"
           "Authorization: Bearer " + os.environ["FG_READER_TOKEN"] +
           "\r\n\r\n").encode())
with open(sys.argv[2], "wb", buffering=0) as f:
    while True:
        data = s.recv(1 << 20)
        if not data:
            break
        f.write(data)
"""


class Reader:
    """A fast client of GET /v1/stream (see READER)."""

    SCORE = b"\nevent: score\n"

    def __init__(self, ctl, actor, directory):
        self.path = os.path.join(directory, actor + ".sse")
        env = dict(os.environ, FG_READER_TOKEN=TOKENS[actor][1])
        self.proc = subprocess.Popen([sys.executable, "-c", READER, str(ctl.port),
                                      self.path], env=env)
        self.scores = 0
        self._off = 0
        self._tail = b""

    def count(self):
        """Score events received so far."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self._off)
                data = f.read()
        except FileNotFoundError:
            return 0
        self._off += len(data)
        self.scores += (self._tail + data).count(self.SCORE)
        self._tail = data[-(len(self.SCORE) - 1):]
        return self.scores

    def ended(self):
        return self.proc.poll() is not None

    def raw(self):
        with open(self.path, "rb") as f:
            return f.read()

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def parse_block(block, comments):
    """One server-sent-events block: {"id", "event", "data"}, or None for a
    block of comments only (appended to comments)."""
    ev = {}
    for ln in block.decode().split("\n"):
        if ln.startswith(":"):
            comments.append(ln[1:].strip())
            continue
        name, _, value = ln.partition(":")
        ev[name] = value[1:] if value.startswith(" ") else value
    if not ev:
        return None
    assert set(ev) == {"id", "event", "data"}, ev
    return {"id": int(ev["id"]), "event": ev["event"],
            "data": json.loads(ev["data"])}


def score_row(region, ts, devices, grey):
    share = grey / devices
    return msgpack.packb({"region": region, "ts": ts, "devices": devices,
                          "grey": grey, "share": share, "lo": share * 0.9,
                          "hi": min(1.0, share * 1.1), "mode": "auto"},
                         use_bin_type=True)


def produce_score(topics, region, ts, devices, grey):
    fgtest.produce(topics.scores, region.encode(), score_row(region, ts, devices, grey))


def metrics(ctl):
    status, _, body = ctl.request("GET", "/metrics", admin=True)
    assert status == 200
    return fgtest.parse_metrics(body.decode())


def rss_kb(pid, field="VmRSS"):
    """The process's resident memory now (VmRSS) or at its peak (VmHWM)."""
    with open(f"/proc/{pid}/status") as f:
        for ln in f:
            if ln.startswith(field + ":"):
                return int(ln.split()[1])
    raise AssertionError("no " + field)


def reset_peak_rss(pid):
    """Starts VmHWM over from the current RSS (Linux 4.0 and later)."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


# ---------------------------------------------------------------------------


def test_events_resume_and_dashboard_copy():
    """401 without a token, 405 for POST; the first event is a snapshot with
    every region; a lock through the API and a score row arrive as events
    within seconds (the same row again changes nothing: no event); the
    dashboard topic carries the same JSON plus "event"; Last-Event-ID
    resumes with exactly the missed events, a too-old or foreign id gets a
    snapshot; ": ping" keeps the connection alive."""
    topics = Topics()
    dash = fgtest.unique_topic("ctl-dash", partitions=1)
    settings = {"control.stream_ring": "4", "control.stream_ping": "1s",
                "control.dashboard_topic": dash}
    with Control(topics, settings) as ctl:
        status, hdrs, body = ctl.call("GET", "/v1/stream")
        assert status == 401 and body["error"] == "unauthorized", (status, body)
        assert hdrs["www-authenticate"].startswith("Bearer"), hdrs
        status, hdrs, body = ctl.call("POST", "/v1/stream", "vic")
        assert status == 405 and hdrs["allow"] == "GET", (status, hdrs)

        t0 = now_ms()
        produce_score(topics, "CU", t0, 200, 190)
        produce_score(topics, "US", t0, 500, 10)
        fgtest.wait_until(lambda: ctl.call("GET", "/v1/regions", "vic")[2]["count"] == 2,
                          what="two regions in the table")

        a = Stream(ctl)
        assert a.head() == 200, a.headers
        assert a.headers["content-type"] == "text/event-stream", a.headers
        assert "content-length" not in a.headers, a.headers
        assert a.headers["connection"].lower() == "close", a.headers
        assert a.headers["x-request-id"].startswith("req-"), a.headers
        snap = a.event()
        assert snap["event"] == "snapshot", snap
        _, _, listed = ctl.call("GET", "/v1/regions", "vic")
        assert [r["region"] for r in snap["data"]["regions"]] == ["CU", "US"], snap
        # The same region objects as GET /v1/regions.
        assert snap["data"]["regions"] == listed["regions"], (snap, listed)
        assert abs(snap["data"]["now"] - now_ms()) < 10000, snap
        s_id = snap["id"]

        # A lock through the API: a "lock" event with the region locked.
        status, _, resp = ctl.call("POST", "/v1/regions/CU/lock", "alice",
                                   {"ttl_s": 600, "reason": "stream test"})
        assert status == 200, resp
        t_lock = time.monotonic()
        e1 = a.event(timeout=5.0)
        assert time.monotonic() - t_lock < 5.0
        assert e1["event"] == "lock" and e1["id"] == s_id + 1, e1
        assert e1["data"]["region"] == "CU" and e1["data"]["state"] == "locked", e1
        assert e1["data"]["actor"] == "alice" and e1["data"]["reason"] == "stream test", e1
        assert e1["data"]["devices"] == 200, e1

        # A score row: a "score" event with the row's numbers.
        produce_score(topics, "DE", t0 + 1000, 80, 20)
        e2 = a.event(timeout=5.0)
        assert e2["event"] == "score" and e2["id"] == s_id + 2, e2
        d = e2["data"]
        assert d["region"] == "DE" and d["devices"] == 80 and d["grey"] == 20, d
        assert d["score_ts"] == t0 + 1000 and abs(d["share"] - 0.25) < 1e-6, d
        assert d["state"] == "unlocked", d
        # The same row again, and an older one, change nothing: no event.
        produce_score(topics, "DE", t0 + 1000, 80, 20)
        produce_score(topics, "DE", t0 + 500, 99, 99)
        produce_score(topics, "US", t0 + 2000, 600, 12)
        e3 = a.event(timeout=5.0)
        assert e3["event"] == "score" and e3["id"] == s_id + 3, e3
        assert e3["data"]["region"] == "US" and e3["data"]["devices"] == 600, e3
        assert e3["data"] == ctl.call("GET", "/v1/regions", "vic")[2]["regions"][2], e3

        # Resume from the snapshot: exactly the three missed events.
        b = Stream(ctl, last_id=s_id)
        got = [b.event(), b.event(), b.event()]
        assert got == [e1, e2, e3], got
        b.no_event(0.5)
        # Resume at the newest id: nothing until the next event, which both
        # clients get alike.
        c = Stream(ctl, last_id=e3["id"])
        assert c.head() == 200
        c.no_event(0.3)
        produce_score(topics, "CU", t0 + 3000, 210, 200)
        e4 = a.event(timeout=5.0)
        assert e4["event"] == "score" and e4["id"] == s_id + 4, e4
        assert b.event() == e4 and c.event() == e4

        # The ring holds 4 events (e1..e4 now); one more pushes e1 out.
        produce_score(topics, "DE", t0 + 4000, 90, 30)
        e5 = a.event(timeout=5.0)
        assert e5["id"] == s_id + 5, e5
        assert b.event() == e5 and c.event() == e5
        d1 = Stream(ctl, last_id=e1["id"])   # needs e2..e5: all held
        assert [d1.event() for _ in range(4)] == [e2, e3, e4, e5]
        d1.no_event(0.3)
        for stale in (s_id, 12, "abc", s_id + 99):  # too old, foreign, bad, future
            d2 = Stream(ctl, last_id=stale)
            snap2 = d2.event()
            assert snap2["event"] == "snapshot" and snap2["id"] == e5["id"], (stale, snap2)
            regions = {r["region"]: r for r in snap2["data"]["regions"]}
            assert set(regions) == {"CU", "DE", "US"}, snap2
            assert regions["CU"]["state"] == "locked" and regions["DE"]["devices"] == 90
            d2.close()

        # The dashboard topic: the same JSON plus "event", keyed by region;
        # the first two are the score rows from before the stream opened.
        recs = fgtest.wait_until(
            lambda: (lambda r: r if len(r) >= 7 else None)(fgtest.consume(dash)),
            timeout=10, what="seven dashboard records")
        assert len(recs) == 7, recs
        assert [(r.key, json.loads(r.value)["event"]) for r in recs[:2]] == \
            [(b"CU", "score"), (b"US", "score")], recs[:2]
        for rec, ev in zip(recs[2:], [e1, e2, e3, e4, e5]):
            val = json.loads(rec.value)
            assert rec.key == ev["data"]["region"].encode(), (rec, ev)
            assert val.pop("event") == ev["event"], val
            assert val == ev["data"], (val, ev)
            assert list(json.loads(rec.value))[0] == "event"

        # Pings (every second here) keep quiet streams alive.
        fgtest.wait_until(lambda: (b.no_event(1.2), "ping" in b.comments)[1],
                          timeout=5, what="a ping comment")
        m = metrics(ctl)
        assert fgtest.metric(m, "fleetgate_control_stream_clients") == 4, m
        assert fgtest.metric(m, "fleetgate_control_stream_events_total") >= 7, m
        assert fgtest.metric(m, "fleetgate_control_requests_total",
                             route="stream", code="200") == 8, m
        for s in (a, b, c, d1):
            s.close()
        fgtest.wait_until(
            lambda: fgtest.metric(metrics(ctl), "fleetgate_control_stream_clients") == 0,
            timeout=5, what="the clients gauge back at 0")


def test_cap_slow_client_and_sigterm():
    """Three streams at most: a fourth gets 503 with Retry-After and a JSON
    error. A client that never reads is dropped once its buffer is full
    (the clients gauge goes down, the slow-drop counter up) while two
    readers get every event of a flood, and the service's memory does not
    grow with the flood. SIGTERM with the readers' streams open ends them
    and the service exits well within its shutdown timeout."""
    topics = Topics()
    settings = {"control.stream_max_connections": "3",
                "control.stream_client_buffer": "1m",
                "control.shutdown_timeout": "8s",
                # Small fetches and prefetch: the consumer would otherwise
                # hold much of a flood and make RSS move by itself.
                "kafka.queued.max.messages.kbytes": "1024",
                "kafka.fetch.max.bytes": "1048576",
                "kafka.max.partition.fetch.bytes": "262144"}
    # ASan keeps freed memory in quarantine: keep it small so that RSS
    # reflects what the service holds.
    saved = os.environ.get("ASAN_OPTIONS")
    os.environ["ASAN_OPTIONS"] = (saved + ":" if saved else "") + \
        "quarantine_size_mb=2:thread_local_quarantine_size_kb=64"
    try:
        ctl = Control(topics, settings)
    finally:
        if saved is None:
            del os.environ["ASAN_OPTIONS"]
        else:
            os.environ["ASAN_OPTIONS"] = saved
    with ctl:
        regions = [f"UA-{i}" for i in range(40)]
        t0 = now_ms()
        fgtest.produce_many(topics.scores, [(r.encode(), score_row(r, t0, 100, 10))
                                            for r in regions])
        fgtest.wait_until(lambda: ctl.call("GET", "/v1/regions", "vic")[2]["count"] == 40,
                          what="40 regions in the table")

        tmp = tempfile.mkdtemp(prefix="fg-stream-")
        fast = [Reader(ctl, "vic", tmp), Reader(ctl, "alice", tmp)]
        try:
            fgtest.wait_until(lambda: all(os.path.exists(r.path) and
                                          b"\nevent: snapshot\n" in r.raw() for r in fast),
                              what="both readers' snapshots")

            def flood(first, rounds):
                """rounds rows per region, each newer than the last: an event
                each, ~450 bytes; returns once both readers have them all."""
                rows = [(r.encode(), score_row(r, t0 + k, 100 + k, 10))
                        for k in range(first, first + rounds) for r in regions]
                want = fast[0].count() + len(rows)
                fgtest.produce_many(topics.scores, rows)
                fgtest.wait_until(
                    lambda: all(s.count() >= want or s.ended() for s in fast),
                    timeout=30, interval=0.2, what="the readers getting every row")
                return len(rows) * 450

            # A warm-up flood first: the consumer's buffers and the allocator
            # reach their working size, so what grows later is what the slow
            # client would cost.
            flood(1, 1500)
            reset_peak_rss(ctl.proc.pid)
            rss0 = rss_kb(ctl.proc.pid)

            slow = Stream(ctl, rcvbuf=2048)  # never reads a byte
            fgtest.wait_until(
                lambda: fgtest.metric(metrics(ctl), "fleetgate_control_stream_clients") == 3,
                what="three clients")
            extra = Stream(ctl)
            assert extra.head() == 503, extra.headers
            assert extra.headers["retry-after"].isdigit(), extra.headers
            err = extra.body()
            assert err["error"] == "too_many_streams" and err["request_id"], err
            extra.close()

            # ~45 MB per client: far more than RSS moves by itself, and far
            # more than the clients' caps (3 x 1 MiB) together.
            flood_bytes = flood(1501, 2500)
            for s in fast:
                assert not s.ended(), "a reader that keeps up was dropped"
                raw = s.raw()
                assert raw.startswith(b"HTTP/1.1 200 OK\r\n"), raw[:100]
                ids = [int(i) for i in re.findall(rb"(?:^|\n)id: (\d+)\n", raw)]
                assert len(ids) == 1 + 4000 * len(regions), len(ids)  # + snapshot
                assert ids == list(range(ids[0], ids[0] + len(ids))), "ids skip"
                newest = {}
                for r in regions:  # each region's last event holds its last row
                    at = raw.rfind(b'"region":"%s",' % r.encode())
                    block = raw[raw.rfind(b"\n\n", 0, at) + 2:raw.find(b"\n\n", at)]
                    newest[r] = parse_block(block, [])["data"]["score_ts"]
                assert newest == {r: t0 + 4000 for r in regions}, newest
            m = fgtest.wait_until(
                lambda: (lambda m: m if fgtest.metric(
                    m, "fleetgate_control_stream_clients") == 2 else None)(metrics(ctl)),
                timeout=15, what="the slow client dropped")
            assert fgtest.metric(m, "fleetgate_control_stream_slow_dropped_total") == 1, m
            # Holding the flood for the slow client would have cost flood_bytes
            # at the peak (what is freed at the drop goes back to the system).
            grown = (rss_kb(ctl.proc.pid, "VmHWM") - rss0) * 1024
            assert grown < flood_bytes / 3, f"RSS grew {grown} B during the flood"
            # What the slow client got is cut short: its buffer cap plus what
            # the kernel holds.
            slow.s.settimeout(5)
            got = b""
            try:
                while True:
                    data = slow.s.recv(65536)
                    if not data:
                        break
                    got += data
            except (ConnectionResetError, socket.timeout):
                pass
            assert len(got) < flood_bytes * 2 / 3, len(got)
            slow.close()
            # Its slot is free again.
            again = Stream(ctl)
            assert again.head() == 200 and again.event()["event"] == "snapshot"

            # SIGTERM with three streams open: they end, the process exits fast.
            t_stop = time.monotonic()
            ctl.proc.send_signal(15)
            rc = ctl.proc.wait(8)
            took = time.monotonic() - t_stop
            assert rc == 0, ctl.log_tail()
            assert took < 5.0, f"exit took {took:.1f}s"
            for s in fast:
                fgtest.wait_until(s.ended, timeout=5, what="the reader's stream ending")
            try:
                while True:
                    again.event(timeout=5)
            except EOFError:
                pass
            again.close()
        finally:
            for s in fast:
                s.close()
            shutil.rmtree(tmp, ignore_errors=True)


def test_stream_keys_in_help_and_checked():
    """--help lists the stream keys with their environment variables; a
    dashboard topic that is one of the service's own topics, and a stream
    cap that leaves no connection for API calls, stop start-up naming the
    key."""
    exe = fgtest.build_path("fleetgate-control")
    p = subprocess.run([exe, "--help"], stdout=subprocess.PIPE, timeout=10)
    assert p.returncode == 0
    for key in (b"control.stream_max_connections", b"control.stream_ring",
                b"control.stream_client_buffer", b"control.stream_ping",
                b"FLEETGATE_CONTROL_DASHBOARD_TOPIC"):
        assert key in p.stdout, key
    bad = [["control.dashboard_topic=fleet.region-locks"],
           ["control.dashboard_topic=audit-x", "control.audit_topic=audit-x"],
           ["control.stream_max_connections=300", "control.max_connections=300"]]
    for sets in bad:
        args = [exe, "--check-config"]
        for kv in sets:
            args += ["--set", kv]
        p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=10)
        key = sets[0].split("=")[0].encode()
        assert p.returncode == 2 and key in p.stderr, (sets, p.stderr)
    p = subprocess.run([exe, "--check-config", "--set",
                        "control.dashboard_topic=fleet.dashboard"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10)
    assert p.returncode == 0, p.stderr


if __name__ == "__main__":
    fgtest.run()
