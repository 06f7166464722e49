//! An in-memory disk that fails on purpose, for crash and fault tests.
//!
//! Every file keeps a durable image plus the list of operations since (writes and size
//! changes), each marked durable or not. Reads see everything. [`MemStorage::crash_image`]
//! builds the disk as a crash at this instant could leave it: the durable image, every
//! durable operation, and a random subset of the others, each possibly torn at 512-byte
//! sector granularity, applied in order. Directory entries behave the same way: a created,
//! removed or renamed file is certain to survive only after `sync_dir`.
//!
//! Faults ([`Faults`]): fail the Nth write or the Nth sync with EIO, answer every write with
//! ENOSPC while the disk is "full", and freeze durability after the Nth sync (later syncs
//! return `Ok` but make nothing durable: the crash image is then the state at the Nth sync,
//! redb's technique). A frozen disk's crash image holds nothing issued after the freeze:
//! the crash happened there, so later operations never reached the disk.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, RwLock};

use bytes::Bytes;

use super::{FileMode, SegmentHandle, Storage, StorageFile};
use crate::buf::{AlignedBuf, BLOCK_BYTES};

const SECTOR_BYTES: usize = 512;

/// Faults to inject. Counters are 1-based and count every call since the storage was made.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Fail this write (`write_at` or `write_bytes_at`) with EIO.
    pub fail_write_nth: Option<u64>,
    /// Fail this sync (`sync_data`, a dsync write, or `sync_dir`) with EIO.
    pub fail_sync_nth: Option<u64>,
    /// While true, every write fails with ENOSPC and changes nothing.
    pub disk_full: bool,
    /// While true, a write or reservation that would grow a file fails with ENOSPC, while
    /// overwrites of bytes the file already has succeed (a real full filesystem: blocks
    /// already written need no new space).
    pub disk_full_growing: bool,
    /// After this many successful syncs, syncs make nothing durable.
    pub freeze_after_syncs: Option<u64>,
}

#[derive(Debug, Clone)]
enum Op {
    Write { pos: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug)]
struct FileState {
    durable_base: Vec<u8>,
    /// Operations since the durable base: (op, durable, sequence number).
    ops: Vec<(Op, bool, u64)>,
    current: Arc<RwLock<Vec<u8>>>,
}

#[derive(Debug, Default)]
struct State {
    files: BTreeMap<u64, FileState>,
    next_file_id: u64,
    entries: BTreeMap<PathBuf, u64>,
    durable_entries: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    faults: Faults,
    writes: u64,
    syncs: u64,
    durable_syncs: u64,
    now_ms: i64,
    op_seq: u64,
    /// Set when durability froze: operations from this sequence number on are lost.
    freeze_seq: Option<u64>,
    entries_at_freeze: Option<BTreeMap<PathBuf, u64>>,
}

/// The in-memory storage. Clones share the same disk.
#[derive(Debug, Clone, Default)]
pub struct MemStorage {
    state: Rc<RefCell<State>>,
}

/// A file of [`MemStorage`].
#[derive(Debug)]
pub struct MemFile {
    id: u64,
    mode: FileMode,
    state: Rc<RefCell<State>>,
}

#[derive(Debug)]
struct MemHandle {
    data: Arc<RwLock<Vec<u8>>>,
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("injected I/O error on {what}"))
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOSPC)
}

fn apply(data: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Write { pos, data: d } => {
            let pos = *pos as usize;
            if data.len() < pos + d.len() {
                data.resize(pos + d.len(), 0);
            }
            data[pos..pos + d.len()].copy_from_slice(d);
        }
        Op::SetLen(len) => data.resize(*len as usize, 0),
    }
}

/// A small deterministic generator (xorshift64*), so the crate needs no RNG dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    pub fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
}

impl MemStorage {
    /// An empty disk with the clock at `now_ms`.
    pub fn new(now_ms: i64) -> Self {
        let s = MemStorage::default();
        s.state.borrow_mut().now_ms = now_ms;
        s
    }

    /// Replaces the fault plan. A freeze at or below the syncs already made durable takes
    /// effect now (the crash point is this instant).
    pub fn set_faults(&self, faults: Faults) {
        let mut s = self.state.borrow_mut();
        if faults
            .freeze_after_syncs
            .is_some_and(|n| s.durable_syncs >= n && s.freeze_seq.is_none())
        {
            s.freeze_seq = Some(s.op_seq + 1);
            s.entries_at_freeze = Some(s.entries.clone());
        }
        s.faults = faults;
    }

    /// Turns the "disk full" condition on or off.
    pub fn set_disk_full(&self, full: bool) {
        self.state.borrow_mut().faults.disk_full = full;
    }

