# SPDX-License-Identifier: Apache-2.0
"""Broker outages against a real gateway, on a broker of this test's own (so
the shared test broker is never stopped): a frozen broker (SIGSTOP) and a
killed one (SIGKILL, then restarted). Devices must get 503 with Retry-After
within a bounded time, never a 200 whose record is missing, and the gateway
must recover by itself once the broker is back."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import fgtest
from fgtest import Load, Result, ok_ids

KAFKA_CTL = os.path.join(fgtest.SOURCE_DIR, "deploy", "local", "kafka-ctl")

MESSAGE_TIMEOUT_S = 3.0
DOWN_AFTER_S = 1.0
# librdkafka scans for timed-out messages about once a second; a request
# may also wait for its worker's loop and the TCP round trips.
ANSWER_MARGIN_S = 3.0
RECOVERY_S = 30.0
# librdkafka reconnects within reconnect.backoff.max.ms (1 s here).
IDLE_READY_S = 15.0

GATEWAY_CONFIG = {
    "kafka.message.timeout.ms": int(MESSAGE_TIMEOUT_S * 1000),
    "gateway.broker_down_after": f"{int(DOWN_AFTER_S * 1000)}ms",
    "gateway.retry_after_s": 1,
    "gateway.threads": 2,
    # Reconnect soon after the broker is back.
    "kafka.reconnect.backoff.max.ms": 1000,
}

BROKER = None  # the Broker of this run, set in __main__


# ---------------------------------------------------------------------------
# The private broker


def _port_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _port_pair():
    """A free port whose successor (the controller's) is free too."""
    for _ in range(200):
        port = fgtest.free_port()
        if port < 65535 and _port_free(port + 1):
            return port
    raise fgtest.FgTestError("no two consecutive free ports")


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


class Broker:
    """A single-node broker in a temp dir, run by deploy/local/kafka-ctl and
    signalled by its PID."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="fg-fault-kafka-")
        self.port = _port_pair()
        self.pid = None

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def start(self, timeout=120):
        p = subprocess.run([KAFKA_CTL, "start", self.dir, str(self.port)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=timeout)
        if p.returncode != 0:
            raise fgtest.FgTestError("kafka-ctl start failed:\n"
                                     + p.stdout.decode(errors="replace"))
        with open(os.path.join(self.dir, "kafka.pid")) as f:
            self.pid = int(f.read().strip())

    def start_first(self, attempts=4):
        """The first start: another process may take the chosen ports
        between the check and the broker's bind, so a bind failure picks a
        new pair (restarts later keep the port the gateway knows)."""
        for attempt in range(attempts):
            try:
                return self.start()
            except fgtest.FgTestError as e:
                if "Address already in use" not in str(e) or attempt == attempts - 1:
                    raise
                shutil.rmtree(self.dir, ignore_errors=True)
                os.makedirs(self.dir)
                self.port = _port_pair()

    def signal(self, sig):
        os.kill(self.pid, sig)

    def kill(self):
        """SIGKILL, and waits until the process is gone."""
        os.kill(self.pid, signal.SIGKILL)
        fgtest.wait_until(lambda: not _alive(self.pid), timeout=10, what="broker exit")

    def stop(self):
        """Stops the broker (always by its PID) and removes its directory."""
        try:
            if self.pid and _alive(self.pid):
                os.kill(self.pid, signal.SIGCONT)
                try:
                    subprocess.run([KAFKA_CTL, "stop", self.dir], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, timeout=40)
                except subprocess.TimeoutExpired:
                    pass
                if _alive(self.pid):
                    os.kill(self.pid, signal.SIGKILL)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, n=30):
        try:
            with open(os.path.join(self.dir, "kafka.log"), "rb") as f:
                return b"\n".join(f.read().splitlines()[-n:]).decode(errors="replace")
        except OSError:
            return ""


# ---------------------------------------------------------------------------
# Load


def check_unavailable(results):
    """Every 503 (and every batch answer with items to retry) carries
    Retry-After: 1 and a machine-readable body."""
    n = 0
    for r in results:
        if r.status == 503:
            n += 1
            assert r.retry_after == "1", r
            assert isinstance(json.loads(r.body)["error"], str), r
        elif r.status == 200 and len(r.ok_ids) < len(r.ids):
            assert r.retry_after == "1", r
            for a in json.loads(r.body)["results"]:
                assert a["status"] == "ok" or a.get("retry") is True, r
        else:
            assert r.status in (200, None), r
    return n


def readyz(gw):
    try:
        return gw.get("/readyz", admin=True, timeout=2)[0]
    except OSError:
        return None


def post_one(gw, did):
    """One check-in on a new connection, as a Result."""
    res = Result(time.monotonic(), [did])
    try:
        res.status, headers, res.body = gw.post_json(
            "/v1/checkin", {"device_id": did, "sku_region": "US", "region": "US"})
        res.retry_after = headers.get("retry-after")
        if res.status == 200:
            res.ok_ids = [did]
    except OSError as e:
        res.error = repr(e)
    res.t1 = time.monotonic()
    return res


def recover(gw, tag, timeout=RECOVERY_S):
    """Device traffic after an outage: a check-in on a new connection every
    0.1 s (so every worker sees some) until one got 200 and /readyz says
    200. Returns (seconds to the first 200, seconds to ready, Results)."""
    t0 = time.monotonic()
    first_200 = None
    results = []
    while True:
        res = post_one(gw, f"{tag}-{len(results)}")
        results.append(res)
        if res.ok_ids and first_200 is None:
            first_200 = res.t1 - t0
        if first_200 is not None and readyz(gw) == 200:
            return first_200, time.monotonic() - t0, results
        assert time.monotonic() - t0 < timeout, (
            f"not recovered {timeout}s after the broker's return (first 200 after "
            f"{first_200}s, /readyz {readyz(gw)}); last: {res}\n" + gw.log_tail())
        time.sleep(0.1)


# ---------------------------------------------------------------------------
# Tests


def test_frozen_broker_gives_bounded_503s_and_no_lost_200():
    with fgtest.Gateway(GATEWAY_CONFIG) as gw:
        load = Load(gw, tag="frozen").start()
        try:
            time.sleep(1.5)
            assert ok_ids(load.snapshot()), "no check-in was stored before the outage"
            t_stop = time.monotonic()
            BROKER.signal(signal.SIGSTOP)
            late_load = None
            try:
                # Requests in flight and new ones must get their answers.
                # The gateway lets one check-in per second and worker
                # through as a recovery probe, and a probe waits for its
                # message timeout; the first load's few clients can all
                # be holding probes when the outage becomes known, so
                # fresh clients start exactly then.
                known = t_stop + MESSAGE_TIMEOUT_S + DOWN_AFTER_S + 1.5
                time.sleep(max(0.0, known - time.monotonic()))
                late_load = Load(gw, tag="known").start()
                time.sleep(max(0.0, t_stop + MESSAGE_TIMEOUT_S + ANSWER_MARGIN_S + 1.5
                               - time.monotonic()))
                assert readyz(gw) == 503, "readyz still 200 with the broker frozen"
            finally:
                t_cont = time.monotonic()
                BROKER.signal(signal.SIGCONT)
        finally:
            load.stop()
            if late_load is not None:
                late_load.stop()
        first_200, ready_after, probes = recover(gw, "frozen-after")
        results = load.snapshot() + (late_load.snapshot() if late_load else []) + probes
        n503 = check_unavailable(results)
        assert n503 > 0, "no 503 while the broker was frozen"
        bound = MESSAGE_TIMEOUT_S + ANSWER_MARGIN_S
        slow = [r for r in results if r.t1 - r.t0 > bound and r.t0 < t_cont]
        assert not slow, f"{len(slow)} requests waited over {bound}s, e.g. {slow[:3]}"
        # Nothing can be acknowledged while the broker is frozen: a 200 for
        # a request sent then would be a lie.
        lies = [r for r in results if r.ok_ids and r.t0 > t_stop + 0.5 and r.t1 < t_cont]
        assert not lies, f"200 while the broker was frozen: {lies[:3]}"
        # Once the outage is known, new requests are refused at once.
        late = [r for r in results if known < r.t0 < t_cont - 0.1]
        assert late, "no request was sent during the known outage"
        fast = [r for r in late if r.status == 503 and r.t1 - r.t0 < 0.5]
        assert len(fast) >= len(late) // 2, (
            f"only {len(fast)} of {len(late)} requests during the known outage got a quick "
            f"503: {late[:5]}")
        stored, _ = fgtest.assert_all_stored(gw.topic, results)
        print(f"  frozen: {len(results)} requests, {len(stored)} stored, {n503} x 503, "
              f"first 200 {first_200:.1f}s and ready {ready_after:.1f}s after SIGCONT",
              flush=True)


def test_killed_broker_503_then_recovery_by_itself():
    with fgtest.Gateway(GATEWAY_CONFIG) as gw:
        load = Load(gw, tag="killed").start()
        late_load = None
        try:
            time.sleep(1.5)
            assert ok_ids(load.snapshot()), "no check-in was stored before the outage"
            t_kill = time.monotonic()
            BROKER.kill()
            fgtest.wait_until(lambda: readyz(gw) == 503, timeout=DOWN_AFTER_S + 4,
                              what="/readyz 503 after the broker was killed")
            # Fresh clients once the outage is known (see the frozen test:
            # the first load's clients may all be holding recovery probes).
            known = t_kill + DOWN_AFTER_S + 1.0
            time.sleep(max(0.0, known - time.monotonic()))
            late_load = Load(gw, tag="killed-known").start()
            time.sleep(DOWN_AFTER_S + 2)
        finally:
            load.stop()
            if late_load is not None:
                late_load.stop()
            t_restart = time.monotonic()
            BROKER.start()
            restarted = time.monotonic() - t_restart
        results = load.snapshot() + late_load.snapshot()
        late = [r for r in results if known < r.t0 < t_restart]
        assert late, "no request was sent once the outage was known"
        assert not [r for r in results if r.ok_ids and t_kill + 0.5 < r.t0 < t_restart], \
            "200 while the broker was dead"
        fast = [r for r in late if r.status == 503 and r.t1 - r.t0 < 0.5]
        assert len(fast) >= len(late) // 2, (
            f"only {len(fast)} of {len(late)} requests got a quick 503: {late[:5]}")
        bound = MESSAGE_TIMEOUT_S + ANSWER_MARGIN_S
        slow = [r for r in results if r.t1 - r.t0 > bound]
        assert not slow, f"{len(slow)} requests waited over {bound}s, e.g. {slow[:3]}"

        # Device traffic resumes: the gateway must take it again by itself.
        first_200, ready_after, probes = recover(gw, "killed-after")
        results += probes
        n503 = check_unavailable(results)
        assert n503 > 0, "no 503 while the broker was dead"
        stored, _ = fgtest.assert_all_stored(gw.topic, results)
        print(f"  killed: {len(results)} requests, {len(stored)} stored, {n503} x 503, "
              f"broker restart {restarted:.1f}s, then first 200 after {first_200:.1f}s, "
              f"ready after {ready_after:.1f}s", flush=True)


def test_sigterm_with_frozen_broker_exits_within_shutdown_timeout():
    config = dict(GATEWAY_CONFIG, **{"gateway.shutdown_timeout": "2s",
                                     "kafka.message.timeout.ms": 20000})
    with fgtest.Gateway(config) as gw:
        assert post_one(gw, "term-warm").status == 200
        BROKER.signal(signal.SIGSTOP)
        try:
            load = Load(gw, threads=3, tag="term", pause=0.05).start()
            time.sleep(1.0)
            t_term = time.monotonic()
            gw.send_signal(signal.SIGTERM)
            try:
                rc = gw.proc.wait(2.0 + 8.0)
            except subprocess.TimeoutExpired:
                rc = None
            took = time.monotonic() - t_term
            load.stop()
        finally:
            BROKER.signal(signal.SIGCONT)
        assert rc == 0, f"gateway exit status {rc} after {took:.1f}s\n" + gw.log_tail()
        results = load.snapshot()
        assert not [r for r in results if r.ok_ids], "200 while the broker was frozen"
        assert [r for r in results if r.status == 503], "no 503 for the requests in flight"
        assert all(r.t1 - r.t0 < 12 for r in results), results
        print(f"  exited {took:.1f}s after SIGTERM with the broker frozen", flush=True)


def test_readyz_recovers_without_device_traffic():
    """A gateway out of rotation (its /readyz said 503, so a load balancer
    sends it nothing) must turn ready again once the broker is back, or it
    never gets traffic again."""
    with fgtest.Gateway(GATEWAY_CONFIG) as gw:
        assert post_one(gw, "idle-warm").status == 200
        try:
            BROKER.kill()
            fgtest.wait_until(lambda: readyz(gw) == 503, timeout=DOWN_AFTER_S + 4,
                              what="/readyz 503 after the broker was killed")
        finally:
            BROKER.start()
        t_back = time.monotonic()
        ok = False
        while time.monotonic() - t_back < IDLE_READY_S:
            if readyz(gw) == 200:
                ok = True
                break
            time.sleep(0.2)
        print(f"  idle gateway ready again: {ok} "
              f"({time.monotonic() - t_back:.1f}s after the broker's restart)", flush=True)
        assert ok, (f"/readyz still 503 {IDLE_READY_S}s after the broker came back, with no "
                    "check-in traffic: the gateway only notices recovery through a device "
                    "request on each worker, so a gateway taken out of rotation by its "
                    "readiness probe stays out for good")


def _on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _on_sigterm)
    BROKER = Broker()
    try:
        t = time.monotonic()
        BROKER.start_first()
        os.environ["FG_TEST_KAFKA"] = BROKER.bootstrap
        print(f"  own broker on {BROKER.bootstrap} (pid {BROKER.pid}) in "
              f"{time.monotonic() - t:.1f}s", flush=True)
        fgtest.run()
    except Exception:
        sys.stderr.write(BROKER.log_tail() + "\n")
        raise
    finally:
        BROKER.stop()
