//! `tern cert dev`: a CA and node certificates for trying a cluster out.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;

#[derive(Debug, Args)]
pub struct CertDevArgs {
    /// How many node certificates to make.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    nodes: u32,
    /// The node id of the first certificate; the others follow.
    #[arg(long, value_name = "ID", default_value_t = 1,
          value_parser = clap::value_parser!(i32).range(0..=i32::MAX as i64 - 64))]
    first_id: i32,
    /// The directory to write ca.crt, ca.key, node-<id>.crt and node-<id>.key into.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Replace certificates already in DIR.
    #[arg(long)]
    force: bool,
}

/// Writes `text` to `path`, readable by the owner only when `secret`.
fn write_file(path: &Path, text: &str, secret: bool, force: bool) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(if secret { 0o600 } else { 0o644 });
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut f = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow::anyhow!("{} already exists (--force replaces it)", path.display())
        } else {
            anyhow::anyhow!("{}: {e}", path.display())
        }
    })?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("{}: writing", path.display()))
}

pub fn dev(args: CertDevArgs) -> anyhow::Result<()> {
    let ids: Vec<i32> = (0..args.nodes as i32).map(|i| args.first_id + i).collect();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("{}: creating the directory", args.out.display()))?;
    if !args.force {
        for name in std::iter::once("ca.crt".to_owned())
            .chain(ids.iter().map(|id| format!("node-{id}.crt")))
        {
            let p = args.out.join(&name);
            if p.exists() {
                bail!("{} already exists (--force replaces it)", p.display());
            }
        }
    }
    let dev = tern_replication::tls::dev_certificates(&ids).context("making certificates")?;
    let out = &args.out;
    write_file(&out.join("ca.crt"), &dev.ca_cert_pem, false, args.force)?;
    write_file(&out.join("ca.key"), &dev.ca_key_pem, true, args.force)?;
    for (id, cert, key) in &dev.nodes {
        write_file(&out.join(format!("node-{id}.crt")), cert, false, args.force)?;
        write_file(&out.join(format!("node-{id}.key")), key, true, args.force)?;
    }
    println!(
        "wrote a development CA and {} node certificates to {}",
        ids.len(),
        out.display()
    );
    println!("in node N's tern.toml (the cluster.id is new: use it on every node):");
    println!(
        "  cluster.id = \"{}\"",
        tern_net::node_meta::new_cluster_id()
    );
    println!("  quic.tls.cert = \"{}\"", out.join("node-N.crt").display());
    println!("  quic.tls.key = \"{}\"", out.join("node-N.key").display());
    println!("  quic.tls.ca = \"{}\"", out.join("ca.crt").display());
    Ok(())
}
