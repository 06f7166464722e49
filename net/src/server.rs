//! Starting and stopping the broker: one pinned thread per configured core, each with its own
//! io_uring runtime and its own SO_REUSEPORT listener; shard 0 also runs the metadata writer.
//!
//! Graceful stop ([`Broker::shutdown`], SIGTERM/SIGINT in `tern serve`): every shard stops
//! accepting, lets each connection finish the request it is handling, then closes its logs
//! (which completes queued appends and syncs) before its thread exits.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{mpsc as std_mpsc, Arc};
use std::thread::JoinHandle;

use tern_engine::{DirectIo, Recovery};
use tern_tuning::BrokerConfig;
use tokio::sync::{mpsc, watch};

use crate::admin::{self, MetaMsg, META_QUEUE_MAX};
use crate::meta::{MetaError, MetaStore};
use crate::producer_ids::{ProducerIdError, ProducerIds};
use crate::router::Router;
use crate::shard::{ShardMsg, ShardState, SHARD_QUEUE_MAX};

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {cause}")]
    Listen { addr: SocketAddr, cause: io::Error },
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("data directory {path}: {cause}")]
    DataDir { path: String, cause: io::Error },
    #[error("shard {shard} failed to start: {source}")]
    Shard {
        shard: usize,
        source: Box<ShardStartError>,
    },
    #[error(transparent)]
    ProducerIds(#[from] ProducerIdError),
    #[error("journal replay: io_uring runtime: {0}")]
    ReplayRuntime(io::Error),
    #[error("journal replay: {0}")]
    Journal(#[from] tern_engine::JournalError),
    #[error(transparent)]
    NodeMeta(#[from] crate::node_meta::NodeMetaError),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterStartError),
    #[error("metrics.listener {addr}: {cause}")]
    Metrics { addr: SocketAddr, cause: io::Error },
}

/// Why one shard could not start.
#[derive(Debug, thiserror::Error)]
pub enum ShardStartError {
    #[error("shard.nice = {nice}: setpriority: {cause}{hint}")]
    Nice {
        nice: i32,
        cause: io::Error,
        hint: &'static str,
    },
    #[error("io_uring runtime: {0}")]
    Runtime(io::Error),
    #[error("thread: {0}")]
    Thread(io::Error),
    #[error(transparent)]
    Open(Box<crate::error::OpenError>),
    #[error(transparent)]
    Groups(#[from] crate::group::driver::GroupLoadError),
    #[error("replica endpoint: {0}")]
    ReplicaEndpoint(io::Error),
    #[error("exited during startup")]
    Exited,
}

impl From<crate::error::OpenError> for ShardStartError {
    fn from(e: crate::error::OpenError) -> Self {
        ShardStartError::Open(Box::new(e))
    }
}

/// A running broker.
#[derive(Debug)]
pub struct Broker {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    /// Each shard thread returns true if it closed every log and its journal cleanly.
    threads: Vec<JoinHandle<bool>>,
    router: Arc<Router>,
    /// The `/metrics` listener, when `metrics.listener` is set.
    metrics: Option<crate::metrics::MetricsServer>,
}

impl Broker {
    /// Starts every shard and returns once all of them serve.
    pub fn start(config: BrokerConfig) -> Result<Broker, StartError> {
        let config = Arc::new(config);
        std::fs::create_dir_all(&config.log_dir).map_err(|cause| StartError::DataDir {
            path: config.log_dir.display().to_string(),
            cause,
        })?;
        let node = crate::node_meta::NodeMeta::load_or_create(
            &config.log_dir,
            config.node_id,
            config.cluster.cluster_id.as_deref(),
        )?;
        let recovery = take_clean_shutdown_marker(&config.log_dir)?;
        let meta = Arc::new(MetaStore::load(&config.log_dir)?);
        replay_journals(&config, &meta)?;
        let listeners = bind_all(config.listener, config.cores.len())?;
        let addr = listeners
            .first()
            .and_then(|l| l.local_addr().ok())
            .unwrap_or(config.listener);
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..config.cores.len() {
            let (tx, rx) = mpsc::channel::<ShardMsg>(SHARD_QUEUE_MAX);
            senders.push(tx);
            receivers.push(rx);
        }
        let (meta_tx, meta_rx) = mpsc::channel::<MetaMsg>(META_QUEUE_MAX);
        let producer_ids = ProducerIds::open(&config.log_dir.join(crate::meta::META_DIR))?;
        let (cluster, mut replica_sockets) = if config.cluster.is_cluster() {
            let (node, sockets) =
                crate::cluster::start(&config, &node.cluster_id, addr, config.cores.len())?;
            (Some(node), sockets.into_iter().map(Some).collect())
        } else {
            (None, Vec::new())
        };
        let router = Arc::new(Router::new(
            config.clone(),
            meta,
            senders,
            meta_tx,
            addr,
            crate::router::Membership {
                cluster_id: node.cluster_id,
                node: cluster,
            },
            producer_ids,
        ));
        let metrics = match config.metrics_listener {
            Some(addr) => {
                let r = router.clone();
                let render = move || r.metrics.render(&r.queue_depths());
                let server = crate::metrics::MetricsServer::start(addr, render)
                    .map_err(|cause| StartError::Metrics { addr, cause })?;
                Some(server)
            }
            None => None,
        };
        let (stop, stop_rx) = watch::channel(false);
        let (ready_tx, ready_rx) = std_mpsc::channel::<Result<(), ShardStartError>>();
        let all_cores = core_affinity::get_core_ids().unwrap_or_default();
        let mut threads = Vec::new();
        let mut meta_rx = Some(meta_rx);
        for (i, (listener, rx)) in listeners.into_iter().zip(receivers).enumerate() {
            let cpu = config.cores[i];
            let core = all_cores.iter().find(|c| c.id == cpu).copied();
            let nice = config.shard_nice;
            let shard = ShardConfig {
                index: i,
                router: router.clone(),
                listener,
                rx,
                meta_rx: if i == 0 { meta_rx.take() } else { None },
                stop: stop_rx.clone(),
                ready: ready_tx.clone(),
                direct: direct_io(&config),
                recovery,
                replica_socket: replica_sockets.get_mut(i).and_then(Option::take),
            };
            let t = std::thread::Builder::new()
                .name(format!("tern-shard-{i}"))
                .spawn(move || {
                    if let Some(core) = core {
                        core_affinity::set_for_current(core);
                    }
                    // Before the ring exists, so that its kernel workers inherit it too.
                    if let Err(e) = set_nice(nice) {
                        let _ = shard.ready.send(Err(e));
                        return false;
                    }
                    match tern_engine::storage::uring::new_runtime() {
                        Ok(rt) => rt.block_on(run_shard(shard)),
                        Err(e) => {
                            let _ = shard.ready.send(Err(ShardStartError::Runtime(e)));
                            false
                        }
                    }
                })
                .map_err(|e| StartError::Shard {
                    shard: i,
                    source: Box::new(ShardStartError::Thread(e)),
                })?;
            threads.push(t);
        }
        drop(ready_tx);
        let broker = Broker {
            addr,
            stop,
            threads,
            router,
            metrics,
        };
        for i in 0..broker.threads.len() {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(source)) => {
                    broker.shutdown();
                    return Err(StartError::Shard {
                        shard: i,
                        source: Box::new(source),
                    });
                }
                Err(_) => {
                    broker.shutdown();
                    return Err(StartError::Shard {
                        shard: i,
                        source: Box::new(ShardStartError::Exited),
                    });
                }
            }
        }
        Ok(broker)
    }

    /// Where `/metrics` is served (the real port when port 0 was configured), if it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|m| m.local_addr())
    }

    /// The address the shards listen on (the real port when port 0 was configured).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.router.shard_count()
    }

    /// Stops accepting, finishes in-flight requests, closes every log, joins the threads.
    /// When every shard closed everything without error, the clean-shutdown marker lets the
    /// next start skip the crash-only recovery work.
    pub fn shutdown(self) {
        if let Some(node) = &self.router.cluster {
            // Leaderships move before the shards stop serving (Kafka's controlled shutdown).
            match node.controlled_shutdown(CONTROLLED_SHUTDOWN_TIMEOUT) {
                Ok(()) => tracing::info!("controlled shutdown: leaderships moved"),
                Err(e) => tracing::warn!(error = %e, "controlled shutdown not confirmed"),
            }
        }
        let _ = self.stop.send(true);
        if let Some(m) = self.metrics {
            m.stop();
        }
        let mut clean = !self.threads.is_empty();
        for t in self.threads {
            clean &= t.join().unwrap_or(false);
        }
        if clean {
            if let Err(e) = write_clean_shutdown_marker(&self.router.config.log_dir) {
                tracing::warn!(error = %e, "clean-shutdown marker not written");
            }
        }
    }
}

