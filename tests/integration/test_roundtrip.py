# SPDX-License-Identifier: Apache-2.0
"""Round trip through the real broker: check-ins POSTed to the gateway (one
or in batches, JSON or msgpack) are read back from the topic with kcat and
every field of every record is compared with what was sent (docs/protocol.md
sections 2 and 3), along with the answers the devices get."""

import json
import threading
import time

import fgtest
from fgtest import msgpack

GW_ID = "itest-gw-7"
NEXT_S = 123
HEADERS = {"content-type": b"application/msgpack", "schema": b"fleetgate.checkin.v1"}
SCHEMA = ("device_id", "sku_region", "region", "model", "fw", "mcc", "seq", "ts")
OK = {"status": "ok", "next_checkin_s": NEXT_S}
CLOCK_SLACK_MS = 25


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


def now_ms():
    return int(time.time() * 1000)


def gateway(**extra):
    config = {"gateway.id": GW_ID, "gateway.next_checkin_s": NEXT_S,
              "gateway.threads": 2}
    config.update(extra)
    return Gateway(config)


def decode(headers, body):
    """The answer body decoded by its Content-Type (json or msgpack)."""
    ct = headers.get("content-type", "")
    if ct == "application/json":
        return "json", json.loads(body)
    if ct == "application/msgpack":
        return "msgpack", msgpack.unpackb(body, raw=False, strict_map_key=False)
    raise AssertionError(f"unexpected content type {ct!r}: {body!r}")


def post(gw, route, obj, fmt, accept=None, ctype=None):
    """POSTs obj encoded as fmt ("json" or "msgpack"); returns (status,
    reply format, decoded body)."""
    if fmt == "json":
        body = json.dumps(obj).encode()
        ct = "application/json"
    else:
        body = msgpack.packb(obj, use_bin_type=True)
        ct = "application/msgpack"
    h = {"Content-Type": ctype or ct}
    if accept is not None:
        h["Accept"] = accept
    status, headers, raw = gw.post(route, body, h)
    rfmt, reply = decode(headers, raw)
    return status, rfmt, reply


def expected_value(sent):
    """The schema fields of a sent check-in as they must appear in the record:
    unknown keys dropped, null fields absent."""
    return {k: sent[k] for k in SCHEMA if k in sent and sent[k] is not None}


def check_record(rec, sent, t0, t1, where=""):
    """Asserts that one consumed record is exactly the record of check-in
    sent, received between t0 and t1 (ms)."""
    assert rec.key == sent["device_id"].encode(), (where, rec)
    assert rec.headers == HEADERS, (where, rec.headers)
    assert len(rec.value) <= 768, (where, len(rec.value))
    pairs = msgpack.unpackb(rec.value, raw=False, object_pairs_hook=list)
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), (where, keys)
    value = dict(pairs)
    assert keys[-3:] == ["v", "recv_ts", "gw"], (where, keys)
    recv_ts = value.pop("recv_ts")
    assert value.pop("v") == 1, (where, pairs)
    assert value.pop("gw") == GW_ID, (where, pairs)
    # libevent's cached clock (CLOCK_MONOTONIC_COARSE plus an offset taken
    # every 5 s) strays a few ms from time.time().
    assert t0 - CLOCK_SLACK_MS <= recv_ts <= t1 + CLOCK_SLACK_MS, (where, t0, recv_ts, t1)
    assert value == expected_value(sent), (where, value, sent)
    # Strings are msgpack str and integers use their shortest encoding:
    # re-encoding the same pairs gives the same bytes.
    assert msgpack.packb(dict(pairs), use_bin_type=True) == rec.value, (where, rec.value)


def by_key(records):
    out = {}
    for r in records:
        out.setdefault(r.key, []).append(r)
    return out


# ---------------------------------------------------------------------------


