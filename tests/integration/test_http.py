# SPDX-License-Identifier: Apache-2.0
"""The gateway's HTTP behaviour as a client sees it on the wire (raw sockets
where http.client would hide it): keep-alive, pipelining, routing and media
type errors, size limits, framing (chunked, Transfer-Encoding with
Content-Length, Expect: 100-continue), read and idle deadlines, the
connection cap, clients that go away, and the /metrics series."""

import json
import socket
import struct
import time

import fgtest
from fgtest import msgpack

NEXT_S = 300
OK = {"status": "ok", "next_checkin_s": NEXT_S}


class Gateway(fgtest.Gateway):
    """fgtest.Gateway that also requires a clean exit (status 0) on SIGTERM
    when the block did not raise: a crash, a hang or a sanitizer report at
    shutdown fails the test that caused it."""

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None and self.running():
            rc = self.stop()
            if rc != 0:
                tail = self.log_tail()
                super().__exit__(None, None, None)
                raise AssertionError(f"gateway exited with {rc} on SIGTERM\n{tail}")
        return super().__exit__(exc_type, exc, tb)


def now():
    return time.monotonic()


def checkin(dev, seq=None, **extra):
    ci = {"device_id": dev, "sku_region": "CU", "region": "CU"}
    if seq is not None:
        ci["seq"] = seq
    ci.update(extra)
    return ci


def jbody(obj):
    return json.dumps(obj).encode()


def request(method, path, body=None, headers=None, ctype="application/json",
            length=True):
    """The bytes of one HTTP/1.1 request."""
    lines = [f"{method} {path} HTTP/1.1", "Host: fleetgate.test"]
    if body is not None and ctype:
        lines.append(f"Content-Type: {ctype}")
    if body is not None and length:
        lines.append(f"Content-Length: {len(body)}")
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def post_checkin(obj, headers=None, path="/v1/checkin"):
    return request("POST", path, jbody(obj), headers)


class Raw:
    """One client connection on a raw socket with an HTTP/1.1 answer reader."""

    def __init__(self, port, timeout=5.0):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def _fill(self):
        data = self.s.recv(65536)
        if not data:
            raise EOFError(f"connection closed; unparsed bytes {self.buf!r}")
        self.buf += data

    def response(self):
        """Reads one answer: (status, {lower-case name: value}, body)."""
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        version, status, _ = (lines[0].split(" ", 2) + [""])[:3]
        assert version == "HTTP/1.1", lines[0]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            assert name.lower() not in headers, f"duplicate header {name}"
            headers[name.lower()] = value.strip()
        n = int(headers.get("content-length", "0"))
        while len(self.buf) < n:
            self._fill()
        body, self.buf = self.buf[:n], self.buf[n:]
        return int(status), headers, body

    def wait_closed(self, timeout=5.0):
        """Seconds until the server closed the connection (EOF or reset);
        raises AssertionError if it sends bytes or stays open."""
        t0 = now()
        self.s.settimeout(timeout)
        try:
            data = self.s.recv(65536)
        except ConnectionResetError:
            data = b""
        except socket.timeout:
            raise AssertionError(f"connection still open after {timeout}s") from None
        assert data == b"" and self.buf == b"", (self.buf, data)
        return now() - t0

    def close(self, reset=False):
        if reset:
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.s.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.s.close()
        return False


def limited_gateway(**extra):
    config = {"gateway.max_body": "4k", "gateway.max_header_bytes": "2k",
              "gateway.read_timeout": "1s", "gateway.idle_timeout": "1s",
              "gateway.threads": 2}
    config.update(extra)
    return Gateway(config)


def topic_records(gw, expect=None, timeout=10.0):
    """Records of the gateway's topic: waits for `expect` of them, then also
    takes whatever else is there (so extra records are seen)."""
    got = fgtest.consume(gw.topic, expect, timeout=timeout) if expect else []
    rest = fgtest.consume(gw.topic, None)
    return got + rest[len(got):]


def error_body(headers, body):
    assert headers.get("content-type") == "application/json", headers
    return json.loads(body)


# ---------------------------------------------------------------------------


