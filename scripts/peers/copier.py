#!/usr/bin/python3
"""A minimal Kafka copier written with confluent-kafka: the independent peer that
`streamfleet-bench --peer MODE=...` (scripts/bench-peers) measures beside streamfleet.

It copies BENCH_RECORDS records from BENCH_INPUT to BENCH_OUTPUT (key, value and headers,
unchanged) as consumer group BENCH_GROUP, the way a careful Python service would:

  at-least-once  the producer's deliveries are awaited (flush) before the consumed offsets
                 are committed, every BENCH_COMMIT_INTERVAL_MS;
  exactly-once   a transactional producer; outputs and consumed offsets
                 (send_offsets_to_transaction) commit together every BENCH_COMMIT_INTERVAL_MS,
                 the consumer reads read_committed.

Producer settings are streamfleet's defaults (acks=all, idempotence, linger 5 ms, batch 16 KiB,
snappy, murmur2_random partitioner). It speaks the participant protocol of `streamfleet-bench`
(see workers/bench/src/measure.rs): settings from BENCH_* variables; on stdout `ready`
once partitions are assigned, `progress <n>`, and `result <json>`. The clock runs from the
first consumed record to the N-th record done (delivered at-least-once, committed
exactly-once); CPU is this process's user + system time over that window.

Written for Debian's python3-confluent-kafka (1.7.0, librdkafka 2.0.2) and works with newer
ones. No dependency beyond it.
"""

import json
import os
import resource
import sys
import time

from confluent_kafka import Consumer, KafkaError, Producer


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main():
    env = os.environ
    bootstrap = env["BENCH_BOOTSTRAP"]
    source, sink = env["BENCH_INPUT"], env["BENCH_OUTPUT"]
    group, records = env["BENCH_GROUP"], int(env["BENCH_RECORDS"])
    interval = int(env["BENCH_COMMIT_INTERVAL_MS"]) / 1000.0
    mode = env["BENCH_MODE"]
    exactly_once = mode == "exactly-once"
    if mode not in ("at-least-once", "exactly-once", "passthrough"):
        sys.exit(f"copier.py: unknown BENCH_MODE {mode!r}")

    consumer_conf = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "enable.partition.eof": False,
        "isolation.level": "read_committed" if exactly_once else "read_uncommitted",
    }
    if "BENCH_FETCH_WAIT_MAX_MS" in env:
        consumer_conf["fetch.wait.max.ms"] = int(env["BENCH_FETCH_WAIT_MAX_MS"])
    producer_conf = {
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        "batch.size": 16384,
        "compression.type": "snappy",
        "partitioner": "murmur2_random",
    }
    if exactly_once:
        producer_conf["transactional.id"] = f"{group}.copier"

    consumer = Consumer(consumer_conf)
    producer = Producer(producer_conf)
    if exactly_once:
        producer.init_transactions(30)
        producer.begin_transaction()

    state = {"delivered": 0, "failed": 0}

    def on_delivery(err, _msg):
        if err is None:
            state["delivered"] += 1
        else:
            state["failed"] += 1

    def on_assign(c, partitions):
        say("ready")

    consumer.subscribe([source], on_assign=on_assign)

    consumed = 0  # records copied into the producer
    done = 0  # records finished (delivered, or committed exactly-once)
    in_txn = 0
    start = cpu_start = None
    last_commit = last_report = time.monotonic()
    while done < records:
        batch = consumer.consume(num_messages=1000, timeout=0.05)
        for m in batch:
            if m.error():
                if m.error().code() != KafkaError._PARTITION_EOF:
                    sys.exit(f"copier.py: consume error: {m.error()}")
                continue
            if start is None:
                start, cpu_start = time.monotonic(), cpu_seconds()
            while True:
                try:
                    producer.produce(
                        sink,
                        value=m.value(),
                        key=m.key(),
                        headers=m.headers(),
                        on_delivery=None if exactly_once else on_delivery,
                    )
                    break
                except BufferError:
                    producer.poll(0.001)
            consumed += 1
            in_txn += 1
        producer.poll(0)
        if state["failed"]:
            sys.exit(f"copier.py: {state['failed']} deliveries failed")
        now = time.monotonic()
        if exactly_once:
            if in_txn and (now - last_commit >= interval or consumed >= records):
                producer.send_offsets_to_transaction(
                    consumer.position(consumer.assignment()),
                    consumer.consumer_group_metadata(),
                    30,
                )
                producer.commit_transaction(30)
                done += in_txn
                in_txn = 0
                last_commit = now
                producer.begin_transaction()
        else:
            done = state["delivered"]
            if now - last_commit >= interval or consumed >= records:
                producer.flush(30)
                done = state["delivered"]
                if consumed:
                    consumer.commit(
                        offsets=consumer.position(consumer.assignment()),
                        asynchronous=False,
                    )
                last_commit = now
        if now - last_report >= 0.25:
            last_report = now
            say(f"progress {done}")

    elapsed = time.monotonic() - start
    cpu = cpu_seconds() - cpu_start
    if exactly_once:
        producer.abort_transaction(30)
    else:
        producer.flush(30)
    consumer.close()
    result = {
        "records": records,
        "seconds": elapsed,
        "records_per_sec": records / elapsed,
        "latency_ms": None,
        "cpu_seconds": cpu,
        # ru_maxrss is in KiB on Linux.
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    say("result " + json.dumps(result))


if __name__ == "__main__":
    main()
