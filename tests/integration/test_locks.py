# SPDX-License-Identifier: Apache-2.0
"""Region locks through the real broker: lock records (docs/protocol.md
section 4) produced to a compacted topic before and while the gateway runs,
checked through the directive a device gets in its check-in answer, the
readiness probe and the lock metrics."""

import json
import os
import secrets
import threading
import time

import fgtest
from fgtest import msgpack

NEXT_S = 77
MESSAGE = 'Service "paused" \u2014 r\u00e9gion \\ \U0001F6AB'
CLOCK_SLACK_MS = 25  # libevent's coarse cached clock


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


def lock_record(region, state="locked", scope="all", reason="grey_share",
                message=MESSAGE, until=None, **extra):
    rec = {"region": region, "state": state, "scope": scope, "source": "ops",
           "reason": reason, "message": message, "since": now_ms() - 1000,
           "id": "lk-" + secrets.token_hex(6), "actor": "itest"}
    if until is not None:
        rec["until"] = until
    elif state == "locked":
        rec["until"] = now_ms() + 3600 * 1000
    rec.update(extra)
    return rec


def msg(rec, key=None):
    """(key, value) for fgtest.produce_many; rec None is a tombstone."""
    if isinstance(rec, dict):
        return ((key or rec["region"]).encode(), msgpack.packb(rec, use_bin_type=True))
    return key.encode(), rec


def locks_topic():
    return fgtest.unique_topic("locks", partitions=1, config={"cleanup.policy": "compact"})


def gateway(topic, start=True, **extra):
    config = {"gateway.locks_topic": topic, "gateway.next_checkin_s": NEXT_S,
              "gateway.threads": 2}
    config.update(extra)
    return Gateway(config, start=start)


_dev = iter(range(10 ** 9))


def directive(gw, region, sku, fmt="json"):
    """The answer to a check-in of a fresh device in region sold for sku."""
    ci = {"device_id": f"lk-dev-{next(_dev)}", "sku_region": sku, "region": region}
    if fmt == "json":
        status, headers, body = gw.post_json("/v1/checkin", ci)
        reply = json.loads(body)
    else:
        status, headers, body = gw.post_msgpack("/v1/checkin", ci)
        reply = msgpack.unpackb(body, raw=False)
    assert status == 200, (status, body)
    return reply


def is_ok(reply):
    return reply == {"status": "ok", "next_checkin_s": NEXT_S}


def assert_ok(gw, region, sku):
    reply = directive(gw, region, sku)
    assert is_ok(reply), (region, sku, reply)


def assert_locked(gw, region, sku, rec, fmt="json"):
    """The device is answered with exactly rec's lock."""
    reply = directive(gw, region, sku, fmt)
    want = {"status": "locked", "region": rec["region"], "reason": rec["reason"],
            "message": rec["message"], "until": rec["until"], "next_checkin_s": NEXT_S}
    got = dict(reply)
    # "scope" is an addition of the gateway's over the documented fields.
    scope = got.pop("scope", rec["scope"])
    assert got == want and scope == rec["scope"], (region, sku, reply, want)


def wait_directive(gw, region, sku, pred, what, timeout=10.0):
    """Polls check-ins until pred(answer); returns that answer."""
    def poll():
        reply = directive(gw, region, sku)
        return reply if pred(reply) else None
    return fgtest.wait_until(poll, timeout=timeout, interval=0.05, what=what)


def locked_by(region):
    return lambda r: r.get("status") == "locked" and r.get("region") == region


# ---------------------------------------------------------------------------


def test_catch_up_before_ready():
    """Records already in the topic apply to the first check-in after
    /readyz turned 200: the last record of a region wins, tombstones remove."""
    topic = locks_topic()
    cu_old = lock_record("CU", reason="old_reason", message="old")
    cu = lock_record("CU", reason="ops_freeze", scope="grey")
    filler = [lock_record(f"QZ-{i}") for i in range(150)]
    by = lock_record("BY", state="shadow")
    msgs = [msg(cu_old)] + [msg(r) for r in filler] + [
        msg(lock_record("UA-43")), msg(None, "UA-43"), msg(by), msg(cu)]
    fgtest.produce_many(topic, msgs)
    with gateway(topic) as gw:
        # No wait: the gateway said it is ready, so the table is complete.
        assert_locked(gw, "CU", "CN", cu)
        assert_locked(gw, "CU", "CN", cu, fmt="msgpack")
        assert_ok(gw, "CU", "CU")
        assert_ok(gw, "UA-43", "CN")
        assert_ok(gw, "BY", "CN")
        assert_locked(gw, "QZ-149", "QZ", filler[149])
        assert_locked(gw, "QZ-0", "CN", filler[0])
        m = gw.metrics()
        status, _, body = gw.get("/readyz", admin=True)
    assert status == 200 and json.loads(body) == {"status": "ready"}, (status, body)
    assert fgtest.metric(m, "fleetgate_lock_table_regions") == 152, m  # QZ-*, CU, BY
    assert fgtest.metric(m, "fleetgate_lock_table_lag_records") == 0, m
    assert fgtest.metric(m, "fleetgate_lock_table_ready") == 1, m
    assert fgtest.metric(m, "fleetgate_lock_tombstones_total") == 1, m
    assert fgtest.metric(m, "fleetgate_lock_records_total") == len(msgs) - 1, m
    assert fgtest.metric(m, "fleetgate_lock_records_invalid_total") == 0, m
    assert fgtest.metric(m, "fleetgate_directives_locked_total") == 4, m