    /// Moves the virtual clock.
    pub fn set_now_ms(&self, now_ms: i64) {
        self.state.borrow_mut().now_ms = now_ms;
    }

    /// Moves the virtual clock forward.
    pub fn advance_ms(&self, ms: i64) {
        self.state.borrow_mut().now_ms += ms;
    }

    /// Writes so far (successful or not).
    pub fn write_count(&self) -> u64 {
        self.state.borrow().writes
    }

    /// Syncs so far (successful or not).
    pub fn sync_count(&self) -> u64 {
        self.state.borrow().syncs
    }

    /// True once `freeze_after_syncs` has been reached: nothing becomes durable any more.
    pub fn is_frozen(&self) -> bool {
        let s = self.state.borrow();
        s.faults
            .freeze_after_syncs
            .is_some_and(|n| s.durable_syncs >= n)
    }

    /// Total bytes currently stored in files that have a directory entry.
    pub fn used_bytes(&self) -> u64 {
        let s = self.state.borrow();
        s.entries
            .values()
            .filter_map(|id| s.files.get(id))
            .map(|f| f.current.read().map(|d| d.len() as u64).unwrap_or(0))
            .sum()
    }

    /// The disk a crash at this instant could leave, chosen with `seed`: durable state plus
    /// a random subset of the non-durable operations, some torn. Faults are cleared.
    pub fn crash_image(&self, seed: u64) -> MemStorage {
        let mut rng = Rng::new(seed);
        let s = self.state.borrow();
        let mut out = State {
            next_file_id: s.next_file_id,
            dirs: s.dirs.clone(),
            now_ms: s.now_ms,
            ..State::default()
        };
        // Directory entries: durable ones survive; undurable changes survive at random.
        let current = s.entries_at_freeze.as_ref().unwrap_or(&s.entries);
        let mut entries = s.durable_entries.clone();
        let paths: BTreeSet<&PathBuf> = current.keys().chain(s.durable_entries.keys()).collect();
        for p in paths {
            if current.get(p) != s.durable_entries.get(p) && rng.chance(2) {
                match current.get(p) {
                    Some(id) => entries.insert(p.clone(), *id),
                    None => entries.remove(p),
                };
            }
        }
        for id in entries.values() {
            let Some(f) = s.files.get(id) else { continue };
            let mut data = f.durable_base.clone();
            let lost_from = s.freeze_seq.unwrap_or(u64::MAX);
            for (op, durable, seq) in &f.ops {
                if *durable {
                    apply(&mut data, op);
                } else if *seq < lost_from && rng.chance(2) {
                    for part in tear(op, &mut rng) {
                        apply(&mut data, &part);
                    }
                }
            }
            out.files.insert(
                *id,
                FileState {
                    durable_base: data.clone(),
                    ops: Vec::new(),
                    current: Arc::new(RwLock::new(data)),
                },
            );
        }
        out.durable_entries = entries.clone();
        out.entries = entries;
        MemStorage {
            state: Rc::new(RefCell::new(out)),
        }
    }

    /// The current contents of a file (for tests).
    pub fn read_file(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.state.borrow();
        let id = s.entries.get(path)?;
        s.files.get(id)?.current.read().ok().map(|d| d.clone())
    }

    /// Overwrites a file's contents durably (for tests that corrupt a disk on purpose).
    pub fn poke_file(&self, path: &Path, data: Vec<u8>) {
        let mut s = self.state.borrow_mut();
        let Some(id) = s.entries.get(path).copied() else {
            return;
        };
        if let Some(f) = s.files.get_mut(&id) {
            f.durable_base = data.clone();
            f.ops.clear();
            if let Ok(mut cur) = f.current.write() {
                *cur = data;
            }
        }
    }
}

/// A write that may have reached the disk only in part: a random subset of its sectors.
fn tear(op: &Op, rng: &mut Rng) -> Vec<Op> {
    let Op::Write { pos, data } = op else {
        return vec![op.clone()];
    };
    if data.len() <= SECTOR_BYTES || rng.chance(2) {
        return vec![op.clone()];
    }
    // Sectors that did not make it keep the old contents (zeros on a fresh extent, the
    // previous bytes where the write rewrote data): either a shorter write ending at a
    // random sector boundary (a prefix), the common torn shape, or one sector missing.
    let sectors = data.len().div_ceil(SECTOR_BYTES);
    let keep = rng.below(sectors as u64) as usize * SECTOR_BYTES;
    let prefix = Op::Write {
        pos: *pos,
        data: data[..keep].to_vec(),
    };
    if rng.chance(2) {
        return vec![prefix];
    }
    let end = (keep + SECTOR_BYTES).min(data.len());
    let suffix = Op::Write {
        pos: *pos + end as u64,
        data: data[end..].to_vec(),
    };
    vec![prefix, suffix]
}

