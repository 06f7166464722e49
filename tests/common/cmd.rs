//! Running `tern` client commands in end-to-end tests: stdin fed, stdout collected, stderr
//! streamed line by line (so a test can wait for a line), every wait bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::Broker;

/// How long one command may run (a consume waits for records that must come).
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(60);

/// A running `tern` command: stdout collected, stderr lines streamed.
pub struct Running {
    child: Child,
    stdout: JoinHandle<Vec<u8>>,
    stderr: mpsc::Receiver<String>,
    stderr_seen: Vec<String>,
    what: String,
}

/// What a finished command left.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Asserts success and returns stdout.
    pub fn ok(self) -> String {
        assert!(
            self.status.success(),
            "command failed ({}):\n{}",
            self.status,
            self.stderr
        );
        self.stdout
    }

    /// Asserts exit code 1 with exactly one line on stderr, `tern: error: …`, and returns it.
    pub fn one_line_error(self) -> String {
        assert_eq!(
            self.status.code(),
            Some(1),
            "expected exit code 1; stdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "expected one stderr line, got:\n{}",
            self.stderr
        );
        assert!(lines[0].starts_with("tern: error: "), "{}", lines[0]);
        lines[0].to_string()
    }
}

pub fn spawn(args: &[&str], stdin: &[u8]) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tern");
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    thread::spawn(move || {
        // A command that fails early closes its stdin: a write error is expected then.
        let _ = input.write_all(&data);
    });
    let mut out = child.stdout.take().unwrap();
    let stdout = thread::spawn(move || {
        let mut buf = Vec::new();
        out.read_to_end(&mut buf).unwrap();
        buf
    });
    let err = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Running {
        child,
        stdout,
        stderr: rx,
        stderr_seen: Vec::new(),
        what: args.join(" "),
    }
}

impl Running {
    /// Waits (bounded) for a stderr line starting with `prefix`.
    pub fn wait_stderr(&mut self, prefix: &str) {
        let deadline = Instant::now() + COMMAND_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    let found = line.starts_with(prefix);
                    self.stderr_seen.push(line);
                    if found {
                        return;
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    panic!(
                        "`tern {}` printed no {prefix:?} line:\n{}",
                        self.what,
                        self.stderr_seen.join("\n")
                    );
                }
            }
        }
    }

    /// Waits (bounded) for the command to exit.
    pub fn finish(mut self) -> Output {
        let deadline = Instant::now() + COMMAND_DEADLINE;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("`tern {}` did not finish in time", self.what);
            }
            thread::sleep(Duration::from_millis(10));
        };
        let stdout = String::from_utf8(self.stdout.join().unwrap()).unwrap();
        // The reader thread ends at EOF, which follows the exit.
        self.stderr_seen.extend(self.stderr.iter());
        Output {
            status,
            stdout,
            stderr: self.stderr_seen.join("\n"),
        }
    }
}

/// Runs `tern ARGS -b ADDR` with `stdin` and waits for it.
pub fn tern(broker: &Broker, args: &[&str], stdin: &str) -> Output {
    let addr = broker.addr();
    let mut all = args.to_vec();
    all.extend(["-b", &addr]);
    spawn(&all, stdin.as_bytes()).finish()
}

impl From<std::process::Output> for Output {
    fn from(out: std::process::Output) -> Output {
        Output {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}