def test_not_ready_until_locks_topic_readable():
    """While the lock topic cannot be read the gateway is alive but not
    ready; once it exists the gateway becomes ready and follows it."""
    topic = f"locks.{os.getpid()}.{secrets.token_hex(4)}"  # not created yet
    gw = gateway(topic, start=False)
    errors = []

    def start():
        try:
            gw.start()
        except BaseException as e:  # reported below
            errors.append(e)

    th = threading.Thread(target=start)
    with gw:
        th.start()
        try:
            fgtest.wait_until(lambda: _admin_status(gw, "/healthz") == 200,
                              timeout=10, what="the admin port")
            t_end = time.monotonic() + 1.5
            while time.monotonic() < t_end:
                status, _, body = gw.get("/readyz", admin=True)
                assert status == 503, (status, body)
                assert json.loads(body) == {"status": "not_ready",
                                            "reason": "lock_table_catching_up"}, body
                assert _admin_status(gw, "/healthz") == 200
                time.sleep(0.1)
            assert gw.metric("fleetgate_lock_table_ready") == 0
            fgtest.create_topic(topic, 1, {"cleanup.policy": "compact"})
        finally:
            th.join(40)
        assert not errors, errors
        assert gw.get("/readyz", admin=True)[0] == 200
        cu = lock_record("CU")
        fgtest.produce(topic, *msg(cu))
        wait_directive(gw, "CU", "CU", locked_by("CU"), "the CU lock")
        assert_locked(gw, "CU", "CU", cu)


def _admin_status(gw, path):
    try:
        return gw.get(path, admin=True, timeout=2)[0]
    except OSError:
        return None


def test_directives_follow_the_topic():
    topic = locks_topic()
    with gateway(topic, **{"markets.EU": "DE,FR"}) as gw:
        assert_ok(gw, "CU", "CN")
        assert gw.metric("fleetgate_lock_table_regions") == 0
        cu = lock_record("CU", scope="grey", reason="grey_share")
        ua = lock_record("UA", scope="all", reason="war")
        byhm = lock_record("BY-HM", scope="all", reason="local")
        de = lock_record("DE", scope="grey", reason="de_grey")
        it = lock_record("IT", scope="grey", reason="it_grey")
        others = [lock_record("RU", state="shadow"), lock_record("IR", state="suppressed"),
                  lock_record("SY", state="unlocked"), lock_record("KP")]
        sentinel = lock_record("ZW", reason="sentinel")
        fgtest.produce_many(topic, [msg(r) for r in (cu, ua, byhm, de, it, *others)]
                            + [msg(None, "KP"), msg(sentinel)])
        # Records are applied in order: once the last one shows, all have.
        wait_directive(gw, "ZW", "ZW", locked_by("ZW"), "the sentinel lock")

        # scope grey: only grey devices.
        assert_locked(gw, "CU", "CN", cu)
        assert_locked(gw, "CU", "CN", cu, fmt="msgpack")
        assert_ok(gw, "CU", "CU")
        assert_ok(gw, "CU", "CU-03")
        assert_locked(gw, "CU", "EU", cu)
        # scope all: every device, whatever its market.
        assert_locked(gw, "UA", "UA", ua)
        # A country lock covers its subdivisions; the answer names the country.
        assert_locked(gw, "UA-43", "US", ua)
        assert_locked(gw, "UA-43", "UA-43", ua)
        # A subdivision lock covers only that subdivision.
        assert_locked(gw, "BY-HM", "BY", byhm)
        assert_ok(gw, "BY", "BY")
        assert_ok(gw, "BY-BR", "CN")
        # [markets] EU = DE,FR: EU devices are not grey in DE, still grey in IT.
        assert_ok(gw, "DE", "EU")
        assert_ok(gw, "DE-BY", "EU")
        assert_locked(gw, "DE", "CN", de)
        assert_locked(gw, "IT", "EU", it)
        # shadow, suppressed, unlocked and a tombstone never lock.
        for region in ("RU", "IR", "SY", "KP"):
            assert_ok(gw, region, "CN")
        assert gw.metric("fleetgate_lock_table_regions") == 9  # KP removed

        # Changes while running.
        cu2 = lock_record("CU", scope="all", reason="now_all", message="all of CU")
        fgtest.produce(topic, *msg(cu2))
        wait_directive(gw, "CU", "CU", locked_by("CU"), "CU scope all")
        assert_locked(gw, "CU", "CU", cu2)
        assert_locked(gw, "CU", "CN", cu2)
        fgtest.produce(topic, *msg(lock_record("CU", state="unlocked")))
        wait_directive(gw, "CU", "CN", is_ok, "CU unlocked")
        # An unlocked subdivision record does not lift its country's lock.
        fgtest.produce(topic, *msg(lock_record("UA-43", state="unlocked")))
        fgtest.produce(topic, *msg(lock_record("ZW", state="shadow")))
        wait_directive(gw, "ZW", "ZW", is_ok, "the sentinel's shadow record")
        assert_locked(gw, "UA-43", "US", ua)
        assert gw.metric("fleetgate_lock_table_regions") == 10  # + UA-43
        fgtest.produce(topic, b"UA", None)
        wait_directive(gw, "UA-43", "US", is_ok, "UA tombstone")
        assert_ok(gw, "UA", "CN")
        assert gw.metric("fleetgate_lock_table_regions") == 9
        assert gw.metric("fleetgate_lock_table_lag_records") == 0
        assert gw.metric("fleetgate_lock_records_invalid_total") == 0


