//! Produce latency and throughput of a Kafka-compatible broker with librdkafka's own producer,
//! next to the raw fdatasync latency of the disk measured in the same run.
//!
//! ```text
//! cargo run --release --example produce_bench -- --broker 127.0.0.1:9092 \
//!     --raw-dir ./tern-data --rate-mb-per-s 20 --seconds 20
//! ```
//!
//! At a fixed rate, each record's send is scheduled on a timeline and its latency is taken
//! from the *intended* send time to the delivery report (acks=all), so a stalled broker shows
//! up as latency, not as silently lower load (no coordinated omission). With
//! `--rate-mb-per-s 0` the producer sends as fast as its queue allows and reports the maximum
//! throughput. The raw baseline writes 4 KiB O_DIRECT blocks followed by fdatasync into a
//! scratch file in `--raw-dir` (the broker's disk), before and after the broker run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;

#[derive(Debug, Parser)]
struct Args {
    /// Broker address.
    #[arg(long, default_value = "127.0.0.1:9092")]
    broker: String,
    /// Topic (created with --partitions if missing; auto-create must be on otherwise).
    #[arg(long, default_value = "produce-bench")]
    topic: String,
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    #[arg(long, default_value_t = 1024)]
    record_bytes: usize,
    /// Target rate; 0 = as fast as possible.
    #[arg(long, default_value_t = 20.0)]
    rate_mb_per_s: f64,
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Seconds sent before measuring.
    #[arg(long, default_value_t = 3)]
    warmup_seconds: u64,
    /// librdkafka linger.ms.
    #[arg(long, default_value_t = 1.0)]
    linger_ms: f64,
    /// Directory on the broker's disk for the raw fdatasync baseline.
    #[arg(long)]
    raw_dir: Option<PathBuf>,
    /// Raw baseline writes.
    #[arg(long, default_value_t = 5000)]
    raw_count: usize,
}

struct Ctx {
    hist: Mutex<Histogram<u64>>,
    errors: Mutex<u64>,
    delivered: Mutex<u64>,
    measure_from: Instant,
}

impl ClientContext for Ctx {}

impl ProducerContext for Ctx {
    type DeliveryOpaque = Box<Instant>;
    fn delivery(&self, result: &DeliveryResult<'_>, intended: Box<Instant>) {
        match result {
            Ok(_) => {
                *self.delivered.lock().unwrap() += 1;
                if *intended >= self.measure_from {
                    let us = intended.elapsed().as_micros() as u64;
                    let _ = self.hist.lock().unwrap().record(us.max(1));
                }
            }
            Err(_) => *self.errors.lock().unwrap() += 1,
        }
    }
}

fn percentiles(h: &Histogram<u64>) -> String {
    format!(
        "p50 {:>8.3} ms  p99 {:>8.3} ms  p99.9 {:>8.3} ms  max {:>8.3} ms  (n={})",
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.value_at_quantile(0.999) as f64 / 1000.0,
        h.max() as f64 / 1000.0,
        h.len()
    )
}

/// Raw 4 KiB O_DIRECT write + fdatasync latency, in µs.
fn raw_fdatasync(dir: &std::path::Path, count: usize) -> Histogram<u64> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(format!("raw-fdatasync-{}.tmp", std::process::id()));
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .expect("open raw file (O_DIRECT)");
    let mut buf = tern_engine::buf::AlignedBuf::with_capacity(4096);
    buf.extend_from_slice(&[0x5a; 4096]);
    let mut h = Histogram::<u64>::new(3).unwrap();
    for i in 0..count {
        let t = Instant::now();
        // SAFETY: buf is 4096-aligned and 4096 long; fd is open for writing.
        let n = unsafe {
            libc::pwrite(
                f.as_raw_fd(),
                buf.as_ptr().cast(),
                4096,
                (i as i64 % 4096) * 4096,
            )
        };
        assert_eq!(n, 4096, "raw write failed");
        // SAFETY: valid fd.
        assert_eq!(
            unsafe { libc::fdatasync(f.as_raw_fd()) },
            0,
            "fdatasync failed"
        );
        let _ = h.record(t.elapsed().as_micros() as u64);
    }
    let _ = std::fs::remove_file(&path);
    h
}