def test_keep_alive():
    with Gateway({"gateway.threads": 2}) as gw, Raw(gw.port) as c:
        answers = []
        for i in range(3):
            c.send(post_checkin(checkin("ka", i)))
            answers.append(c.response())
        c.send(request("GET", "/v1/nothing"))
        answers.append(c.response())
        c.send(request("POST", "/v1/checkin", b"x", ctype="text/plain"))
        answers.append(c.response())
        c.send(request("POST", "/v1/checkins", msgpack.packb([checkin("ka", 3)]),
                       ctype="application/msgpack"))
        answers.append(c.response())
        statuses = [a[0] for a in answers]
        assert statuses == [200, 200, 200, 404, 415, 200], statuses
        for status, headers, body in answers:
            assert "connection" not in headers, headers
        assert json.loads(answers[0][2]) == OK
        assert msgpack.unpackb(answers[5][2]) == {"results": [OK]}
        # Connection: close is honoured after the answer.
        c.send(post_checkin(checkin("ka", 4), {"Connection": "close"}))
        status, headers, body = c.response()
        assert status == 200 and headers.get("connection") == "close", headers
        c.wait_closed(2)
        records = topic_records(gw, 5)
    assert [msgpack.unpackb(r.value)["seq"] for r in records] == [0, 1, 2, 3, 4], records
    # HTTP/1.0 without keep-alive: one answer, then closed.
    with Gateway({"gateway.threads": 1}) as gw, Raw(gw.port) as c:
        c.send(post_checkin(checkin("ka10")).replace(b"HTTP/1.1", b"HTTP/1.0", 1))
        status, headers, body = c.response()
        assert status == 200 and json.loads(body) == OK, (status, body)
        c.wait_closed(2)


def test_pipelining():
    with Gateway({"gateway.threads": 2}) as gw, Raw(gw.port) as c:
        c.send(post_checkin(checkin("pipe", 1))
               + request("GET", "/v1/elsewhere")
               + request("POST", "/v1/checkin", msgpack.packb(checkin("pipe", 2)),
                         ctype="application/msgpack")
               + post_checkin(checkin("pipe", 3), {"Accept": "application/msgpack"}))
        answers = [c.response() for _ in range(4)]
        got = [(s, h["content-type"]) for s, h, _ in answers]
        assert got == [(200, "application/json"), (404, "application/json"),
                       (200, "application/msgpack"), (200, "application/msgpack")], got
        assert json.loads(answers[0][2]) == OK
        assert json.loads(answers[1][2])["error"] == "not_found"
        assert msgpack.unpackb(answers[2][2]) == OK
        assert msgpack.unpackb(answers[3][2]) == OK
        # The connection is still usable afterwards.
        c.send(post_checkin(checkin("pipe", 4)))
        assert c.response()[0] == 200
        records = topic_records(gw, 4)
    assert [msgpack.unpackb(r.value)["seq"] for r in records] == [1, 2, 3, 4], records
    assert len({r.partition for r in records}) == 1


def test_routes_methods_media_types():
    with limited_gateway() as gw:
        ci = jbody(checkin("route"))
        for method, path in (("GET", "/"), ("POST", "/v1/checkin/"), ("POST", "/v2/checkin"),
                             ("POST", "/V1/CHECKIN"), ("GET", "/metrics")):
            status, headers, body = gw.request(method, path, ci,
                                               {"Content-Type": "application/json"})
            assert status == 404, (method, path, status)
            assert error_body(headers, body)["error"] == "not_found", body
        for method, path in (("GET", "/v1/checkin"), ("PUT", "/v1/checkins"),
                             ("DELETE", "/v1/checkin")):
            status, headers, body = gw.request(method, path)
            assert status == 405, (method, path, status)
            assert headers.get("allow") == "POST", headers
            assert error_body(headers, body)["error"] == "method_not_allowed", body
        status, headers, body = gw.request("HEAD", "/v1/checkin")
        assert status == 405 and headers.get("allow") == "POST" and body == b""
        # A query string does not change the route.
        status, _, body = gw.post("/v1/checkin?debug=1", ci, {"Content-Type": "application/json"})
        assert (status, json.loads(body)) == (200, OK), (status, body)
        for ctype in ("text/plain", "application/jsonx", "application/vnd.msgpa",
                      "application/x-www-form-urlencoded", "json", None):
            h = {"Content-Type": ctype} if ctype else {}
            for path in ("/v1/checkin", "/v1/checkins"):
                status, headers, body = gw.post(path, ci, h)
                assert status == 415, (ctype, path, status, body)
                assert error_body(headers, body)["error"] == "unsupported_media_type", body
        # 404/405/415 keep the connection open.
        with Raw(gw.port) as c:
            c.send(request("GET", "/v1/checkin"))
            assert c.response()[0] == 405
            c.send(request("POST", "/v1/checkin", ci, ctype="text/plain"))
            assert c.response()[0] == 415
            c.send(request("POST", "/nope", ci))
            assert c.response()[0] == 404
            c.send(request("POST", "/v1/checkin", ci))
            assert c.response()[0] == 200
        records = topic_records(gw, 2)
    assert len(records) == 2, records


