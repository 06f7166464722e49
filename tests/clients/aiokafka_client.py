"""The client-matrix scenario with aiokafka (asyncio).

    python aiokafka_client.py HOST:PORT

Prints one `STEP <name> ok|FAIL <reason>` line per step (see README.md). aiokafka's admin
client has AlterConfigs only (no IncrementalAlterConfigs).
"""

import asyncio
import sys

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import for_code

from common import (
    BAD_RETENTION,
    PARTITIONS,
    RECORDS,
    RETENTION,
    Scenario,
    StepFailed,
    apoll_until,
)

bootstrap = sys.argv[1]
s = Scenario("aiokafka")
tps = [TopicPartition(s.topic, p) for p in range(PARTITIONS)]
STEP_S = 50  # bound of one step


def errors_in(obj):
    """The non-zero error codes anywhere in a response's `to_object()`, with the messages."""
    found = []
    if isinstance(obj, dict):
        if obj.get("error_code"):
            found.append(f"{for_code(obj['error_code']).__name__}: {obj.get('error_message')}")
        for v in obj.values():
            found.extend(errors_in(v))
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            found.extend(errors_in(v))
    return found


async def main():
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    consumer = None

    async def create_topic():
        await admin.start()
        resp = await admin.create_topics([NewTopic(s.topic, PARTITIONS, 1)], timeout_ms=15000)
        errors = errors_in(resp.to_object())
        if errors:
            raise StepFailed(f"create_topics: {errors[0]}")

        async def ready():
            (t,) = await admin.describe_topics([s.topic])
            return t["error_code"] == 0 and len(t["partitions"]) == PARTITIONS

        await apoll_until(f"metadata of {s.topic} with {PARTITIONS} partitions", ready, 20)

    async def produce():
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                    key_serializer=str.encode, value_serializer=str.encode,
                                    request_timeout_ms=15000)
        await producer.start()
        try:
            futures = [await producer.send(s.topic, key=v, value=v) for v in s.values]
            results = await asyncio.gather(*futures, return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                raise StepFailed(f"{len(errors)} of {RECORDS} sends failed, first: "
                                 f"{type(errors[0]).__name__}: {errors[0]}")
        finally:
            await producer.stop()

    async def consume_group():
        nonlocal consumer
        consumer = AIOKafkaConsumer(s.topic, bootstrap_servers=bootstrap, group_id=s.group,
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        got = []

        async def read():
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                got.extend((r.key.decode(), r.value.decode()) for r in records)
            return len(got) >= RECORDS

        await apoll_until(lambda: f"{RECORDS} records (have {len(got)})", read, 45,
                          interval_s=0)
        s.check_values(got)

    async def commit():
        if consumer is None:
            raise StepFailed("no consumer (consume_group failed)")
        await consumer.commit()
        committed = await admin.list_consumer_group_offsets(s.group)
        s.check_committed({tp.partition: om.offset for tp, om in committed.items()
                           if tp.topic == s.topic})

    async def list_offsets():
        c = AIOKafkaConsumer(bootstrap_servers=bootstrap)
        await c.start()
        try:
            earliest = await c.beginning_offsets(tps)
            latest = await c.end_offsets(tps)
            s.check_offsets({tp.partition: o for tp, o in earliest.items()},
                            {tp.partition: o for tp, o in latest.items()})
        finally:
            await c.stop()

    async def retention():
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, s.topic)])
        for resp in responses:
            obj = resp.to_object()
            errors = errors_in(obj)
            if errors:
                raise StepFailed(f"describe_configs: {errors[0]}")
            for res in obj["resources"]:
                for entry in res["config_entries"]:
                    if entry["config_names"] == "retention.ms":
                        return entry["config_value"]
        raise StepFailed("DescribeConfigs lists no retention.ms")

    async def alter(value):
        """The broker's errors for the topic (empty if it took the change)."""
        responses = await admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, s.topic,
                            configs={"retention.ms": value})])
        return [e for resp in responses for e in errors_in(resp.to_object())]

    async def alter_config():
        errors = await alter(RETENTION)
        if errors:
            raise StepFailed(f"alter_configs: {errors[0]}")

        async def changed():
            return await retention() == RETENTION

        await apoll_until(f"retention.ms = {RETENTION} in DescribeConfigs", changed, 10)

    async def bad_input():
        before = await retention()
        errors = await alter(BAD_RETENTION)  # an exception (unsupported, timeout) fails
        if not errors:
            raise StepFailed(f"retention.ms={BAD_RETENTION} was accepted")
        if "UnsupportedVersion" in errors[0]:
            raise StepFailed(f"not refused by the broker: {errors[0]}")
        print(f"bad_input refused as expected: {errors[0]}", file=sys.stderr)
        after = await retention()
        if after != before:
            raise StepFailed(f"retention.ms changed from {before} to {after}")

    for name, fn in [("create_topic", create_topic), ("produce", produce),
                     ("consume_group", consume_group), ("commit", commit),
                     ("list_offsets", list_offsets), ("alter_config", alter_config),
                     ("bad_input", bad_input)]:
        await s.arun(name, fn, STEP_S)
        if name == "commit" and consumer is not None:
            await asyncio.wait_for(consumer.stop(), 20)  # leaves the group
    await asyncio.wait_for(admin.close(), 10)


asyncio.run(main())
s.exit()
