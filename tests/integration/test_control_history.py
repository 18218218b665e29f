# SPDX-License-Identifier: Apache-2.0
"""Region history of the control service as an operator sees it: GET
/v1/regions/{code} answers the region object plus the last score rows and
lock records, oldest first, bounded by control.history_scores/_locks; the
picture and history are kept in Redis under per-region hash-tagged keys and
read back after a restart, when the compacted topics only hold each
region's newest record; with Redis unreachable locks and unlocks still
answer at once and the lost writes are counted, and after an outage the
writes are pushed again from memory."""

import json
import secrets
import socket
import threading
import time

import fgtest
from fgtest import msgpack
from test_control import Control, Topics, now_ms

SCORES_KEPT = 5
LOCKS_KEPT = 4


def settings(prefix, port=None):
    host, redis_port = fgtest.redis_addr()
    return {
        "redis.host": host,
        "redis.port": str(port or redis_port),
        "redis.prefix": prefix,
        "redis.timeout": "1s",
        "control.history_scores": str(SCORES_KEPT),
        "control.history_locks": str(LOCKS_KEPT),
    }


def unique_prefix():
    return "fgtest:ctl:" + secrets.token_hex(4)


def row(region, ts, devices, grey):
    """A score row as consumers/sc_eval.c publishes it, at a given ts."""
    share = grey / devices
    return msgpack.packb({"region": region, "ts": ts, "devices": devices,
                          "grey": grey, "share": share, "lo": share / 2,
                          "hi": min(1.0, share * 2), "mode": "auto",
                          "state": "unlocked", "source": "auto"},
                         use_bin_type=True)


def detail(ctl, region="CU"):
    status, _, body = ctl.call("GET", f"/v1/regions/{region}", "vic")
    return body if status == 200 else None


def metrics(ctl):
    status, _, data = ctl.request("GET", "/metrics", admin=True)
    assert status == 200
    return fgtest.parse_metrics(data.decode())


def write_errors(ctl):
    return fgtest.metric(metrics(ctl), "fleetgate_control_redis_errors_total",
                         op="write")


def lock(ctl, region="CU", reason="history test"):
    status, _, body = ctl.call("POST", f"/v1/regions/{region}/lock", "alice",
                               {"ttl_s": 600, "reason": reason})
    assert status == 200, (status, body)
    return body["request_id"]


def unlock(ctl, region="CU", reason="checked"):
    status, _, body = ctl.call("POST", f"/v1/regions/{region}/unlock", "alice",
                               {"reason": reason, "pin_s": 60})
    assert status == 200, (status, body)
    return body["request_id"]


def test_history_in_order_in_redis_and_after_a_restart():
    """Seven rows (and a late older one) keep the newest five, oldest first,
    with their values; lock, unlock, lock show as three records in order
    with their ids; the region object itself is the list's. Redis holds
    P:{CU}:now (the current view), P:{CU}:scores and P:{CU}:locks with a
    TTL, and CU in P:regions. A new fleetgate-control whose topics hold only
    CU's newest row and lock record (what compaction leaves) answers the
    same history, read back from Redis."""
    prefix = unique_prefix()
    topics = Topics()
    t0 = now_ms() - 60000
    rows = [(t0 + i * 1000, 100 + i, 10 + i) for i in range(7)]
    with Control(topics, settings(prefix)) as ctl:
        fgtest.produce_many(topics.scores,
                            [(b"CU", row("CU", *r)) for r in rows]
                            + [(b"CU", row("CU", t0 - 5000, 1, 1))])
        want_ts = [r[0] for r in rows[-SCORES_KEPT:]]
        fgtest.wait_until(
            lambda: fgtest.metric(metrics(ctl), "fleetgate_control_score_rows_total") == 8,
            what="all eight rows read")
        body = detail(ctl)
        assert body["score_ts"] == rows[-1][0], body
        scores = body["history"]["scores"]
        assert [s["ts"] for s in scores] == want_ts, scores
        for s, (ts, devices, grey) in zip(scores, rows[-SCORES_KEPT:]):
            assert s["devices"] == devices and s["grey"] == grey, s
            assert abs(s["share"] - grey / devices) < 1e-6, s
            assert abs(s["lo"] - grey / devices / 2) < 1e-6, s
        assert body["history"]["locks"] == [], body
        ids = [lock(ctl), unlock(ctl), lock(ctl, reason="again")]
        body = detail(ctl)
        locks = body["history"]["locks"]
        assert [lk["id"] for lk in locks] == ids, locks
        assert [lk["state"] for lk in locks] == ["locked", "unlocked", "locked"], locks
        assert all(lk["actor"] == "alice" and lk["region"] == "CU" for lk in locks), locks
        assert locks[1]["pin_until"] == locks[1]["since"] + 60000, locks
        assert locks[2]["reason"] == "again" and body["state"] == "locked", body
        # The detail is the list's region object plus history.
        _, _, lst = ctl.call("GET", "/v1/regions", "vic")
        entry = next(r for r in lst["regions"] if r["region"] == "CU")
        assert {k: v for k, v in body.items() if k != "history"} == entry, (body, entry)

        # Redis: keys hash-tagged by region, under the configured prefix.
        k_now, k_scores, k_locks = (f"{prefix}:{{CU}}:{n}" for n in ("now", "scores", "locks"))
        fgtest.wait_until(lambda: fgtest.redis("ZCARD", k_locks) == 3,
                          what="three lock records in Redis")
        now = json.loads(fgtest.redis("GET", k_now))
        assert now["state"] == "locked" and now["lock_id"] == ids[2], now
        assert now["devices"] == rows[-1][1], now
        members = [json.loads(m) for m in fgtest.redis("ZRANGE", k_scores, 0, -1)]
        assert [m["ts"] for m in members] == want_ts, members
        records = [msgpack.unpackb(m, raw=False)
                   for m in fgtest.redis("ZRANGE", k_locks, 0, -1)]
        assert [r["id"] for r in records] == ids, records
        for key in (k_now, k_scores, k_locks):
            ttl = fgtest.redis("PTTL", key)
            assert 0 < ttl <= 3 * 86400 * 1000, (key, ttl)
        assert fgtest.redis("ZSCORE", f"{prefix}:regions", "CU") is not None
        before = body["history"]

    # What compaction leaves: CU's newest row and newest lock record.
    newest_lock = fgtest.consume(topics.locks)[-1]
    topics2 = Topics()
    fgtest.produce(topics2.locks, b"CU", newest_lock.value)
    fgtest.produce(topics2.scores, b"CU", row("CU", *rows[-1]))
    with Control(topics2, settings(prefix)) as ctl:
        body = fgtest.wait_until(
            lambda: (lambda d: d if d and d["history"] == before else None)(detail(ctl)),
            timeout=15, what="CU's history back from Redis")
        assert body["state"] == "locked" and body["lock_id"] == ids[2], body
        m = metrics(ctl)
        assert fgtest.metric(m, "fleetgate_control_redis_history_loaded") == 1, m
        assert fgtest.metric(m, "fleetgate_control_redis_up") == 1, m
        # Replayed records did not become second entries in Redis either.
        assert fgtest.redis("ZCARD", k_locks) == 3
        assert fgtest.redis("ZCARD", k_scores) == SCORES_KEPT
    # Another prefix shares nothing with this one.
    with Control(topics2, settings(unique_prefix())) as ctl:
        body = fgtest.wait_until(lambda: detail(ctl), what="CU in the table")
        assert len(body["history"]["locks"]) == 1, body
        assert len(body["history"]["scores"]) == 1, body