def test_body_size_limit():
    with limited_gateway() as gw:
        base = checkin("big", pad="")
        pad = 4096 - len(jbody(base))
        exact = jbody(checkin("big", pad="p" * pad))
        assert len(exact) == 4096
        status, _, body = gw.post("/v1/checkin", exact, {"Content-Type": "application/json"})
        assert (status, json.loads(body)) == (200, OK), (status, body)
        # One byte over: refused as soon as the headers announce it.
        over = jbody(checkin("ovr", pad="p" * (pad + 1)))
        assert len(over) == 4097
        with Raw(gw.port) as c:
            c.send(request("POST", "/v1/checkin", over)[:-len(over)])
            status, headers, body = c.response()
            assert status == 413, (status, body)
            assert error_body(headers, body) == {"error": "body_too_large"}, body
            assert headers.get("connection") == "close", headers
            c.wait_closed(2)
        # With Expect: 100-continue the 413 comes instead of the 100.
        with Raw(gw.port) as c:
            c.send(request("POST", "/v1/checkin", over, {"Expect": "100-continue"})[:-len(over)])
            status, headers, body = c.response()
            assert status == 413, (status, headers)
            c.wait_closed(2)
        # Chunked: the limit applies to the decoded body.
        with Raw(gw.port) as c:
            chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p)
                              for p in (over[:2000], over[2000:4000], over[4000:]))
            c.send(request("POST", "/v1/checkin", b"", {"Transfer-Encoding": "chunked"},
                           length=False) + chunks + b"0\r\n\r\n")
            status, headers, body = c.response()
            assert status == 413, (status, body)
            c.wait_closed(2)
        records = topic_records(gw, 1)
    assert [r.key for r in records] == [b"big"], records


def test_header_size_limit():
    with limited_gateway() as gw:
        ci = jbody(checkin("hdr"))
        status, _, _ = gw.post("/v1/checkin", ci, {"Content-Type": "application/json",
                                                   "X-Pad": "a" * 1200})
        assert status == 200
        cases = [
            {"X-Pad": "a" * 3000},
            {f"X-H{i}": "v" * 30 for i in range(60)},  # many small ones
            {f"X-{i}": "v" for i in range(70)},  # more headers than the table holds
        ]
        for headers in cases:
            with Raw(gw.port) as c:
                c.send(request("POST", "/v1/checkin", ci, headers))
                status, h, body = c.response()
                assert status == 431, (status, body, len(headers))
                assert h.get("connection") == "close", h
                c.wait_closed(2)
        # A long URL counts too.
        with Raw(gw.port) as c:
            c.send(request("POST", "/v1/checkin?" + "q" * 3000, ci))
            assert c.response()[0] == 431
            c.wait_closed(2)
        records = topic_records(gw, 1)
    assert [r.key for r in records] == [b"hdr"], records


def test_transfer_encoding_with_content_length_refused():
    with limited_gateway() as gw:
        ci = jbody(checkin("smuggle"))
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(ci), ci)
        for cl in (len(chunked), len(ci)):
            with Raw(gw.port) as c:
                c.send(request("POST", "/v1/checkin", b"",
                               {"Transfer-Encoding": "chunked", "Content-Length": cl},
                               length=False) + chunked
                       # A request hidden behind it must not run either.
                       + post_checkin(checkin("smuggle-2")))
                status, headers, body = c.response()
                assert status == 400, (status, body)
                assert headers.get("connection") == "close", headers
                c.wait_closed(2)
        time.sleep(0.5)
        assert topic_records(gw) == []


