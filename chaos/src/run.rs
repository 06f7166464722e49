//! One chaos run: build the network and the disks, start the nodes, create the topics,
//! start the clients, inject the planned faults one at a time (each healed, then the
//! cluster must be whole again within the bound), stop the clients, read every partition
//! back, check the history and write the report.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::admin::{self, ClusterView};
use crate::check::{self, CheckOptions, Verdict};
use crate::disk::LoopDisk;
use crate::error::ChaosError;
use crate::history::{Acks, Event, FaultKind, History};
use crate::net::{Net, NetFault, NetMode};
use crate::nodes::{ClusterLayout, Node, KAFKA_PORT};
use crate::schedule::{self, Planned};
use crate::timeline;
use crate::workload::{self, ProducerSpec, Recorder};

/// The acks=all topic (idempotent producer, the guarantee under test).
pub const TOPIC_ALL: &str = "chaos-all";
/// The acks=1 topic (the documented weaker guarantee: losses are counted, not failures).
pub const TOPIC_ONE: &str = "chaos-one";
const PARTITIONS_ALL: i32 = 4;
const PARTITIONS_ONE: i32 = 2;
const GROUP: &str = "chaos-group";
/// Small segments: rolls (new files, new blocks) happen every few seconds, under faults too.
const SEGMENT_BYTES: &str = "262144";
/// How long the final read of one topic may take.
const READ_DEADLINE: Duration = Duration::from_secs(120);
/// A file in the run directory that marks it as ours (the run empties it).
const MARKER: &str = ".tern-chaos";

/// What a run does.
#[derive(Debug, Clone)]
pub struct Options {
    /// The run directory: configurations, data, logs and the report (`report/`).
    pub dir: PathBuf,
    /// The `tern` executable the nodes run.
    pub exe: PathBuf,
    pub nodes: u32,
    pub net: NetMode,
    pub faults: usize,
    pub seed: u64,
    /// The fault kinds to draw from; `None`: every kind the network mode allows.
    pub kinds: Option<Vec<FaultKind>>,
    /// acks=all records per second, over two idempotent producers (the acks=1 producer
    /// writes a quarter of it).
    pub rate: u32,
    pub fault_min_ms: u64,
    pub fault_max_ms: u64,
    /// After a fault is healed, every partition must have a leader and a full ISR within
    /// this long.
    pub heal_bound_ms: u64,
    /// The size of each node's data filesystem (namespaces mode).
    pub disk_bytes: u64,
    /// Set (by a signal handler) to end the run early: the fault in force is healed, the
    /// nodes stop, the network and disks are removed, and the run returns
    /// [`ChaosError::Interrupted`].
    pub interrupt: Arc<AtomicBool>,
}

/// One injected fault as it happened.
#[derive(Debug, Clone, Serialize)]
pub struct Injected {
    pub kind: FaultKind,
    pub target: String,
    pub start_ms: u64,
    pub end_ms: u64,
    /// From the heal to a leader and full ISR on every partition and an acknowledgement on
    /// every partition of the acks=all topic (`None`: not within the bound).
    pub whole_after_ms: Option<u64>,
}

