//! `tern cluster status`: the cluster as a client sees it (DescribeCluster, DescribeQuorum,
//! each broker's DescribeConfigs for its epoch, Metadata).

use anyhow::Context;
use clap::Args;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
use kafka_protocol::messages::{
    ApiKey, DescribeClusterRequest, DescribeClusterResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, DescribeQuorumRequest, DescribeQuorumResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::cli::kafka::{BootstrapArgs, Cluster};

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    bootstrap: BootstrapArgs,
}

/// Prints the cluster id, the controller quorum (voters, leader, term, how far each voter
/// has the log), every broker (fenced ones too) with its broker epoch, and the partitions
/// without a leader.
pub fn status(args: StatusArgs) -> anyhow::Result<()> {
    let mut cluster = Cluster::connect(&args.bootstrap)?;
    let m = cluster.metadata(None, false)?;
    let client = cluster.bootstrap();
    let v = client
        .version(ApiKey::DescribeCluster, 0, 2)
        .context("DescribeCluster")?;
    let req = DescribeClusterRequest::default()
        .with_endpoint_type(1)
        .with_include_fenced_brokers(v >= 2);
    let resp: DescribeClusterResponse = client
        .request(ApiKey::DescribeCluster, v, &req)
        .context("DescribeCluster")?;
    if resp.error_code != 0 {
        anyhow::bail!(
            "DescribeCluster: error {}: {}",
            resp.error_code,
            resp.error_message.as_deref().unwrap_or("")
        );
    }
    println!("cluster id   {}", resp.cluster_id.as_str());
    println!("controller   {}", resp.controller_id.0);
    print_quorum(cluster.bootstrap());
    println!("brokers      {}", resp.brokers.len());
    for b in &resp.brokers {
        let rack = b
            .rack
            .as_deref()
            .map(|r| format!(" rack {r}"))
            .unwrap_or_default();
        let state = if b.is_fenced { "fenced" } else { "live" };
        let epoch = if b.is_fenced {
            String::new()
        } else {
            match broker_epoch(&mut cluster, b.broker_id.0) {
                Ok(Some(e)) => format!("  epoch {e}"),
                Ok(None) => "  epoch -".to_string(),
                Err(e) => format!("  epoch unknown ({e:#})"),
            }
        };
        println!(
            "  {:>4}  {}:{}  {state}{epoch}{rack}",
            b.broker_id.0,
            b.host.as_str(),
            b.port
        );
    }
    let mut leaderless = Vec::new();
    for t in &m.topics {
        let name = t.name.as_ref().map(|n| n.to_string()).unwrap_or_default();
        for p in &t.partitions {
            if p.leader_id.0 < 0 {
                leaderless.push(format!("{name}/{}", p.partition_index));
            }
        }
    }
    if leaderless.is_empty() {
        println!("partitions without a leader: none");
    } else {
        println!(
            "partitions without a leader: {} ({})",
            leaderless.len(),
            leaderless.join(", ")
        );
    }
    Ok(())
}

/// Prints the controller quorum from DescribeQuorum, or why it is not available (a single
/// node has none).
fn print_quorum(client: &mut tern_net::client::Client) {
    let described = (|| -> anyhow::Result<DescribeQuorumResponse> {
        let v = client.version(ApiKey::DescribeQuorum, 0, 2)?;
        let req = DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
            .with_topic_name(TopicName(StrBytes::from_static_str("__cluster_metadata")))
            .with_partitions(vec![PartitionData::default().with_partition_index(0)])]);
        let resp: DescribeQuorumResponse = client.request(ApiKey::DescribeQuorum, v, &req)?;
        if resp.error_code != 0 {
            anyhow::bail!(
                "error {}{}",
                resp.error_code,
                resp.error_message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            );
        }
        Ok(resp)
    })();
    let resp = match described {
        Ok(r) => r,
        Err(e) => {
            println!("quorum       not available ({e:#})");
            return;
        }
    };
    for t in &resp.topics {
        for p in &t.partitions {
            println!(
                "quorum       leader {}  term {}  committed index {}",
                p.leader_id.0, p.leader_epoch, p.high_watermark
            );
            for voter in &p.current_voters {
                let lag = (p.high_watermark - voter.log_end_offset).max(0);
                println!(
                    "  voter {:>4}  log end {}  lag {lag}",
                    voter.replica_id.0, voter.log_end_offset
                );
            }
        }
    }
}

/// The broker epoch `broker` reports for itself (`tern.broker.epoch`), `None` before it
/// registered.
fn broker_epoch(cluster: &mut Cluster, broker: i32) -> anyhow::Result<Option<i64>> {
    const EPOCH: &str = "tern.broker.epoch";
    let client = cluster.broker(broker)?;
    let v = client.version(ApiKey::DescribeConfigs, 1, 4)?;
    let req =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(4)
            .with_resource_name(StrBytes::from_string(broker.to_string()))
            .with_configuration_keys(Some(vec![StrBytes::from_static_str(EPOCH)]))]);
    let resp: DescribeConfigsResponse = client.request(ApiKey::DescribeConfigs, v, &req)?;
    let epoch = resp
        .results
        .iter()
        .flat_map(|r| &r.configs)
        .find(|c| c.name.as_str() == EPOCH)
        .and_then(|c| c.value.as_deref()?.parse().ok());
    Ok(epoch)
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Nodes to start (each a controller voter and a broker).
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(i32).range(1..=9))]
    nodes: i32,
    /// Directory for certificates, configurations, data and logs (kept across runs: a
    /// second run restarts the same cluster).
    #[arg(long, value_name = "DIR")]
    dir: std::path::PathBuf,
    /// Client port of node 1; node N listens on this + N - 1.
    #[arg(long, value_name = "PORT", default_value_t = 19092)]
    kafka_port: u16,
    /// CONTROLLER (QUIC) port of node 1; node N on this + N - 1.
    #[arg(long, value_name = "PORT", default_value_t = 19192)]
    controller_port: u16,
    /// Shards per node, each pinned to its own CPU, the nodes' shards dealt out over the
    /// CPUs in turn (node 1 from CPU 0, node 2 from the next, …). Without it every node
    /// runs a shard on every CPU. On a machine with fewer cores than nodes × shards, fewer
    /// shards cost less CPU (`--shards-per-node 1` for three nodes on two cores).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    shards_per_node: Option<u32>,
}

