//! The `tern serve` processes under test: configuration, start (inside the node's network
//! namespace when there is one), SIGKILL, SIGSTOP/SIGCONT, restart on the same directory.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::error::ChaosError;
use crate::net::Net;

/// How long a node may take to print `listening on` (recovery on a loaded machine).
const START_DEADLINE: Duration = Duration::from_secs(60);
/// The client (Kafka) port of every node; nodes differ by address.
pub const KAFKA_PORT: u16 = 9092;
/// The CONTROLLER (QUIC) port of every node.
pub const CONTROLLER_PORT: u16 = 9093;

/// One node: its directory and, while it runs, its process.
#[derive(Debug)]
pub struct Node {
    pub id: u32,
    config: PathBuf,
    log: PathBuf,
    prefix: Vec<String>,
    exe: PathBuf,
    child: Option<Child>,
    paused: bool,
    pub starts: u32,
}

/// What every node's configuration needs to know.
#[derive(Debug)]
pub struct ClusterLayout<'a> {
    pub net: &'a Net,
    pub ids: &'a [u32],
    pub cluster_id: &'a str,
    pub certs: &'a Path,
    /// The CPUs to deal one shard per node over.
    pub cpus: &'a [usize],
}

impl Node {
    /// Writes node `id`'s configuration in `dir` (data in `data`) for `layout`.
    pub fn configure(
        id: u32,
        dir: &Path,
        data: &Path,
        layout: &ClusterLayout<'_>,
        exe: &Path,
    ) -> Result<Node, ChaosError> {
        std::fs::create_dir_all(dir).map_err(ChaosError::io(dir))?;
        let voters = layout
            .ids
            .iter()
            .map(|v| format!("{v}@{}:{CONTROLLER_PORT}", layout.net.ip(*v)))
            .collect::<Vec<_>>()
            .join(",");
        let ip = layout.net.ip(id);
        let cpu = layout
            .cpus
            .get((id as usize - 1) % layout.cpus.len().max(1))
            .copied()
            .unwrap_or(0);
        let config = format!(
            "node.id = {id}\ncluster.id = \"{}\"\n\
             listeners = \"PLAINTEXT://{ip}:{KAFKA_PORT},CONTROLLER://{ip}:{CONTROLLER_PORT}\"\n\
             log.dirs = \"{}\"\ncontroller.quorum.voters = \"{voters}\"\n\
             quic.tls.cert = \"{}\"\nquic.tls.key = \"{}\"\nquic.tls.ca = \"{}\"\n\
             cores = [{cpu}]\njournal.file.bytes = 8388608\n\
             broker.session.timeout.ms = 3000\nbroker.heartbeat.interval.ms = 500\n\
             replica.lag.time.max.ms = 3000\nmin.insync.replicas = 2\n\
             default.replication.factor = {}\n",
            layout.cluster_id,
            data.display(),
            layout.certs.join(format!("node-{id}.crt")).display(),
            layout.certs.join(format!("node-{id}.key")).display(),
            layout.certs.join("ca.crt").display(),
            layout.ids.len().min(3),
        );
        let path = dir.join("tern.toml");
        std::fs::write(&path, config).map_err(ChaosError::io(&path))?;
        Ok(Node {
            id,
            config: path,
            log: dir.join("serve.log"),
            prefix: layout.net.exec_prefix(id),
            exe: exe.to_path_buf(),
            child: None,
            paused: false,
            starts: 0,
        })
    }

    /// The broker's stderr (every start appends to it).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the process and waits until it listens.
    pub fn start(&mut self) -> Result<(), ChaosError> {
        if self.child.is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(ChaosError::io(&self.log))?;
        let mut cmd = match self.prefix.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&self.exe);
                c
            }
            None => Command::new(&self.exe),
        };
        // `ip netns exec` execs the program: the child's pid is the broker's.
        let mut child = cmd
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .env("TERN_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| self.failed(format!("cannot start: {e}")))?;
        self.starts += 1;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| self.failed("no stdout".into()))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("listening on") {
                    let _ = tx.send(());
                }
            }
        });
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(()) => break,
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                    if let Ok(Some(status)) = child.try_wait() {
                        return Err(self.failed(format!(
                            "exited with {status} before listening; see {}",
                            self.log.display()
                        )));
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(self.failed(format!(
                        "did not listen within {} s; see {}",
                        START_DEADLINE.as_secs(),
                        self.log.display()
                    )));
                }
            }
        }
        self.child = Some(child);
        self.paused = false;
        Ok(())
    }

    fn failed(&self, reason: String) -> ChaosError {
        ChaosError::Node {
            id: self.id,
            reason,
        }
    }

    fn signal(&self, sig: libc::c_int) -> Result<(), ChaosError> {
        let pid = self
            .pid()
            .ok_or_else(|| self.failed("not running".into()))?;
        // SAFETY: kill(2) on our own child's pid (not yet reaped).
        let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
        if rc != 0 {
            return Err(self.failed(format!("kill({sig}): {}", std::io::Error::last_os_error())));
        }
        Ok(())
    }

    /// SIGKILL and reap: a crash at an arbitrary instant.
    pub fn kill(&mut self) -> Result<(), ChaosError> {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            child
                .wait()
                .map_err(|e| self.failed(format!("wait: {e}")))?;
        }
        self.paused = false;
        Ok(())
    }

    /// SIGSTOP: the process keeps its sockets but runs no more (a long pause).
    pub fn pause(&mut self) -> Result<(), ChaosError> {
        self.signal(libc::SIGSTOP)?;
        self.paused = true;
        Ok(())
    }

    /// SIGCONT after [`Node::pause`].
    pub fn resume(&mut self) -> Result<(), ChaosError> {
        self.signal(libc::SIGCONT)?;
        self.paused = false;
        Ok(())
    }

    /// Whether the process has exited by itself (a crash the run did not cause).
    pub fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                Some(status.to_string())
            }
            _ => None,
        }
    }

    /// SIGTERM (SIGCONT first if paused) and wait up to `deadline`, then SIGKILL.
    pub fn stop(&mut self, deadline: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(pid, libc::SIGCONT);
            libc::kill(pid, libc::SIGTERM);
        }
        let end = Instant::now() + deadline;
        while Instant::now() < end {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(10));
    }
}
