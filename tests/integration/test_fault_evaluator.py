# SPDX-License-Identifier: Apache-2.0
"""One evaluator at a time (docs/design-scorer.md, "One evaluator at a
time"): two scorers share a Redis and a consumer group; exactly one holds the
lease; after kill -9 of the leader the other takes over within lease + tick
(measured), keeps counting the dead one's partitions, and keeps deciding with
a higher fencing token; no decision is published twice; and a decision whose
token is lower than the one stored in the region's Redis mirror is refused
(never published) until the stored token allows it."""

import signal
import time

import fgtest
from fgtest import RedisServer
from test_scorer_decisions import (LEASE_S, TICK_S, Fleet, Scorer,
                                   Topics, assert_no_repeats, gateway,
                                   latest_rows, lock_records, near, redis_hash,
                                   score_rows, wait_lock)


def leaders(scorers):
    """[the fleetgate_scorer_leader gauge of each scorer]."""
    return [int(s.metric("fleetgate_scorer_leader")) for s in scorers]


def test_failover_fencing_and_no_repeats():
    topics = Topics()
    with RedisServer() as r, gateway(topics) as gw:
        group = "sc-shared-" + topics.checkins.rsplit(".", 1)[1]
        with Scorer(topics, r, group=group, sid="sc-a") as a, \
                Scorer(topics, r, group=group, sid="sc-b") as b:
            both = [a, b]
            # Exactly one leader, and it stays the same one.
            fgtest.wait_until(lambda: sorted(leaders(both)) == [0, 1], timeout=10,
                              what="exactly one leader")
            first = leaders(both)
            for _ in range(8):
                time.sleep(TICK_S / 2)
                assert leaders(both) == first, f"lease moved: {first} -> {leaders(both)}"
            leader, other = (a, b) if first[0] == 1 else (b, a)
            print(f"leader {leader.sid}, standby {other.sid}", flush=True)

            fleet = Fleet(gw)
            fleet.add("CU", 20, 19)
            with fleet:
                _, cu = wait_lock(topics.locks, lambda lk: lk["region"] == "CU",
                                  "a CU lock from the first leader")
                t1 = cu["token"]
                assert cu["state"] == "locked" and t1 == int(r.call("GET", "fg:{lease}:token"))
                assert leader.metric("fleetgate_scorer_decisions_total") == 1
                assert other.metric("fleetgate_scorer_decisions_total") == 0
                assert other.metric("fleetgate_scorer_ticks_total") == 0, \
                    "the standby must not evaluate"

                # kill -9 the leader: its lease is not released, it expires.
                leader.kill(signal.SIGKILL)
                t_kill = time.monotonic()
                fgtest.wait_until(lambda: other.metric("fleetgate_scorer_leader") == 1,
                                  timeout=LEASE_S + TICK_S + 10, interval=0.02,
                                  what="the standby taking the lease")
                takeover = time.monotonic() - t_kill
                print(f"takeover after kill -9: {takeover:.3f} s (lease {LEASE_S} s, "
                      f"tick {TICK_S} s)", flush=True)
                assert takeover <= LEASE_S + TICK_S + 0.5, \
                    f"takeover took {takeover:.3f} s > lease + tick"
                assert takeover >= LEASE_S - TICK_S - 0.25, \
                    f"takeover after {takeover:.3f} s: the lease was not honoured"
                t2 = int(r.call("GET", "fg:{lease}:token"))
                assert t2 > t1, (t1, t2)

                # A region that turns hot after the failover: locked by the
                # new leader under its higher token.
                fleet.add("SY", 20, 19)
                _, sy = wait_lock(topics.locks, lambda lk: lk["region"] == "SY",
                                  "an SY lock from the new leader")
                assert sy["state"] == "locked" and sy["token"] == t2, (sy, t2)

                # The dead scorer's partitions are counted again once the
                # group moves them (session timeout 6 s): every SY device.
                def sy_complete():
                    assert other.running(), (f"the surviving scorer died (exit "
                                             f"{other.proc.returncode})\n"
                                             + other.log_tail())
                    row = latest_rows(score_rows(topics.scores)).get("SY")
                    return row if row and near(row["devices"], 20) else None
                fgtest.wait_until(sy_complete, timeout=25, interval=0.5,
                                  what="all 20 SY devices counted by the survivor "
                                       "(HyperLogLog: 19 or more)")

                # A stored decision under a newer token: this evaluator is
                # stale for IR, so its IR decision must be refused.
                r.call("HSET", "fg:{IR}:decision", "token", t2 + 1000,
                       "record", "from a newer evaluator")
                fleet.add("IR", 20, 19)
                fgtest.wait_until(
                    lambda: other.metric("fleetgate_scorer_stale_token_refusals_total") >= 1,
                    timeout=20, what="a stale-token refusal")
                time.sleep(3 * TICK_S)
                assert not [lk for _, lk in lock_records(topics.locks)
                            if lk["region"] == "IR"], "a refused decision was published"
                mirror = redis_hash(r, "fg:{IR}:decision")
                assert mirror["token"] == str(t2 + 1000).encode(), mirror
                assert mirror["record"] == b"from a newer evaluator", mirror
                # The stored token lowered: the same evaluator may decide.
                r.call("HSET", "fg:{IR}:decision", "token", 0)
                raw, ir = wait_lock(topics.locks, lambda lk: lk["region"] == "IR",
                                    "an IR lock once the token allows it")
                assert ir["state"] == "locked" and ir["token"] == t2, ir
                assert redis_hash(r, "fg:{IR}:decision")["record"] == raw
                time.sleep(4 * TICK_S)
            fleet.stop()
            records = lock_records(topics.locks)
            assert_no_repeats(records)
            regions = sorted(lk["region"] for _, lk in records)
            assert regions == ["CU", "IR", "SY"], \
                f"one decision per region expected, got {regions}"
            assert other.running(), other.log_tail()
            assert leader.proc.returncode == -signal.SIGKILL


if __name__ == "__main__":
    fgtest.run()