/// The outcome of a run.
#[derive(Debug, Serialize)]
pub struct Outcome {
    pub seed: u64,
    pub nodes: u32,
    pub network: &'static str,
    /// Fault kinds that could not be injected in this mode, and why.
    pub skipped: Vec<(FaultKind, &'static str)>,
    pub faults: Vec<Injected>,
    /// Problems of the run that the history does not show: a node that exited by itself, a
    /// cluster not whole again within the bound.
    pub run_violations: Vec<String>,
    pub verdict: Verdict,
    pub report_dir: PathBuf,
}

impl Outcome {
    /// Whether the run found nothing wrong.
    pub fn ok(&self) -> bool {
        self.verdict.ok && self.run_violations.is_empty()
    }
}

/// The kinds a network mode can inject (`netem`: whether the kernel has `tc netem`), and
/// those it skips with the reason.
pub fn kinds_for(net: NetMode, netem: bool) -> (Vec<FaultKind>, Vec<(FaultKind, &'static str)>) {
    let mut can = Vec::new();
    let mut skipped = Vec::new();
    for k in FaultKind::ALL {
        let needs_root = matches!(
            k,
            FaultKind::Isolate
                | FaultKind::Split
                | FaultKind::OneWay
                | FaultKind::Bandwidth
                | FaultKind::DiskFull
                | FaultKind::Delay
        );
        if needs_root && net == NetMode::Loopback {
            skipped.push((k, "needs network namespaces and root (--net loopback)"));
        } else if k == FaultKind::Delay && !netem {
            skipped.push((k, "this kernel has no tc netem (sch_netem)"));
        } else {
            can.push(k);
        }
    }
    (can, skipped)
}

/// Empties (or makes) the run directory; refuses a non-empty directory that is not one of
/// ours.
fn prepare_dir(dir: &Path) -> Result<(), ChaosError> {
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).map_err(ChaosError::io(dir))?;
        let empty = entries.next().is_none();
        if !empty && !dir.join(MARKER).exists() {
            return Err(ChaosError::Options(format!(
                "{}: not empty and not a tern chaos directory; give an empty or new one",
                dir.display()
            )));
        }
        // Unmount what a killed earlier run left mounted.
        for entry in std::fs::read_dir(dir)
            .map_err(ChaosError::io(dir))?
            .flatten()
        {
            let data = entry.path().join("data");
            let _ = std::process::Command::new("umount")
                .arg(&data)
                .stderr(std::process::Stdio::null())
                .status();
        }
        std::fs::remove_dir_all(dir).map_err(ChaosError::io(dir))?;
    }
    std::fs::create_dir_all(dir).map_err(ChaosError::io(dir))?;
    std::fs::write(dir.join(MARKER), "").map_err(ChaosError::io(dir))
}

struct Cluster {
    /// Dropped first: the processes stop before their filesystems and network go.
    nodes: Vec<Node>,
    disks: Vec<Option<LoopDisk>>,
    net: Net,
    addrs: Vec<(u32, String)>,
}

impl Cluster {
    fn node(&mut self, id: u32) -> &mut Node {
        &mut self.nodes[id as usize - 1]
    }

    /// The addresses to ask, those of nodes under `avoid` last.
    fn ask_order(&self, avoid: &[u32]) -> Vec<(u32, String)> {
        let mut a: Vec<(u32, String)> = self
            .addrs
            .iter()
            .filter(|(id, _)| !avoid.contains(id))
            .cloned()
            .collect();
        a.extend(
            self.addrs
                .iter()
                .filter(|(id, _)| avoid.contains(id))
                .cloned(),
        );
        a
    }

    fn view(&self, avoid: &[u32]) -> Result<ClusterView, ChaosError> {
        admin::view(&self.ask_order(avoid), &[TOPIC_ALL, TOPIC_ONE])
    }

