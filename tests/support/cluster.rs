//! A real etcd + kube-apiserver (and, on request, kube-controller-manager) on loopback for end-to-end tests, built from source by
//! `tests/e2e/build-binaries.sh` (cached in `target/e2e/bin`). Every flag is here, once.
//!
//! When the binaries are missing the tests skip with a printed reason, unless
//! `TOLLGATE_E2E_REQUIRED=1` (set by `.ci/run`) makes that a failure.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub client: kube::Client,
    pub kubeconfig: PathBuf,
    etcd: Child,
    apiserver: Child,
    controller_manager: Option<Child>,
}

pub fn bin_dir() -> PathBuf {
    std::env::var_os("TOLLGATE_E2E_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/e2e/bin"))
}

/// Free loopback port; the tiny window before the child binds it is acceptable for tests.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

struct Pki {
    ca_pem: String,
    serving_cert: String,
    serving_key: String,
    admin_cert: String,
    admin_key: String,
    sa_key: String,
    sa_pub: String,
    /// A separate CA for the client certificate the apiserver presents to webhooks.
    webhook_client_ca: String,
    webhook_client_cert: String,
    webhook_client_key: String,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().expect("key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name.push(DnType::CommonName, "e2e-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).expect("ca");
    let issuer = Issuer::new(ca, ca_key);

    let serving_key = KeyPair::generate().expect("key");
    let mut serving = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    serving
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().expect("ip")));
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serving_cert = serving.signed_by(&serving_key, &issuer).expect("serving");

    // Client certificates map CN to the user and O to groups; system:masters is cluster-admin.
    let admin_key = KeyPair::generate().expect("key");
    let mut admin = CertificateParams::new(Vec::<String>::new()).expect("params");
    admin.distinguished_name = DistinguishedName::new();
    admin
        .distinguished_name
        .push(DnType::CommonName, "e2e-admin");
    admin
        .distinguished_name
        .push(DnType::OrganizationName, "system:masters");
    admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let admin_cert = admin.signed_by(&admin_key, &issuer).expect("admin");

    let sa = KeyPair::generate().expect("key");
    let webhook_clients = super::server::TestCa::new("e2e-webhook-clients");
    let webhook_client = webhook_clients.client("kube-apiserver");
    Pki {
        webhook_client_ca: webhook_clients.pem,
        webhook_client_cert: webhook_client.cert_pem,
        webhook_client_key: webhook_client.key_pem,
        ca_pem: ca_cert.pem(),
        serving_cert: serving_cert.pem(),
        serving_key: serving_key.serialize_pem(),
        admin_cert: admin_cert.pem(),
        admin_key: admin_key.serialize_pem(),
        sa_key: sa.serialize_pem(),
        sa_pub: sa.public_key_pem(),
    }
}

fn spawn_logged(binary: &Path, args: &[String], log: &Path) -> Child {
    let out = std::fs::File::create(log).expect("log file");
    let err = out.try_clone().expect("log file");
    let mut cmd = Command::new(binary);
    cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
    // Nothing in the harness may reach past loopback.
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("NO_PROXY", "127.0.0.1,localhost");
    cmd.spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()))
}

/// The apiserver side of mutual TLS with webhooks: an AdmissionConfiguration whose kubeconfig
/// gives the validating and mutating webhook clients a certificate for every webhook host
/// (`*`). CRD conversion webhooks have no such setting: the apiserver calls them without one.
fn write_admission_config(dir: &Path) {
    let path = |name: &str| dir.join(name).display().to_string();
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nusers:\n- name: \"*\"\n  user:\n    client-certificate: {}\n    client-key: {}\n",
        path("webhook-client.crt"),
        path("webhook-client.key")
    );
    std::fs::write(dir.join("webhook-kubeconfig"), kubeconfig).expect("webhook kubeconfig");
    let plugin = |name: &str| {
        format!(
            "- name: {name}\n  configuration:\n    apiVersion: apiserver.config.k8s.io/v1\n    kind: WebhookAdmissionConfiguration\n    kubeConfigFile: {}\n",
            path("webhook-kubeconfig")
        )
    };
    let config = format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\nplugins:\n{}{}",
        plugin("ValidatingAdmissionWebhook"),
        plugin("MutatingAdmissionWebhook")
    );
    std::fs::write(dir.join("admission.yaml"), config).expect("admission config");
}

