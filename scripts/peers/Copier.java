// A minimal Kafka copier on the Apache Kafka Java client: the Java peer that
// `streamfleet-bench --peer MODE=...` (scripts/bench-peers) measures beside streamfleet and
// scripts/peers/copier.py. Same protocol and semantics as copier.py:
//
//   at-least-once  the producer's deliveries are awaited (flush) before the consumed offsets
//                  are committed, every BENCH_COMMIT_INTERVAL_MS;
//   exactly-once   a transactional producer; outputs and consumed offsets
//                  (sendOffsetsToTransaction) commit together every BENCH_COMMIT_INTERVAL_MS,
//                  the consumer reads read_committed.
//
// Producer settings are streamfleet's defaults (acks=all, idempotence, linger 5 ms, batch
// 16 KiB, snappy). Settings come from BENCH_* variables; on stdout `ready` once partitions are
// assigned, `progress <n>`, and `result <json>`. The clock runs from the first consumed record
// to the N-th record done; CPU is this JVM's process CPU time over that window (JIT and GC
// threads included, as a deployed service pays them).
//
// Compiled by scripts/bench-peers with javac against the kafka-clients classes in
// ../shared/kafka/libs; no dependency beyond them.

import java.lang.management.ManagementFactory;
import java.time.Duration;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class Copier {
    static void say(String line) {
        System.out.println(line);
        System.out.flush();
    }

    static double cpuSeconds() {
        com.sun.management.OperatingSystemMXBean os =
            (com.sun.management.OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean();
        return os.getProcessCpuTime() / 1e9;
    }

    static Map<TopicPartition, OffsetAndMetadata> positions(KafkaConsumer<byte[], byte[]> c) {
        Map<TopicPartition, OffsetAndMetadata> out = new HashMap<>();
        for (TopicPartition tp : c.assignment()) {
            out.put(tp, new OffsetAndMetadata(c.position(tp)));
        }
        return out;
    }

    public static void main(String[] args) {
        Map<String, String> env = System.getenv();
        String bootstrap = env.get("BENCH_BOOTSTRAP");
        String source = env.get("BENCH_INPUT");
        String sink = env.get("BENCH_OUTPUT");
        String group = env.get("BENCH_GROUP");
        long records = Long.parseLong(env.get("BENCH_RECORDS"));
        long intervalMs = Long.parseLong(env.get("BENCH_COMMIT_INTERVAL_MS"));
        String mode = env.get("BENCH_MODE");
        boolean exactlyOnce = "exactly-once".equals(mode);
        if (!List.of("at-least-once", "exactly-once", "passthrough").contains(mode)) {
            System.err.println("Copier: unknown BENCH_MODE " + mode);
            System.exit(2);
        }

        Properties cc = new Properties();
        cc.put("bootstrap.servers", bootstrap);
        cc.put("group.id", group);
        cc.put("auto.offset.reset", "earliest");
        cc.put("enable.auto.commit", "false");
        cc.put("isolation.level", exactlyOnce ? "read_committed" : "read_uncommitted");
        cc.put("max.poll.records", "1000");
        cc.put("key.deserializer", ByteArrayDeserializer.class.getName());
        cc.put("value.deserializer", ByteArrayDeserializer.class.getName());
        Properties pc = new Properties();
        pc.put("bootstrap.servers", bootstrap);
        pc.put("acks", "all");
        pc.put("enable.idempotence", "true");
        pc.put("linger.ms", "5");
        pc.put("batch.size", "16384");
        pc.put("compression.type", "snappy");
        pc.put("key.serializer", ByteArraySerializer.class.getName());
        pc.put("value.serializer", ByteArraySerializer.class.getName());
        if (exactlyOnce) {
            pc.put("transactional.id", group + ".java-copier");
        }

        KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(cc);
        KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(pc);
        if (exactlyOnce) {
            producer.initTransactions();
            producer.beginTransaction();
        }
        AtomicLong delivered = new AtomicLong();
        AtomicLong failed = new AtomicLong();
        consumer.subscribe(List.of(source), new ConsumerRebalanceListener() {
            public void onPartitionsRevoked(Collection<TopicPartition> ps) {}
            public void onPartitionsAssigned(Collection<TopicPartition> ps) {
                if (!ps.isEmpty()) {
                    say("ready");
                }
            }
        });

        long consumed = 0, done = 0, inTxn = 0;
        long start = 0;
        double cpuStart = 0;
        long lastCommit = System.nanoTime(), lastReport = System.nanoTime();
        while (done < records) {
            ConsumerRecords<byte[], byte[]> batch = consumer.poll(Duration.ofMillis(50));
            for (ConsumerRecord<byte[], byte[]> m : batch) {
                if (start == 0) {
                    start = System.nanoTime();
                    cpuStart = cpuSeconds();
                }
                ProducerRecord<byte[], byte[]> out =
                    new ProducerRecord<>(sink, null, m.key(), m.value(), m.headers());
                if (exactlyOnce) {
                    producer.send(out);
                } else {
                    producer.send(out, (md, e) -> {
                        if (e == null) {
                            delivered.incrementAndGet();
                        } else {
                            failed.incrementAndGet();
                        }
                    });
                }
                consumed++;
                inTxn++;
            }
            if (failed.get() > 0) {
                System.err.println("Copier: " + failed.get() + " deliveries failed");
                System.exit(1);
            }
            long now = System.nanoTime();
            boolean due = now - lastCommit >= intervalMs * 1_000_000L || consumed >= records;
            if (exactlyOnce) {
                if (inTxn > 0 && due) {
                    producer.sendOffsetsToTransaction(positions(consumer), consumer.groupMetadata());
                    producer.commitTransaction();
                    done += inTxn;
                    inTxn = 0;
                    lastCommit = now;
                    producer.beginTransaction();
                }
            } else {
                done = delivered.get();
                if (due) {
                    producer.flush();
                    done = delivered.get();
                    if (consumed > 0) {
                        consumer.commitSync(positions(consumer));
                    }
                    lastCommit = now;
                }
            }
            if (now - lastReport >= 250_000_000L) {
                lastReport = now;
                say("progress " + done);
            }
        }
        double elapsed = (System.nanoTime() - start) / 1e9;
        double cpu = cpuSeconds() - cpuStart;
        if (exactlyOnce) {
            producer.abortTransaction();
        } else {
            producer.flush();
        }
        consumer.close();
        producer.close();
        long rssKiB = 0;
        try {
            for (String line : java.nio.file.Files.readAllLines(java.nio.file.Path.of("/proc/self/status"))) {
                if (line.startsWith("VmHWM:")) {
                    rssKiB = Long.parseLong(line.replaceAll("[^0-9]", ""));
                }
            }
        } catch (java.io.IOException e) {
            // Peak RSS stays 0 where /proc is missing.
        }
        say(String.format(java.util.Locale.ROOT,
            "result {\"records\": %d, \"seconds\": %.6f, \"records_per_sec\": %.3f, "
                + "\"latency_ms\": null, \"cpu_seconds\": %.6f, \"peak_rss_bytes\": %d}",
            records, elapsed, records / elapsed, cpu, rssKiB * 1024));
    }
}