def test_single_json_every_field():
    full = {"device_id": "dev-J.1:a_b", "sku_region": "CN", "region": "UA-43",
            "model": "Pixel 8 — ü 漢字 🚀", "fw": "AP1A.240305.019",
            "mcc": 255, "seq": 2 ** 63 - 1, "ts": -1718000000123,
            "unknown": {"nested": [1, 2]}}
    minimal = {"device_id": "dev-J2", "sku_region": "CU", "region": "CU",
               "model": None, "mcc": None}
    empty_model = {"device_id": "dev-J3", "sku_region": "US-CA", "region": "PR",
                   "model": "", "fw": "", "mcc": 0, "seq": 0, "ts": 0}
    with gateway() as gw:
        t0 = now_ms()
        for sent in (full, minimal, empty_model):
            status, rfmt, reply = post(gw, "/v1/checkin", sent, "json")
            assert (status, rfmt, reply) == (200, "json", OK), (sent, status, reply)
        t1 = now_ms()
        records = fgtest.consume(gw.topic, 3)
    assert len(records) == 3, records
    got = by_key(records)
    for sent in (full, minimal, empty_model):
        (rec,) = got[sent["device_id"].encode()]
        check_record(rec, sent, t0, t1, sent["device_id"])
    # Optional fields not sent (or null) are absent, not zero.
    minimal_value = msgpack.unpackb(got[b"dev-J2"][0].value, raw=False)
    for absent in ("model", "fw", "mcc", "seq", "ts", "unknown"):
        assert absent not in minimal_value, minimal_value


def test_single_msgpack_extremes():
    longest = {"device_id": "D" * 64, "sku_region": "UA-ABC", "region": "ZZ-9Z9",
               "model": "\U0001F600" * 64, "fw": "\u00e9" * 32, "mcc": 999,
               "seq": 2 ** 64 - 1, "ts": -(2 ** 63)}
    positive = {"device_id": "dev-M2", "sku_region": "DE", "region": "FR",
                "seq": 1, "ts": 2 ** 63 - 1, 7: "int keys are ignored",
                "extra": b"\x00\x01"}
    with gateway() as gw:
        t0 = now_ms()
        for sent in (longest, positive):
            status, rfmt, reply = post(gw, "/v1/checkin", sent, "msgpack")
            assert (status, rfmt, reply) == (200, "msgpack", OK), (sent, status, reply)
        t1 = now_ms()
        records = fgtest.consume(gw.topic, 2)
    assert len(records) == 2, records
    got = by_key(records)
    check_record(got[longest["device_id"].encode()][0], longest, t0, t1, "longest")
    check_record(got[b"dev-M2"][0], positive, t0, t1, "positive")


def _batch_items():
    """50 items: (item, expected error (code, field) or None)."""
    invalid = [
        ({"device_id": "b-r", "sku_region": "CU"}, ("missing_field", "region")),
        ({"device_id": "bad id!", "sku_region": "CU", "region": "CU"},
         ("invalid_value", "device_id")),
        ({"device_id": "b-m", "sku_region": "CU", "region": "CU", "mcc": 1000},
         ("out_of_range", "mcc")),
        ({"device_id": "b-t", "sku_region": "CU", "region": "CU", "mcc": "250"},
         ("wrong_type", "mcc")),
        ({"device_id": "b-s", "sku_region": "cu", "region": "CU"},
         ("invalid_value", "sku_region")),
        ({"device_id": "b-f", "sku_region": "CU", "region": "CU", "fw": "x" * 33},
         ("too_long", "fw")),
        (42, ("not_an_object", None)),
        ({"device_id": None, "sku_region": "CU", "region": "CU"},
         ("missing_field", "device_id")),
        ({"device_id": "b-q", "sku_region": "CU", "region": "CU", "seq": -1},
         ("out_of_range", "seq")),
        # Several errors: the first in table order is reported.
        ({"device_id": "b-2", "sku_region": "CU", "mcc": -5}, ("missing_field", "region")),
    ]
    items = []
    inv = iter(invalid)
    for i in range(50):
        if i % 5 == 2:
            items.append(next(inv))
            continue
        item = {"device_id": f"bd-{i:02d}", "sku_region": "CU", "region": "CU",
                "seq": i}
        if i % 3 == 0:
            item.update(model=f"m{i}", fw="1.0", mcc=368, ts=1718000000000 + i)
        items.append((item, None))
    # The same device twice: its records land in order in one partition.
    items[48] = ({"device_id": "bd-same", "sku_region": "CU", "region": "CU", "seq": 1}, None)
    items[49] = ({"device_id": "bd-same", "sku_region": "CU", "region": "CU", "seq": 2}, None)
    return items


