//! `tern bench transport`: the node-to-node QUIC transport against TCP on loopback, in one
//! run.
//!
//! Two nodes in this process, each on its own thread and runtime (as two brokers would be),
//! send `total_bytes` in frames of `frame_bytes` one way. The QUIC leg is
//! `tern_replication::transport` itself (mutual TLS, development certificates); the TCP leg
//! sends the same 5-byte-header frames over a plain loopback TCP connection (no TLS), which
//! is the floor any transport pays for moving the bytes through the kernel. Reported per
//! leg: throughput and the process's CPU time per GB (user + system, both ends).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use serde::Serialize;

/// One leg's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Leg {
    pub name: &'static str,
    pub bytes: u64,
    pub seconds: f64,
    pub mb_per_s: f64,
    pub cpu_user_s: f64,
    pub cpu_system_s: f64,
    /// (user + system) per GB moved.
    pub cpu_s_per_gb: f64,
}

/// Both legs of one run.
#[derive(Debug, Clone, Serialize)]
pub struct TransportReport {
    pub frame_bytes: usize,
    pub quic: Leg,
    pub tcp: Leg,
}

impl TransportReport {
    /// The report as text.
    pub fn text(&self) -> String {
        let line = |l: &Leg| {
            format!(
                "{:<5} {:>9.1} MB/s  {:>6.2} CPU·s per GB (user {:.2} s, system {:.2} s, {:.2} s)",
                l.name, l.mb_per_s, l.cpu_s_per_gb, l.cpu_user_s, l.cpu_system_s, l.seconds
            )
        };
        format!(
            "loopback, {} MB in frames of {} KiB, one way, both ends in this process:\n{}\n{}\n\
             QUIC / TCP: throughput {:.2}×, CPU per GB {:.2}×\n",
            self.quic.bytes / 1_000_000,
            self.frame_bytes / 1024,
            line(&self.quic),
            line(&self.tcp),
            self.quic.mb_per_s / self.tcp.mb_per_s,
            self.quic.cpu_s_per_gb / self.tcp.cpu_s_per_gb
        )
    }
}

fn process_cpu() -> (Duration, Duration) {
    crate::cpu::process_cpu_split(std::process::id()).unwrap_or_default()
}

fn leg(
    name: &'static str,
    bytes: u64,
    run: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<Leg> {
    let (u0, s0) = process_cpu();
    let t0 = Instant::now();
    run()?;
    let seconds = t0.elapsed().as_secs_f64();
    let (u1, s1) = process_cpu();
    let (user, system) = ((u1 - u0).as_secs_f64(), (s1 - s0).as_secs_f64());
    Ok(Leg {
        name,
        bytes,
        seconds,
        mb_per_s: bytes as f64 / 1e6 / seconds,
        cpu_user_s: user,
        cpu_system_s: system,
        cpu_s_per_gb: (user + system) / (bytes as f64 / 1e9),
    })
}

/// Runs both legs: QUIC first, then TCP.
pub fn run(total_bytes: u64, frame_bytes: usize) -> anyhow::Result<TransportReport> {
    if frame_bytes == 0 || total_bytes < frame_bytes as u64 {
        bail!("need 0 < frame bytes ({frame_bytes}) <= total bytes ({total_bytes})");
    }
    let frames = total_bytes / frame_bytes as u64;
    let bytes = frames * frame_bytes as u64;
    let quic = leg("QUIC", bytes, || quic_leg(frames, frame_bytes))?;
    let tcp = leg("TCP", bytes, || tcp_leg(frames, frame_bytes))?;
    Ok(TransportReport {
        frame_bytes,
        quic,
        tcp,
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")
}

fn quic_leg(frames: u64, frame_bytes: usize) -> anyhow::Result<()> {
    use tern_replication::transport::{Transport, TransportConfig};
    let dev = tern_replication::tls::dev_certificates(&[1, 2])?;
    let reserve = || -> anyhow::Result<SocketAddr> {
        Ok(std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?)
    };
    let (a_addr, b_addr) = (reserve()?, reserve()?);
    let tls_a = dev.material(1).context("node 1")??;
    let tls_b = dev.material(2).context("node 2")??;
    let frame_max = frame_bytes as u32;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let receiver = std::thread::spawn(move || -> anyhow::Result<()> {
        runtime()?.block_on(async move {
            let mut c = TransportConfig::new(2, "bench", b_addr, BTreeMap::from([(1, a_addr)]));
            c.frame_bytes_max = frame_max;
            let (t, mut rx) = Transport::bind(c, &tls_b)?;
            let _ = ready_tx.send(());
            let mut got = 0u64;
            while got < frames {
                let f = rx.recv().await.context("the transport stopped")?;
                if f.payload.len() != frame_bytes {
                    bail!("a frame of {} bytes, sent {frame_bytes}", f.payload.len());
                }
                got += 1;
            }
            t.close().await;
            Ok(())
        })
    });
    ready_rx.recv().context("the receiver did not start")?;
    let receiving = &receiver;
    runtime()?.block_on(async move {
        let mut c = TransportConfig::new(1, "bench", a_addr, BTreeMap::from([(2, b_addr)]));
        c.frame_bytes_max = frame_max;
        let (t, _rx) = Transport::bind(c, &tls_a)?;
        let payload = Bytes::from(vec![0x5au8; frame_bytes]);
        for _ in 0..frames {
            t.send_wait(2, 9, payload.clone()).await?;
        }
        // The receiver counts every frame; closing early would cut the stream.
        while !receiving.is_finished() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        t.close().await;
        Ok::<_, anyhow::Error>(())
    })?;
    receiver
        .join()
        .map_err(|_| anyhow::anyhow!("the QUIC receiver panicked"))?
}

fn tcp_leg(frames: u64, frame_bytes: usize) -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let receiver = std::thread::spawn(move || -> anyhow::Result<()> {
        let (mut s, _) = listener.accept()?;
        let mut head = [0u8; 5];
        let mut payload = vec![0u8; frame_bytes];
        for _ in 0..frames {
            s.read_exact(&mut head)?;
            let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
            if len != frame_bytes + 1 {
                bail!("a frame of {len} bytes");
            }
            s.read_exact(&mut payload)?;
        }
        Ok(())
    });
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let payload = vec![0x5au8; frame_bytes];
    let len = ((frame_bytes + 1) as u32).to_be_bytes();
    let head = [len[0], len[1], len[2], len[3], 9];
    for _ in 0..frames {
        s.write_all(&head)?;
        s.write_all(&payload)?;
    }
    receiver
        .join()
        .map_err(|_| anyhow::anyhow!("the TCP receiver panicked"))??;
    Ok(())
}

#[cfg(test)]
mod tests {
    /// Guards that both legs move every frame and report finite figures.
    #[test]
    fn both_legs_move_every_frame() {
        let r = super::run(4 << 20, 64 << 10).unwrap();
        assert_eq!(r.quic.bytes, 4 << 20);
        assert_eq!(r.tcp.bytes, 4 << 20);
        assert!(r.quic.mb_per_s.is_finite() && r.quic.mb_per_s > 0.0);
        assert!(r.text().contains("QUIC / TCP"));
        assert!(super::run(10, 0).is_err());
    }
}
