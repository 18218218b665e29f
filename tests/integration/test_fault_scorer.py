# SPDX-License-Identifier: Apache-2.0
"""The scorer's counts stay exact when its Redis fails mid-stream (issue 3,
"Exact counts"): redis-server killed with -9 and restarted on the same port
and directory (appendfsync always, so every acknowledged apply survives),
and redis-server frozen with SIGSTOP for longer than the scorer's command
timeout, then resumed. While Redis is down the scorer answers /readyz 503
and stops applying; afterwards it reloads its fences and replays.

Each test has its own topics, group and private redis-server; the helpers
are test_scorer_counts.py's."""

import signal
import time

import fgtest
from test_scorer_counts import Producer, Stack, big_stream


def applied_batches(sc):
    return sc.metric("fleetgate_scorer_batches_total", result="applied")


def test_redis_kill9_mid_stream():
    with Stack() as stack:
        st = big_stream(30_000)
        msgs = st.take()
        sc = stack.scorer(scorer__batch_max=1000)
        prod = Producer(stack, msgs, chunk=1500, pause=0.1)
        prod.start()
        fgtest.wait_until(lambda: stack.applied() >= 5000, 60, 0.02,
                          "5000 records applied")
        stack.redis.kill9()
        fgtest.wait_until(lambda: sc.readyz() == 503, 10, what="/readyz 503")
        status, body = sc.request("/readyz")
        assert status == 503 and b"redis" in body, (status, body)
        # Nothing is applied while Redis is down: each partition fills one
        # batch, then pauses.
        time.sleep(0.5)
        batches = applied_batches(sc)
        sc.wait_quiet(quiet=1.0)
        assert applied_batches(sc) == batches
        assert sc.readyz() == 503
        stack.redis.start()
        fgtest.wait_until(lambda: sc.readyz() == 200, 15, what="/readyz 200 again")
        prod.finish()
        stack.wait_applied(len(msgs))
        stack.assert_counts(st.expect, "after Redis was killed and restarted")
        assert applied_batches(sc) > batches


def test_redis_sigstop_mid_stream():
    with Stack() as stack:
        st = big_stream(30_000)
        msgs = st.take()
        # Commands time out after 1 s: the freeze outlasts them, so the
        # scorer drops the connection with applies whose fate it does not
        # know, and Redis runs them when it resumes.
        sc = stack.scorer(scorer__batch_max=1000, redis__timeout="1s")
        prod = Producer(stack, msgs, chunk=1500, pause=0.1)
        prod.start()
        fgtest.wait_until(lambda: stack.applied() >= 5000, 60, 0.02,
                          "5000 records applied")
        stack.redis.signal(signal.SIGSTOP)
        try:
            fgtest.wait_until(lambda: sc.readyz() == 503, 10, what="/readyz 503")
            time.sleep(2.0)
        finally:
            stack.redis.signal(signal.SIGCONT)
        fgtest.wait_until(lambda: sc.readyz() == 200, 15, what="/readyz 200 again")
        prod.finish()
        stack.wait_applied(len(msgs))
        stack.assert_counts(st.expect, "after Redis was frozen and resumed")
        m = sc.metrics()
        assert fgtest.metric(m, "fleetgate_scorer_batches_total", result="replayed") >= 1, m


if __name__ == "__main__":
    fgtest.run()
