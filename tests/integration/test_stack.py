# SPDX-License-Identifier: Apache-2.0
"""Checks the test stack itself: the broker and Redis that tests/run starts,
the topics it creates, fg-topics, and fgtest's exact binary round trip
through kcat, which every other integration test relies on."""

import os
import subprocess

import fgtest

# Every byte value, and the bytes the kcat framing and delimiters are most
# likely to trip over.
AWKWARD = bytes(range(256)) + b"\x00\x01\x02\x0a\x00\n\r\n\x1f\x1e\n~,=%s%k"


def test_stack_topics_exist():
    topics = fgtest.list_topics()
    want = {"fleet.checkins": 6, "fleet.region-locks": 1, "fleet.checkins.dlq": 1,
            "fleet.region-scores": 3, "fleet.audit": 1}
    for name, partitions in want.items():
        assert topics.get(name) == partitions, (name, topics.get(name))


def test_compacted_topics_are_compacted():
    assert fgtest.topic_config("fleet.region-locks")["cleanup.policy"] == "compact"
    assert fgtest.topic_config("fleet.region-scores")["cleanup.policy"] == "compact"
    assert fgtest.topic_config("fleet.checkins")["cleanup.policy"] == "delete"


def test_unique_topic_is_fresh_and_sized():
    a = fgtest.unique_topic("stack", partitions=3, config={"cleanup.policy": "compact"})
    b = fgtest.unique_topic("stack")
    assert a != b
    topics = fgtest.list_topics()
    assert topics[a] == 3 and topics[b] == 1, (topics.get(a), topics.get(b))
    assert fgtest.topic_config(a)["cleanup.policy"] == "compact"
    assert fgtest.consume(a) == [], "a new topic must be empty"


def test_binary_round_trip_with_tombstone():
    topic = fgtest.unique_topic("stack", partitions=1)
    msgs = [
        (b"k\x00\x01\x02\x0a", AWKWARD),
        (b"plain", b"\x00"),
        (b"empty", b""),
        (b"k\x00\x01\x02\x0a", None),  # tombstone
        (None, b"\x0a\x02\x01\x00 no key"),
        (b"after", fgtest.msgpack.packb({"b": b"\x00\x01\x02\x0a", "n": -1})),
    ]
    fgtest.produce_many(topic, msgs)
    got = fgtest.consume(topic, len(msgs), timeout=15)
    assert [(r.key, r.value) for r in got] == msgs, got
    assert [r.offset for r in got] == list(range(len(msgs)))
    assert all(r.partition == 0 and r.headers == {} for r in got)
    assert fgtest.msgpack.unpackb(got[-1].value) == {"b": b"\x00\x01\x02\x0a", "n": -1}


def test_large_value_and_headers():
    topic = fgtest.unique_topic("stack")
    big = os.urandom(256 * 1024)
    fgtest.produce(topic, b"big", big, headers={"content-type": "application/msgpack",
                                                "trace": "a,b"})
    (rec,) = fgtest.consume(topic, 1)
    assert rec.value == big
    assert rec.headers == {"content-type": b"application/msgpack", "trace": b"a,b"}, rec


def test_consume_waits_then_returns_partial():
    topic = fgtest.unique_topic("stack")
    fgtest.produce(topic, b"only", b"one")
    got = fgtest.consume(topic, 2, timeout=2)
    assert [(k, v) for k, v, _ in got] == [(b"only", b"one")], got


def test_produce_to_missing_topic_fails():
    try:
        fgtest.produce("stack.no-such-topic", b"k", b"v")
    except fgtest.FgTestError as e:
        assert "Unknown topic" in str(e), e
        return
    raise AssertionError("producing to a missing topic must fail")


def test_fg_topics_create_is_idempotent_and_validates():
    name = fgtest.unique_topic("stack", partitions=2)
    fgtest.create_topic(name, partitions=2)  # exists: still exit 0
    p = subprocess.run([fgtest.build_path("fg-topics"), "-b", fgtest.kafka_bootstrap(),
                        "create", "stack.bad", "--partitions", "1",
                        "--config", "cleanup.policy=bogus"], capture_output=True)
    assert p.returncode == 1 and b"cleanup.policy" in p.stderr, p
    p = subprocess.run([fgtest.build_path("fg-topics"), "create", "x"], capture_output=True)
    assert p.returncode == 2, p


def test_redis():
    key = f"stack.{os.getpid()}"
    assert fgtest.redis("SET", key, b"\x00\x01v") == "OK"
    assert fgtest.redis("GET", key) == b"\x00\x01v"
    assert fgtest.redis("DEL", key) == 1
    assert fgtest.redis("GET", key) is None
    assert fgtest.redis("CONFIG", "GET", "appendonly") == [b"appendonly", b"yes"]


def test_metrics_parser():
    text = ('# HELP fg_requests_total Requests.\n# TYPE fg_requests_total counter\n'
            'fg_requests_total{route="/v1/checkin",code="200"} 5\n'
            'fg_requests_total{code="429",route="/v1/checkin"} 2\n'
            'fg_up 1\nfg_latency_bucket{le="+Inf"} 7\n')
    m = fgtest.parse_metrics(text)
    assert fgtest.metric(m, "fg_requests_total", code="200", route="/v1/checkin") == 5
    assert fgtest.metric(m, "fg_requests_total", route="/v1/checkin", code="429") == 2
    assert fgtest.metric(m, "fg_requests_total", code="500", route="/v1/checkin") == 0
    assert fgtest.metric(m, "fg_up") == 1
    assert fgtest.metric(m, "fg_latency_bucket", le="+Inf") == 7


if __name__ == "__main__":
    fgtest.run()