def _check_batch(fmt, extra_msgpack_items=()):
    items = _batch_items() + list(extra_msgpack_items)
    with gateway() as gw:
        t0 = now_ms()
        status, rfmt, reply = post(gw, "/v1/checkins", [it for it, _ in items], fmt)
        t1 = now_ms()
        assert status == 200, (status, reply)
        assert rfmt == fmt, rfmt
        results = reply["results"]
        assert len(results) == len(items), (len(results), len(items))
        for i, ((item, err), res) in enumerate(zip(items, results)):
            if err is None:
                assert res == OK, (i, item, res)
            else:
                code, field = err
                assert res["status"] == "error" and res["error"] == code, (i, item, res)
                assert res.get("field") == field, (i, item, res)
                assert set(res) <= {"status", "error", "field", "detail"}, res
                assert "retry" not in res, res
        valid = [it for it, err in items if err is None]
        records = fgtest.consume(gw.topic, len(valid), timeout=15)
        # Nothing beyond the valid items arrives.
        records += fgtest.consume(gw.topic, None)[len(records):]
        m = gw.metrics()
    assert len(records) == len(valid), (len(records), len(valid))
    got = by_key(records)
    for sent in valid:
        recs = got[sent["device_id"].encode()]
        if sent["device_id"] == "bd-same":
            assert [msgpack.unpackb(r.value)["seq"] for r in recs] == [1, 2], recs
            assert recs[0].partition == recs[1].partition, recs
            assert recs[0].offset < recs[1].offset, recs
            rec = recs[sent["seq"] - 1]
        else:
            assert len(recs) == 1, recs
            rec = recs[0]
        check_record(rec, sent, t0, t1, sent["device_id"])
    assert fgtest.metric(m, "fleetgate_checkins_accepted_total") == len(valid), m
    n_invalid = len(items) - len(valid)
    rejected = sum(v for s, v in m.items()
                   if s.startswith("fleetgate_checkins_rejected_total{"))
    assert rejected == n_invalid, (rejected, n_invalid)
    assert fgtest.metric(m, "fleetgate_checkins_rejected_total",
                         reason="missing_field") == 3, m


def test_batch_json_mixed():
    _check_batch("json")


def test_batch_msgpack_mixed():
    extra = [
        ({"device_id": b"bin-id", "sku_region": "CU", "region": "CU"},
         ("wrong_type", "device_id")),
        ({"device_id": "bm-float", "sku_region": "CU", "region": "CU", "mcc": 250.0},
         ("wrong_type", "mcc")),
        ({"device_id": "bm-u64", "sku_region": "CU", "region": "CU",
          "seq": 2 ** 64 - 1, "model": None}, None),
        ([1, 2], ("not_an_object", None)),
    ]
    _check_batch("msgpack", extra)


def test_reply_format_follows_accept():
    ci = {"device_id": "acc-1", "sku_region": "CU", "region": "CU"}
    bad = {"device_id": "acc-2", "sku_region": "CU"}
    cases = [
        # (request format, Accept, expected reply format)
        ("json", None, "json"),
        ("json", "application/msgpack", "msgpack"),
        ("msgpack", None, "msgpack"),
        ("msgpack", "application/json", "json"),
        ("msgpack", "*/*", "msgpack"),
        ("json", "*/*", "json"),
        ("json", "application/json, application/msgpack", "json"),
        ("msgpack", "application/msgpack;q=0.9, application/json", "msgpack"),
    ]
    with gateway() as gw:
        for fmt, accept, want in cases:
            status, rfmt, reply = post(gw, "/v1/checkin", ci, fmt, accept)
            assert (status, rfmt, reply) == (200, want, OK), (fmt, accept, rfmt, reply)
            status, rfmt, reply = post(gw, "/v1/checkins", [ci, bad], fmt, accept)
            assert (status, rfmt) == (200, want), (fmt, accept, status, rfmt)
            assert reply["results"][0] == OK, reply
            assert reply["results"][1]["error"] == "missing_field", reply
            # Error answers follow the same rule.
            status, rfmt, reply = post(gw, "/v1/checkin", bad, fmt, accept)
            assert (status, rfmt) == (400, want), (fmt, accept, status, rfmt)
            assert reply["error"] == "missing_field" and reply["field"] == "region", reply
            assert "status" not in reply, reply
        # The other msgpack media types are accepted as msgpack.
        for ct in ("application/x-msgpack", "application/vnd.msgpack",
                   "application/msgpack; charset=binary"):
            status, rfmt, reply = post(gw, "/v1/checkin", ci, "msgpack", ctype=ct)
            assert (status, rfmt, reply) == (200, "msgpack", OK), (ct, status, reply)
        status, rfmt, reply = post(gw, "/v1/checkin", ci, "json",
                                   ctype="application/json; charset=utf-8")
        assert (status, rfmt, reply) == (200, "json", OK), (status, reply)
        n_ok = len(cases) * 2 + 4
        records = fgtest.consume(gw.topic, n_ok)
    assert len(records) == n_ok, len(records)
    assert all(r.key == b"acc-1" for r in records), records


