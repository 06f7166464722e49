//! `tern`: the one binary of Tern. Subcommands are added by the issues that bring them
//! (`serve`, `topic`, `produce`, …); today it runs the engine benchmarks.
//!
//! Errors travel as `anyhow::Error` up to [`main`], which prints them as one readable line
//! (`tern: error: <context>: <cause>`) and exits with status 1.

mod cli;

/// Huge allocations are reserved lazily: see `tern_net::alloc`.
#[global_allocator]
static ALLOCATOR: tern_net::alloc::LazyHugeAlloc = tern_net::alloc::LazyHugeAlloc;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

/// Kafka-API-compatible event-streaming broker, thread-per-core, io_uring.
#[derive(Debug, Parser)]
#[command(name = "tern", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker (the default when no subcommand is given).
    Serve(cli::serve::ServeArgs),
    /// Create, list, describe, grow and delete topics (on any Kafka-compatible broker).
    Topic(cli::topic::TopicArgs),
    /// Write lines from stdin to a topic as records (key<SEP>value or value).
    Produce(cli::produce::ProduceArgs),
    /// Print a topic's records.
    Consume(cli::consume::ConsumeArgs),
    /// List, describe (with consumer lag) and delete consumer groups; reset their offsets.
    Group(cli::group::GroupArgs),
    /// Run benchmarks; every figure is reported next to a baseline measured in the same run.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Certificates for the QUIC transport between nodes.
    #[command(subcommand)]
    Cert(CertCommand),
    /// The cluster: brokers, controller, partitions without a leader.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// A local cluster under injected faults (kills, pauses, network partitions, bandwidth
    /// limits, a full disk) with recording clients and a checker: exit 0 when nothing
    /// acknowledged was lost, duplicated or reordered, 1 when something was, 2 when the run
    /// cannot be made here.
    Chaos(cli::chaos::ChaosArgs),
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// The cluster id, the controller, every broker (live or fenced) and the partitions
    /// without a leader, from any broker.
    Status(cli::cluster::StatusArgs),
    /// A local cluster of N `tern serve` processes on 127.0.0.1 (certificates, configs and
    /// data in DIR) until Ctrl-C.
    Dev(cli::cluster::DevArgs),
}

#[derive(Debug, Subcommand)]
enum CertCommand {
    /// A new CA and one certificate per node (names tern-node-<id>), for trying a cluster
    /// out; use your own CA in production.
    Dev(cli::cert::CertDevArgs),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Partition log on this machine's disk: append throughput, durable append latency,
    /// group commit and recovery, each against raw io_uring O_DIRECT IO.
    Engine(EngineArgs),
    /// One workload file against a Kafka-compatible broker: publish and end-to-end latency,
    /// throughput, optionally with the raw disk baseline or a second broker.
    Run(cli::bench::RunArgs),
    /// The standard workloads against local `tern serve` processes started for them, with
    /// the disk baseline; writes a report directory.
    Suite(cli::bench::SuiteArgs),
    /// Two JSON reports side by side, with ratios.
    Compare(cli::bench::CompareArgs),
    /// The disk's group-commit floor: the publish latency of an ideal broker (records
    /// arriving at a fixed rate, one durable O_DIRECT write in flight per partition file, no
    /// network, no broker code).
    Floor(cli::bench::FloorArgs),
    /// A Kafka-protocol server that stores nothing and acknowledges at once: the floor of
    /// client + harness latency (runs until SIGINT or SIGTERM).
    NullBroker(cli::bench::NullBrokerArgs),
    /// The node-to-node QUIC transport against plain TCP on loopback, in one run:
    /// throughput and CPU per GB.
    Transport(cli::bench::TransportArgs),
}

#[derive(Debug, Args)]
struct EngineArgs {
    /// Data directory on the disk to measure; removed after the run (if it already
    /// exists, a tern-bench-<pid> directory is made inside it and removed instead).
    #[arg(long, value_name = "DIR", default_value = "./tern-bench-data")]
    dir: PathBuf,
    /// Also write the report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Smaller sizes and shorter runs (128 MiB, 1000 durable appends, 2 s group commit).
    #[arg(long)]
    quick: bool,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the context chain on one line: "a: b: c".
            eprintln!("tern: error: {e:#}");
            // A tool with statuses of its own (`tern chaos`) says which one.
            match e.downcast_ref::<cli::chaos::Status>() {
                Some(s) => ExitCode::from(s.code),
                None => ExitCode::from(1),
            }
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let serve_defaults = cli::serve::ServeArgs {
        config: None,
        print_config: false,
    };
    let command = cli.command.unwrap_or(Command::Serve(serve_defaults));
    if matches!(
        command,
        Command::Topic(_)
            | Command::Consume(_)
            | Command::Group(_)
            | Command::Cluster(ClusterCommand::Status(_))
            | Command::Bench(BenchCommand::Compare(_))
    ) {
        // Tools whose output goes to a pipe (`tern consume … | head`) end quietly when the
        // reader goes, as Unix tools do, instead of failing on the write.
        // SAFETY: resets one signal's disposition before any thread is started.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match command {
        Command::Serve(args) => cli::serve::run(&args),
        Command::Topic(args) => cli::topic::run(args),
        Command::Produce(args) => cli::produce::run(args),
        Command::Consume(args) => cli::consume::run(args),
        Command::Group(args) => cli::group::run(args),
        Command::Bench(BenchCommand::Engine(args)) => bench_engine(args),
        Command::Bench(BenchCommand::Run(args)) => cli::bench::run(args),
        Command::Bench(BenchCommand::Suite(args)) => cli::bench::suite(args),
        Command::Bench(BenchCommand::Compare(args)) => cli::bench::compare(args),
        Command::Bench(BenchCommand::Floor(args)) => cli::bench::floor(args),
        Command::Bench(BenchCommand::NullBroker(args)) => cli::bench::null_broker(args),
        Command::Bench(BenchCommand::Transport(args)) => cli::bench::transport(args),
        Command::Cert(CertCommand::Dev(args)) => cli::cert::dev(args),
        Command::Cluster(ClusterCommand::Status(args)) => cli::cluster::status(args),
        Command::Cluster(ClusterCommand::Dev(args)) => cli::cluster::dev(args),
        Command::Chaos(args) => cli::chaos::run(args),
    }
}

fn bench_engine(args: EngineArgs) -> anyhow::Result<()> {
    cli::bench::check_output("--json", args.json.as_deref())?;
    let opts = tern_bench::EngineOptions {
        dir: args.dir,
        quick: args.quick,
    };
    let report = tern_bench::run_engine(&opts).context("bench engine")?;
    println!("{report}");
    if let Some(path) = args.json {
        report.write_json(&path)?;
        eprintln!("report written to {}", path.display());
    }
    Ok(())
}