    fn bootstrap(&self) -> String {
        self.addrs
            .iter()
            .map(|(_, a)| a.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Waits until every partition of both topics has a leader and `replicas` in sync and,
    /// with `progress`, until the acks=all producer has had a record acknowledged on every
    /// partition since the given time (a leader that refuses writes is not whole).
    fn wait_whole(
        &self,
        replicas: usize,
        bound: Duration,
        progress: Option<(&Recorder, u64)>,
    ) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < bound {
            let acked = progress.is_none_or(|(rec, since_ms)| {
                rec.acked_everywhere_since(TOPIC_ALL, PARTITIONS_ALL, since_ms)
            });
            if acked
                && self.view(&[]).is_ok_and(|v| {
                    v.healthy(
                        &[(TOPIC_ALL, PARTITIONS_ALL), (TOPIC_ONE, PARTITIONS_ONE)],
                        replicas,
                    )
                })
            {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// Restarts every node that is not running and resumes every paused one.
    fn restore(&mut self) -> Result<(), ChaosError> {
        for n in &mut self.nodes {
            if n.is_paused() {
                n.resume()?;
            }
            if !n.is_running() {
                n.start()?;
            }
        }
        Ok(())
    }
}

/// A fault in progress: how to heal it.
enum Active {
    /// A killed node: started again by [`revive`] after the fault's duration.
    Restart,
    Resume(u32),
    Net,
    Disk(u32),
}

/// Runs the whole thing and writes the report.
pub fn run(opts: &Options) -> Result<Outcome, ChaosError> {
    if !(3..=9).contains(&opts.nodes) {
        return Err(ChaosError::Options(format!(
            "--nodes {}: a run needs 3 to 9 nodes",
            opts.nodes
        )));
    }
    if opts.rate == 0 || opts.fault_min_ms > opts.fault_max_ms || opts.fault_min_ms == 0 {
        return Err(ChaosError::Options(
            "the rate and the fault durations must be positive, min ≤ max".into(),
        ));
    }
    if opts.net == NetMode::Namespaces && !crate::net::is_root() {
        return Err(ChaosError::NotRoot);
    }
    let netem = opts.net == NetMode::Namespaces && crate::net::netem_available();
    let (available, mut skipped) = kinds_for(opts.net, netem);
    let kinds: Vec<FaultKind> = match &opts.kinds {
        None => available.clone(),
        Some(want) => {
            for k in want {
                if !available.contains(k) {
                    let why = skipped
                        .iter()
                        .find(|(s, _)| s == k)
                        .map_or("not available", |(_, why)| *why);
                    return Err(ChaosError::Options(format!(
                        "fault kind {}: {why}",
                        k.name()
                    )));
                }
            }
            want.clone()
        }
    };
    skipped.retain(|(k, _)| opts.kinds.as_ref().is_none_or(|w| w.contains(k)));
    prepare_dir(&opts.dir)?;
    let ids: Vec<u32> = (1..=opts.nodes).collect();
    let plan = schedule::plan(
        opts.seed,
        opts.faults,
        &kinds,
        &ids,
        opts.fault_min_ms,
        opts.fault_max_ms,
    );

    let certs = opts.dir.join("certs");
    std::fs::create_dir_all(&certs).map_err(ChaosError::io(&certs))?;
    let cert_ids: Vec<i32> = ids.iter().map(|i| *i as i32).collect();
    let dev = tern_replication::tls::dev_certificates(&cert_ids)
        .map_err(|e| ChaosError::Options(format!("certificates: {e}")))?;
    let write = |name: String, text: &str| {
        let p = certs.join(name);
        std::fs::write(&p, text).map_err(ChaosError::io(&p))
    };
    write("ca.crt".into(), &dev.ca_cert_pem)?;
    for (id, cert, key) in &dev.nodes {
        write(format!("node-{id}.crt"), cert)?;
        write(format!("node-{id}.key"), key)?;
    }
    let net = Net::setup(opts.net, &ids)?;
    let cpus: Vec<usize> =
        (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
    let cluster_id = "tern-chaos-cluster-0001";
    let layout = ClusterLayout {
        net: &net,
        ids: &ids,
        cluster_id,
        certs: &certs,
        cpus: &cpus,
    };
    let mut nodes = Vec::new();
    let mut disks = Vec::new();
    for &id in &ids {
        let dir = opts.dir.join(format!("node-{id}"));
        let data = dir.join("data");
        let disk = if kinds.contains(&FaultKind::DiskFull) {
            Some(LoopDisk::create(
                &opts.dir.join(format!("node-{id}.img")),
                &data,
                opts.disk_bytes,
            )?)
        } else {
            None
        };
        nodes.push(Node::configure(id, &dir, &data, &layout, &opts.exe)?);
        disks.push(disk);
    }
    let addrs = ids
        .iter()
        .map(|id| (*id, format!("{}:{KAFKA_PORT}", net.ip(*id))))
        .collect();
    let mut cluster = Cluster {
        nodes,
        disks,
        net,
        addrs,
    };
    for n in &mut cluster.nodes {
        n.start()?;
    }
    let replicas = opts.nodes.min(3) as usize;
    let ready = Instant::now();
    loop {
        let v = cluster.view(&[]);
        if v.as_ref()
            .is_ok_and(|v| v.brokers.len() == ids.len() && v.controller >= 0)
        {
            break;
        }
        if ready.elapsed() > Duration::from_secs(60) {
            return Err(ChaosError::Timeout {
                what: "every node live and a controller".into(),
                after_ms: 60_000,
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let rf = replicas as i16;
    admin::create_topic(
        &cluster.addrs,
        TOPIC_ALL,
        PARTITIONS_ALL,
        rf,
        &[
            ("min.insync.replicas", "2"),
            ("segment.bytes", SEGMENT_BYTES),
        ],
        Duration::from_secs(30),
    )?;
    admin::create_topic(
        &cluster.addrs,
        TOPIC_ONE,
        PARTITIONS_ONE,
        rf,
        &[
            ("min.insync.replicas", "1"),
            ("segment.bytes", SEGMENT_BYTES),
        ],
        Duration::from_secs(30),
    )?;
    if cluster
        .wait_whole(replicas, Duration::from_secs(60), None)
        .is_none()
    {
        return Err(ChaosError::Timeout {
            what: "the topics' replicas to be in sync".into(),
            after_ms: 60_000,
        });
    }

    let rec = Recorder::new();
    let stop_producers = Arc::new(AtomicBool::new(false));
    let stop_consumer = Arc::new(AtomicBool::new(false));
    let numbers = Arc::new(AtomicU32::new(1));
    let bootstrap = cluster.bootstrap();
    let spec = |topic: &str, partitions, acks, rate| ProducerSpec {
        bootstrap: bootstrap.clone(),
        topic: topic.to_string(),
        partitions,
        acks,
        rate,
        message_timeout_ms: 120_000,
        record_bytes: 1024,
    };
    // Two idempotent producers share the acks=all topic (their records interleave in every
    // partition), each at half the rate.
    let half = (opts.rate / 2).max(1);
    let specs = [
        spec(TOPIC_ALL, PARTITIONS_ALL, Acks::All, half),
        spec(TOPIC_ALL, PARTITIONS_ALL, Acks::All, half),
        spec(TOPIC_ONE, PARTITIONS_ONE, Acks::One, (opts.rate / 4).max(1)),
    ];
    let producers = specs
        .into_iter()
        .map(|s| workload::spawn_producer(s, numbers.clone(), rec.clone(), stop_producers.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let consumer = workload::spawn_consumer(
        &bootstrap,
        GROUP,
        &[TOPIC_ALL.to_string(), TOPIC_ONE.to_string()],
        Duration::from_secs(1),
        rec.clone(),
        stop_consumer.clone(),
    )?;

    let mut injected = Vec::new();
    let mut run_violations = Vec::new();
    std::thread::sleep(Duration::from_secs(3));
    let interrupted = |stops: &[&Arc<AtomicBool>]| {
        let yes = opts.interrupt.load(Ordering::Acquire);
        if yes {
            for s in stops {
                s.store(true, Ordering::Release);
            }
        }
        yes
    };
    let stops = [&stop_producers, &stop_consumer];
    for (i, f) in plan.iter().enumerate() {
        if interrupted(&stops) {
            return Err(ChaosError::Interrupted);
        }
        let (target, active) = apply(&mut cluster, f)?;
        let start_ms = rec.now_ms();
        rec.record(Event::FaultStart {
            t_ms: start_ms,
            fault: f.kind,
            target: target.clone(),
        });
        eprintln!(
            "tern chaos: fault {}/{}: {} {target} for {} ms",
            i + 1,
            plan.len(),
            f.kind.name(),
            f.duration_ms
        );
        let until = Instant::now() + Duration::from_millis(f.duration_ms);
        while Instant::now() < until && !opts.interrupt.load(Ordering::Acquire) {
            watch(&mut cluster, &mut run_violations);
            std::thread::sleep(Duration::from_millis(50));
        }
        heal(&mut cluster, active)?;
        if interrupted(&stops) {
            return Err(ChaosError::Interrupted);
        }
        revive(&mut cluster, &mut run_violations);
        let end_ms = rec.now_ms();
        rec.record(Event::FaultEnd {
            t_ms: end_ms,
            fault: f.kind,
            target: target.clone(),
        });
        let whole = cluster.wait_whole(
            replicas,
            Duration::from_millis(opts.heal_bound_ms),
            Some((&rec, end_ms)),
        );
        watch(&mut cluster, &mut run_violations);
        revive(&mut cluster, &mut run_violations);
        if whole.is_none() {
            run_violations.push(format!(
                "after {} {target} (healed at {end_ms} ms): not every partition had a leader \
                 and a full ISR within {} ms",
                f.kind.name(),
                opts.heal_bound_ms
            ));
            // Give it the time it needs before the next fault, so faults do not pile up.
            cluster.wait_whole(replicas, Duration::from_secs(120), Some((&rec, end_ms)));
        }
        injected.push(Injected {
            kind: f.kind,
            target,
            start_ms,
            end_ms,
            whole_after_ms: whole.map(|d| d.as_millis() as u64),
        });
        std::thread::sleep(Duration::from_secs(1));
    }
    std::thread::sleep(Duration::from_secs(3));
    stop_producers.store(true, Ordering::Release);
    for p in producers {
        let _ = p.join();
    }
    // Let the consumer read what the last acknowledgements made visible.
    std::thread::sleep(Duration::from_secs(3));
    stop_consumer.store(true, Ordering::Release);
    let _ = consumer.join();
    cluster.restore()?;
    cluster.wait_whole(replicas, Duration::from_secs(60), None);
    let bootstrap = cluster.bootstrap();
    let final_log = read_both(&bootstrap)?;
    // Nothing on disk may be damaged: every node crashes at once and starts again, and
    // every partition must read back exactly as before.
    for n in &mut cluster.nodes {
        n.kill()?;
    }
    cluster.restore()?;
    if cluster
        .wait_whole(replicas, Duration::from_secs(120), None)
        .is_none()
    {
        run_violations.push(
            "after a crash and restart of every node, not every partition had a leader and a \
             full ISR within 120 s"
                .into(),
        );
    }
    // A new leader's high watermark moves up once its followers fetch again: read until
    // no partition is shorter than before (bounded).
    let read_back = Instant::now();
    let again = loop {
        let again = read_both(&bootstrap)?;
        let shorter = final_log
            .iter()
            .zip(&again)
            .any(|(b, a)| a.records.len() < b.records.len());
        if !shorter || read_back.elapsed() > Duration::from_secs(30) {
            break again;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    for (before, after) in final_log.iter().zip(&again) {
        if before.records != after.records {
            let at = before
                .records
                .iter()
                .zip(&after.records)
                .position(|(a, b)| a != b)
                .unwrap_or(before.records.len().min(after.records.len()));
            run_violations.push(format!(
                "after a crash and restart of every node, {}/{} reads differently: {} records \
                 before, {} after, first difference at record {at}",
                before.topic,
                before.partition,
                before.records.len(),
                after.records.len()
            ));
        }
    }
    let history = History {
        events: rec.events(),
        topics: [
            (TOPIC_ALL.to_string(), Acks::All),
            (TOPIC_ONE.to_string(), Acks::One),
        ]
        .into_iter()
        .collect(),
        final_log,
    };
    let verdict = check::check(&history, &CheckOptions::default());
    let report_dir = opts.dir.join("report");
    let outcome = Outcome {
        seed: opts.seed,
        nodes: opts.nodes,
        network: match opts.net {
            NetMode::Namespaces => "namespaces",
            NetMode::Loopback => "loopback",
        },
        skipped,
        faults: injected,
        run_violations,
        verdict,
        report_dir: report_dir.clone(),
    };
    write_report(&report_dir, &history, &outcome)?;
    for n in &mut cluster.nodes {
        n.stop(Duration::from_secs(30));
    }
    Ok(outcome)
}

/// Every partition of both topics, read from start to end.
fn read_both(bootstrap: &str) -> Result<Vec<crate::history::PartitionLog>, ChaosError> {
    let mut logs = workload::read_all(bootstrap, TOPIC_ALL, PARTITIONS_ALL, READ_DEADLINE)?;
    logs.extend(workload::read_all(
        bootstrap,
        TOPIC_ONE,
        PARTITIONS_ONE,
        READ_DEADLINE,
    )?);
    Ok(logs)
}

/// Notes a node that exited without being killed (it is started again after the fault
/// is healed, see [`revive`]).
fn watch(cluster: &mut Cluster, violations: &mut Vec<String>) {
    for n in &mut cluster.nodes {
        if let Some(status) = n.exited() {
            violations.push(format!(
                "node {} exited by itself ({status}); see {}",
                n.id,
                n.log_path().display()
            ));
        }
    }
}

/// Starts every node that is not running (after a heal): one that cannot start is a
/// violation, and the run goes on without it until the next heal.
fn revive(cluster: &mut Cluster, violations: &mut Vec<String>) {
    for n in &mut cluster.nodes {
        if !n.is_running() {
            if let Err(e) = n.start() {
                violations.push(format!("{e} (after the fault was healed)"));
            }
        }
    }
}

fn apply(cluster: &mut Cluster, f: &Planned) -> Result<(String, Active), ChaosError> {
    let nodes = cluster.nodes.len() as u32;
    let node_target = |n: u32| format!("node {n}");
    Ok(match f.kind {
        FaultKind::KillNode | FaultKind::KillLeader | FaultKind::KillController => {
            let view = cluster.view(&[]).ok();
            let chosen = match f.kind {
                FaultKind::KillLeader => view.as_ref().and_then(|v| {
                    v.leader(TOPIC_ALL, (f.partition % PARTITIONS_ALL as u32) as i32)
                }),
                FaultKind::KillController => view.as_ref().map(|v| v.controller),
                _ => None,
            };
            let n = chosen
                .filter(|c| (1..=nodes as i32).contains(c))
                .map_or(f.node, |c| c as u32);
            cluster.node(n).kill()?;
            (node_target(n), Active::Restart)
        }
        FaultKind::Pause => {
            cluster.node(f.node).pause()?;
            (node_target(f.node), Active::Resume(f.node))
        }
        FaultKind::Isolate => {
            cluster.net.apply(&NetFault::Isolate { node: f.node })?;
            (node_target(f.node), Active::Net)
        }
        FaultKind::Split => {
            let lone: Vec<u32> = if nodes >= 5 {
                vec![f.node, f.other]
            } else {
                vec![f.node]
            };
            let rest: Vec<u32> = (1..=nodes).filter(|n| !lone.contains(n)).collect();
            cluster.net.apply(&NetFault::Split {
                a: lone.clone(),
                b: rest.clone(),
            })?;
            (format!("{} | {}", join(&lone), join(&rest)), Active::Net)
        }
        FaultKind::OneWay => {
            cluster.net.apply(&NetFault::OneWay {
                from: f.other,
                to: f.node,
            })?;
            (format!("{} -> {} dropped", f.other, f.node), Active::Net)
        }
        FaultKind::Bandwidth => {
            cluster.net.apply(&NetFault::Bandwidth {
                node: f.node,
                kbit: 1000,
            })?;
            (format!("node {} at 1 Mbit/s", f.node), Active::Net)
        }
        FaultKind::Delay => {
            cluster.net.apply(&NetFault::Delay { node: f.node })?;
            (format!("node {} delayed and lossy", f.node), Active::Net)
        }
        FaultKind::DiskFull => {
            let disk = cluster.disks[f.node as usize - 1]
                .as_ref()
                .ok_or_else(|| ChaosError::Options("disk-full without a loop disk".into()))?;
            disk.fill(0)?;
            (node_target(f.node), Active::Disk(f.node))
        }
    })
}

/// Heals a fault; a killed node is started again by [`revive`].
fn heal(cluster: &mut Cluster, active: Active) -> Result<(), ChaosError> {
    match active {
        Active::Restart => Ok(()),
        Active::Resume(n) if cluster.node(n).is_running() => cluster.node(n).resume(),
        Active::Resume(_) => Ok(()),
        Active::Net => cluster.net.heal_all(),
        Active::Disk(n) => match &cluster.disks[n as usize - 1] {
            Some(d) => d.free(),
            None => Ok(()),
        },
    }
}

fn join(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

fn write_report(dir: &Path, history: &History, outcome: &Outcome) -> Result<(), ChaosError> {
    std::fs::create_dir_all(dir).map_err(ChaosError::io(dir))?;
    let put = |name: &str, bytes: Vec<u8>| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).map_err(ChaosError::io(&p))
    };
    let json = |v: &dyn erased::Json| v.to_json();
    put("history.json", json(history))?;
    put("outcome.json", json(outcome))?;
    put("summary.txt", summary(outcome).into_bytes())?;
    put("timeline.svg", timeline::svg(history, 1000).into_bytes())?;
    Ok(())
}

mod erased {
    /// JSON of a value (serde_json never fails on these types: no maps with non-string
    /// keys).
    pub trait Json {
        fn to_json(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> Vec<u8> {
            serde_json::to_vec_pretty(self).unwrap_or_default()
        }
    }
}

/// The text report: faults, skipped kinds, violations of the run, the checker's tables.
pub fn summary(o: &Outcome) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "tern chaos: seed {}, {} nodes, {} network, {} faults",
        o.seed,
        o.nodes,
        o.network,
        o.faults.len()
    );
    for (k, why) in &o.skipped {
        let _ = writeln!(s, "  skipped {}: {why}", k.name());
    }
    let mut kinds: Vec<FaultKind> = o.faults.iter().map(|f| f.kind).collect();
    kinds.sort();
    kinds.dedup();
    for k in kinds {
        let of: Vec<&Injected> = o.faults.iter().filter(|f| f.kind == k).collect();
        let whole: Vec<u64> = of.iter().filter_map(|f| f.whole_after_ms).collect();
        let max = whole.iter().max().copied().unwrap_or(0);
        let _ = writeln!(
            s,
            "  {:<16} {:>3} injected, whole again after at most {max} ms{}",
            k.name(),
            of.len(),
            if whole.len() < of.len() {
                format!(" ({} not within the bound)", of.len() - whole.len())
            } else {
                String::new()
            }
        );
    }
    for v in &o.run_violations {
        let _ = writeln!(s, "  VIOLATION {v}");
    }
    s.push_str(&o.verdict.summary());
    let _ = writeln!(
        s,
        "{}: report in {}",
        if o.ok() { "PASS" } else { "FAIL" },
        o.report_dir.display()
    );
    s
}
