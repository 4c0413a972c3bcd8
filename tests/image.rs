//! The OCI image (scripts/build-image.sh), built and started here: its configuration names the
//! non-root user and the entrypoint, its root filesystem holds what the binary needs and little
//! else, and `tollgate serve`, started from that filesystem (chroot) as user 65532 with the
//! image's own entrypoint and arguments, answers a review over TLS.

// The shared harness (support::cluster) fails a test loudly on a broken step.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::cluster::free_port;
use support::server::https_client;
use support::{fixture, repo_path};

/// Why the image cannot be built or started on this machine, if it cannot.
fn unable() -> Option<String> {
    if tool("umoci").is_none() {
        return Some("umoci is not installed (apt-get install umoci; .ci/run installs it)".into());
    }
    if tool("chroot").is_none() {
        return Some("chroot is not installed".into());
    }
    // chroot(2) and switching to user 65532 need root (CAP_SYS_CHROOT, CAP_SETUID).
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        });
    if uid.as_deref() != Some("0") {
        return Some(format!(
            "starting the image needs root for chroot and setuid; running as uid {}",
            uid.unwrap_or_default()
        ));
    }
    None
}

/// Where `name` is on this PATH (the server's own environment is the image's, without it).
fn tool(name: &str) -> Option<PathBuf> {
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
}

fn json_file(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    let hex = digest
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("digest {digest} is not sha256"));
    layout.join("blobs/sha256").join(hex)
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

struct Started(Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_starts_as_user_65532_and_answers_a_review() {
    if let Some(reason) = unable() {
        eprintln!("SKIPPED: the image cannot be built or started here: {reason}");
        return;
    }
    let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let out = scratch.path().join("image");
    let built = Command::new(repo_path("scripts/build-image.sh"))
        .arg(&out)
        .arg("test")
        .env("TOLLGATE_BINARY", env!("CARGO_BIN_EXE_tollgate"))
        .output()
        .unwrap_or_else(|e| panic!("build-image.sh runs: {e}"));
    assert!(
        built.status.success(),
        "build-image.sh failed: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let layout = out.join("oci");
    assert!(out.join("tollgate-test.tar").is_file(), "the archive");

    // The layout, as any OCI tool reads it: index → manifest → config and one layer.
    let index = json_file(&layout.join("index.json"));
    let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
    assert_eq!(manifests.len(), 1, "{index}");
    assert_eq!(
        manifests[0]["annotations"]["org.opencontainers.image.ref.name"],
        "test"
    );
    let manifest = json_file(&blob(
        &layout,
        manifests[0]["digest"].as_str().unwrap_or(""),
    ));
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    assert_eq!(layers.len(), 1, "one layer, no base image: {manifest}");
    let config = json_file(&blob(
        &layout,
        manifest["config"]["digest"].as_str().unwrap_or(""),
    ));
    let run = &config["config"];
    assert_eq!(run["User"], "65532:65532", "{config}");
    let entrypoint = strings(&run["Entrypoint"]);
    assert_eq!(entrypoint, ["/usr/local/bin/tollgate"]);
    let cmd = strings(&run["Cmd"]);
    assert_eq!(cmd.first().map(String::as_str), Some("serve"), "{cmd:?}");
    assert!(run["ExposedPorts"].get("8443/tcp").is_some(), "{run}");

    // Unpacked as a runtime unpacks it.
    let bundle = scratch.path().join("bundle");
    let unpacked = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:test", layout.display()))
        .arg(&bundle)
        .output()
        .unwrap_or_else(|e| panic!("umoci runs: {e}"));
    assert!(
        unpacked.status.success(),
        "umoci unpack: {}",
        String::from_utf8_lossy(&unpacked.stderr)
    );
    let rootfs = bundle.join("rootfs");
    for needed in [
        "usr/local/bin/tollgate",
        "etc/ssl/certs/ca-certificates.crt",
        "etc/passwd",
        "etc/tollgate/policies/paymentgateway.yaml",
    ] {
        assert!(rootfs.join(needed).exists(), "{needed} is in the image");
    }
    assert!(
        !rootfs.join("bin/sh").exists() && !rootfs.join("usr/bin").exists(),
        "no shell or distribution userland"
    );

    // Started from that filesystem with the image's entrypoint, arguments, user and
    // environment; only the address is added (tests listen on loopback).
    let port = free_port();
    let mut command = Command::new(tool("chroot").unwrap_or_else(|| PathBuf::from("chroot")));
    command
        .arg("--userspec=65532:65532")
        .arg(&rootfs)
        .args(&entrypoint)
        .args(&cmd)
        .args(["--addr", &format!("127.0.0.1:{port}")])
        .env_clear()
        .current_dir("/");
    for pair in strings(&run["Env"]) {
        if let Some((name, value)) = pair.split_once('=') {
            command.env(name, value);
        }
    }
    let log = scratch.path().join("serve.log");
    let log_file = std::fs::File::create(&log).unwrap_or_else(|e| panic!("log: {e}"));
    let mut started = Started(
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("chroot starts: {e}")),
    );
    let pid = started.0.id();
    let ca_path = rootfs.join("etc/tollgate/certs/ca.crt");
    let mut client = None;
    for _ in 0..400 {
        if let Ok(Some(status)) = started.0.try_wait() {
            panic!(
                "tollgate in the image exited ({status}): {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        if let Ok(ca) = std::fs::read_to_string(&ca_path) {
            let candidate = https_client(ca.as_bytes(), ([127, 0, 0, 1], port).into())
                .build()
                .unwrap_or_else(|e| panic!("client: {e}"));
            let ready = candidate
                .get(format!("https://localhost:{port}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                client = Some(candidate);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let Some(client) = client else {
        panic!(
            "tollgate in the image never became ready: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let uids: Vec<&str> = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .map(|l| l.split_whitespace().skip(1).collect())
        .unwrap_or_default();
    assert_eq!(
        uids, ["65532"; 4],
        "runs as 65532 (real, effective, saved, fs)"
    );

    let answer: Value = client
        .post(format!("https://localhost:{port}/validate"))
        .json(&fixture("validate-deny.json"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST /validate: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("answer: {e}"));
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
    let message = answer["response"]["status"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("is invalid"), "{message}");
}