def test_lock_expires_without_new_record():
    topic = locks_topic()
    until = now_ms() + 4000
    kz = lock_record("KZ", until=until, reason="short")
    fgtest.produce(topic, *msg(kz))
    with gateway(topic) as gw:
        assert now_ms() < until - 500, "the gateway took too long to start"
        assert_locked(gw, "KZ", "CN", kz)
        assert_locked(gw, "KZ-ALA", "KZ", kz)
        reply = wait_directive(gw, "KZ", "CN", is_ok, "the lock to expire", timeout=10)
        t_ok = now_ms()
        assert is_ok(reply)
        assert t_ok >= until - CLOCK_SLACK_MS, (t_ok, until)
        assert t_ok <= until + 2000, (t_ok, until)
        assert_ok(gw, "KZ-ALA", "KZ")
        # Still in the table: only the answer changed.
        assert gw.metric("fleetgate_lock_table_regions") == 1
        assert gw.metric("fleetgate_lock_records_total") == 1
    # An already expired record never locks.
    topic2 = locks_topic()
    fgtest.produce(topic2, *msg(lock_record("KZ", until=now_ms() - 1)))
    with gateway(topic2) as gw:
        assert_ok(gw, "KZ", "CN")


def test_invalid_records_are_ignored_and_counted():
    topic = locks_topic()
    by = lock_record("BY", reason="valid_one")
    fgtest.produce(topic, *msg(by))
    with gateway(topic) as gw:
        assert_locked(gw, "BY", "CN", by)
        before = gw.metric("fleetgate_lock_records_invalid_total")
        assert before == 0
        no_until = lock_record("BY", state="locked")
        del no_until["until"]
        no_id = lock_record("BY", state="unlocked")
        del no_id["id"]
        invalid = [
            (b"BY", b"\xc1 not msgpack"),
            (b"BY", msgpack.packb(["BY", "unlocked"])),
            msg(no_id),
            msg(lock_record("BY", state="bogus")),
            msg(lock_record("BY", scope="some")),
            msg(no_until),
            msg(lock_record("BY", state="unlocked", since=-5)),
            msg(lock_record("BY", state="unlocked", reason="r" * 257)),
            msg({**lock_record("BY", state="unlocked"), "region": "by"}, key="BY"),
            msg(lock_record("BY-HM", state="unlocked"), key="BY"),  # key != region
            msg(lock_record("by", state="unlocked"), key="by"),  # bad key
            (b"BY", msgpack.packb(lock_record("BY", state="unlocked")) + b"\x00"),
        ]
        sentinel = lock_record("ZW", reason="sentinel")
        fgtest.produce_many(topic, invalid + [msg(sentinel)])
        wait_directive(gw, "ZW", "CN", locked_by("ZW"), "the sentinel lock")
        m = gw.metrics()
        # None of them unlocked BY: invalid records are ignored, not applied.
        assert_locked(gw, "BY", "CN", by)
        assert gw.running()
    assert fgtest.metric(m, "fleetgate_lock_records_invalid_total") == len(invalid), m
    assert fgtest.metric(m, "fleetgate_lock_records_total") == 2, m
    assert fgtest.metric(m, "fleetgate_lock_table_regions") == 2, m
    assert fgtest.metric(m, "fleetgate_lock_table_lag_records") == 0, m


if __name__ == "__main__":
    fgtest.run()
