//! CPU time of the benchmark thread, to tell "slow because busy" from "slow because waiting".
//!
//! Wall time alone cannot say why the engine is slower than the raw disk. The thread's CPU
//! time (user + system, from `getrusage(RUSAGE_THREAD)`) counts what the engine does on the
//! shard thread: validation and copies in user space, and in the kernel the page faults of
//! fresh buffers and the inline submission of O_DIRECT writes (page pinning, bio building).
//! Work done by io_uring's worker threads or by the device is not counted.

use std::time::Duration;

/// User + system CPU time consumed by the calling thread so far; zero if unavailable.
pub fn thread_cpu() -> Duration {
    let (user, system) = thread_cpu_split();
    user + system
}

/// User and system CPU time consumed by the calling thread so far; zeros if unavailable.
pub fn thread_cpu_split() -> (Duration, Duration) {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: ru is valid for writes of one rusage; RUSAGE_THREAD is a valid `who`.
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, ru.as_mut_ptr()) } != 0 {
        return (Duration::ZERO, Duration::ZERO);
    }
    // SAFETY: getrusage succeeded, so it filled ru.
    let ru = unsafe { ru.assume_init() };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    (tv(ru.ru_utime), tv(ru.ru_stime))
}

/// User and system CPU time consumed so far by process `pid` (all its threads), from
/// `/proc/<pid>/stat`.
pub fn process_cpu_split(pid: u32) -> std::io::Result<(Duration, Duration)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_proc_stat(&text, clock_ticks_per_s()).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("/proc/{pid}/stat: no utime/stime fields"),
        )
    })
}

fn clock_ticks_per_s() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// utime and stime (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name
/// (field 2) is in parentheses and may hold spaces and parentheses itself, so fields are
/// counted from the last `)`.
fn parse_proc_stat(text: &str, ticks_per_s: u64) -> Option<(Duration, Duration)> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // `rest` starts at field 3 (state): utime is the 12th field from there.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let d = |ticks: u64| Duration::from_nanos(ticks * 1_000_000_000 / ticks_per_s.max(1));
    Some((d(utime), d(stime)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_fields_are_counted_from_the_last_parenthesis() {
        let line = "4242 (tern (shard) 1) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    250 75 0 0 20 0 5 0 100 1000000 500 18446744073709551615";
        let (user, system) = parse_proc_stat(line, 100).unwrap();
        assert_eq!(user, Duration::from_millis(2500));
        assert_eq!(system, Duration::from_millis(750));
        assert!(parse_proc_stat("4242 (x) S 1 2", 100).is_none());
        assert!(parse_proc_stat("no parenthesis", 100).is_none());
    }

    #[test]
    fn this_process_has_a_cpu_time() {
        let (user, system) = process_cpu_split(std::process::id()).unwrap();
        assert!(user + system < Duration::from_secs(100_000));
        assert!(process_cpu_split(u32::MAX).is_err());
    }
}