def test_answered_200_equals_records():
    """Concurrent single and batch check-ins: every 200 item is in the topic
    exactly once, and nothing answered 400 is."""
    with gateway() as gw:
        answered = []
        lock = threading.Lock()
        errors = []

        def client(n):
            try:
                for i in range(15):
                    seq = n * 1000 + i
                    ci = {"device_id": f"cc-{n}", "sku_region": "CU", "region": "CU",
                          "seq": seq}
                    fmt = "json" if i % 2 else "msgpack"
                    if i % 5 == 4:
                        status, _, _ = post(gw, "/v1/checkin", {**ci, "region": "x"}, fmt)
                        assert status == 400, status
                        continue
                    if i % 4 == 0:
                        second = {**ci, "seq": seq + 500}
                        status, _, reply = post(gw, "/v1/checkins", [ci, second], fmt)
                        assert status == 200, (status, reply)
                        assert reply["results"] == [OK, OK], reply
                        with lock:
                            answered.extend([(ci["device_id"], seq),
                                             (ci["device_id"], seq + 500)])
                        continue
                    status, _, reply = post(gw, "/v1/checkin", ci, fmt)
                    assert (status, reply) == (200, OK), (status, reply)
                    with lock:
                        answered.append((ci["device_id"], seq))
            except BaseException as e:  # reported by the main thread
                errors.append(e)

        threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        records = fgtest.consume(gw.topic, len(answered), timeout=15)
        records += fgtest.consume(gw.topic, None)[len(records):]
        accepted = gw.metric("fleetgate_checkins_accepted_total")
    got = sorted((r.key.decode(), msgpack.unpackb(r.value)["seq"]) for r in records)
    assert got == sorted(answered), (len(got), len(answered))
    assert accepted == len(answered), (accepted, len(answered))
    # Per device the records are in one partition, in the order answered
    # (each client sends its device's check-ins one after the other).
    for dev, recs in by_key(records).items():
        assert len({r.partition for r in recs}) == 1, dev
        seqs = [msgpack.unpackb(r.value)["seq"] for r in sorted(recs, key=lambda r: r.offset)]
        assert seqs == [s for d, s in answered if d == dev.decode()], (dev, seqs)


def test_ack_accept_mode():
    ci = {"device_id": "acc-mode", "sku_region": "CN", "region": "CU", "seq": 9,
          "model": "X"}
    item2 = {"device_id": "acc-mode-2", "sku_region": "CU", "region": "CU"}
    with gateway(**{"gateway.ack": "accept"}) as gw:
        t0 = now_ms()
        status, rfmt, reply = post(gw, "/v1/checkin", ci, "json")
        assert (status, reply) == (200, OK), (status, reply)
        status, rfmt, reply = post(gw, "/v1/checkins", [item2, {"x": 1}], "msgpack")
        t1 = now_ms()
        assert status == 200, (status, reply)
        assert reply["results"][0] == OK, reply
        assert reply["results"][1]["error"] == "missing_field", reply
        records = fgtest.consume(gw.topic, 2)
        assert gw.metric("fleetgate_checkins_accepted_total") == 2
    assert len(records) == 2, records
    got = by_key(records)
    check_record(got[b"acc-mode"][0], ci, t0, t1, "accept single")
    check_record(got[b"acc-mode-2"][0], item2, t0, t1, "accept batch")


if __name__ == "__main__":
    fgtest.run()