impl Cluster {
    /// The CA that signed the client certificate the apiserver presents to admission webhooks.
    pub fn webhook_client_ca(&self) -> PathBuf {
        self.dir.path().join("webhook-client-ca.crt")
    }

    /// The kube-apiserver's process id (benchmarks read its CPU time).
    pub fn apiserver_pid(&self) -> u32 {
        self.apiserver.id()
    }

    /// `None` (with the reason printed) when the harness binaries are not built.
    pub async fn start() -> Option<Cluster> {
        Self::start_with(&[]).await
    }

    /// As `start`, with extra kube-apiserver flags.
    pub async fn start_with(extra_apiserver_args: &[String]) -> Option<Cluster> {
        let bin = bin_dir();
        let (etcd_bin, apiserver_bin) = (bin.join("etcd"), bin.join("kube-apiserver"));
        if !etcd_bin.exists() || !apiserver_bin.exists() {
            let reason = format!(
                "e2e harness absent: {} not built (run tests/e2e/build-binaries.sh)",
                if etcd_bin.exists() {
                    &apiserver_bin
                } else {
                    &etcd_bin
                }
                .display()
            );
            if std::env::var("TOLLGATE_E2E_REQUIRED").is_ok_and(|v| v == "1") {
                panic!("{reason}, and TOLLGATE_E2E_REQUIRED=1");
            }
            eprintln!("SKIPPED: {reason}");
            return None;
        }
        tollgate::install_crypto_provider();
        // Ports are picked by binding and releasing them, so another process can take one in
        // between: a server that exits at start-up is retried on fresh ports.
        const ATTEMPTS: u32 = 3;
        for attempt in 1..=ATTEMPTS {
            let mut cluster = Self::launch(&etcd_bin, &apiserver_bin, extra_apiserver_args).await;
            match cluster.wait_ready(Duration::from_secs(120)).await {
                Ok(()) => return Some(cluster),
                Err(reason) if attempt < ATTEMPTS && cluster.exited() => {
                    eprintln!(
                        "e2e cluster attempt {attempt} failed, retrying on new ports: {reason}"
                    );
                }
                Err(reason) => panic!("{reason}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// etcd and kube-apiserver on fresh loopback ports in a fresh directory.
    async fn launch(
        etcd_bin: &Path,
        apiserver_bin: &Path,
        extra_apiserver_args: &[String],
    ) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = |name: &str| dir.path().join(name);
        let pki = pki();
        for (name, text) in [
            ("ca.crt", &pki.ca_pem),
            ("apiserver.crt", &pki.serving_cert),
            ("apiserver.key", &pki.serving_key),
            ("sa.key", &pki.sa_key),
            ("sa.pub", &pki.sa_pub),
            ("webhook-client-ca.crt", &pki.webhook_client_ca),
            ("webhook-client.crt", &pki.webhook_client_cert),
            ("webhook-client.key", &pki.webhook_client_key),
        ] {
            std::fs::write(path(name), text).expect("write pki");
        }

        let (etcd_port, peer_port, api_port) = (free_port(), free_port(), free_port());
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd_args: Vec<String> = vec![
            format!("--data-dir={}", path("etcd").display()),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            // The peer port is bound even for a single member: keep it on loopback too.
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=default={peer_url}"),
            "--log-level=warn".into(),
            // Tests need no durability across machine crashes; skip fsync-heavy defaults.
            "--unsafe-no-fsync".into(),
        ];
        let etcd = spawn_logged(etcd_bin, &etcd_args, &path("etcd.log"));
        write_admission_config(dir.path());

        let mut api_args: Vec<String> = vec![
            format!("--etcd-servers={etcd_url}"),
            // Loopback only, secure port only.
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={api_port}"),
            format!("--cert-dir={}", path("apiserver-certs").display()),
            format!("--tls-cert-file={}", path("apiserver.crt").display()),
            format!("--tls-private-key-file={}", path("apiserver.key").display()),
            // The admin client certificate is signed by this CA.
            format!("--client-ca-file={}", path("ca.crt").display()),
            "--authorization-mode=RBAC".into(),
            // Admission webhooks get a client certificate (mutual TLS with tollgate).
            format!(
                "--admission-control-config-file={}",
                path("admission.yaml").display()
            ),
            // Service-account tokens need a signing key and an issuer even if no pod ever runs.
            format!("--service-account-key-file={}", path("sa.pub").display()),
            format!(
                "--service-account-signing-key-file={}",
                path("sa.key").display()
            ),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            // Required address range for Services; only allocated in etcd, never dialled.
            "--service-cluster-ip-range=10.96.0.0/24".into(),
            // No kubelets or endpoints here: do not publish the apiserver's own endpoints.
            "--endpoint-reconciler-type=none".into(),
            // One client, no need for request queuing; faster start.
            "--enable-priority-and-fairness=false".into(),
            "--profiling=false".into(),
            "--v=1".into(),
        ];
        api_args.extend_from_slice(extra_apiserver_args);
        let apiserver = spawn_logged(apiserver_bin, &api_args, &path("apiserver.log"));

        let kubeconfig = path("kubeconfig");
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: https://127.0.0.1:{api_port}\n    certificate-authority-data: {}\nusers:\n- name: admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: e2e\n  context: {{cluster: e2e, user: admin}}\ncurrent-context: e2e\n",
                b64(&pki.ca_pem),
                b64(&pki.admin_cert),
                b64(&pki.admin_key)
            ),
        )
        .expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&kubeconfig).expect("kubeconfig"),
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .expect("kube config");
        let client = kube::Client::try_from(config).expect("client");
        Cluster {
            dir,
            client,
            kubeconfig,
            etcd,
            apiserver,
            controller_manager: None,
        }
    }

