# SPDX-License-Identifier: Apache-2.0
"""Bad input against a real gateway and broker: every malformed, oversized or
mistyped check-in gets the documented status and a machine-readable error
body in the reply format, nothing of it reaches the topic, the valid items of
a mixed batch are stored and the invalid ones reported in place, and the
gateway stays healthy and small afterwards."""

import json
import os
import socket
import time

import fgtest

msgpack = fgtest.msgpack

MAX_BODY = 128 * 1024
MAX_BATCH = 10

JSON = "application/json"
MSGPACK = "application/msgpack"


# ---------------------------------------------------------------------------
# Helpers


def gateway():
    """A gateway with small, known limits (one fresh topic per test)."""
    return fgtest.Gateway({"gateway.max_body": MAX_BODY,
                           "gateway.max_batch": MAX_BATCH})


def good(device_id, **extra):
    return {"device_id": device_id, "sku_region": "US", "region": "US", **extra}


def mp(obj):
    return msgpack.packb(obj, use_bin_type=True)


def mp_raw_str(data):
    """A msgpack str header and body for arbitrary bytes (not necessarily
    UTF-8), which msgpack-python refuses to write."""
    n = len(data)
    if n < 32:
        return bytes([0xa0 | n]) + data
    if n < 256:
        return b"\xd9" + bytes([n]) + data
    return b"\xda" + n.to_bytes(2, "big") + data


def mp_raw_map(pairs):
    """A msgpack map of (str key, already-encoded value bytes) pairs."""
    assert len(pairs) < 16
    return bytes([0x80 | len(pairs)]) + b"".join(
        mp_raw_str(k.encode()) + v for k, v in pairs)


def decode(headers, body):
    """The reply body decoded by its Content-Type (JSON or msgpack)."""
    ctype = headers.get("content-type", "")
    if ctype.startswith(MSGPACK):
        return msgpack.unpackb(body, raw=False)
    assert ctype.startswith(JSON), f"unexpected reply Content-Type {ctype!r}: {body!r}"
    return json.loads(body)


def check_error(reply, status, code, field=None, fmt=JSON, what=""):
    """Asserts a whole-request error answer: status, reply format, and an
    {"error": code, "field"?: field, "detail"?: text} body."""
    got_status, headers, body = reply
    assert got_status == status, (what, got_status, body)
    ctype = headers.get("content-type", "")
    assert ctype.startswith(fmt), (what, ctype, body)
    obj = decode(headers, body)
    assert isinstance(obj, dict), (what, obj)
    # code may list the acceptable (code, field) pairs.
    choices = code if isinstance(code, tuple) else ((code, field),)
    assert (obj.get("error"), obj.get("field")) in choices, (what, obj)
    assert set(obj) <= {"error", "field", "detail"}, (what, obj)
    if "detail" in obj:
        assert isinstance(obj["detail"], str) and obj["detail"], (what, obj)
    return obj


def topic_keys(topic):
    """Every record key of topic (the whole topic, all partitions)."""
    return sorted(r.key.decode() for r in fgtest.consume(topic, timeout=30))


def raw_exchange(port, data, timeout=10.0):
    """Sends data on a fresh connection and reads until the server closes it;
    returns the bytes received."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
        return out


def parse_responses(data):
    """Splits raw HTTP/1.1 responses (Content-Length framed) into a list of
    (status, {lower-case header: value}, body)."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, f"incomplete response head: {data!r}"
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        n = int(headers.get("content-length", "0"))
        out.append((status, headers, rest[:n]))
        data = rest[n:]
    return out


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def assert_still_serving(gw, device_id):
    """The gateway is alive, healthy and stores a valid check-in."""
    assert gw.running(), "the gateway exited\n" + gw.log_tail()
    status, _, body = gw.post_json("/v1/checkin", good(device_id))
    assert status == 200, (status, body)
    assert json.loads(body)["status"] == "ok", body
    assert gw.get("/healthz", admin=True)[0] == 200
    assert gw.get("/readyz", admin=True)[0] == 200


# ---------------------------------------------------------------------------
# Cases: (name, path, content type, body, status, code, field)