/// How long a stopping cluster node waits for the controller to move its leaderships.
const CONTROLLED_SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Written in `log.dirs` after a shutdown in which every log and journal closed without
/// error; removed (durably) at the next start before anything is opened for writing. Its
/// presence at start means nothing was written since every log's close synced it.
pub const CLEAN_SHUTDOWN_FILE: &str = ".tern-clean-shutdown";

fn write_clean_shutdown_marker(dir: &std::path::Path) -> io::Result<()> {
    let f = std::fs::File::create(dir.join(CLEAN_SHUTDOWN_FILE))?;
    f.sync_all()?;
    std::fs::File::open(dir)?.sync_all()
}

/// How the previous process stopped: [`Recovery::AfterCleanShutdown`] if it left the
/// marker, which is removed and the removal made durable here, so that a crash of this
/// process is never taken for a clean stop.
fn take_clean_shutdown_marker(dir: &std::path::Path) -> Result<Recovery, StartError> {
    let path = dir.join(CLEAN_SHUTDOWN_FILE);
    let err = |cause| StartError::DataDir {
        path: path.display().to_string(),
        cause,
    };
    match std::fs::remove_file(&path) {
        Ok(()) => {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(err)?;
            Ok(Recovery::AfterCleanShutdown)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Recovery::Full),
        Err(e) => Err(err(e)),
    }
}

