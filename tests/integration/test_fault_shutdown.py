# SPDX-License-Identifier: Apache-2.0
"""Graceful shutdown under load, against the shared test broker (which this
test never stops): on SIGTERM the gateway stops listening, answers what is in
flight and exits 0 within gateway.shutdown_timeout; every check-in it
answered 200 (and every ok item of a batch) is in the topic, and clients that
come later are refused rather than answered."""

import json
import signal
import socket
import struct
import subprocess
import time

import fgtest
from fgtest import Load, ok_ids

EXIT_MARGIN_S = 4.0


# ---------------------------------------------------------------------------
# Helpers


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
        load = Load(gw, threads=8, batchers=2, batch=5, sku="DE", region="FR", tag="term", pause=0).start()
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
        want, got = fgtest.assert_all_stored(gw.topic, results)
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
        load = Load(gw, threads=4, batchers=1, batch=5, sku="DE", region="FR", tag="slow", pause=0).start()
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
        fgtest.assert_all_stored(gw.topic, results)
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
