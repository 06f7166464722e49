//! `tern serve`: run the broker until SIGTERM or SIGINT.

use std::path::PathBuf;

use anyhow::Context;
use tern_net::Broker;
use tern_tuning::BrokerConfig;

/// Options of `tern serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file (Kafka key names: node.id, listeners, log.dirs, ...).
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Print the effective configuration and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// Runs the broker in the foreground.
pub fn run(args: &ServeArgs) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(path) => BrokerConfig::from_file(path)?,
        None => BrokerConfig::default(),
    };
    if args.print_config {
        print!("{}", config.to_toml_string());
        return Ok(());
    }
    init_logging();
    let signals = block_stop_signals()?;
    let data = config.log_dir.display().to_string();
    let cores = config.cores.clone();
    let broker = Broker::start(config).context("cannot start")?;
    eprintln!(
        "tern: serving the Kafka protocol on {} with {} shards on cores {:?}; data in {}",
        broker.local_addr(),
        broker.shard_count(),
        cores,
        data
    );
    println!("listening on {}", broker.local_addr());
    if let Some(m) = broker.metrics_addr() {
        println!("metrics on http://{m}/metrics");
    }
    let sig = wait_for_signal(&signals);
    eprintln!("tern: signal {sig}: finishing in-flight requests, flushing, closing");
    broker.shutdown();
    eprintln!("tern: stopped");
    Ok(())
}

/// Logs to stderr, filtered by `TERN_LOG` (tracing's filter syntax; default `info`).
pub(crate) fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TERN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Blocks SIGINT and SIGTERM in this thread (and in every thread started after), so that
/// they are only received by [`wait_for_signal`].
pub(crate) fn block_stop_signals() -> anyhow::Result<libc::sigset_t> {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        anyhow::ensure!(rc == 0, "cannot block signals: error {rc}");
        Ok(set)
    }
}

/// Waits for one of the signals `set` blocked.
pub(crate) fn wait_for_signal(set: &libc::sigset_t) -> i32 {
    let mut sig: libc::c_int = 0;
    loop {
        // SAFETY: set was initialised by block_stop_signals; sig is a valid out pointer.
        let rc = unsafe { libc::sigwait(set, &mut sig) };
        if rc == 0 {
            return sig;
        }
    }
}