def test_redis_unreachable_api_still_answers():
    """Redis on a closed port: the service is ready, lock and unlock answer
    at once, the history is kept in memory, and every lost write is
    counted."""
    topics = Topics()
    with Control(topics, settings(unique_prefix(), port=fgtest.free_port())) as ctl:
        fgtest.produce(topics.scores, b"CU", row("CU", now_ms(), 50, 5))
        fgtest.wait_until(lambda: detail(ctl), what="CU in the table")
        lost = write_errors(ctl)
        assert lost >= 1, lost  # the row's write
        t0 = time.monotonic()
        ids = [lock(ctl), unlock(ctl)]
        assert time.monotonic() - t0 < 5, "lock and unlock waited on Redis"
        body = detail(ctl)
        assert [lk["id"] for lk in body["history"]["locks"]] == ids, body
        assert len(body["history"]["scores"]) == 1, body
        m = metrics(ctl)
        assert fgtest.metric(m, "fleetgate_control_redis_errors_total",
                             op="write") >= lost + 2, m
        assert fgtest.metric(m, "fleetgate_control_redis_up") == 0, m
        assert fgtest.metric(m, "fleetgate_control_redis_history_loaded") == 0, m


class RedisProxy:
    """A TCP relay to the test Redis that the test can take down: while
    down it drops its relayed connections and closes new ones at once, as a
    dead or restarting Redis behind a load balancer would."""

    def __init__(self):
        self.up = True
        self.conns = []
        self.lock = threading.Lock()
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(16)
        self.srv.settimeout(0.1)
        self.port = self.srv.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.srv.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            c.settimeout(None)
            if not self.up:
                c.close()
                continue
            try:
                u = socket.create_connection(fgtest.redis_addr(), timeout=5)
            except OSError:
                c.close()
                continue
            u.settimeout(None)
            with self.lock:
                self.conns += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def down(self):
        self.up = False
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.down()
        self.closed = True
        self.srv.close()


def test_writes_lost_in_an_outage_are_pushed_again():
    """Redis goes away under a running service: a lock still answers, its
    write is counted as lost; once Redis is back the service pushes its
    picture again, so the lock record and the new view reach Redis without
    another change."""
    prefix = unique_prefix()
    proxy = RedisProxy()
    topics = Topics()
    k_locks = f"{prefix}:{{CU}}:locks"
    try:
        with Control(topics, settings(prefix, port=proxy.port)) as ctl:
            fgtest.wait_until(
                lambda: fgtest.metric(metrics(ctl), "fleetgate_control_redis_history_loaded") == 1,
                what="the history load through the proxy")
            fgtest.produce(topics.scores, b"CU", row("CU", now_ms(), 80, 8))
            fgtest.wait_until(lambda: fgtest.redis("EXISTS", f"{prefix}:{{CU}}:now") == 1,
                              what="CU's view in Redis")
            proxy.down()
            fgtest.wait_until(
                lambda: fgtest.metric(metrics(ctl), "fleetgate_control_redis_up") == 0,
                what="the service seeing Redis down")
            lost = write_errors(ctl)
            rid = lock(ctl)
            assert write_errors(ctl) > lost
            assert fgtest.redis("ZCARD", k_locks) == 0
            proxy.up = True
            fgtest.wait_until(lambda: fgtest.redis("ZCARD", k_locks) == 1, timeout=20,
                              what="the lost lock record pushed again")
            rec = msgpack.unpackb(fgtest.redis("ZRANGE", k_locks, 0, -1)[0], raw=False)
            assert rec["id"] == rid, rec
            now = json.loads(fgtest.redis("GET", f"{prefix}:{{CU}}:now"))
            assert now["state"] == "locked" and now["lock_id"] == rid, now
    finally:
        proxy.close()


if __name__ == "__main__":
    fgtest.run()
