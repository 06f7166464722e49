//! A `tern serve` process for end-to-end tests: generated config, temp data dir, wait for
//! readiness, SIGTERM on drop, SIGKILL and restart for crash tests.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod cmd;

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a broker may take to print `listening on` (recovery, io_uring setup, a loaded
/// machine) or to exit after SIGTERM.
pub const START_DEADLINE: Duration = Duration::from_secs(60);
pub const STOP_DEADLINE: Duration = Duration::from_secs(60);

/// One broker process and its directory (config, data, stderr log).
#[derive(Debug)]
pub struct Broker {
    child: Option<Child>,
    /// The port it listens on (chosen on the first start, kept across restarts).
    pub port: u16,
    dir: tempfile::TempDir,
    extra: String,
    starts: usize,
    env: Vec<(String, String)>,
    /// The CONTROLLER listener (`host:port`) of a cluster node.
    controller: Option<String>,
}

impl Broker {
    /// Starts a broker with one shard on core 0 and `extra` TOML lines appended to the config
    /// (they may override nothing set here except by adding keys; `cores` defaults to `[0]`
    /// unless `extra` sets it).
    pub fn start(extra: &str) -> Broker {
        Self::start_with_env(extra, &[])
    }

    /// [`Broker::start`] with environment variables for the process (test-only faults).
    pub fn start_with_env(extra: &str, env: &[(&str, &str)]) -> Broker {
        Self::launch(extra, env, None)
    }

    /// Starts a cluster node: [`Broker::start`] with a CONTROLLER listener on `controller`
    /// (`127.0.0.1:PORT`) next to the client listener.
    pub fn start_node(extra: &str, controller: &str) -> Broker {
        Self::launch(extra, &[], Some(controller))
    }

    fn launch(extra: &str, env: &[(&str, &str)], controller: Option<&str>) -> Broker {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
        let mut broker = Broker {
            child: None,
            port: 0,
            dir,
            extra: extra.to_string(),
            starts: 0,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            controller: controller.map(str::to_string),
        };
        broker.spawn();
        broker
    }

    /// `127.0.0.1:PORT`, for `bootstrap.servers` and raw sockets.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("broker.log")
    }

    /// Everything the broker wrote on stderr, over every start.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn write_config(&self) -> PathBuf {
        let controller = match &self.controller {
            Some(c) => format!(",CONTROLLER://{c}"),
            None => String::new(),
        };
        let mut toml = format!(
            "listeners = \"127.0.0.1:{}{controller}\"\nlog.dirs = \"{}\"\n",
            self.port,
            self.data_dir().display()
        );
        // Dotted keys must come before any table in `extra` (e.g. `[pins]`).
        if !self.extra.contains("cores") {
            toml.push_str("cores = [0]\n");
        }
        // Small journal files: each broker start zeroes the first one of every shard.
        if !self.extra.contains("journal.file.bytes") {
            toml.push_str("journal.file.bytes = 8388608\n");
        }
        toml.push_str(&self.extra);
        toml.push('\n');
        let path = self.dir.path().join("tern.toml");
        std::fs::write(&path, toml).expect("write config");
        path
    }

    /// Starts the process and waits for `listening on 127.0.0.1:PORT`. The first start binds
    /// port 0 (no race for a free port) and keeps the port the broker reports.
    fn spawn(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        let config = self.write_config();
        self.starts += 1;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open broker log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
            .arg("serve")
            .arg("--config")
            .arg(&config)
            // Refused frames are logged at debug level: tests check that real clients
            // never trigger one.
            .env("TERN_LOG", "info,tern_net=debug,tern_replication=debug")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn tern serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Keeps draining stdout after the ready line so the broker never blocks on it.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let deadline = Instant::now() + START_DEADLINE;
        let addr = loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(addr) => break addr,
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                    if let Some(status) = child.try_wait().expect("try_wait") {
                        panic!(
                            "broker exited with {status} before listening:\n{}",
                            self.log()
                        );
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "broker did not print `listening on` in time:\n{}",
                        self.log()
                    );
                }
            }
        };
        let port: u16 = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("bad listening line: {addr}"));
        if self.port != 0 {
            assert_eq!(port, self.port, "restarted broker changed port");
        }
        self.port = port;
        self.child = Some(child);
    }

    /// Whether the process was started and not yet stopped or killed.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn pid(&self) -> libc::pid_t {
        self.child.as_ref().expect("broker not running").id() as libc::pid_t
    }

    /// Sends SIGTERM without waiting.
    pub fn sigterm(&self) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM) failed");
    }

    /// SIGSTOP: the process stops running (a long GC pause, a hung host) but keeps its
    /// sockets.
    pub fn pause(&self) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.pid(), libc::SIGSTOP) };
        assert_eq!(rc, 0, "kill(SIGSTOP) failed");
    }

    /// SIGCONT after [`Broker::pause`].
    pub fn resume(&self) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.pid(), libc::SIGCONT) };
        assert_eq!(rc, 0, "kill(SIGCONT) failed");
    }

    /// Waits for the process to exit (after a signal) and returns its status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("broker not running");
        let deadline = Instant::now() + STOP_DEADLINE;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("broker did not exit in time:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and wait: the graceful stop. Returns the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.sigterm();
        self.wait_exit()
    }

    /// SIGKILL and reap: a crash at an arbitrary instant.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("broker not running");
        child.kill().expect("SIGKILL");
        child.wait().expect("wait");
    }

    /// Replaces the extra TOML lines used from the next (re)start on.
    pub fn set_extra(&mut self, extra: &str) {
        self.extra = extra.to_string();
    }

    /// Starts the broker again on the same directory, config and port.
    pub fn restart(&mut self) {
        self.spawn();
    }

    /// Panics (with the broker's stderr) if the process has exited or no longer accepts
    /// connections.
    pub fn assert_alive(&mut self) {
        let refused = std::net::TcpStream::connect(self.addr()).err();
        let child = self.child.as_mut().expect("broker not running");
        let status = match refused {
            None => child.try_wait().expect("try_wait"),
            // Not listening: it is exiting; reap it to report how it ended.
            Some(_) => Some(self.wait_exit()),
        };
        if let Some(status) = status {
            self.child = None;
            panic!("the broker exited ({status}):\n{}", self.log());
        }
    }

    /// Asserts that the broker never closed a connection for a refused frame (unknown API,
    /// unsupported version, malformed body, oversized frame): what a real client sends must
    /// all be understood. The broker logs those closures at debug level.
    pub fn assert_no_refused_frames(&self) {
        let log = self.log();
        // Only refusals count: a client hanging up mid-response (an I/O error) is not one.
        const REFUSALS: [&str; 4] = [
            "frame of",
            "unknown API key",
            "is not supported",
            "malformed",
        ];
        let refused: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("connection closed") && REFUSALS.iter().any(|r| l.contains(r)))
            .collect();
        assert!(
            refused.is_empty(),
            "the broker refused client frames:\n{}",
            refused.join("\n")
        );
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + STOP_DEADLINE;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
