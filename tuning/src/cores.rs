//! Which CPUs this process may run on, and the Linux CPU-list notation (`0-3,6`).
//!
//! `cores = "all"` means the CPUs the process is allowed to run on, which under `taskset`,
//! cgroups cpusets or a container is fewer than the machine has, and not always `0..n`:
//! that is why `available_parallelism` (a count) is not enough and we read the affinity mask
//! the kernel publishes in `/proc/self/status` (`Cpus_allowed_list`).

/// The CPU ids this process may run on, ascending.
///
/// Reads `Cpus_allowed_list` from `/proc/self/status`; where that is missing or unreadable,
/// falls back to `0..available_parallelism()`, and to `[0]` if even that is unknown.
pub fn available_cores() -> Vec<usize> {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| cores_from_status(&status))
        .unwrap_or_else(|| {
            let n = std::thread::available_parallelism().map_or(1, |n| n.get());
            (0..n).collect()
        })
}

/// The `Cpus_allowed_list` of a `/proc/<pid>/status` text, if present and non-empty.
fn cores_from_status(status: &str) -> Option<Vec<usize>> {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?;
    parse_cpu_list(line.trim()).filter(|cores| !cores.is_empty())
}

/// The largest CPU id we accept; the kernel's CONFIG_NR_CPUS maximum is 8192.
pub(crate) const CPU_ID_MAX: usize = 8191;

/// Parses a Linux CPU list (`0-3,6,8-9`) into ascending, deduplicated ids; `None` if it is
/// not one. An empty string is an empty list.
pub fn parse_cpu_list(text: &str) -> Option<Vec<usize>> {
    let mut cores = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (
                a.trim().parse::<usize>().ok()?,
                b.trim().parse::<usize>().ok()?,
            ),
            None => {
                let id = part.parse::<usize>().ok()?;
                (id, id)
            }
        };
        if first > last || last > CPU_ID_MAX {
            return None;
        }
        cores.extend(first..=last);
    }
    cores.sort_unstable();
    cores.dedup();
    Some(cores)
}

/// Formats CPU ids in Linux CPU-list notation, runs of three or more as ranges: `0-3,6,8,9`.
pub fn format_cpu_list(cores: &[usize]) -> String {
    let mut sorted = cores.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1] == sorted[j] + 1 {
            j += 1;
        }
        match j - i {
            0 => parts.push(sorted[i].to_string()),
            1 => parts.extend([sorted[i].to_string(), sorted[j].to_string()]),
            _ => parts.push(format!("{}-{}", sorted[i], sorted[j])),
        }
        i = j + 1;
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the CPU-list notation both ways.
    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-3,6"), Some(vec![0, 1, 2, 3, 6]));
        assert_eq!(parse_cpu_list(" 5, 1-2 ,1"), Some(vec![1, 2, 5]));
        assert_eq!(parse_cpu_list(""), Some(vec![]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("a"), None);
        assert_eq!(parse_cpu_list("0-99999"), None);
        assert_eq!(format_cpu_list(&[6, 0, 1, 2, 3, 8, 9]), "0-3,6,8,9");
        assert_eq!(format_cpu_list(&[]), "");
    }

    /// Guards reading the affinity mask the kernel publishes.
    #[test]
    fn status_file() {
        let status = "Name:\ttern\nCpus_allowed:\tf\nCpus_allowed_list:\t0-1,4\nMems_allowed:\t1\n";
        assert_eq!(cores_from_status(status), Some(vec![0, 1, 4]));
        assert_eq!(cores_from_status("Name:\ttern\n"), None);
        let here = available_cores();
        assert!(!here.is_empty());
        assert!(here.windows(2).all(|w| w[0] < w[1]));
    }
}