impl State {
    fn count_sync(&mut self) -> io::Result<bool> {
        self.syncs += 1;
        if self.faults.fail_sync_nth == Some(self.syncs) {
            return Err(eio("sync"));
        }
        let frozen = self
            .faults
            .freeze_after_syncs
            .is_some_and(|n| self.durable_syncs >= n);
        if !frozen {
            self.durable_syncs += 1;
            if self.faults.freeze_after_syncs == Some(self.durable_syncs) {
                self.freeze_seq = Some(self.op_seq + 1);
                self.entries_at_freeze = Some(self.entries.clone());
            }
        }
        Ok(!frozen)
    }

    fn count_write(&mut self) -> io::Result<()> {
        self.writes += 1;
        if self.faults.fail_write_nth == Some(self.writes) {
            return Err(eio("write"));
        }
        if self.faults.disk_full {
            return Err(enospc());
        }
        Ok(())
    }

    /// ENOSPC if the disk is full for growth and `end` lies past the file's end.
    fn check_growth(&mut self, id: u64, end: u64) -> io::Result<()> {
        if !self.faults.disk_full_growing {
            return Ok(());
        }
        let len = self.file(id)?.current.read().map_err(|_| eio("len"))?.len() as u64;
        match end > len {
            true => Err(enospc()),
            false => Ok(()),
        }
    }

    fn file(&mut self, id: u64) -> io::Result<&mut FileState> {
        self.files
            .get_mut(&id)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "file vanished"))
    }

    fn push(&mut self, id: u64, op: Op, durable: bool) -> io::Result<()> {
        self.op_seq += 1;
        let seq = self.op_seq;
        let f = self.file(id)?;
        if let Ok(mut cur) = f.current.write() {
            apply(&mut cur, &op);
        }
        f.ops.push((op, durable, seq));
        Ok(())
    }

    fn sync_file(&mut self, id: u64) -> io::Result<()> {
        if self.count_sync()? {
            let f = self.file(id)?;
            for (op, _, _) in f.ops.drain(..) {
                apply(&mut f.durable_base, &op);
            }
        }
        Ok(())
    }
}

impl Storage for MemStorage {
    type File = MemFile;

    fn now_ms(&self) -> i64 {
        self.state.borrow().now_ms
    }

    fn spawn<F: std::future::Future<Output = ()> + 'static>(&self, fut: F) {
        drop(tokio::task::spawn_local(fut));
    }

    async fn sleep_ms(&self, _ms: u64) {
        tokio::task::yield_now().await;
    }

    async fn open(&self, path: &Path, mode: FileMode) -> io::Result<MemFile> {
        let mut s = self.state.borrow_mut();
        let parent = path.parent().unwrap_or(Path::new("")).to_path_buf();
        if !s.dirs.contains(&parent) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{}: no such directory", parent.display()),
            ));
        }
        let id = match s.entries.get(path) {
            Some(id) => *id,
            None => {
                let id = s.next_file_id;
                s.next_file_id += 1;
                s.files.insert(
                    id,
                    FileState {
                        durable_base: Vec::new(),
                        ops: Vec::new(),
                        current: Arc::default(),
                    },
                );
                s.entries.insert(path.to_path_buf(), id);
                id
            }
        };
        Ok(MemFile {
            id,
            mode,
            state: self.state.clone(),
        })
    }

    async fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state.borrow_mut();
        for a in path.ancestors() {
            s.dirs.insert(a.to_path_buf());
        }
        Ok(())
    }

    async fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let s = self.state.borrow();
        if !s.dirs.contains(path) {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such directory"));
        }
        Ok(s.entries
            .keys()
            .filter(|p| p.parent() == Some(path))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }

    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state.borrow_mut();
        s.entries
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.state.borrow_mut();
        let id = s
            .entries
            .remove(from)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))?;
        s.entries.insert(to.to_path_buf(), id);
        Ok(())
    }

    async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state.borrow_mut();
        if !s.count_sync()? {
            return Ok(());
        }
        let current: Vec<(PathBuf, u64)> = s
            .entries
            .iter()
            .filter(|(p, _)| p.parent() == Some(path))
            .map(|(p, id)| (p.clone(), *id))
            .collect();
        s.durable_entries.retain(|p, _| p.parent() != Some(path));
        s.durable_entries.extend(current);
        Ok(())
    }

    async fn sync_filesystem(&self, _path: &Path) -> io::Result<()> {
        // The whole disk is one filesystem: every file and every entry, as one sync.
        let mut s = self.state.borrow_mut();
        if !s.count_sync()? {
            return Ok(());
        }
        for f in s.files.values_mut() {
            for (op, _, _) in f.ops.drain(..) {
                apply(&mut f.durable_base, &op);
            }
        }
        s.durable_entries = s.entries.clone();
        Ok(())
    }
}