def test_chunked_body():
    with limited_gateway() as gw:
        ci = checkin("chunky", 7, model="M \u00fc")
        body = jbody(ci)
        parts = [body[:5], body[5:6], body[6:]]
        with Raw(gw.port) as c:
            c.send(request("POST", "/v1/checkin", b"", {"Transfer-Encoding": "chunked"},
                           length=False))
            for p in parts:
                c.send(b"%x;ext=1\r\n%s\r\n" % (len(p), p))
                time.sleep(0.05)
            c.send(b"0\r\n\r\n")
            status, headers, reply = c.response()
            assert (status, json.loads(reply)) == (200, OK), (status, reply)
            # msgpack batch, chunked, on the same connection.
            mp = msgpack.packb([checkin("chunky-2", 1), checkin("chunky-3", 2)])
            c.send(request("POST", "/v1/checkins", b"", {"Transfer-Encoding": "chunked"},
                           ctype="application/msgpack", length=False)
                   + b"%x\r\n%s\r\n0\r\n\r\n" % (len(mp), mp))
            status, headers, reply = c.response()
            assert status == 200 and msgpack.unpackb(reply) == {"results": [OK, OK]}, reply
        records = topic_records(gw, 3)
    got = {r.key: msgpack.unpackb(r.value) for r in records}
    assert len(records) == 3, records
    assert got[b"chunky"]["model"] == "M \u00fc" and got[b"chunky"]["seq"] == 7, got
    assert got[b"chunky-3"]["seq"] == 2, got


def test_expect_100_continue():
    with limited_gateway() as gw:
        body = jbody(checkin("expect", 1))
        with Raw(gw.port) as c:
            c.send(request("POST", "/v1/checkin", body, {"Expect": "100-continue"})[:-len(body)])
            status, headers, interim = c.response()
            assert (status, interim) == (100, b""), (status, headers, interim)
            c.send(body)
            status, headers, reply = c.response()
            assert (status, json.loads(reply)) == (200, OK), (status, reply)
            # Without Expect no 100 is sent.
            c.send(post_checkin(checkin("expect", 2)))
            status, _, _ = c.response()
            assert status == 200
        records = topic_records(gw, 2)
    assert len(records) == 2, records


