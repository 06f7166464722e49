//! What machine a result was measured on: a benchmark figure without its machine (cores,
//! CPU, kernel, filesystem and disk of the data directory) cannot be compared with anything
//! (a benchmark result states its machine: cores, disk, …).
//!
//! Everything is read from `/proc` and `/sys`; a field that cannot be read says "unknown"
//! instead of failing the benchmark.

use std::path::{Component, Path, PathBuf};

use serde::Serialize;

const UNKNOWN: &str = "unknown";

/// The machine and the data directory's filesystem.
#[derive(Debug, Clone, Serialize)]
pub struct MachineInfo {
    /// CPUs this process may run on.
    pub nproc: u64,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// `uname -r` (from /proc/sys/kernel/osrelease).
    pub kernel: String,
    pub mem_total_mib: u64,
    /// The benchmark's data directory, absolute.
    pub dir: String,
    /// Filesystem type of `dir` (from /proc/mounts: the longest mount point containing it).
    pub filesystem: String,
    pub mount_point: String,
    pub device: String,
    /// From /sys/block/<disk>/queue/rotational, when the device is a block device.
    pub rotational: Option<bool>,
    /// Load average over one minute when the run started (others share these machines).
    pub load_avg_1m_at_start: f64,
}

impl MachineInfo {
    /// Describes this machine and the filesystem holding `dir` (which must exist).
    pub fn probe(dir: &Path) -> MachineInfo {
        let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        let (device, mount_point, filesystem) = mount_of(&dir).unwrap_or_else(|| {
            (
                UNKNOWN.to_string(),
                UNKNOWN.to_string(),
                UNKNOWN.to_string(),
            )
        });
        MachineInfo {
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get() as u64),
            cpu_model: cpu_model().unwrap_or_else(|| UNKNOWN.to_string()),
            kernel: read_trimmed("/proc/sys/kernel/osrelease")
                .unwrap_or_else(|| UNKNOWN.to_string()),
            mem_total_mib: mem_total_mib().unwrap_or(0),
            dir: dir.display().to_string(),
            rotational: rotational(&device),
            filesystem,
            mount_point,
            device,
            load_avg_1m_at_start: read_trimmed("/proc/loadavg")
                .and_then(|l| l.split_whitespace().next()?.parse().ok())
                .unwrap_or(-1.0),
        }
    }
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim() == "model name")
        .map(|(_, v)| v.trim().to_string())
}

fn mem_total_mib() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// Undoes /proc/mounts' octal escapes (`\040` for a space, …).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b.get(i + 1..i + 4).and_then(|d| {
            let d = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(d, 8).ok()
        });
        match (b[i], oct) {
            (b'\\', Some(c)) => {
                out.push(c);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// (device, mount point, filesystem type) of the mount holding `dir`.
fn mount_of(dir: &Path) -> Option<(String, String, String)> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    let mut best: Option<(usize, (String, String, String))> = None;
    for line in mounts.lines() {
        let mut f = line.split_whitespace();
        let (Some(dev), Some(mp), Some(fs)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let mp = PathBuf::from(unescape(mp));
        if !dir.starts_with(&mp) {
            continue;
        }
        let depth = mp.components().filter(|c| *c != Component::RootDir).count();
        // Later lines with the same depth are mounted over earlier ones: `>=` keeps the last.
        if best.as_ref().is_none_or(|(d, _)| depth >= *d) {
            let entry = (unescape(dev), mp.display().to_string(), fs.to_string());
            best = Some((depth, entry));
        }
    }
    best.map(|(_, e)| e)
}

/// Whether the disk behind `/dev/<name>` (or its parent disk, for a partition) rotates.
fn rotational(device: &str) -> Option<bool> {
    let name = device.strip_prefix("/dev/")?;
    let sys = Path::new("/sys/class/block").join(name);
    let own = sys.join("queue/rotational");
    let parent = sys.join("../queue/rotational");
    let text = std::fs::read_to_string(own)
        .or_else(|_| std::fs::read_to_string(parent))
        .ok()?;
    Some(text.trim() == "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the /proc/mounts unescaping of mount points with spaces.
    #[test]
    fn unescapes_mount_points() {
        assert_eq!(unescape(r"/mnt/my\040disk"), "/mnt/my disk");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape(r"/odd\04"), r"/odd\04");
    }

    /// Guards that the root directory resolves to some mount.
    #[test]
    fn root_has_a_mount() {
        let info = MachineInfo::probe(Path::new("/"));
        assert_eq!(info.mount_point, "/");
        assert!(info.nproc >= 1);
    }
}