fn main() {
    let args = Args::parse();
    let raw_before = args
        .raw_dir
        .as_ref()
        .map(|d| raw_fdatasync(d, args.raw_count));
    ensure_topic(&args);
    let ctx = Ctx {
        hist: Mutex::new(Histogram::new(3).unwrap()),
        errors: Mutex::new(0),
        delivered: Mutex::new(0),
        measure_from: Instant::now() + Duration::from_secs(args.warmup_seconds),
    };
    let producer: BaseProducer<Ctx> = ClientConfig::new()
        .set("bootstrap.servers", &args.broker)
        .set("acks", "all")
        .set("linger.ms", args.linger_ms.to_string())
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("enable.idempotence", "false")
        .set("compression.type", "none")
        .set("socket.nagle.disable", "true")
        .create_with_context(ctx)
        .expect("producer");
    let payload: Vec<u8> = (0..args.record_bytes).map(|i| (i % 251) as u8).collect();
    let interval = if args.rate_mb_per_s > 0.0 {
        Some(Duration::from_secs_f64(
            args.record_bytes as f64 / (args.rate_mb_per_s * 1024.0 * 1024.0),
        ))
    } else {
        None
    };
    let start = Instant::now();
    let measure_from = producer.context().measure_from;
    let end = measure_from + Duration::from_secs(args.seconds);
    let mut sent: u64 = 0;
    let mut sent_measured: u64 = 0;
    // How late each send left compared with its schedule (OMB's publish delay).
    let mut lag = Histogram::<u64>::new(3).unwrap();
    loop {
        let intended = match interval {
            Some(iv) => start + iv.mul_f64(sent as f64),
            None => Instant::now(),
        };
        if intended >= end {
            break;
        }
        // Wait for the intended time while serving delivery reports (no busy loop: this
        // machine has two cores and the broker needs them).
        loop {
            let now = Instant::now();
            if now >= intended {
                break;
            }
            producer.poll(intended - now);
        }
        let key = (sent % 64).to_string();
        let mut record = BaseRecord::with_opaque_to(&args.topic, Box::new(intended))
            .payload(&payload)
            .key(&key)
            .partition((sent % args.partitions as u64) as i32);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(1));
                }
                Err((e, _)) => panic!("send: {e}"),
            }
        }
        let lag_us = intended.elapsed().as_micros() as u64;
        if intended >= measure_from {
            let _ = lag.record(lag_us.max(1));
        }
        sent += 1;
        if intended >= measure_from {
            sent_measured += 1;
        }
        if sent.is_multiple_of(64) {
            producer.poll(Duration::ZERO);
        }
    }
    let _ = producer.flush(Duration::from_secs(60));
    let elapsed = end.saturating_duration_since(measure_from).as_secs_f64();
    let ctx = producer.context();
    let h = ctx.hist.lock().unwrap();
    let raw_after = args
        .raw_dir
        .as_ref()
        .map(|d| raw_fdatasync(d, args.raw_count));
    let measured = h.len() as f64;
    let rate = measured / elapsed;
    println!(
        "broker {} topic {} partitions {} record {} B acks=all linger.ms={}",
        args.broker, args.topic, args.partitions, args.record_bytes, args.linger_ms
    );
    match interval {
        Some(_) => println!("target rate {:.1} MB/s", args.rate_mb_per_s),
        None => println!("target rate: max"),
    }
    println!(
        "delivered {} records/s, {:.1} MB/s (sent in window {}, errors {})",
        rate as u64,
        rate * args.record_bytes as f64 / (1024.0 * 1024.0),
        sent_measured,
        ctx.errors.lock().unwrap()
    );
    println!("produce latency (from intended send): {}", percentiles(&h));
    println!(
        "schedule delay (send - intended):     {}",
        percentiles(&lag)
    );
    if let Some(dir) = &args.raw_dir {
        // The disk's group-commit floor for this load: the same rate, record size and
        // round-robin partitions, with no client, network or broker.
        let plan = tern_bench::floor::FloorPlan {
            partitions: args.partitions as usize,
            record_bytes: args.record_bytes,
            records_per_s: args.rate_mb_per_s * 1024.0 * 1024.0 / args.record_bytes as f64,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(5),
        };
        if plan.records_per_s > 0.0 {
            match tern_bench::floor::measure(dir, &plan) {
                Ok(f) => println!(
                    "group-commit floor (partition files: {}): p50 {:8.3} ms  p99 {:8.3} ms  p99.9 {:8.3} ms  \
                     ratio produce/floor: p50 {:.2}x  p99 {:.2}x",
                    plan.partitions,
                    f.ms_at(0.5),
                    f.ms_at(0.99),
                    f.ms_at(0.999),
                    h.value_at_quantile(0.5) as f64 / 1e3 / f.ms_at(0.5).max(1e-6),
                    h.value_at_quantile(0.99) as f64 / 1e3 / f.ms_at(0.99).max(1e-6),
                ),
                Err(e) => println!("group-commit floor: {e:#}"),
            }
        }
    }
    for (name, raw) in [("before", raw_before), ("after", raw_after)] {
        if let Some(r) = raw {
            println!(
                "raw 4 KiB O_DIRECT write+fdatasync ({name}): {}",
                percentiles(&r)
            );
            println!(
                "  ratio produce/raw: p50 {:.2}x  p99 {:.2}x",
                h.value_at_quantile(0.5) as f64 / r.value_at_quantile(0.5).max(1) as f64,
                h.value_at_quantile(0.99) as f64 / r.value_at_quantile(0.99).max(1) as f64
            );
        }
    }
}

fn ensure_topic(args: &Args) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &args.broker)
        .create()
        .expect("admin client");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let topic = NewTopic::new(&args.topic, args.partitions, TopicReplication::Fixed(1));
    let r = rt.block_on(admin.create_topics([&topic], &AdminOptions::new()));
    match r {
        Ok(results) => {
            for r in results {
                if let Err((t, e)) = r {
                    if e != RDKafkaErrorCode::TopicAlreadyExists {
                        panic!("create topic {t}: {e}");
                    }
                }
            }
        }
        Err(e) => panic!("create topics: {e}"),
    }
}
