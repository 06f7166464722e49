//! `tern chaos`: a local cluster under injected faults, with a checker that proves nothing
//! acknowledged was lost (see the `tern-chaos` crate).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use tern_chaos::history::FaultKind;
use tern_chaos::net::NetMode;

#[derive(Debug, Args)]
pub struct ChaosArgs {
    /// The CI mode: 3 nodes, 20 short faults (1–3 s each), seed 1 unless --seed is given;
    /// about three minutes.
    #[arg(long)]
    quick: bool,
    /// Faults to inject, one after another (each healed before the next).
    #[arg(long, value_name = "N", default_value_t = 20)]
    faults: usize,
    /// Seed of the fault schedule: the same seed injects the same faults.
    #[arg(long, value_name = "S", default_value_t = 1)]
    seed: u64,
    /// Nodes of the cluster under test (each a controller voter and a broker).
    #[arg(long, value_name = "N", default_value_t = 3)]
    nodes: u32,
    /// `namespaces`: each node in its own network namespace (needs root; every fault kind);
    /// `loopback`: nodes on 127.x.y.<id> (kills and pauses only, the rest reported as
    /// skipped).
    #[arg(long, value_name = "MODE", default_value = "namespaces", value_parser = parse_net)]
    net: NetMode,
    /// Only these fault kinds (comma-separated): kill-node, kill-leader, kill-controller,
    /// pause, isolate, split, one-way, bandwidth, disk-full, delay.
    #[arg(long, value_name = "KINDS", value_delimiter = ',', value_parser = parse_kind)]
    kinds: Option<Vec<FaultKind>>,
    /// Records per second of the idempotent acks=all producer (the acks=1 producer writes a
    /// quarter of it).
    #[arg(long, value_name = "N", default_value_t = 200)]
    rate: u32,
    /// Shortest and longest fault, in milliseconds (`MIN..MAX`).
    #[arg(long, value_name = "MIN..MAX", default_value = "2000..6000", value_parser = parse_range)]
    fault_ms: (u64, u64),
    /// After each heal, every partition must have a leader and a full ISR within this long.
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    heal_bound_ms: u64,
    /// Run directory (emptied first): configurations, data, broker logs and `report/`.
    #[arg(long, value_name = "DIR", default_value = "./tern-chaos")]
    dir: PathBuf,
}

fn parse_net(s: &str) -> Result<NetMode, String> {
    match s {
        "namespaces" | "netns" => Ok(NetMode::Namespaces),
        "loopback" => Ok(NetMode::Loopback),
        _ => Err(format!("{s:?}: expected namespaces or loopback")),
    }
}

fn parse_kind(s: &str) -> Result<FaultKind, String> {
    FaultKind::ALL
        .into_iter()
        .find(|k| k.name() == s)
        .ok_or_else(|| {
            let names: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
            format!("{s:?}: expected one of {}", names.join(", "))
        })
}

fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| format!("{s:?}: expected MIN..MAX in milliseconds"))?;
    let a: u64 = a.parse().map_err(|_| format!("{a:?}: not a number"))?;
    let b: u64 = b.parse().map_err(|_| format!("{b:?}: not a number"))?;
    if a == 0 || a > b {
        return Err(format!("{s}: need 0 < MIN ≤ MAX"));
    }
    Ok((a, b))
}

/// The error that ends `tern chaos` with an exit status of its own: 1 when the run found a
/// violation, 2 when the run cannot be made here (not root for namespaces).
#[derive(Debug)]
pub struct Status {
    pub code: u8,
    message: String,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Status {}

/// Runs the faults and the checker, prints the summary; an error when a violation was
/// found.
pub fn run(args: ChaosArgs) -> anyhow::Result<()> {
    let (faults, fault_ms, nodes) = if args.quick {
        (20, (1000, 3000), 3)
    } else {
        (args.faults, args.fault_ms, args.nodes)
    };
    // SIGINT/SIGTERM end the run cleanly (fault healed, nodes stopped, namespaces and
    // mounts removed) instead of leaving them behind.
    let signals = crate::cli::serve::block_stop_signals()?;
    let interrupt = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let interrupt = interrupt.clone();
        std::thread::spawn(move || {
            let sig = crate::cli::serve::wait_for_signal(&signals);
            eprintln!("tern chaos: signal {sig}: healing, stopping the nodes, cleaning up");
            interrupt.store(true, std::sync::atomic::Ordering::Release);
        });
    }
    let opts = tern_chaos::Options {
        dir: args.dir,
        exe: std::env::current_exe().context("the tern executable")?,
        nodes,
        net: args.net,
        faults,
        seed: args.seed,
        kinds: args.kinds,
        rate: args.rate,
        fault_min_ms: fault_ms.0,
        fault_max_ms: fault_ms.1,
        heal_bound_ms: args.heal_bound_ms,
        disk_bytes: 2 << 30,
        interrupt,
    };
    match tern_chaos::run(&opts) {
        Ok(outcome) => {
            print!("{}", tern_chaos::run::summary(&outcome));
            if outcome.ok() {
                Ok(())
            } else {
                Err(Status {
                    code: 1,
                    message: format!(
                        "chaos: the run found violations (listed above; report in {})",
                        outcome.report_dir.display()
                    ),
                }
                .into())
            }
        }
        Err(e @ tern_chaos::ChaosError::NotRoot) => Err(Status {
            code: 2,
            message: format!("chaos: {e}"),
        }
        .into()),
        Err(e) => Err(e).context("chaos"),
    }
}
