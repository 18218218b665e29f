# SPDX-License-Identifier: Apache-2.0
"""Graceful shutdown under load, against the shared test broker (which this
test never stops): on SIGTERM the gateway stops listening, answers what is in
flight and exits 0 within gateway.shutdown_timeout; every check-in it
answered 200 (and every ok item of a batch) is in the topic, and clients that
come later are refused rather than answered."""

import http.client
import json
import signal
import socket
import struct
import subprocess
import threading
import time

import fgtest

EXIT_MARGIN_S = 4.0


# ---------------------------------------------------------------------------
# Helpers


class Result:
    __slots__ = ("t0", "t1", "ids", "status", "retry_after", "body", "ok_ids", "error")

    def __init__(self, t0, ids):
        self.t0, self.t1, self.ids = t0, None, ids
        self.status = self.retry_after = self.body = self.error = None
        self.ok_ids = []

    def __repr__(self):
        return (f"Result(t0={self.t0:.2f}, t1={self.t1:.2f}, status={self.status}, "
                f"ids={self.ids[:2]}, error={self.error!r}, body={self.body!r:.120})")


class Load:
    """Client threads posting check-ins with fresh device ids on keep-alive
    connections; the first `batchers` threads post batches of five. Every
    answer (or connection error) is kept with its times."""

    def __init__(self, gw, threads=8, batchers=2, tag="d", pause=0.0, timeout=20.0):
        self.port = gw.port
        self.n, self.batchers, self.tag = threads, batchers, tag
        self.pause, self.timeout = pause, timeout
        self.results = []
        self.lock = threading.Lock()
        self.stop_ev = threading.Event()
        self.threads = []

    def start(self):
        for i in range(self.n):
            t = threading.Thread(target=self._run, args=(i,), daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(self.timeout + 10)
            assert not t.is_alive(), "a client thread is stuck"

    def _run(self, i):
        conn = None
        seq = 0
        while not self.stop_ev.is_set():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            batch = i < self.batchers
            ids = [f"{self.tag}-{i}-{seq}-{k}" for k in range(5 if batch else 1)]
            seq += 1
            items = [{"device_id": d, "sku_region": "DE", "region": "FR", "seq": seq}
                     for d in ids]
            body = json.dumps(items if batch else items[0]).encode()
            res = Result(time.monotonic(), ids)
            try:
                conn.request("POST", "/v1/checkins" if batch else "/v1/checkin", body,
                             {"Content-Type": "application/json"})
                resp = conn.getresponse()
                res.body = resp.read()
                res.status = resp.status
                res.retry_after = resp.getheader("Retry-After")
                if resp.status == 200:
                    if batch:
                        answers = json.loads(res.body)["results"]
                        assert len(answers) == len(ids), res
                        res.ok_ids = [d for d, a in zip(ids, answers) if a["status"] == "ok"]
                    else:
                        res.ok_ids = ids
                if resp.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                res.error = type(e).__name__
                conn.close()
                conn = None
                time.sleep(0.02)
            res.t1 = time.monotonic()
            with self.lock:
                self.results.append(res)
            if self.pause:
                time.sleep(self.pause)
        if conn is not None:
            conn.close()

    def snapshot(self):
        with self.lock:
            return list(self.results)


def ok_ids(results):
    return {d for r in results for d in r.ok_ids}


def assert_all_stored(topic, results):
    want = ok_ids(results)
    got = {r.key.decode() for r in fgtest.consume(topic, timeout=60)}
    missing = want - got
    assert not missing, (f"{len(missing)} of {len(want)} check-ins answered 200 are not in "
                         f"the topic, e.g. {sorted(missing)[:5]}")
    return want, got


def terminate(gw, within):
    """SIGTERM, then waits up to `within` seconds; returns (exit status or
    None when still running, seconds taken, monotonic time of the exit)."""
    t0 = time.monotonic()
    gw.send_signal(signal.SIGTERM)
    try:
        rc = gw.proc.wait(within)
    except subprocess.TimeoutExpired:
        rc = None
    t1 = time.monotonic()
    return rc, t1 - t0, t1


def connect_refused(port):
    """True when a new connection to port is refused (nobody listens)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def post_then_vanish(port, path, body, rst):
    """Sends one request and disconnects without reading the answer: with
    rst, by an abortive close (RST), otherwise by an ordinary close."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    head = (f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    s.sendall(head + body)
    if rst:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


# ---------------------------------------------------------------------------
# Tests


def test_sigterm_mid_load_exits_0_and_every_200_is_stored():
    timeout_s = 5
    config = {"gateway.threads": 2, "gateway.shutdown_timeout": f"{timeout_s}s"}
    with fgtest.Gateway(config) as gw:
        load = Load(gw, threads=8, batchers=2, tag="term").start()
        try:
            fgtest.wait_until(lambda: len(ok_ids(load.snapshot())) >= 200, timeout=20,
                              what="200 stored check-ins before the SIGTERM")
            time.sleep(0.5)
            t_term = time.monotonic()
            rc, took, t_exit = terminate(gw, timeout_s + EXIT_MARGIN_S)
            # Clients keep trying for a moment after the exit.
            time.sleep(0.5)
        finally:
            load.stop()
        assert rc == 0, f"exit status {rc} {took:.1f}s after SIGTERM\n" + gw.log_tail()
        results = load.snapshot()
        before = [r for r in results if r.t1 < t_term]
        during = [r for r in results if r.t0 < t_exit and r.t1 >= t_term]
        after = [r for r in results if r.t0 > t_exit]
        assert len(ok_ids(before)) >= 200, len(ok_ids(before))
        assert after, "no client tried after the exit"
        # Later clients are refused, never answered.
        assert all(r.status is None for r in after), [r for r in after if r.status][:3]
        assert connect_refused(gw.port), "something still listens on the devices port"
        # In flight at the SIGTERM: answered 200 (then stored) or 503, or
        # the connection was closed; nothing else.
        odd = [r for r in during if r.status not in (None, 200, 503)]
        assert not odd, odd[:3]
        for r in during:
            if r.status == 503:
                assert r.retry_after, r
        want, got = assert_all_stored(gw.topic, results)
        in_flight_ok = len(ok_ids(during))
        print(f"  exit {took:.2f}s after SIGTERM; {len(results)} requests, {len(want)} "
              f"stored items answered ok ({in_flight_ok} of them in flight at the SIGTERM), "
              f"{len(got)} records; {len(after)} refused after exit", flush=True)


def test_sigterm_with_unacknowledged_records_answers_503_and_exits_in_time():
    """Records that cannot be acknowledged before shutdown_timeout (held by a
    long linger here) are answered 503 and the gateway still exits 0 on
    time."""
    timeout_s = 1
    config = {"gateway.threads": 2, "gateway.shutdown_timeout": f"{timeout_s}s",
              "kafka.linger.ms": 6000, "kafka.message.timeout.ms": 30000}
    with fgtest.Gateway(config) as gw:
        load = Load(gw, threads=4, batchers=1, tag="slow").start()
        try:
            time.sleep(1.0)
            rc, took, t_exit = terminate(gw, timeout_s + EXIT_MARGIN_S)
        finally:
            load.stop()
        assert rc == 0, f"exit status {rc} {took:.1f}s after SIGTERM\n" + gw.log_tail()
        assert took >= timeout_s * 0.9, f"exited after {took:.2f}s, before shutdown_timeout"
        results = load.snapshot()
        answered = [r for r in results if r.t0 < t_exit and r.status is not None]
        assert answered, "no request in flight was answered"
        assert all(r.status == 503 for r in answered), answered[:3]
        assert all(r.retry_after == "1" for r in answered), answered[:3]
        for r in answered:
            assert isinstance(json.loads(r.body)["error"], str), r
        assert_all_stored(gw.topic, results)
        print(f"  exit {took:.2f}s after SIGTERM; {len(answered)} requests answered 503",
              flush=True)


def test_durable_client_gone_before_its_answer_then_sigterm_exits_0():
    body_one = json.dumps({"device_id": "gone-1", "sku_region": "US", "region": "US"}).encode()
    body_many = json.dumps([{"device_id": f"gone-b{i}", "sku_region": "US", "region": "US"}
                            for i in range(3)]).encode()
    # The answer comes after the client left (linger), and the shutdown
    # either waits for it (timeout over the linger) or gives up first.
    for shutdown_s, linger_ms in ((5, 1500), (0.5, 4000)):
        config = {"gateway.ack": "durable", "gateway.threads": 2,
                  "gateway.shutdown_timeout": f"{int(shutdown_s * 1000)}ms",
                  "kafka.linger.ms": linger_ms}
        with fgtest.Gateway(config) as gw:
            for rst in (False, True):
                post_then_vanish(gw.port, "/v1/checkin", body_one, rst)
                post_then_vanish(gw.port, "/v1/checkins", body_many, rst)
            # The requests are in the gateway before it is told to stop.
            fgtest.wait_until(
                lambda: gw.metric("fleetgate_producer_queue_depth") >= 8,
                timeout=5, what="the vanished clients' records queued")
            rc, took, _ = terminate(gw, shutdown_s + EXIT_MARGIN_S)
            assert rc == 0, (f"exit status {rc} {took:.1f}s after SIGTERM "
                             f"(shutdown_timeout {shutdown_s}s)\n" + gw.log_tail())
            assert took < shutdown_s + EXIT_MARGIN_S
            print(f"  shutdown_timeout {shutdown_s}s, linger {linger_ms}ms: exit 0 after "
                  f"{took:.2f}s", flush=True)


if __name__ == "__main__":
    fgtest.run()
