//! The network the nodes run on, and the network faults.
//!
//! **Namespaces** (root only): a bridge `ternchaos0` in the caller's namespace with address
//! `10.231.0.254/24` (the clients' side), and per node `i` a network namespace
//! `tern-chaos-<i>` holding one end of a veth pair (`eth0`, `10.231.0.<i>/24`), the other end
//! (`tcv<i>`) on the bridge. Partitions are nftables drop rules in a table `inet tern_chaos`
//! inside the namespaces; bandwidth limits are `tc tbf`, delay and loss `tc netem` (where the
//! kernel has it), on both ends of a node's veth. Every
//! fault is healed by deleting what it added, and [`Net::teardown`] (also run before setup,
//! for the leftovers of a run that was killed) removes namespaces, links and rules.
//!
//! **Loopback** (no root): node `i` on `127.<a>.<b>.<i>`, with `a.b` drawn from the process
//! id so that concurrent runs (and brokers on `127.0.0.1`) never share an address; network
//! faults are not available.

use std::net::Ipv4Addr;
use std::process::Command;

use crate::error::ChaosError;

const BRIDGE: &str = "ternchaos0";
const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 254);
const TABLE: &str = "tern_chaos";

/// Where the nodes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetMode {
    Namespaces,
    Loopback,
}

/// A network fault, applied to and healed from the nodes' namespaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetFault {
    /// `node` reaches nobody and nobody reaches it (clients included).
    Isolate { node: u32 },
    /// Nodes of `a` and nodes of `b` cannot reach each other; clients reach all.
    Split { a: Vec<u32>, b: Vec<u32> },
    /// `to` drops every packet from `from` (the other direction works).
    OneWay { from: u32, to: u32 },
    /// `node`'s link carries at most `kbit` kilobits per second each way.
    Bandwidth { node: u32, kbit: u32 },
    /// `node`'s link delays packets by 50 ± 20 ms and drops 5% of them, each way.
    Delay { node: u32 },
}

/// The nodes' network.
#[derive(Debug)]
pub struct Net {
    mode: NetMode,
    nodes: Vec<u32>,
    /// The second and third bytes of the loopback addresses.
    loopback: [u8; 2],
}