def test_read_deadline():
    with limited_gateway() as gw:
        body = jbody(checkin("slow"))
        # Half a body, then nothing.
        with Raw(gw.port) as c:
            t0 = now()
            c.send(request("POST", "/v1/checkin", body)[:-(len(body) // 2)])
            status, headers, reply = c.response()
            took = now() - t0
            assert status == 408, (status, reply)
            assert error_body(headers, reply) == {"error": "request_timeout"}, reply
            assert 0.8 <= took <= 3.0, took
            c.wait_closed(2)
        # A client that keeps sending a byte at a time is cut off as well:
        # the deadline is for the whole request.
        with Raw(gw.port) as c:
            t0 = now()
            c.send(b"POST /v1/checkin HTTP/1.1\r\nX-Slow: ")
            status = None
            try:
                while now() - t0 < 4:
                    c.send(b"a")
                    c.s.settimeout(0.1)
                    try:
                        status, _, _ = c.response()
                        break
                    except socket.timeout:
                        pass
            except (BrokenPipeError, ConnectionResetError):
                pass
            took = now() - t0
            assert status == 408, status
            assert 0.8 <= took <= 3.0, took
        # A connection that never sends anything is closed silently.
        with Raw(gw.port) as c:
            took = c.wait_closed(4)
            assert 0.8 <= took <= 3.0, took
        status, _, _ = gw.post("/v1/checkin", body, {"Content-Type": "application/json"})
        assert status == 200
        records = topic_records(gw, 1)
    assert [r.key for r in records] == [b"slow"], records


def test_idle_timeout():
    with limited_gateway() as gw, Raw(gw.port) as c:
        c.send(post_checkin(checkin("idle")))
        assert c.response()[0] == 200
        # Busy with requests for longer than the idle timeout: stays open.
        for i in range(6):
            time.sleep(0.3)
            c.send(post_checkin(checkin("idle", i)))
            assert c.response()[0] == 200
        took = c.wait_closed(4)
        assert 0.8 <= took <= 3.0, took


def test_connection_cap():
    with Gateway({"gateway.max_connections": 5, "gateway.threads": 2}) as gw:
        held = [Raw(gw.port) for _ in range(5)]
        try:
            for i, c in enumerate(held):
                c.send(post_checkin(checkin(f"cap-{i}")))
                assert c.response()[0] == 200
            assert gw.metric("fleetgate_http_connections") == 5
            with Raw(gw.port) as extra:
                try:
                    status, headers, body = extra.response()
                except (EOFError, ConnectionResetError):
                    status = None  # closed without an answer is allowed
                if status is not None:
                    assert status == 503, (status, body)
                    assert headers.get("retry-after", "").isdigit(), headers
                    assert error_body(headers, body) == {"error": "too_many_connections"}, body
                    extra.wait_closed(2)
            # Release one: a new client gets in.
            held.pop().close()

            def new_client_served():
                try:
                    with Raw(gw.port, timeout=2) as c:
                        c.send(post_checkin(checkin("cap-new")))
                        return c.response()[0] == 200
                except (EOFError, OSError):
                    return False
            fgtest.wait_until(new_client_served, timeout=5, interval=0.1,
                              what="a connection after one was released")
            # The held ones still work.
            for c in held:
                c.send(post_checkin(checkin("cap-again")))
                assert c.response()[0] == 200
        finally:
            for c in held:
                c.close()
        records = topic_records(gw, 10)
    assert len(records) == 10, records


def test_client_gone_before_answer():
    with Gateway({"gateway.threads": 2}) as gw:
        for i in range(10):
            c = Raw(gw.port)
            c.send(post_checkin(checkin(f"gone-{i}")))
            c.close(reset=(i % 2 == 1))
        # Half-closed (shutdown of its write side): still answered.
        with Raw(gw.port) as c:
            c.send(post_checkin(checkin("half")))
            c.s.shutdown(socket.SHUT_WR)
            status, _, body = c.response()
            assert (status, json.loads(body)) == (200, OK)
            c.wait_closed(2)
        assert gw.running()
        assert gw.get("/healthz", admin=True)[0] == 200
        status, _, body = gw.post("/v1/checkin", jbody(checkin("after")),
                                  {"Content-Type": "application/json"})
        assert (status, json.loads(body)) == (200, OK)
        records = topic_records(gw, 12)
        fgtest.wait_until(lambda: gw.metric("fleetgate_http_connections") == 0,
                          timeout=5, what="connections to be released")
        assert gw.running()
    keys = sorted(r.key for r in records)
    assert keys == sorted([f"gone-{i}".encode() for i in range(10)] + [b"half", b"after"]), keys


def test_metrics_move():
    topic = fgtest.unique_topic("locks", 1, {"cleanup.policy": "compact"})
    with Gateway({"gateway.locks_topic": topic, "gateway.threads": 2}) as gw:
        m0 = gw.metrics()
        for name in ("fleetgate_producer_queue_depth", "fleetgate_delivery_errors_total",
                     "fleetgate_lock_table_regions", "fleetgate_lock_table_lag_records",
                     "fleetgate_checkins_accepted_total",
                     "fleetgate_produce_latency_seconds_count"):
            assert name in m0, (name, sorted(m0))
        j = {"Content-Type": "application/json"}
        assert gw.post("/v1/checkin", jbody(checkin("mx", 1)), j)[0] == 200
        assert gw.post("/v1/checkins", jbody([checkin("mx", 2), {"region": "CU"},
                                              checkin("mx", 3)]), j)[0] == 200
        assert gw.post("/v1/checkin", jbody({"device_id": "mx"}), j)[0] == 400
        assert gw.post("/v1/checkin", b"{", j)[0] == 400
        assert gw.post("/v1/checkins", b"[]", j)[0] == 400
        assert gw.get("/nowhere")[0] == 404
        assert gw.get("/v1/checkin")[0] == 405
        assert gw.post("/v1/checkins", b"[]", {"Content-Type": "text/csv"})[0] == 415
        m1 = gw.metrics()

        def delta(name, **labels):
            return fgtest.metric(m1, name, **labels) - fgtest.metric(m0, name, **labels)

        req = "fleetgate_http_requests_total"
        assert delta(req, route="/v1/checkin", code="200") == 1
        assert delta(req, route="/v1/checkins", code="200") == 1
        assert delta(req, route="/v1/checkin", code="400") == 2
        assert delta(req, route="/v1/checkins", code="400") == 1
        assert delta(req, route="other", code="404") == 1
        assert delta(req, route="/v1/checkin", code="405") == 1
        assert delta(req, route="/v1/checkins", code="415") == 1
        total = sum(v for s, v in m1.items() if s.startswith(req + "{"))
        assert total - sum(v for s, v in m0.items() if s.startswith(req + "{")) == 8
        assert delta("fleetgate_checkins_accepted_total") == 3
        rej = "fleetgate_checkins_rejected_total"
        assert delta(rej, reason="missing_field") == 2
        assert delta(rej, reason="invalid_json") == 1
        assert delta(rej, reason="empty_batch") == 1
        # The histogram: 3 acknowledged records, cumulative buckets.
        h = "fleetgate_produce_latency_seconds"
        assert delta(h + "_count") == 3
        assert fgtest.metric(m1, h + "_sum") > 0
        buckets = sorted(((float(s.split('le="')[1].split('"')[0]), v)
                          for s, v in m1.items() if s.startswith(h + "_bucket{")),
                         key=lambda b: b[0])
        assert buckets and buckets[-1][0] == float("inf"), buckets
        assert buckets[-1][1] == fgtest.metric(m1, h + "_count"), buckets
        assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:])), buckets
        assert fgtest.metric(m1, "fleetgate_producer_queue_depth") == 0
        assert fgtest.metric(m1, "fleetgate_delivery_errors_total") == 0
        # Lock table gauges follow the lock topic.
        assert fgtest.metric(m1, "fleetgate_lock_table_regions") == 0
        assert fgtest.metric(m1, "fleetgate_lock_table_lag_records") == 0
        rec = {"region": "CU", "state": "unlocked", "scope": "all", "source": "ops",
               "reason": "r", "message": "m", "since": 1, "id": "x"}
        fgtest.produce_many(topic, [(b"CU", msgpack.packb(rec)),
                                    (b"CN", msgpack.packb({**rec, "region": "CN"}))])
        fgtest.wait_until(lambda: gw.metric("fleetgate_lock_table_regions") == 2,
                          timeout=10, what="lock_table_regions to reach 2")
        assert gw.metric("fleetgate_lock_table_lag_records") == 0
        # The admin port's own requests are not device requests.
        m2 = gw.metrics()
        assert sum(v for s, v in m2.items() if s.startswith(req + "{")) == total