    /// Whether etcd or kube-apiserver has exited.
    fn exited(&mut self) -> bool {
        matches!(self.apiserver.try_wait(), Ok(Some(_)))
            || matches!(self.etcd.try_wait(), Ok(Some(_)))
    }

    async fn wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        let started = Instant::now();
        loop {
            let request = http::Request::get("/readyz")
                .body(Vec::new())
                .expect("request");
            if let Ok(text) = self.client.request_text(request).await
                && text.trim() == "ok"
            {
                eprintln!(
                    "kube-apiserver ready after {:.1}s",
                    started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            if let Ok(Some(status)) = self.apiserver.try_wait() {
                return Err(format!(
                    "kube-apiserver exited ({status}):\n{}",
                    self.log_tail("apiserver.log")
                ));
            }
            if let Ok(Some(status)) = self.etcd.try_wait() {
                return Err(format!(
                    "etcd exited ({status}):\n{}",
                    self.log_tail("etcd.log")
                ));
            }
            if started.elapsed() > limit {
                return Err(format!(
                    "kube-apiserver not ready after {limit:?}:\n{}",
                    self.log_tail("apiserver.log")
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Starts kube-controller-manager with the controllers the reconciler tests need
    /// (Deployments, ReplicaSets, garbage collection, default ServiceAccounts), loopback only.
    /// Returns false, with the reason printed, when its binary is not built.
    pub fn start_controller_manager(&mut self) -> bool {
        let binary = bin_dir().join("kube-controller-manager");
        if !binary.exists() {
            let reason = format!(
                "{} not built (run tests/e2e/build-binaries.sh)",
                binary.display()
            );
            if std::env::var("TOLLGATE_E2E_REQUIRED").is_ok_and(|v| v == "1") {
                panic!("{reason}, and TOLLGATE_E2E_REQUIRED=1");
            }
            eprintln!("SKIPPED: {reason}");
            return false;
        }
        let path = |name: &str| self.dir.path().join(name);
        let args: Vec<String> = vec![
            format!("--kubeconfig={}", self.kubeconfig.display()),
            format!("--authentication-kubeconfig={}", self.kubeconfig.display()),
            format!("--authorization-kubeconfig={}", self.kubeconfig.display()),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={}", free_port()),
            format!("--cert-dir={}", path("kcm-certs").display()),
            "--leader-elect=false".into(),
            "--controllers=deployment-controller,replicaset-controller,statefulset-controller,garbage-collector-controller,serviceaccount-controller".into(),
            // Tests change things every few seconds; react at once.
            "--concurrent-deployment-syncs=5".into(),
            "--v=1".into(),
        ];
        self.controller_manager = Some(spawn_logged(&binary, &args, &path("kcm.log")));
        true
    }

    pub fn log_tail(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(child) = self.controller_manager.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for child in [&mut self.apiserver, &mut self.etcd] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
