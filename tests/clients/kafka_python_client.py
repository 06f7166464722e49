"""The client-matrix scenario with kafka-python (pure Python).

    python kafka_python_client.py HOST:PORT

Prints one `STEP <name> ok|FAIL <reason>` line per step (see README.md). kafka-python's
`alter_configs` sends IncrementalAlterConfigs when the broker's ApiVersions lists it, and
AlterConfigs otherwise.
"""

import sys

import kafka.errors as Errors
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType

from common import (
    BAD_RETENTION,
    PARTITIONS,
    RECORDS,
    RETENTION,
    Scenario,
    StepFailed,
    poll_until,
)

bootstrap = sys.argv[1]
s = Scenario("kafka-python")
admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
tps = [TopicPartition(s.topic, p) for p in range(PARTITIONS)]
consumer = None


def create_topic():
    admin.create_topics({s.topic: {"num_partitions": PARTITIONS, "replication_factor": 1}},
                        timeout_ms=15000, wait_for_metadata=True)

    def ready():
        (t,) = admin.describe_topics([s.topic])
        return t["error_code"] == 0 and len(t["partitions"]) == PARTITIONS

    poll_until(f"metadata of {s.topic} with {PARTITIONS} partitions", ready, 20)


def produce():
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all",
                             key_serializer=str.encode, value_serializer=str.encode,
                             request_timeout_ms=15000, delivery_timeout_ms=30000)
    try:
        futures = [producer.send(s.topic, key=v, value=v) for v in s.values]
        producer.flush(timeout=40)
        errors = []
        for f in futures:
            try:
                f.get(timeout=10)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                errors.append(exc)
        if errors:
            raise StepFailed(f"{len(errors)} of {RECORDS} sends failed, first: "
                             f"{type(errors[0]).__name__}: {errors[0]}")
    finally:
        producer.close(timeout=10)


def consume_group():
    global consumer
    consumer = KafkaConsumer(s.topic, bootstrap_servers=bootstrap, group_id=s.group,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             request_timeout_ms=30000)
    got = []

    def read():
        for records in consumer.poll(timeout_ms=1000).values():
            got.extend((r.key.decode(), r.value.decode()) for r in records)
        return len(got) >= RECORDS

    poll_until(lambda: f"{RECORDS} records (have {len(got)})", read, 45, interval_s=0)
    s.check_values(got)


def commit():
    if consumer is None:
        raise StepFailed("no consumer (consume_group failed)")
    consumer.commit()
    committed = admin.list_group_offsets(s.group)[s.group]
    s.check_committed({tp.partition: om.offset for tp, om in committed.items()
                       if tp.topic == s.topic})


def list_offsets():
    c = KafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    try:
        earliest = c.beginning_offsets(tps, timeout_ms=15000)
        latest = c.end_offsets(tps, timeout_ms=15000)
        s.check_offsets({tp.partition: o for tp, o in earliest.items()},
                        {tp.partition: o for tp, o in latest.items()})
    finally:
        c.close()


def retention():
    described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, s.topic)],
                                       config_filter="all")
    configs = described["topic"][s.topic]
    if "retention.ms" not in configs:
        raise StepFailed("DescribeConfigs lists no retention.ms")
    return configs["retention.ms"]["value"]


def alter(value):
    """The broker's answer for the topic: 'OK' or the error's text."""
    result = admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, s.topic,
                                                 configs={"retention.ms": value})])
    return result["topic"][s.topic]


def alter_config():
    answer = alter(RETENTION)
    if answer != "OK":
        raise StepFailed(f"alter_configs: {answer}")
    poll_until(f"retention.ms = {RETENTION} in DescribeConfigs",
               lambda: retention() == RETENTION, 10)


def bad_input():
    before = retention()
    try:
        answer = alter(BAD_RETENTION)
    except (Errors.IncompatibleBrokerVersion, Errors.UnsupportedVersionError,
            Errors.KafkaTimeoutError, Errors.KafkaConnectionError) as exc:
        raise StepFailed(f"not refused by the broker: {type(exc).__name__}: {exc}") from exc
    if answer == "OK":
        raise StepFailed(f"retention.ms={BAD_RETENTION} was accepted")
    if "UnsupportedVersion" in answer:
        raise StepFailed(f"not refused by the broker: {answer}")
    print(f"bad_input refused as expected: {answer}", file=sys.stderr)
    after = retention()
    if after != before:
        raise StepFailed(f"retention.ms changed from {before} to {after}")


for name, fn in [("create_topic", create_topic), ("produce", produce),
                 ("consume_group", consume_group), ("commit", commit),
                 ("list_offsets", list_offsets), ("alter_config", alter_config),
                 ("bad_input", bad_input)]:
    s.run(name, fn)
    if name == "commit" and consumer is not None:
        consumer.close()  # leaves the group
admin.close()
s.exit()
