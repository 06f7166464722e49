//! The benchmark's data directory, removed when the run ends (also on error).
//!
//! The directory the user names may already exist and hold other things; only what the
//! benchmark created is removed: the directory itself if it did not exist, otherwise a
//! `tern-bench-<pid>` directory made inside it.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// A directory that is removed on drop.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// Creates the working directory under (or at) `dir`.
    pub fn create(dir: &Path) -> anyhow::Result<Scratch> {
        let path = if dir.exists() {
            dir.join(format!("tern-bench-{}", std::process::id()))
        } else {
            dir.to_path_buf()
        };
        std::fs::create_dir_all(&path)
            .with_context(|| format!("{}: creating the benchmark directory", path.display()))?;
        Ok(Scratch { path })
    }

    /// The directory to work in.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("warning: {}: could not remove: {e}", self.path.display());
        }
    }
}
