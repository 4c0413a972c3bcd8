//! Soak with faults, against the real `tollgate serve` process on loopback. Ignored by default;
//! run it (release build recommended) with
//!
//!     cargo test --release --test soak -- --ignored --nocapture
//!
//! `SOAK_SECONDS` (default 60) sets how long the load and faults run. Sustained valid reviews
//! over HTTP/1.1 and h2 while, concurrently: the serving certificate is replaced (from the same
//! CA, file by file, as an operator or cert-manager would), policies are reloaded (including an
//! invalid set, which must be refused while the old one keeps working), and other clients send
//! garbage, oversize bodies, slow headers, half-finished TLS handshakes, abrupt disconnects and
//! h2 reset bursts. At the end SIGTERM arrives under load. Printed: counts of valid answers,
//! wrong answers (must be 0), requests refused after SIGTERM, faults sent, peak RSS and file
//! descriptors before and after.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed step should fail the soak loudly

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::h2;
use support::server::{https_client, tls_connect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Default)]
struct Counts {
    answered: AtomicU64,
    wrong: AtomicU64,
    /// Failed before SIGTERM without an answer: must be 0.
    lost: AtomicU64,
    /// After SIGTERM: refused or closed without being read.
    refused_after_sigterm: AtomicU64,
    answered_after_sigterm: AtomicU64,
    faults: AtomicU64,
    cert_swaps: AtomicU64,
    reloads: AtomicU64,
    invalid_reloads: AtomicU64,
}