impl StorageFile for MemFile {
    async fn write_at(
        &self,
        buf: AlignedBuf,
        pos: u64,
        dsync: bool,
    ) -> (io::Result<()>, AlignedBuf) {
        let mut buf = buf;
        buf.zero_padding();
        let r = self.write_direct(buf.padded(), pos, dsync);
        (r, buf)
    }

    async fn write_range_at(
        &self,
        buf: std::rc::Rc<AlignedBuf>,
        range: std::ops::Range<usize>,
        pos: u64,
        dsync: bool,
    ) -> io::Result<()> {
        let bytes = buf
            .padded()
            .get(range)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        self.write_direct(bytes, pos, dsync)
    }

    async fn write_bytes_at(&self, data: Vec<u8>, pos: u64) -> io::Result<()> {
        let mut s = self.state.borrow_mut();
        s.count_write()?;
        s.check_growth(self.id, pos + data.len() as u64)?;
        s.push(self.id, Op::Write { pos, data }, false)
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        let mut s = self.state.borrow_mut();
        let f = s.file(self.id)?;
        let d = f.current.read().map_err(|_| eio("read"))?;
        let start = (pos as usize).min(d.len());
        let end = start.saturating_add(len).min(d.len());
        Ok(Bytes::copy_from_slice(&d[start..end]))
    }

    async fn sync_data(&self) -> io::Result<()> {
        self.state.borrow_mut().sync_file(self.id)
    }

    async fn len(&self) -> io::Result<u64> {
        let mut s = self.state.borrow_mut();
        let f = s.file(self.id)?;
        let len = f.current.read().map_err(|_| eio("len"))?.len() as u64;
        Ok(len)
    }

    async fn allocate(&self, pos: u64, len: u64) -> io::Result<()> {
        let mut s = self.state.borrow_mut();
        if s.faults.disk_full {
            return Err(enospc());
        }
        let current = s
            .file(self.id)?
            .current
            .read()
            .map_err(|_| eio("len"))?
            .len() as u64;
        let end = pos.saturating_add(len);
        s.check_growth(self.id, end)?;
        if end > current {
            s.push(self.id, Op::SetLen(end), false)?;
        }
        Ok(())
    }

    async fn set_len(&self, len: u64) -> io::Result<()> {
        self.state
            .borrow_mut()
            .push(self.id, Op::SetLen(len), false)
    }

    fn handle(&self) -> io::Result<Arc<dyn SegmentHandle>> {
        let mut s = self.state.borrow_mut();
        let data = s.file(self.id)?.current.clone();
        Ok(Arc::new(MemHandle { data }))
    }
}

impl MemFile {
    /// A write of whole blocks: the shape of every direct write.
    fn write_direct(&self, bytes: &[u8], pos: u64, dsync: bool) -> io::Result<()> {
        if self.mode == FileMode::Direct && !pos.is_multiple_of(BLOCK_BYTES as u64) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let mut s = self.state.borrow_mut();
        s.count_write()?;
        s.check_growth(self.id, pos + bytes.len() as u64)?;
        let op = Op::Write {
            pos,
            data: bytes.to_vec(),
        };
        if dsync {
            let durable = s.count_sync()?;
            s.push(self.id, op, durable)
        } else {
            s.push(self.id, op, false)
        }
    }
}

impl SegmentHandle for MemHandle {
    fn raw_fd(&self) -> Option<RawFd> {
        None
    }

    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        let d = self.data.read().map_err(|_| eio("read"))?;
        Ok(copy_at(&d, pos, buf))
    }
}

/// Copies `data[pos..]` into `buf` as far as both go; the byte count.
fn copy_at(data: &[u8], pos: u64, buf: &mut [u8]) -> usize {
    let start = usize::try_from(pos).unwrap_or(usize::MAX).min(data.len());
    let n = buf.len().min(data.len() - start);
    buf[..n].copy_from_slice(&data[start..start + n]);
    n
}

/// A segment "file" held in memory, without a descriptor: read slices over it are served by
/// copying (tests of the wire layer use it as a cold slice that cannot be spliced).
#[derive(Debug, Clone)]
pub struct VecHandle(pub Vec<u8>);

impl SegmentHandle for VecHandle {
    fn raw_fd(&self) -> Option<RawFd> {
        None
    }

    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        Ok(copy_at(&self.0, pos, buf))
    }
}
