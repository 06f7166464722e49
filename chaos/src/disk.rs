//! A node's data filesystem for the disk-full fault: a small ext4 filesystem in an image
//! file, loop-mounted (tmpfs would refuse O_DIRECT), that the fault fills with a filler file
//! and frees by deleting it.

use std::path::{Path, PathBuf};

use crate::error::ChaosError;

const FILLER: &str = "chaos-filler";

/// A loop-mounted ext4 filesystem, unmounted on drop.
#[derive(Debug)]
pub struct LoopDisk {
    image: PathBuf,
    mount: PathBuf,
    mounted: bool,
}

/// Runs a command; its output is not needed.
fn run(program: &str, args: &[&str]) -> Result<(), ChaosError> {
    crate::net::command(program, args).map(|_| ())
}

impl LoopDisk {
    /// Makes an ext4 filesystem of `size_bytes` in `image` and mounts it on `mount`
    /// (created if absent). An earlier mount on `mount` is unmounted first.
    pub fn create(image: &Path, mount: &Path, size_bytes: u64) -> Result<LoopDisk, ChaosError> {
        let _ = run("umount", &[&mount.display().to_string()]);
        std::fs::create_dir_all(mount).map_err(ChaosError::io(mount))?;
        let _ = std::fs::remove_file(image);
        let f = std::fs::File::create(image).map_err(ChaosError::io(image))?;
        f.set_len(size_bytes).map_err(ChaosError::io(image))?;
        drop(f);
        let image_s = image.display().to_string();
        // No blocks reserved for root: the broker runs as root here and must see the disk full.
        run("mkfs.ext4", &["-q", "-F", "-m", "0", &image_s])?;
        run(
            "mount",
            &["-o", "loop", &image_s, &mount.display().to_string()],
        )?;
        Ok(LoopDisk {
            image: image.to_path_buf(),
            mount: mount.to_path_buf(),
            mounted: true,
        })
    }

    /// Where the filesystem is mounted.
    pub fn path(&self) -> &Path {
        &self.mount
    }

    /// Fills the filesystem: a filler file takes every free block but `leave_bytes`.
    pub fn fill(&self, leave_bytes: u64) -> Result<(), ChaosError> {
        let free = free_bytes(&self.mount)?;
        let take = free.saturating_sub(leave_bytes);
        let path = self.mount.join(FILLER);
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(ChaosError::io(&path))?;
        let len = f.metadata().map_err(ChaosError::io(&path))?.len();
        // fallocate(2): blocks are reserved without writing them.
        // SAFETY: a valid fd; offset and length are in range.
        let rc = unsafe {
            use std::os::fd::AsRawFd;
            libc::fallocate(f.as_raw_fd(), 0, len as libc::off_t, take as libc::off_t)
        };
        if rc != 0 && take > 0 {
            let e = std::io::Error::last_os_error();
            // A racing writer may take blocks meanwhile: a short fill is still full.
            if e.raw_os_error() != Some(libc::ENOSPC) {
                return Err(ChaosError::Io { path, source: e });
            }
        }
        Ok(())
    }

    /// Frees what [`LoopDisk::fill`] took.
    pub fn free(&self) -> Result<(), ChaosError> {
        let path = self.mount.join(FILLER);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(ChaosError::Io { path, source }),
        }
    }
}

/// Bytes free to an unprivileged writer on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> Result<u64, ChaosError> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| ChaosError::Options(format!("{}: a NUL in the path", path.display())))?;
    // SAFETY: statvfs(3) on a valid C string into a zeroed struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(ChaosError::io(path)(std::io::Error::last_os_error()));
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        if self.mounted {
            let _ = run("umount", &[&self.mount.display().to_string()]);
            self.mounted = false;
        }
        let _ = std::fs::remove_file(&self.image);
    }
}
