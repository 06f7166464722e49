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