/// Runs `program args`; its stdout, or the failure with its stderr.
pub(crate) fn command(program: &str, args: &[&str]) -> Result<String, ChaosError> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| ChaosError::Command {
            command: format!("{program} {}", args.join(" ")),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(ChaosError::Command {
            command: format!("{program} {}", args.join(" ")),
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run(program: &str, args: &[&str]) -> Result<String, ChaosError> {
    command(program, args)
}

/// Runs `program args` inside node `id`'s namespace.
fn run_in(id: u32, program: &str, args: &[&str]) -> Result<String, ChaosError> {
    let ns = namespace(id);
    let mut all = vec!["netns", "exec", ns.as_str(), program];
    all.extend_from_slice(args);
    run("ip", &all)
}

/// The name of node `id`'s network namespace.
pub fn namespace(id: u32) -> String {
    format!("tern-chaos-{id}")
}

/// Whether the kernel has `tc netem` (tried on the loopback device of a scratch namespace).
pub fn netem_available() -> bool {
    const PROBE: &str = "tern-chaos-probe";
    let _ = run("ip", &["netns", "del", PROBE]);
    if run("ip", &["netns", "add", PROBE]).is_err() {
        return false;
    }
    let ok = run(
        "ip",
        &[
            "netns", "exec", PROBE, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay",
            "1ms",
        ],
    )
    .is_ok();
    let _ = run("ip", &["netns", "del", PROBE]);
    ok
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

impl Net {
    /// Builds the network for nodes `nodes` (ids from 1, at most 250).
    pub fn setup(mode: NetMode, nodes: &[u32]) -> Result<Net, ChaosError> {
        assert!(nodes.iter().all(|id| (1..=250).contains(id)));
        let pid = std::process::id();
        let net = Net {
            mode,
            nodes: nodes.to_vec(),
            loopback: [100 + (pid % 100) as u8, (pid / 100 % 250) as u8 + 1],
        };
        if mode == NetMode::Loopback {
            return Ok(net);
        }
        if !is_root() {
            return Err(ChaosError::NotRoot);
        }
        for tool in ["ip", "nft", "tc"] {
            if Command::new(tool).arg("-V").output().is_err() {
                return Err(ChaosError::Command {
                    command: tool.into(),
                    detail: "not installed (apt-get install iproute2 nftables)".into(),
                });
            }
        }
        net.teardown();
        run("ip", &["link", "add", BRIDGE, "type", "bridge"])?;
        run(
            "ip",
            &["addr", "add", &format!("{HOST_IP}/24"), "dev", BRIDGE],
        )?;
        run("ip", &["link", "set", BRIDGE, "up"])?;
        for &id in nodes {
            let ns = namespace(id);
            let host_end = format!("tcv{id}");
            let node_end = format!("tcv{id}n");
            run("ip", &["netns", "add", &ns])?;
            run(
                "ip",
                &[
                    "link", "add", &host_end, "type", "veth", "peer", "name", &node_end,
                ],
            )?;
            run("ip", &["link", "set", &node_end, "netns", &ns])?;
            run_in(id, "ip", &["link", "set", &node_end, "name", "eth0"])?;
            run_in(
                id,
                "ip",
                &["addr", "add", &format!("{}/24", net.ip(id)), "dev", "eth0"],
            )?;
            run_in(id, "ip", &["link", "set", "eth0", "up"])?;
            run_in(id, "ip", &["link", "set", "lo", "up"])?;
            run("ip", &["link", "set", &host_end, "master", BRIDGE])?;
            run("ip", &["link", "set", &host_end, "up"])?;
        }
        Ok(net)
    }

    pub fn mode(&self) -> NetMode {
        self.mode
    }

    /// Node `id`'s address.
    pub fn ip(&self, id: u32) -> Ipv4Addr {
        debug_assert!(id <= 250);
        match self.mode {
            NetMode::Namespaces => Ipv4Addr::new(10, 231, 0, id as u8),
            NetMode::Loopback => Ipv4Addr::new(127, self.loopback[0], self.loopback[1], id as u8),
        }
    }

    /// The command prefix that runs a program in node `id`'s network (empty on loopback).
    pub fn exec_prefix(&self, id: u32) -> Vec<String> {
        match self.mode {
            NetMode::Namespaces => vec!["ip".into(), "netns".into(), "exec".into(), namespace(id)],
            NetMode::Loopback => Vec::new(),
        }
    }

    /// Whether network faults can be injected.
    pub fn faults_available(&self) -> bool {
        self.mode == NetMode::Namespaces
    }

    fn rules(&self, id: u32, rules: &[String]) -> Result<(), ChaosError> {
        // A table per namespace; created on first use, deleted on heal.
        let _ = run_in(id, "nft", &["delete", "table", "inet", TABLE]);
        let mut script = format!(
            "table inet {TABLE} {{\n chain input {{ type filter hook input priority 0; }}\n \
             chain output {{ type filter hook output priority 0; }}\n}}\n"
        );
        for r in rules {
            script.push_str(r);
            script.push('\n');
        }
        let file = std::env::temp_dir().join(format!("tern-chaos-nft-{}-{id}", std::process::id()));
        std::fs::write(&file, script).map_err(ChaosError::io(&file))?;
        let path = file.display().to_string();
        let result = run_in(id, "nft", &["-f", &path]);
        let _ = std::fs::remove_file(&file);
        result.map(|_| ())
    }

    fn drop_between(&self, peers: &[u32]) -> Vec<String> {
        peers
            .iter()
            .flat_map(|p| {
                let ip = self.ip(*p);
                [
                    format!("add rule inet {TABLE} input ip saddr {ip} drop"),
                    format!("add rule inet {TABLE} output ip daddr {ip} drop"),
                ]
            })
            .collect()
    }

    /// Applies `fault`.
    pub fn apply(&self, fault: &NetFault) -> Result<(), ChaosError> {
        if self.mode != NetMode::Namespaces {
            return Err(ChaosError::Options(
                "network faults need --net namespaces".into(),
            ));
        }
        match fault {
            NetFault::Isolate { node } => self.rules(
                *node,
                &[
                    format!("add rule inet {TABLE} input iifname \"eth0\" drop"),
                    format!("add rule inet {TABLE} output oifname \"eth0\" drop"),
                ],
            ),
            NetFault::Split { a, b } => {
                for id in a {
                    self.rules(*id, &self.drop_between(b))?;
                }
                for id in b {
                    self.rules(*id, &self.drop_between(a))?;
                }
                Ok(())
            }
            NetFault::OneWay { from, to } => self.rules(
                *to,
                &[format!(
                    "add rule inet {TABLE} input ip saddr {} drop",
                    self.ip(*from)
                )],
            ),
            NetFault::Bandwidth { node, kbit } => {
                let rate = format!("{kbit}kbit");
                self.qdisc(
                    *node,
                    &["tbf", "rate", &rate, "burst", "16kb", "latency", "200ms"],
                )
            }
            NetFault::Delay { node } => {
                self.qdisc(*node, &["netem", "delay", "50ms", "20ms", "loss", "5%"])
            }
        }
    }

    /// Sets the root queueing discipline `qdisc` on both ends of `node`'s veth (each
    /// direction).
    fn qdisc(&self, node: u32, qdisc: &[&str]) -> Result<(), ChaosError> {
        let host = format!("tcv{node}");
        let mut args = vec!["qdisc", "replace", "dev", host.as_str(), "root"];
        args.extend_from_slice(qdisc);
        run("tc", &args)?;
        let mut inner = vec!["qdisc", "replace", "dev", "eth0", "root"];
        inner.extend_from_slice(qdisc);
        run_in(node, "tc", &inner).map(|_| ())
    }

    /// Removes every network fault (rules and limits) from every node.
    pub fn heal_all(&self) -> Result<(), ChaosError> {
        if self.mode != NetMode::Namespaces {
            return Ok(());
        }
        let mut first_error = None;
        for &id in &self.nodes {
            // Absent tables and qdiscs are the normal case: only a failure to list counts.
            let _ = run_in(id, "nft", &["delete", "table", "inet", TABLE]);
            let _ = run_in(id, "tc", &["qdisc", "del", "dev", "eth0", "root"]);
            let _ = run("tc", &["qdisc", "del", "dev", &format!("tcv{id}"), "root"]);
            match run_in(id, "nft", &["list", "tables"]) {
                Ok(tables) if tables.contains(TABLE) => {
                    first_error.get_or_insert(ChaosError::Command {
                        command: format!("nft delete table inet {TABLE} (node {id})"),
                        detail: "the table is still there".into(),
                    });
                }
                Ok(_) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Removes the namespaces, links and rules of this or an earlier run (errors ignored:
    /// most of it is usually absent).
    pub fn teardown(&self) {
        if self.mode != NetMode::Namespaces {
            return;
        }
        let listed = run("ip", &["netns", "list"]).unwrap_or_default();
        for line in listed.lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if name.starts_with("tern-chaos-") {
                let _ = run("ip", &["netns", "del", name]);
            }
        }
        for &id in &self.nodes {
            let _ = run("ip", &["link", "del", &format!("tcv{id}")]);
        }
        let _ = run("ip", &["link", "del", BRIDGE]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.teardown();
    }
}