struct Process {
    child: Child,
    pid: u32,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn proc_status(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn copy_policies(to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(support::repo_path("policies")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
    }
}

async fn wait_healthy(client: &reqwest::Client, url: &str) {
    let started = Instant::now();
    while client.get(url).send().await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "tollgate never became healthy"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One valid review and how to check its answer.
#[derive(Clone)]
struct Probe {
    path: &'static str,
    body: Value,
    check: fn(&Value) -> bool,
}

fn probes() -> Vec<Probe> {
    vec![
        Probe {
            path: "/validate",
            body: support::fixture("validate-allow.json"),
            check: |v| v["response"]["allowed"] == true && v["response"]["uid"].is_string(),
        },
        Probe {
            path: "/validate",
            body: support::fixture("validate-deny.json"),
            check: |v| v["response"]["allowed"] == false,
        },
        Probe {
            path: "/mutate",
            body: support::fixture("mutate-defaults.json"),
            check: |v| v["response"]["allowed"] == true && v["response"]["patch"].is_string(),
        },
        Probe {
            path: "/convert",
            body: support::fixture("convert-up.json"),
            check: |v| v["response"]["result"]["status"] == "Success",
        },
    ]
}

async fn valid_load(
    client: reqwest::Client,
    base: String,
    counts: Arc<Counts>,
    sigterm_sent: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) {
    let probes = probes();
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let probe = &probes[i % probes.len()];
        i += 1;
        let after_sigterm_at_start = sigterm_sent.load(Ordering::SeqCst);
        let result = client
            .post(format!("{base}{}", probe.path))
            .json(&probe.body)
            .send()
            .await;
        let answer = match result {
            Ok(response) if response.status() == 200 => response.json::<Value>().await.ok(),
            Ok(response) => {
                eprintln!("WRONG: {} answered {}", probe.path, response.status());
                counts.wrong.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Err(e) => {
                if sigterm_sent.load(Ordering::SeqCst) {
                    counts.refused_after_sigterm.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                } else {
                    eprintln!("LOST: {} {e:?}", probe.path);
                    counts.lost.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
        };
        match answer {
            Some(body) if (probe.check)(&body) => {
                counts.answered.fetch_add(1, Ordering::Relaxed);
                if after_sigterm_at_start || sigterm_sent.load(Ordering::SeqCst) {
                    counts
                        .answered_after_sigterm
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            other => {
                eprintln!("WRONG: {} answered {other:?}", probe.path);
                counts.wrong.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Cycles through every kind of misbehaving client.
async fn faults(
    addr: std::net::SocketAddr,
    ca_pem: String,
    counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
) {
    let versions = rustls::DEFAULT_VERSIONS;
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let kind = round % 7;
        let ca_pem = ca_pem.clone();
        let fault = async move {
            match kind {
                0 => {
                    // Plain garbage on the TLS port.
                    if let Ok(mut tcp) = tokio::net::TcpStream::connect(addr).await {
                        let _ = tcp
                            .write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 0xde, 0xad, 0xbe, 0xef])
                            .await;
                        let _ = tcp.write_all(b"GET / HTTP/1.1\r\n\r\n").await;
                    }
                }
                1 => {
                    // Half a TLS handshake, then silence until the server gives up.
                    if let Ok(mut tcp) = tokio::net::TcpStream::connect(addr).await {
                        let _ = tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await;
                        tokio::time::sleep(Duration::from_secs(3)).await;
                    }
                }
                2 => {
                    // Garbage HTTP over good TLS.
                    if let Ok(mut tls) =
                        tls_connect(addr, &ca_pem, &[b"http/1.1"], versions, None).await
                    {
                        let _ = tls.write_all(b"\x00\x01BLAH / NOPE\r\n\r\n\r\n").await;
                        let mut sink = [0u8; 512];
                        let _ =
                            tokio::time::timeout(Duration::from_secs(2), tls.read(&mut sink)).await;
                    }
                }
                3 => {
                    // Oversize body, announced and actually streamed.
                    if let Ok(mut tls) =
                        tls_connect(addr, &ca_pem, &[b"http/1.1"], versions, None).await
                    {
                        let _ = tls.write_all(b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").await;
                        let chunk = vec![b'x'; 1 << 20];
                        for _ in 0..8 {
                            let _ = tls
                                .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                                .await;
                            if tls.write_all(&chunk).await.is_err() {
                                break;
                            }
                            let _ = tls.write_all(b"\r\n").await;
                        }
                        let mut sink = [0u8; 512];
                        let _ =
                            tokio::time::timeout(Duration::from_secs(2), tls.read(&mut sink)).await;
                    }
                }
                4 => {
                    // Slow headers, held until the server cuts the connection.
                    if let Ok(mut tls) =
                        tls_connect(addr, &ca_pem, &[b"http/1.1"], versions, None).await
                    {
                        let _ = tls
                            .write_all(b"POST /validate HTTP/1.1\r\nHost: x\r\n")
                            .await;
                        let mut sink = [0u8; 512];
                        let _ =
                            tokio::time::timeout(Duration::from_secs(5), tls.read(&mut sink)).await;
                    }
                }
                5 => {
                    // Abrupt disconnect mid-body.
                    if let Ok(mut tls) =
                        tls_connect(addr, &ca_pem, &[b"http/1.1"], versions, None).await
                    {
                        let _ = tls.write_all(b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{\"apiVersion\":").await;
                    }
                }
                _ => {
                    // h2 rapid resets.
                    if let Ok(mut tls) = tls_connect(addr, &ca_pem, &[b"h2"], versions, None).await
                    {
                        h2::start(&mut tls).await;
                        let _ = tls.write_all(&h2::reset_burst(200)).await;
                        let mut sink = [0u8; 4096];
                        let _ =
                            tokio::time::timeout(Duration::from_secs(2), tls.read(&mut sink)).await;
                    }
                }
            }
        };
        // Faults overlap: each runs on its own while the next starts.
        tokio::spawn(fault);
        counts.faults.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A new serving pair from the same CA, written file by file (a reload may see the new
/// certificate with the old key: it must refuse that and keep serving).
fn swap_certificate(cert_dir: &Path) {
    let scratch = tempfile::tempdir().unwrap();
    for name in ["ca.crt", "ca.key"] {
        std::fs::copy(cert_dir.join(name), scratch.path().join(name)).unwrap();
    }
    let status = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["certs", "--cert-dir"])
        .arg(scratch.path())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    for name in ["tls.crt", "tls.key"] {
        let staged = cert_dir.join(format!(".{name}.new"));
        std::fs::copy(scratch.path().join(name), &staged).unwrap();
        std::fs::rename(&staged, cert_dir.join(name)).unwrap();
        std::thread::sleep(Duration::from_millis(700));
    }
}

async fn operator(
    policies: PathBuf,
    cert_dir: PathBuf,
    counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
) {
    let mut step = 0u64;
    while !stop.load(Ordering::Relaxed) {
        step += 1;
        match step % 3 {
            0 => {
                let dir = cert_dir.clone();
                tokio::task::spawn_blocking(move || swap_certificate(&dir))
                    .await
                    .unwrap();
                counts.cert_swaps.fetch_add(1, Ordering::Relaxed);
            }
            1 => {
                // An invalid set: refused, the working policies stay.
                std::fs::write(
                    policies.join("broken.yaml"),
                    "apiVersion: tollgate.dev/v1\nkind: Policy\nmetadata: {name: [}\n",
                )
                .unwrap();
                tokio::time::sleep(Duration::from_millis(2500)).await;
                std::fs::remove_file(policies.join("broken.yaml")).unwrap();
                counts.invalid_reloads.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                // The same policy rewritten: a real reload.
                let file = policies.join("paymentgateway.yaml");
                let text = std::fs::read_to_string(&file).unwrap();
                std::fs::write(&file, format!("{text}\n# reload {step}\n")).unwrap();
                counts.reloads.fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::time::sleep(Duration::from_millis(2500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: minutes of load and faults; run with --ignored --nocapture"]
async fn soak_with_faults() {
    tollgate::install_crypto_provider();
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let dir = tempfile::tempdir().unwrap();
    let (policies, cert_dir) = (dir.path().join("policies"), dir.path().join("certs"));
    copy_policies(&policies);
    let port = support::cluster::free_port();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let log = std::fs::File::create(dir.path().join("tollgate.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args([
            "serve",
            "--addr",
            &addr.to_string(),
            "--reload-interval",
            "1",
            "--header-read-timeout",
            "2",
            "--handshake-timeout",
            "2",
            "--shutdown-grace",
            "10",
            "--policies",
        ])
        .arg(&policies)
        .arg("--cert-dir")
        .arg(&cert_dir)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let server = Process {
        pid: child.id(),
        child,
    };
    let pid = server.pid;
    let started = Instant::now();
    while !cert_dir.join("ca.crt").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no certificates generated"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ca_pem = std::fs::read_to_string(cert_dir.join("ca.crt")).unwrap();
    let base = format!("https://localhost:{port}");
    let h1 = https_client(ca_pem.as_bytes(), addr)
        .http1_only()
        .build()
        .unwrap();
    let h2c = https_client(ca_pem.as_bytes(), addr)
        .http2_prior_knowledge()
        .build()
        .unwrap();
    wait_healthy(&h1, &format!("{base}/healthz")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fds_before = open_fds(pid);

    let counts = Arc::new(Counts::default());
    let sigterm_sent = Arc::new(AtomicBool::new(false));
    let stop_load = Arc::new(AtomicBool::new(false));
    let stop_faults = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for i in 0..6 {
        // Separate clients: separate connection pools, like several apiservers.
        let client = if i < 4 {
            https_client(ca_pem.as_bytes(), addr)
                .http1_only()
                .build()
                .unwrap()
        } else {
            https_client(ca_pem.as_bytes(), addr)
                .http2_prior_knowledge()
                .build()
                .unwrap()
        };
        load.push(tokio::spawn(valid_load(
            client,
            base.clone(),
            Arc::clone(&counts),
            Arc::clone(&sigterm_sent),
            Arc::clone(&stop_load),
        )));
    }
    drop(h2c);
    let fault_task = tokio::spawn(faults(
        addr,
        ca_pem.clone(),
        Arc::clone(&counts),
        Arc::clone(&stop_faults),
    ));
    let operator_task = tokio::spawn(operator(
        policies.clone(),
        cert_dir.clone(),
        Arc::clone(&counts),
        Arc::clone(&stop_faults),
    ));

    let mut peak_rss_kib = 0;
    let mut peak_fds = 0;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        peak_rss_kib = peak_rss_kib.max(proc_status(pid, "VmRSS:"));
        peak_fds = peak_fds.max(open_fds(pid));
    }
    stop_faults.store(true, Ordering::Relaxed);
    let _ = fault_task.await;
    let _ = operator_task.await;
    // Let the server cut the last slow clients (header timeout 2 s, handshake 2 s).
    tokio::time::sleep(Duration::from_secs(6)).await;
    let fds_after = open_fds(pid);
    let hwm_kib = proc_status(pid, "VmHWM:");
    let metrics = h1
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    sigterm_sent.store(true, Ordering::SeqCst);
    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut server = server;
    let exit = tokio::task::spawn_blocking(move || {
        let status = server.child.wait();
        (status, server)
    })
    .await
    .unwrap();
    stop_load.store(true, Ordering::Relaxed);
    for task in load {
        let _ = task.await;
    }
    let (status, _server) = exit;
    let status = status.unwrap();

    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let metric = |name: &str| {
        metrics
            .lines()
            .filter(|l| l.starts_with(name))
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    };
    println!("soak: {seconds} s of load and faults");
    println!(
        "  valid reviews answered correctly   {}",
        get(&counts.answered)
    );
    println!(
        "  wrong answers                      {}",
        get(&counts.wrong)
    );
    println!("  lost before SIGTERM (no answer)    {}", get(&counts.lost));
    println!(
        "  answered during the SIGTERM drain  {}",
        get(&counts.answered_after_sigterm)
    );
    println!(
        "  refused after SIGTERM (not read)   {}",
        get(&counts.refused_after_sigterm)
    );
    println!(
        "  fault clients                      {}",
        get(&counts.faults)
    );
    println!(
        "  certificate swaps                  {}",
        get(&counts.cert_swaps)
    );
    println!(
        "  policy reloads / invalid sets      {} / {}",
        get(&counts.reloads),
        get(&counts.invalid_reloads)
    );
    println!(
        "  RSS peak (sampled) / VmHWM         {:.1} / {:.1} MiB",
        peak_rss_kib as f64 / 1024.0,
        hwm_kib as f64 / 1024.0
    );
    println!("  open fds before / peak / after     {fds_before} / {peak_fds} / {fds_after}");
    println!("  server exit                        {status}");
    println!("  {}", metric("tollgate_connections_refused_total"));
    println!("  {}", metric("tollgate_policy_load_errors_total"));
    let log = std::fs::read_to_string(dir.path().join("tollgate.log")).unwrap_or_default();
    let reloaded = log.matches("serving certificate reloaded").count();
    let kept = log
        .matches("keeping the current serving certificate")
        .count();
    println!("  certificate reloads / refused half-swaps  {reloaded} / {kept}");

    assert_eq!(get(&counts.wrong), 0, "wrong answers");
    assert_eq!(get(&counts.lost), 0, "requests lost before SIGTERM");
    assert!(get(&counts.answered) > 0);
    assert!(status.success(), "tollgate exited with {status}");
    assert!(reloaded > 0, "no certificate swap was picked up");
    // The load's own connections (4 HTTP/1.1 pools, 2 h2) may have grown by a few sockets.
    assert!(
        fds_after <= fds_before + 12,
        "file descriptors grew: {fds_before} -> {fds_after}"
    );
    assert!(hwm_kib < 256 * 1024, "peak RSS {hwm_kib} KiB");
}
