//! The server processes under test, each on its own loopback port, stopped when dropped.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;

use crate::driver::{Call, Target};

pub struct ServerProcess {
    pub name: String,
    pub target: Target,
    /// Its stdout and stderr, in the run's scratch directory.
    pub log: PathBuf,
    child: Child,
}

impl ServerProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServerProcess {
    /// SIGTERM first, as a kubelet stops a pod: both servers then exit through `main`, which is
    /// where a profile-instrumented build (`scripts/pgo.sh`) writes its counts. SIGKILL after
    /// a few seconds, so a stuck server never holds the run.
    fn drop(&mut self) {
        let terminated =
            rustix::process::Pid::from_raw(self.child.id() as i32).is_some_and(|pid| {
                rustix::process::kill_process(pid, rustix::process::Signal::TERM).is_ok()
            });
        if terminated {
            for _ in 0..100 {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

async fn start(
    name: &str,
    mut command: Command,
    addr: SocketAddr,
    cert_dir: &Path,
    probe: &Call,
) -> anyhow::Result<ServerProcess> {
    // Logs are written as in production (to a file here), so their cost is part of the figures.
    let log_path = cert_dir.with_file_name(format!("{name}-{}.log", addr.port()));
    let log = std::fs::File::create(&log_path)?;
    let child = command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    let server = ServerProcess {
        name: name.to_string(),
        target: Target::new(addr, &cert_dir.join("ca.crt"))?,
        log: log_path,
        child,
    };
    server
        .target
        .wait_until_answering(probe, Duration::from_secs(60))
        .await?;
    Ok(server)
}

/// `tollgate serve` as a user runs it (default flags, logs at info).
pub async fn tollgate(
    binary: &Path,
    policies: &Path,
    cert_dir: &Path,
    probe: &Call,
) -> anyhow::Result<ServerProcess> {
    let addr = free_port()?;
    let mut command = Command::new(binary);
    command
        .arg("serve")
        .arg("--policies")
        .arg(policies)
        .arg("--cert-dir")
        .arg(cert_dir)
        .arg("--addr")
        .arg(addr.to_string());
    start("tollgate", command, addr, cert_dir, probe).await
}

/// The floor server answering each path with a fixed body (files written by the suite).
pub async fn floor(
    cert_dir: &Path,
    answers: &[(String, PathBuf)],
    probe: &Call,
) -> anyhow::Result<ServerProcess> {
    let addr = free_port()?;
    let mut command = Command::new(std::env::current_exe()?);
    command
        .arg("floor")
        .arg("--cert-dir")
        .arg(cert_dir)
        .arg("--addr")
        .arg(addr.to_string());
    for (path, file) in answers {
        command
            .arg("--answer")
            .arg(format!("{path}={}", file.display()));
    }
    start("floor", command, addr, cert_dir, probe).await
}

/// A CA and serving pair for 127.0.0.1, made by `tollgate certs`.
pub fn certificates(binary: &Path, dir: &Path) -> anyhow::Result<()> {
    let status = Command::new(binary)
        .arg("certs")
        .arg("--cert-dir")
        .arg(dir)
        .stdout(Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "tollgate certs failed");
    Ok(())
}