/// Replays every shard journal under `<log.dirs>/journal` (whatever shard count wrote
/// them) into the partitions' segments, before any shard starts: a partition may then be
/// placed on any shard. After a clean shutdown the journals are empty and this reads only
/// their checkpoints.
fn replay_journals(config: &BrokerConfig, meta: &MetaStore) -> Result<(), StartError> {
    let root = crate::config_map::journal_root(config);
    let dirs: Vec<std::path::PathBuf> = match std::fs::read_dir(&root) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(cause) => {
            return Err(StartError::DataDir {
                path: root.display().to_string(),
                cause,
            })
        }
    };
    if dirs.is_empty() {
        return Ok(());
    }
    let snapshot = meta.snapshot();
    let resolve = |name: &str| {
        let (topic, partition) = name.rsplit_once('-')?;
        let partition: i32 = partition.parse().ok()?;
        let t = snapshot.topics.get(topic)?;
        if partition < 0 || partition >= t.partitions {
            return None;
        }
        let log = crate::config_map::log_config(config, &snapshot.dynamic, &t.overrides).ok()?;
        Some((config.log_dir.join(name), log))
    };
    let rt = tern_engine::storage::uring::new_runtime().map_err(StartError::ReplayRuntime)?;
    let storage = tern_engine::UringStorage::new(direct_io(config));
    rt.block_on(async {
        for dir in &dirs {
            let started = std::time::Instant::now();
            let stats = tern_engine::journal::recover(&storage, dir, resolve).await?;
            if stats.records > 0 {
                tracing::info!(journal = %dir.display(), records = stats.records,
                    journal_bytes = stats.journal_bytes,
                    batches = stats.batches_applied, bytes = stats.bytes_applied,
                    partitions = stats.partitions, ms = started.elapsed().as_millis() as u64,
                    "journal replayed");
            }
        }
        Ok(())
    })
}

fn direct_io(config: &BrokerConfig) -> DirectIo {
    match config.direct_io {
        tern_tuning::DirectIo::On => DirectIo::On,
        tern_tuning::DirectIo::Auto => DirectIo::Auto,
        tern_tuning::DirectIo::Off => DirectIo::Off,
    }
}

/// One listener per shard on the same address (SO_REUSEPORT); with port 0 the first one
/// picks the port and the others share it.
fn bind_all(addr: SocketAddr, n: usize) -> Result<Vec<std::net::TcpListener>, StartError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut out = Vec::new();
    let mut at = addr;
    for _ in 0..n.max(1) {
        let err = |cause| StartError::Listen { addr: at, cause };
        let sock =
            Socket::new(Domain::for_address(at), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
        sock.set_reuse_address(true).map_err(err)?;
        sock.set_reuse_port(true).map_err(err)?;
        sock.bind(&at.into()).map_err(err)?;
        sock.listen(1024).map_err(err)?;
        let l: std::net::TcpListener = sock.into();
        if at.port() == 0 {
            at = l.local_addr().map_err(err)?;
        }
        out.push(l);
    }
    Ok(out)
}