def _json_cases():
    cases = []
    add = cases.append
    full = good("bad-full", model="Pixel 8", fw="1.2.3", mcc=250, seq=7, ts=1718000000000)
    text = json.dumps(full).encode()
    add(("truncated json", "/v1/checkin", text[:-5], 400, "invalid_json", None))
    add(("empty body", "/v1/checkin", b"", 400, "invalid_json", None))
    add(("two values", "/v1/checkin", text + text, 400, "invalid_json", None))
    add(("nested 100000", "/v1/checkin", b"[" * 100000, 400, "invalid_json", None))
    add(("nested 100000 batch", "/v1/checkins", b"[" * 100000, 400, "invalid_json", None))
    add(("nested objects", "/v1/checkin", b'{"a":' * 20000 + b"1" + b"}" * 20000,
         400, "invalid_json", None))
    add(("invalid utf-8 device_id", "/v1/checkin",
         b'{"device_id":"bad-\xff","sku_region":"US","region":"US"}', 400, "invalid_json", None))
    add(("invalid utf-8 model", "/v1/checkin",
         b'{"device_id":"bad-u8m","sku_region":"US","region":"US","model":"\xc3\x28"}',
         400, "invalid_json", None))
    add(("overlong utf-8 fw", "/v1/checkin",
         b'{"device_id":"bad-u8f","sku_region":"US","region":"US","fw":"\xc0\xaf"}',
         400, "invalid_json", None))
    add(("surrogate utf-8 model", "/v1/checkin",
         b'{"device_id":"bad-u8s","sku_region":"US","region":"US","model":"\xed\xa0\x80"}',
         400, "invalid_json", None))
    add(("raw NUL in string", "/v1/checkin",
         b'{"device_id":"bad-\x00","sku_region":"US","region":"US"}', 400, "invalid_json", None))
    add(("raw NUL between tokens", "/v1/checkin",
         b'{"device_id":"bad-nul2",\x00"sku_region":"US","region":"US"}',
         400, "invalid_json", None))
    add(("escaped NUL device_id", "/v1/checkin",
         b'{"device_id":"bad-\\u0000","sku_region":"US","region":"US"}', 400, "invalid_json", None))
    add(("escaped NUL model", "/v1/checkin",
         b'{"device_id":"bad-nul3","sku_region":"US","region":"US","model":"a\\u0000b"}',
         400, "invalid_json", None))
    add(("control char model", "/v1/checkin",
         json.dumps(good("bad-ctl", model="a\u0001b")).encode(), 400, "invalid_value", "model"))
    add(("DEL in fw", "/v1/checkin",
         json.dumps(good("bad-del", fw="1\u007f")).encode(), 400, "invalid_value", "fw"))
    add(("duplicate key", "/v1/checkin",
         b'{"device_id":"bad-dup","device_id":"bad-dup2","sku_region":"US","region":"US"}',
         400, "invalid_json", None))
    # Past uint64: refused, whether the parser or the range check sees it.
    add(("seq over 2^64-1", "/v1/checkin",
         json.dumps(good("bad-seq", seq=2**64)).encode(), 400,
         (("invalid_json", None), ("out_of_range", "seq")), None))
    add(("mcc past int64", "/v1/checkin",
         json.dumps(good("bad-mcc", mcc=2**70)).encode(), 400,
         (("invalid_json", None), ("out_of_range", "mcc")), None))
    # Wrong types for every field.
    for field in ("device_id", "sku_region", "region", "model", "fw"):
        for value in (5, 1.5, True, [], {}, ["US"]):
            obj = good("bad-wt")
            obj[field] = value
            add((f"{field}={value!r}", "/v1/checkin", json.dumps(obj).encode(),
                 400, "wrong_type", field))
    for field in ("mcc", "seq", "ts"):
        for value in ("5", 1.0, 2.5, True, False, [], {}):
            obj = good("bad-wt", **{field: value})
            add((f"{field}={value!r}", "/v1/checkin", json.dumps(obj).encode(),
                 400, "wrong_type", field))
        add((f"{field}=1e3", "/v1/checkin",
             json.dumps(good("bad-wt")).encode()[:-1] + f', "{field}": 1e3}}'.encode(),
             400, "wrong_type", field))
    # Missing (or null) required fields.
    for field in ("device_id", "sku_region", "region"):
        obj = good("bad-miss")
        del obj[field]
        add((f"no {field}", "/v1/checkin", json.dumps(obj).encode(), 400, "missing_field", field))
        obj[field] = None
        add((f"null {field}", "/v1/checkin", json.dumps(obj).encode(), 400, "missing_field", field))
    add(("empty object", "/v1/checkin", b"{}", 400, "missing_field", "device_id"))
    # Ranges and lengths.
    for name, obj, code, field in (
            ("mcc 1000", good("bad-r1", mcc=1000), "out_of_range", "mcc"),
            ("mcc -1", good("bad-r2", mcc=-1), "out_of_range", "mcc"),
            ("seq -1", good("bad-r3", seq=-1), "out_of_range", "seq"),
            ("device_id 65", good("bad-" + "x" * 61), "too_long", "device_id"),
            ("model 65 chars", good("bad-l1", model="\u00e9" * 65), "too_long", "model"),
            ("fw 33 chars", good("bad-l2", fw="\u4e2d" * 33), "too_long", "fw"),
            ("empty device_id", good(""), "invalid_value", "device_id"),
            ("device_id space", good("bad id"), "invalid_value", "device_id"),
            ("device_id slash", good("bad/id"), "invalid_value", "device_id"),
            ("region lower", {**good("bad-v1"), "region": "us"}, "invalid_value", "region"),
            ("region 3 letters", {**good("bad-v2"), "region": "USA"}, "invalid_value", "region"),
            ("sku subdivision 4", {**good("bad-v3"), "sku_region": "UA-1234"},
             "invalid_value", "sku_region"),
    ):
        add((name, "/v1/checkin", json.dumps(obj).encode(), 400, code, field))
    # Shapes.
    add(("array to /v1/checkin", "/v1/checkin", json.dumps([good("bad-arr")]).encode(),
         400, "not_an_object", None))
    add(("string to /v1/checkin", "/v1/checkin", b'"bad"', 400, "not_an_object", None))
    add(("object to /v1/checkins", "/v1/checkins", json.dumps(good("bad-obj")).encode(),
         400, "not_an_array", None))
    add(("empty batch", "/v1/checkins", b"[]", 400, "empty_batch", None))
    add(("batch over max_batch", "/v1/checkins",
         json.dumps([good(f"bad-many-{i}") for i in range(MAX_BATCH + 1)]).encode(),
         400, "too_many_items", None))
    add(("truncated batch", "/v1/checkins",
         json.dumps([good("bad-tb1"), good("bad-tb2")]).encode()[:-3], 400, "invalid_json", None))
    return [(n, p, JSON, b, s, c, f) for n, p, b, s, c, f in cases]


