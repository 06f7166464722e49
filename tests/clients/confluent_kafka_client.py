"""The client-matrix scenario with confluent-kafka (librdkafka).

    python confluent_kafka_client.py HOST:PORT

Prints one `STEP <name> ok|FAIL <reason>` line per step (see README.md).
"""

import sys

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

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
s = Scenario("confluent-kafka")
admin = AdminClient({"bootstrap.servers": bootstrap})
consumer = None


def create_topic():
    futures = admin.create_topics([NewTopic(s.topic, num_partitions=PARTITIONS,
                                            replication_factor=1)],
                                  operation_timeout=15, request_timeout=20)
    futures[s.topic].result(timeout=30)

    def ready():
        t = admin.list_topics(topic=s.topic, timeout=5).topics[s.topic]
        return (t.error is None and len(t.partitions) == PARTITIONS
                and all(p.leader >= 0 for p in t.partitions.values()))

    poll_until(f"metadata of {s.topic} with {PARTITIONS} partitions and leaders", ready, 20)


def produce():
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                         "message.timeout.ms": 30000})
    delivered, errors = [], []

    def on_delivery(err, msg):
        (errors if err else delivered).append(err or msg)

    for v in s.values:
        producer.produce(s.topic, key=v, value=v, on_delivery=on_delivery)
        producer.poll(0)
    left = producer.flush(40)
    if errors:
        raise StepFailed(f"{len(errors)} deliveries failed, first: {errors[0]}")
    if left or len(delivered) != RECORDS:
        raise StepFailed(f"{len(delivered)} of {RECORDS} delivery reports, {left} in flight")


def consume_group():
    global consumer
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": s.group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([s.topic])
    got = []

    def read():
        msg = consumer.poll(1.0)
        if msg is not None:
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    raise KafkaException(msg.error())
            else:
                got.append((msg.key().decode(), msg.value().decode()))
        return len(got) >= RECORDS

    poll_until(lambda: f"{RECORDS} records (have {len(got)})", read, 45, interval_s=0)
    s.check_values(got)


def commit():
    if consumer is None:
        raise StepFailed("no consumer (consume_group failed)")
    consumer.commit(asynchronous=False)
    tps = consumer.committed([TopicPartition(s.topic, p) for p in range(PARTITIONS)],
                             timeout=15)
    errors = [tp for tp in tps if tp.error]
    if errors:
        raise StepFailed(f"committed() of partition {errors[0].partition}: {errors[0].error}")
    s.check_committed({tp.partition: tp.offset for tp in tps})


def list_offsets():
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{s.client}-offsets"})
    try:
        earliest, latest = {}, {}
        for p in range(PARTITIONS):
            low, high = c.get_watermark_offsets(TopicPartition(s.topic, p), timeout=15,
                                                cached=False)
            earliest[p], latest[p] = low, high
        s.check_offsets(earliest, latest)
    finally:
        c.close()


def retention():
    res = ConfigResource(ResourceType.TOPIC, s.topic)
    configs = admin.describe_configs([res], request_timeout=15)[res].result(timeout=20)
    if "retention.ms" not in configs:
        raise StepFailed("DescribeConfigs lists no retention.ms")
    return configs["retention.ms"].value


def alter(value):
    res = ConfigResource(ResourceType.TOPIC, s.topic, incremental_configs=[
        ConfigEntry("retention.ms", value, incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([res], request_timeout=15)[res].result(timeout=20)


def alter_config():
    alter(RETENTION)
    poll_until(f"retention.ms = {RETENTION} in DescribeConfigs",
               lambda: retention() == RETENTION, 10)


def bad_input():
    before = retention()
    try:
        alter(BAD_RETENTION)
    except KafkaException as exc:
        err = exc.args[0]
        # A refusal by the broker has a broker error code (>= 0); UNSUPPORTED_VERSION or a
        # local error (< 0: timed out, unsupported feature, transport) is no refusal.
        if err.code() < 0 or err.code() == KafkaError.UNSUPPORTED_VERSION:
            raise StepFailed(f"not refused by the broker: {err.name()}: {err.str()}") from exc
        print(f"bad_input refused as expected: {err.name()}: {err.str()}", file=sys.stderr)
    else:
        raise StepFailed(f"retention.ms={BAD_RETENTION} was accepted")
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
s.exit()