struct ShardConfig {
    index: usize,
    router: Arc<Router>,
    listener: std::net::TcpListener,
    rx: mpsc::Receiver<ShardMsg>,
    meta_rx: Option<mpsc::Receiver<MetaMsg>>,
    stop: watch::Receiver<bool>,
    ready: std_mpsc::Sender<Result<(), ShardStartError>>,
    direct: DirectIo,
    /// What the shard's logs may assume at open about how the broker last stopped.
    recovery: Recovery,
    /// In a cluster: the UDP socket of this shard's replica endpoint.
    replica_socket: Option<std::net::UdpSocket>,
}

/// Sets the calling thread's niceness (`shard.nice`); 0 leaves it as inherited.
fn set_nice(nice: i32) -> Result<(), ShardStartError> {
    if nice == 0 {
        return Ok(());
    }
    // SAFETY: plain syscalls on the calling thread; gettid cannot fail.
    let r = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, nice)
    };
    if r == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    let hint = if nice < 0 && e.raw_os_error() == Some(libc::EACCES) {
        " (below 0 needs root or CAP_SYS_NICE)"
    } else {
        ""
    };
    Err(ShardStartError::Nice {
        nice,
        cause: e,
        hint,
    })
}

/// Runs one shard until it stops; true if it closed everything cleanly.
async fn run_shard(cfg: ShardConfig) -> bool {
    let state = ShardState::new(cfg.index, cfg.router.clone(), cfg.direct, cfg.stop.clone());
    if let Err(e) = state.open_journal().await {
        let _ = cfg.ready.send(Err(e.into()));
        return false;
    }
    let opening = std::time::Instant::now();
    if let Err(e) = state.open_owned(cfg.recovery).await {
        let _ = cfg.ready.send(Err(e.into()));
        return false;
    }
    tracing::info!(
        shard = cfg.index,
        partitions = state.partition_count(),
        recovery = ?cfg.recovery,
        ms = opening.elapsed().as_millis() as u64,
        "partitions opened"
    );
    if let Err(e) = state.load_groups().await {
        let _ = cfg.ready.send(Err(e.into()));
        return false;
    }
    tokio_uring::spawn(state.clone().serve_queue(cfg.rx));
    let ticks = tokio_uring::spawn(state.clone().run_ticks());
    if let (Some(node), Some(socket)) = (&state.router.cluster, cfg.replica_socket) {
        match node.shard_endpoints().bind(socket) {
            Ok((endpoint, streams)) => {
                if let Ok(addr) = endpoint.local_addr() {
                    tracing::info!(shard = cfg.index, %addr, "replica endpoint bound");
                }
                tokio_uring::spawn(crate::replicate::serve_streams(state.clone(), streams));
                *state.replication.endpoint.borrow_mut() = Some(endpoint);
            }
            Err(e) => {
                let _ = cfg.ready.send(Err(ShardStartError::ReplicaEndpoint(e)));
                return false;
            }
        }
    }
    if let Some(node) = &state.router.cluster {
        tokio_uring::spawn(crate::replicate::follow_views(
            state.clone(),
            node.subscribe(),
        ));
    }
    if let Some(meta_rx) = cfg.meta_rx {
        tokio_uring::spawn(admin::run_writer(state.clone(), meta_rx));
        if let Some(node) = &state.router.cluster {
            tokio_uring::spawn(crate::cluster::run_mirror(state.clone(), node.subscribe()));
            if let Some(streams) = node.take_replica_streams() {
                tokio_uring::spawn(crate::replicate::route_streams(state.clone(), streams));
            }
        }
    }
    let listener = tokio_uring::net::TcpListener::from_std(cfg.listener);
    let _ = cfg.ready.send(Ok(()));
    let active = Rc::new(std::cell::Cell::new(0usize));
    let idle = Rc::new(tokio::sync::Notify::new());
    let mut stop = cfg.stop.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let state = state.clone();
                    let stop = cfg.stop.clone();
                    let (active, idle) = (active.clone(), idle.clone());
                    active.set(active.get() + 1);
                    tokio_uring::spawn(async move {
                        if let Err(e) = crate::conn::serve(state, stream, peer, stop).await {
                            tracing::debug!(error = %e, "connection closed");
                        }
                        active.set(active.get() - 1);
                        idle.notify_waiters();
                    });
                }
                Err(e) => tracing::warn!(error = %e, "accept failed"),
            },
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    drop(listener);
    while active.get() > 0 {
        let n = idle.notified();
        if active.get() == 0 {
            break;
        }
        n.await;
    }
    ticks.abort();
    state.close_all().await
}