def _msgpack_cases():
    cases = []
    add = cases.append
    full = mp(good("bad-full", model="Pixel 8", fw="1.2.3", mcc=250, seq=7, ts=1718000000000))
    for cut in (1, 5, len(full) // 2, len(full) - 1):
        add((f"truncated msgpack at {cut}", "/v1/checkin", full[:cut],
             400, "invalid_msgpack", None))
    add(("trailing bytes", "/v1/checkin", full + b"\xc0", 400, "invalid_msgpack", None))
    add(("nested arrays", "/v1/checkin", b"\x91" * 100000 + b"\x01", 400, "invalid_msgpack", None))
    add(("nested arrays batch", "/v1/checkins", b"\x91" * 100000 + b"\x01", 400,
         "invalid_msgpack", None))
    add(("nested maps", "/v1/checkin", b"\x81\xa1a" * 30000 + b"\x01",
         400, "invalid_msgpack", None))
    add(("reserved byte", "/v1/checkin", b"\xc1", 400, "invalid_msgpack", None))
    dev, sku, reg = (("device_id", mp("bad-m")), ("sku_region", mp("US")), ("region", mp("US")))
    # Invalid UTF-8 and NUL bytes inside str values.
    add(("invalid utf-8 device_id", "/v1/checkin",
         mp_raw_map([("device_id", mp_raw_str(b"bad-\xff")), sku, reg]),
         400, "invalid_value", "device_id"))
    add(("invalid utf-8 region", "/v1/checkin",
         mp_raw_map([dev, sku, ("region", mp_raw_str(b"U\xc3"))]), 400, "invalid_value", "region"))
    for raw in (b"\xc3\x28", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"ab\xe2\x82"):
        add((f"invalid utf-8 model {raw!r}", "/v1/checkin",
             mp_raw_map([dev, sku, reg, ("model", mp_raw_str(raw))]),
             400, "invalid_value", "model"))
        add((f"invalid utf-8 fw {raw!r}", "/v1/checkin",
             mp_raw_map([dev, sku, reg, ("fw", mp_raw_str(raw))]), 400, "invalid_value", "fw"))
    add(("NUL in device_id", "/v1/checkin",
         mp_raw_map([("device_id", mp_raw_str(b"bad\x00x")), sku, reg]),
         400, "invalid_value", "device_id"))
    add(("NUL in region", "/v1/checkin",
         mp_raw_map([dev, sku, ("region", mp_raw_str(b"U\x00"))]), 400, "invalid_value", "region"))
    add(("NUL in model", "/v1/checkin",
         mp_raw_map([dev, sku, reg, ("model", mp_raw_str(b"a\x00b"))]),
         400, "invalid_value", "model"))
    add(("NUL in fw", "/v1/checkin",
         mp_raw_map([dev, sku, reg, ("fw", mp_raw_str(b"\x00"))]), 400, "invalid_value", "fw"))
    # Wrong types, including bin for strings and floats for integers.
    for field in ("device_id", "sku_region", "region", "model", "fw"):
        for value in (5, -5, 1.5, True, [], {}, b"US"):
            obj = good("bad-wt")
            obj[field] = value
            add((f"msgpack {field}={value!r}", "/v1/checkin", mp(obj), 400, "wrong_type", field))
    for field in ("mcc", "seq", "ts"):
        for value in ("5", 1.0, 2.5, True, [], {}, b"\x01"):
            obj = good("bad-wt", **{field: value})
            add((f"msgpack {field}={value!r}", "/v1/checkin", mp(obj), 400, "wrong_type", field))
    for field in ("device_id", "sku_region", "region"):
        obj = good("bad-miss")
        del obj[field]
        add((f"msgpack no {field}", "/v1/checkin", mp(obj), 400, "missing_field", field))
        obj[field] = None
        add((f"msgpack nil {field}", "/v1/checkin", mp(obj), 400, "missing_field", field))
    for name, obj, code, field in (
            ("mcc 1000", good("bad-r1", mcc=1000), "out_of_range", "mcc"),
            ("mcc -1", good("bad-r2", mcc=-1), "out_of_range", "mcc"),
            ("seq -1", good("bad-r3", seq=-1), "out_of_range", "seq"),
            ("ts 2^63", good("bad-r4", ts=2**63), "out_of_range", "ts"),
            ("device_id 65", good("bad-" + "y" * 61), "too_long", "device_id"),
            ("model 65 chars", good("bad-l1", model="\u00e9" * 65), "too_long", "model"),
            ("fw 33 chars", good("bad-l2", fw="x" * 33), "too_long", "fw"),
    ):
        add((f"msgpack {name}", "/v1/checkin", mp(obj), 400, code, field))
    add(("duplicate schema key", "/v1/checkin",
         mp_raw_map([dev, sku, reg, ("device_id", mp("bad-m2"))]), 400, "invalid_msgpack",
         "device_id"))
    add(("array to /v1/checkin", "/v1/checkin", mp([good("bad-arr")]), 400, "not_an_object", None))
    add(("map to /v1/checkins", "/v1/checkins", mp(good("bad-obj")), 400, "not_an_array", None))
    add(("empty msgpack batch", "/v1/checkins", mp([]), 400, "empty_batch", None))
    add(("msgpack batch over max_batch", "/v1/checkins",
         mp([good(f"bad-many-{i}") for i in range(MAX_BATCH + 1)]), 400, "too_many_items", None))
    return [(n, p, MSGPACK, b, s, c, f) for n, p, b, s, c, f in cases]


# ---------------------------------------------------------------------------
# Tests


def test_invalid_check_ins_get_400_with_error_body_and_store_nothing():
    cases = _json_cases() + _msgpack_cases()
    with gateway() as gw:
        rejected_before = gw.metrics()
        for name, path, ctype, body, status, code, field in cases:
            reply = gw.post(path, body, {"Content-Type": ctype})
            check_error(reply, status, code, field, fmt=ctype, what=name)
        # The error body follows Accept, whatever the request format.
        for name, path, ctype, body, status, code, field in cases[::7]:
            other = MSGPACK if ctype == JSON else JSON
            reply = gw.post(path, body, {"Content-Type": ctype, "Accept": other})
            check_error(reply, status, code, field, fmt=other, what=name + " (Accept)")
        metrics = gw.metrics()
        assert fgtest.metric(metrics, "fleetgate_checkins_accepted_total") == 0
        assert fgtest.metric(metrics, "fleetgate_produce_errors_total") == 0
        n_400 = sum(fgtest.metric(metrics, "fleetgate_http_requests_total", route=r, code="400")
                    - fgtest.metric(rejected_before, "fleetgate_http_requests_total",
                                    route=r, code="400")
                    for r in ("/v1/checkin", "/v1/checkins"))
        assert n_400 == len(cases) + len(cases[::7]), (n_400, len(cases))
        assert topic_keys(gw.topic) == [], "a rejected check-in reached the topic"
        assert_still_serving(gw, "ok-after-bad")
        assert topic_keys(gw.topic) == ["ok-after-bad"]


def test_mixed_batch_stores_valid_items_and_reports_invalid_ones_in_order():
    def items(tag):
        return [good(f"ok-{tag}-0"),
                {"device_id": 5, "sku_region": "US", "region": "US"},
                good(f"ok-{tag}-2", model="Pixel", mcc=250),
                7,
                {"device_id": f"bad-{tag}-4", "sku_region": "US"},
                good(f"bad-{tag}-5", mcc=1000),
                good(f"ok-{tag}-6")]
    want = [("ok",), ("wrong_type", "device_id"), ("ok",), ("not_an_object", None),
            ("missing_field", "region"), ("out_of_range", "mcc"), ("ok",)]
    with gateway() as gw:
        for fmt in (JSON, MSGPACK):
            tag = "j" if fmt == JSON else "m"
            body = json.dumps(items(tag)).encode() if fmt == JSON else mp(items(tag))
            status, headers, raw = gw.post("/v1/checkins", body, {"Content-Type": fmt})
            assert status == 200, (status, raw)
            assert headers["content-type"].startswith(fmt)
            assert "retry-after" not in headers, headers
            results = decode(headers, raw)["results"]
            assert len(results) == len(want), results
            for i, (res, exp) in enumerate(zip(results, want)):
                if exp[0] == "ok":
                    assert res == {"status": "ok", "next_checkin_s": 300}, (i, res)
                else:
                    assert res["status"] == "error", (i, res)
                    assert res["error"] == exp[0] and res.get("field") == exp[1], (i, res)
                    assert "retry" not in res, (i, res)
        keys = topic_keys(gw.topic)
        assert keys == sorted(f"ok-{t}-{i}" for t in "jm" for i in (0, 2, 6)), keys
        assert gw.metric("fleetgate_checkins_accepted_total") == 6
        records = fgtest.consume(gw.topic, timeout=30)
        for r in records:
            value = msgpack.unpackb(r.value, raw=False)
            assert value["device_id"] == r.key.decode(), value
        # A batch whose items are all invalid is still a 200 with results,
        # and stores nothing.
        status, headers, raw = gw.post_json("/v1/checkins", [{"device_id": "bad-all"}, 1])
        assert status == 200, (status, raw)
        assert [r["error"] for r in json.loads(raw)["results"]] == ["missing_field",
                                                                    "not_an_object"]
        assert topic_keys(gw.topic) == keys
        assert_still_serving(gw, "ok-after-batch")


def test_body_over_max_body_gets_413_content_length_and_chunked():
    with gateway() as gw:
        head = ("POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                "{framing}\r\n\r\n")
        for path in ("/v1/checkin", "/v1/checkins"):
            # Declared length over the limit: refused from the head alone.
            t0 = time.monotonic()
            data = raw_exchange(gw.port, head.format(
                path=path, framing=f"Content-Length: {MAX_BODY + 1}").encode()
                + b" " * 1000)
            assert time.monotonic() - t0 < 5
            (status, headers, body), = parse_responses(data)
            assert status == 413, data[:200]
            assert headers.get("connection") == "close", headers
            assert isinstance(json.loads(body)["error"], str), body
            # Chunked: refused once the chunks pass the limit.
            chunk = b"[" * 4096
            n_chunks = MAX_BODY // len(chunk) + 1
            chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(n_chunks))
            data = raw_exchange(gw.port, head.format(
                path=path, framing="Transfer-Encoding: chunked").encode() + chunks + b"0\r\n\r\n")
            (status, headers, body), = parse_responses(data)
            assert status == 413, data[:200]
            assert isinstance(json.loads(body)["error"], str), body
        # Through an ordinary client sending the whole body.
        big = json.dumps(good("bad-big", model="x")).encode()[:-1] + b', "pad": "' + \
            b"p" * (4 * MAX_BODY) + b'"}'
        try:
            status, _, body = gw.post("/v1/checkin", big, {"Content-Type": JSON})
            assert status == 413, (status, body[:200])
        except (ConnectionResetError, BrokenPipeError):
            pass  # the server closed while the client was still sending
        # The limit is exact: a body of exactly max_body is taken.
        base = json.dumps(good("ok-exact")).encode()
        exact = base + b" " * (MAX_BODY - len(base))
        assert len(exact) == MAX_BODY
        status, _, body = gw.post("/v1/checkin", exact, {"Content-Type": JSON})
        assert status == 200, (status, body[:200])
        status, _, body = gw.post("/v1/checkin", exact + b" ", {"Content-Type": JSON})
        assert status == 413, (status, body[:200])
        assert topic_keys(gw.topic) == ["ok-exact"]
        assert_still_serving(gw, "ok-after-413")


def test_unsupported_content_type_gets_415():
    body = json.dumps(good("bad-ct")).encode()
    with gateway() as gw:
        for ctype in ("text/plain", "application/jsonx", "application/x-www-form-urlencoded",
                      "multipart/form-data; boundary=x", "application/octet-stream", None):
            headers = {"Content-Type": ctype} if ctype else {}
            for path in ("/v1/checkin", "/v1/checkins"):
                check_error(gw.post(path, body, headers), 415, "unsupported_media_type",
                            what=f"{ctype} {path}")
        check_error(gw.post("/v1/checkin", body, {"Content-Type": "text/plain",
                                                  "Accept": MSGPACK}),
                    415, "unsupported_media_type", fmt=MSGPACK, what="415 in msgpack")
        # Parameters and case do not matter for a supported type.
        status, _, reply = gw.post("/v1/checkin", json.dumps(good("ok-ct")).encode(),
                                   {"Content-Type": "Application/JSON; charset=utf-8"})
        assert status == 200, (status, reply)
        assert topic_keys(gw.topic) == ["ok-ct"]


def test_transfer_encoding_with_content_length_is_refused():
    body = json.dumps(good("bad-smuggle")).encode()
    smuggled = (b"POST /v1/checkin HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    with gateway() as gw:
        for te, cl_first in (("chunked", False), ("chunked", True), ("identity", False),
                             ("gzip, chunked", False)):
            te_line = f"Transfer-Encoding: {te}\r\n"
            cl_line = f"Content-Length: {len(chunked)}\r\n"
            head = ("POST /v1/checkin HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                    + (cl_line + te_line if cl_first else te_line + cl_line) + "\r\n")
            data = raw_exchange(gw.port, head.encode() + chunked + smuggled)
            responses = parse_responses(data)
            # One 400, then the connection is closed: the request behind it
            # is never served.
            assert [r[0] for r in responses] == [400], (te, data[:300])
            assert isinstance(json.loads(responses[0][2])["error"], str)
        assert topic_keys(gw.topic) == []
        assert_still_serving(gw, "ok-after-smuggle")


def test_huge_declared_msgpack_lengths_are_refused_quickly_without_memory():
    bombs = [b"\xdd\xff\xff\xff\xff",          # array32 of 2^32 - 1
             b"\xdf\xff\xff\xff\xff",          # map32 of 2^32 - 1 pairs
             b"\xdb\xff\xff\xff\xff",          # str32 of 4 GiB
             b"\xc6\xff\xff\xff\xff",          # bin32 of 4 GiB
             b"\x81\xa9device_id\xdb\xff\xff\xff\xff",
             b"\x91\xdd\xff\xff\xff\xff"]
    with gateway() as gw:
        pid = gw.proc.pid
        assert_still_serving(gw, "ok-warmup")
        before = rss_kib(pid)
        for _ in range(20):
            for bomb in bombs:
                for path in ("/v1/checkin", "/v1/checkins"):
                    t0 = time.monotonic()
                    status, headers, body = gw.post(path, bomb, {"Content-Type": MSGPACK})
                    elapsed = time.monotonic() - t0
                    assert status == 400, (bomb, path, status, body)
                    assert decode(headers, body)["error"] in ("invalid_msgpack", "not_an_array",
                                                              "not_an_object"), body
                    assert elapsed < 1.0, (bomb, path, elapsed)
        after = rss_kib(pid)
        assert after - before < 32 * 1024, f"RSS grew from {before} KiB to {after} KiB"
        assert topic_keys(gw.topic) == ["ok-warmup"]
        assert_still_serving(gw, "ok-after-bombs")


def test_gateway_survives_a_burst_of_garbage_on_keep_alive_connections():
    """Garbage of every kind, mixed with valid check-ins on the same
    keep-alive connections: each valid one is stored, nothing else is."""
    import http.client
    rng = __import__("random").Random(1234)
    payloads = []
    for i in range(300):
        kind = rng.randrange(4)
        if kind == 0:
            payloads.append((JSON, json.dumps(good(f"ok-burst-{i}")).encode(), f"ok-burst-{i}"))
        elif kind == 1:
            payloads.append((JSON, os.urandom(rng.randrange(1, 300)), None))
        elif kind == 2:
            blob = bytearray(mp(good(f"bad-burst-{i}", model="m", mcc=1)))
            for _ in range(3):
                blob[rng.randrange(len(blob))] = rng.randrange(256)
            payloads.append((MSGPACK, bytes(blob), "maybe"))
        else:
            payloads.append((MSGPACK, os.urandom(rng.randrange(1, 300)), None))
    stored = set()
    maybe = set()
    with gateway() as gw:
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
        try:
            for ctype, body, expect in payloads:
                conn.request("POST", "/v1/checkin", body, {"Content-Type": ctype})
                resp = conn.getresponse()
                data = resp.read()
                if expect not in (None, "maybe"):
                    assert resp.status == 200, (resp.status, data)
                    stored.add(expect)
                elif expect is None:
                    assert resp.status == 400, (resp.status, body, data)
                else:
                    assert resp.status in (200, 400), (resp.status, data)
                    if resp.status == 200:
                        # A mutated record can still be a valid check-in.
                        obj = msgpack.unpackb(body, raw=True, strict_map_key=False)
                        maybe.add(obj[b"device_id"].decode())
                if resp.getheader("connection") == "close":
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
        finally:
            conn.close()
        keys = set(topic_keys(gw.topic))
        assert stored <= keys, stored - keys
        assert keys <= stored | maybe, keys - stored - maybe
        assert_still_serving(gw, "ok-after-burst")


if __name__ == "__main__":
    fgtest.run()