/// The `cores` line of node `index` (0-based) for `shards` shards per node over `cpus`.
fn dev_cores(index: usize, shards: Option<u32>, cpus: &[usize]) -> String {
    match shards {
        None => String::new(),
        Some(n) => {
            let n = n as usize;
            let list: Vec<String> = (0..n)
                .map(|k| cpus[(index * n + k) % cpus.len()].to_string())
                .collect();
            format!("cores = [{}]\n", list.join(", "))
        }
    }
}

/// `tern cluster dev`: a local cluster of `tern serve` processes on 127.0.0.1 until SIGINT
/// or SIGTERM, then each node stops (controlled shutdown first).
pub fn dev(args: DevArgs) -> anyhow::Result<()> {
    use std::io::BufRead;
    let signals = crate::cli::serve::block_stop_signals()?;
    let dir = &args.dir;
    let certs = dir.join("certs");
    let ids: Vec<i32> = (1..=args.nodes).collect();
    let port = |base: u16, id: i32| -> anyhow::Result<u16> {
        base.checked_add(u16::try_from(id - 1)?)
            .context("port out of range")
    };
    if !certs.join("ca.crt").exists() {
        std::fs::create_dir_all(&certs).with_context(|| certs.display().to_string())?;
        let dev = tern_replication::tls::dev_certificates(&ids)?;
        std::fs::write(certs.join("ca.crt"), &dev.ca_cert_pem)?;
        for (id, cert, key) in &dev.nodes {
            std::fs::write(certs.join(format!("node-{id}.crt")), cert)?;
            std::fs::write(certs.join(format!("node-{id}.key")), key)?;
        }
    }
    let id_file = dir.join("cluster.id");
    let cluster_id = match std::fs::read_to_string(&id_file) {
        Ok(id) => id.trim().to_owned(),
        Err(_) => {
            let id = tern_net::node_meta::new_cluster_id();
            std::fs::write(&id_file, &id).with_context(|| id_file.display().to_string())?;
            id
        }
    };
    let voters = ids
        .iter()
        .map(|id| {
            Ok(format!(
                "{id}@127.0.0.1:{}",
                port(args.controller_port, *id)?
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?
        .join(",");
    let exe = std::env::current_exe().context("the tern executable")?;
    let cpus: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    if args.shards_per_node.is_some() && cpus.is_empty() {
        anyhow::bail!("--shards-per-node: this process may run on no CPU it can name");
    }
    let mut children = Vec::new();
    for (index, id) in ids.iter().enumerate() {
        let node_dir = dir.join(format!("node-{id}"));
        std::fs::create_dir_all(&node_dir).with_context(|| node_dir.display().to_string())?;
        let config = format!(
            "node.id = {id}\ncluster.id = \"{cluster_id}\"\n\
             listeners = \"PLAINTEXT://127.0.0.1:{},CONTROLLER://127.0.0.1:{}\"\n\
             log.dirs = \"{}\"\ncontroller.quorum.voters = \"{voters}\"\n\
             quic.tls.cert = \"{}\"\nquic.tls.key = \"{}\"\nquic.tls.ca = \"{}\"\n{}",
            port(args.kafka_port, *id)?,
            port(args.controller_port, *id)?,
            node_dir.join("data").display(),
            certs.join(format!("node-{id}.crt")).display(),
            certs.join(format!("node-{id}.key")).display(),
            certs.join("ca.crt").display(),
            dev_cores(index, args.shards_per_node, &cpus),
        );
        let config_path = node_dir.join("tern.toml");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(node_dir.join("serve.log"))?;
        let mut child = std::process::Command::new(&exe)
            .args(["serve", "--config"])
            .arg(&config_path)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(log)
            .spawn()
            .context("starting tern serve")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        if !line.starts_with("listening on") {
            let _ = child.kill();
            anyhow::bail!(
                "node {id} did not start; see {}",
                node_dir.join("serve.log").display()
            );
        }
        println!(
            "node {id}: {} (pid {}, log {})",
            line.trim(),
            child.id(),
            node_dir.join("serve.log").display()
        );
        children.push(child);
    }
    let bootstrap = ids
        .iter()
        .map(|id| Ok(format!("127.0.0.1:{}", port(args.kafka_port, *id)?)))
        .collect::<anyhow::Result<Vec<_>>>()?
        .join(",");
    let pids = children
        .iter()
        .map(|c| c.id().to_string())
        .collect::<Vec<_>>()
        .join(",");
    println!(
        "cluster {cluster_id}: bootstrap.servers = {bootstrap}; node pids {pids} \
         (for `tern bench run --broker-pid`); Ctrl-C stops it"
    );
    let sig = crate::cli::serve::wait_for_signal(&signals);
    eprintln!("tern: signal {sig}: stopping the nodes");
    for c in &children {
        // SAFETY: kill(2) on our own children's pids.
        unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
    }
    for mut c in children {
        let _ = c.wait();
    }
    Ok(())
}