def test_http_layer_refusals_counted():
    """Answers the HTTP layer gives on its own (413, 431, 408, 400) are
    counted in fleetgate_http_rejected_total by code and reason."""
    with limited_gateway() as gw:
        over = jbody(checkin("over", pad="p" * 5000))
        with Raw(gw.port) as c:
            c.send(request("POST", "/v1/checkin", over)[:-len(over)])
            assert c.response()[0] == 413
        with Raw(gw.port) as c:
            c.send(request("POST", "/v1/checkin", b"{}", {"X-Pad": "a" * 3000}))
            assert c.response()[0] == 431
        with Raw(gw.port) as c:
            c.send(b"POST /v1/checkin HTTP/1.1\r\nContent-Length: 10\r\n\r\n{")
            assert c.response()[0] == 408
        with Raw(gw.port) as c:
            c.send(b"NOT HTTP AT ALL\r\n\r\n")
            assert c.response()[0] == 400
        m = gw.metrics()
    rej = "fleetgate_http_rejected_total"
    assert fgtest.metric(m, rej, code="413", reason="body_too_large") == 1, m
    assert fgtest.metric(m, rej, code="408", reason="request_timeout") == 1, m
    assert fgtest.metric(m, rej, code="431", reason="headers_too_large") == 1, m
    assert fgtest.metric(m, rej, code="400", reason="bad_request") == 1, m
    total = sum(v for s, v in m.items() if s.startswith(rej + "{"))
    assert total == 4, {s: v for s, v in m.items() if s.startswith(rej)}
    # None of them reached the check-in routes.
    assert sum(v for s, v in m.items()
               if s.startswith("fleetgate_http_requests_total{")) == 0


def test_inflight_body_budget():
    """Past gateway.max_inflight_bytes a request gets 503 with Retry-After
    (and the connection is closed); smaller ones still pass."""
    with limited_gateway(**{"gateway.max_inflight_bytes": 1024}) as gw:
        big = jbody(checkin("bud", pad="p" * 1500))
        with Raw(gw.port) as c:
            c.send(request("POST", "/v1/checkin", big))
            status, headers, body = c.response()
            assert status == 503, (status, body)
            assert headers.get("retry-after", "").isdigit(), headers
            assert error_body(headers, body)["error"] == "overloaded", body
            c.wait_closed(2)
        status, _, body = gw.post("/v1/checkin", jbody(checkin("small")),
                                  {"Content-Type": "application/json"})
        assert (status, json.loads(body)) == (200, OK), (status, body)
        records = topic_records(gw, 1)
        assert gw.metric("fleetgate_http_inflight_body_bytes") == 0
    assert [r.key for r in records] == [b"small"], records


if __name__ == "__main__":
    fgtest.run()
