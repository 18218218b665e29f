# SPDX-License-Identifier: Apache-2.0
"""A fatal producer error (what librdkafka raises when a broker fences an
idempotent producer) under load: the gateway must answer every device
(200 only for stored records, else 503 with Retry-After), replace the
producer on its own, and take check-ins again without a restart. The
error is a real one, raised inside librdkafka through the test-only
admin route POST /fault/kafka-fatal (gateway.fault_injection)."""

import time

import fgtest
from fgtest import Load, ok_ids
from test_fault_outage import check_unavailable, readyz

CONFIG = {"gateway.threads": 2, "gateway.fault_injection": "true"}
# The worker replaces its producer on its next loop turn; a new producer
# needs a producer id from the broker before its first delivery.
RECOVERY_S = 20.0


def test_fatal_error_replaces_the_producer_and_loses_nothing():
    with fgtest.Gateway(CONFIG) as gw:
        load = Load(gw, tag="fatal").start()
        try:
            fgtest.wait_until(lambda: ok_ids(load.snapshot()), timeout=15,
                              what="check-ins stored before the fault")
            status, _, body = gw.request("POST", "/fault/kafka-fatal", admin=True)
            assert status == 202, (status, body)
            t_fault = time.monotonic()
            fgtest.wait_until(
                lambda: gw.metric("fleetgate_producer_restarts_total") >= 2,
                timeout=RECOVERY_S, what="both producers replaced\n" + gw.log_tail())
            # Check-ins sent after the replacement are stored again.
            fgtest.wait_until(
                lambda: any(r.ok_ids and r.t0 > t_fault + 0.2 for r in load.snapshot()),
                timeout=RECOVERY_S, what="a 200 after the fault\n" + gw.log_tail())
            time.sleep(1.0)
        finally:
            load.stop()
        results = load.snapshot()
        assert all(r.error is None for r in results), \
            [r for r in results if r.error][:3]
        n503 = check_unavailable(results)
        assert readyz(gw) == 200
        assert gw.metric("fleetgate_producer_restarts_total") == 2
        log = gw.log_tail(400)
        assert log.count("msg=producer_replaced") == 2, log
        stored, _ = fgtest.assert_all_stored(gw.topic, results)
        late = [r for r in results if r.t0 > t_fault + 0.2]
        print(f"  {len(results)} requests, {len(stored)} stored, {n503} x 503, "
              f"{sum(1 for r in late if r.ok_ids)} of {len(late)} after the fault ok",
              flush=True)


def test_fault_route_is_off_by_default():
    with fgtest.Gateway({"gateway.threads": 1}) as gw:
        status, _, _ = gw.request("POST", "/fault/kafka-fatal", admin=True)
        assert status == 404
        assert gw.post_json("/v1/checkin", {"device_id": "x-1", "sku_region": "US",
                                            "region": "US"})[0] == 200


if __name__ == "__main__":
    fgtest.run()
