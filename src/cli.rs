//! Command line: `serve`, `review`, `check`, `certs`, `manifests`, `reconcile`,
//! `release-finalizers`.

use std::io::Read;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use tollgate_engine::policy;

use crate::certs::{CertDir, CertOutcome};
use crate::http::{self, ConversionParseError, Mode, ReviewParseError};
use crate::server::{self, ServeConfig};
use crate::shutdown;
use crate::telemetry::{self, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Admission, defaulting and conversion webhooks for Kubernetes custom resources"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve /validate, /mutate and the probes over HTTPS.
    Serve(Box<ServeArgs>),
    /// Evaluate one AdmissionReview or ConversionReview offline and print the response the server would send.
    Review(ReviewArgs),
    /// Check the policy files and report every problem with file and line.
    Check(CheckArgs),
    /// Generate the CA and serving certificate (only what is missing).
    Certs(CertsArgs),
    /// Render webhook configurations and CRD conversion stanzas (and, with --service, the
    /// whole in-cluster installation) from the policy files and the CA.
    Manifests(ManifestsArgs),
    /// Keep status, revision history and automatic rollback for every kind whose policy has a
    /// `rollout` section (kube config from KUBECONFIG, ~/.kube/config or in-cluster).
    Reconcile(ReconcileArgs),
    /// Remove tollgate's finalizer from every managed object (before uninstalling the reconciler).
    ReleaseFinalizers(ReleaseArgs),
    /// Delete every webhook configuration and admission policy tollgate registered (its
    /// managed-by label), so that nothing calls a webhook that is gone (kube config from
    /// KUBECONFIG, ~/.kube/config or in-cluster). CRD conversion stanzas are left in place: the
    /// stored objects of other versions still need them.
    Unregister(UnregisterArgs),
    /// Run PolicyTest suites (recursively under each DIR) and report every case; exit 0 only
    /// when all pass, 1 when any fails, 2 for unusable input.
    Test(TestArgs),
    /// Judge the objects already stored in the cluster as the webhook would judge their CREATE
    /// (kube config from KUBECONFIG, ~/.kube/config or in-cluster); exit 0 when nothing fails,
    /// 1 when anything fails, 2 for unusable input or an unreachable cluster.
    Audit(AuditArgs),
}

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Directories (searched recursively) or files holding PolicyTest documents.
    #[arg(default_value = "policies/tests")]
    pub paths: Vec<PathBuf>,
    /// Also write the results as JUnit XML to this file.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Directory of policy files.
    #[arg(long, default_value = "policies")]
    pub policies: PathBuf,
    /// Audit only this namespace (cluster-scoped kinds are then left out).
    #[arg(long)]
    pub namespace: Option<String>,
    /// `table`: one line per object and policy that fails or warns; `json`: one JSON object per
    /// line, with each violation's path and message.
    #[arg(long, value_enum, default_value = "table")]
    pub output: crate::audit::Format,
    /// Objects per list request to the apiserver (`limit`): memory holds one page.
    #[arg(long, default_value_t = 500)]
    pub page_size: u32,
    /// Write an OpenReports Report per namespace (and a ClusterReport for cluster-scoped
    /// kinds), and delete tollgate's reports of namespaces with nothing left to judge.
    #[arg(long)]
    pub write_reports: bool,
    /// The most results one report holds (its summary still counts them all).
    #[arg(long, default_value_t = 1000)]
    pub max_results: usize,
    /// Keep auditing: a full pass every DURATION (e.g. 10m), and one as soon as the policy
    /// files change; results go to the reports and the log, not to stdout.
    #[arg(long, value_parser = crate::certs::parse_lifetime)]
    pub interval: Option<Duration>,
    /// With --interval: plain-HTTP address for /metrics and /healthz.
    #[arg(long)]
    pub metrics_addr: Option<String>,
    /// With --interval: compete for this coordination.k8s.io/v1 Lease, so one replica audits.
    #[arg(long)]
    pub lease_name: Option<String>,
    /// Namespace of the Lease (default: $POD_NAMESPACE, else "default").
    #[arg(long)]
    pub lease_namespace: Option<String>,
    /// This replica's identity in the Lease (default: $POD_NAME or the host name, plus the pid).
    #[arg(long)]
    pub identity: Option<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct LeaseArgs {
    /// Name of the coordination.k8s.io/v1 Lease the replicas compete for.
    #[arg(long, default_value = "tollgate-reconciler")]
    pub lease_name: String,
    /// Namespace of the Lease (default: $POD_NAMESPACE, else "default").
    #[arg(long)]
    pub lease_namespace: Option<String>,
    /// This replica's identity in the Lease (default: $POD_NAME or the host name, plus the pid).
    #[arg(long)]
    pub identity: Option<String>,
}

impl LeaseArgs {
    fn identity(&self) -> String {
        self.identity.clone().unwrap_or_else(|| {
            let host = std::env::var("POD_NAME")
                .or_else(|_| std::env::var("HOSTNAME"))
                .unwrap_or_else(|_| "tollgate".into());
            format!("{host}-{}", std::process::id())
        })
    }

    fn config(&self, identity: &str) -> tollgate_reconciler::leader::LeaseConfig {
        let namespace = self
            .lease_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| "default".into());
        tollgate_reconciler::leader::LeaseConfig::new(&self.lease_name, &namespace, identity)
    }
}

#[derive(Debug, clap::Args)]
pub struct ReconcileArgs {
    /// Directory of policy files; kinds with a `rollout` section are reconciled.
    #[arg(long, default_value = "policies")]
    pub policies: PathBuf,
    /// Plain-HTTP address for /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_addr: String,
    #[command(flatten)]
    pub lease: LeaseArgs,
    /// Seconds between checks for changed policy files (rollout sections added, changed or
    /// removed take effect without a restart).
    #[arg(long, default_value_t = 10)]
    pub reload_interval: u64,
    /// Run without leader election (only when exactly one replica runs).
    #[arg(long)]
    pub no_leader_election: bool,
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Debug, clap::Args)]
pub struct ReleaseArgs {
    /// Directory of policy files.
    #[arg(long, default_value = "policies")]
    pub policies: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct UnregisterArgs {
    /// Keep deleting what a replica still shutting down registers again, until nothing has
    /// reappeared for this many seconds (0: delete once).
    #[arg(long, value_name = "SECONDS", default_value_t = 15)]
    pub settle: u64,
}

/// Where the apiserver calls tollgate: shared by `manifests` and `serve --register`.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "target", multiple = false)]
pub struct TargetArgs {
    /// Call tollgate at this base URL (local development), e.g. https://127.0.0.1:8443.
    #[arg(long)]
    pub url: Option<String>,
    /// Call tollgate through this Service (in cluster), as NAMESPACE/NAME.
    #[arg(long)]
    pub service: Option<String>,
}

impl TargetArgs {
    fn target(&self) -> Result<crate::manifests::Target, CliError> {
        use crate::manifests::Target;
        let usage = |e: crate::manifests::ManifestError| CliError::Usage(e.to_string());
        match (&self.url, &self.service) {
            (Some(url), _) => Target::parse_url(url).map_err(usage),
            (None, Some(service)) => Target::parse_service(service).map_err(usage),
            (None, None) => Err(CliError::Usage(
                "one of --url or --service is required".into(),
            )),
        }
    }

    /// tollgate's own namespace: the flag, else the Service's, else "tollgate".
    fn namespace(&self, flag: Option<&String>, target: &crate::manifests::Target) -> String {
        flag.cloned().unwrap_or_else(|| match target {
            crate::manifests::Target::Service { namespace, .. } => namespace.clone(),
            crate::manifests::Target::Url(_) => "tollgate".into(),
        })
    }
}

#[derive(Debug, clap::Args)]
pub struct ManifestsArgs {
    /// Directory of policy files.
    #[arg(long, default_value = "policies")]
    pub policies: PathBuf,
    /// Directory holding ca.crt (its PEM becomes the caBundle).
    #[arg(long, default_value = "certs")]
    pub cert_dir: PathBuf,
    #[command(flatten)]
    pub target: TargetArgs,
    /// tollgate's own namespace, excluded from the webhooks (default: the --service namespace, or "tollgate").
    #[arg(long)]
    pub namespace: Option<String>,
    /// CRD file to complete with the conversion stanza (repeatable); kinds without one get a
    /// partial CRD to apply as a merge patch.
    #[arg(long = "crd", value_name = "FILE")]
    pub crds: Vec<PathBuf>,
    /// Webhook timeoutSeconds (1-30).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u8).range(1..=30))]
    pub timeout_seconds: u8,
    /// Container image for the in-cluster Deployment.
    #[arg(long, default_value = "tollgate:latest")]
    pub image: String,
    /// Deployment replicas (at least 2).
    #[arg(long, default_value_t = 2)]
    pub replicas: u16,
    /// Leave caBundle out (for templates that get it injected at install time).
    #[arg(long)]
    pub no_ca_bundle: bool,
    /// Let cert-manager issue the serving certificate from this Issuer (in tollgate's namespace)
    /// and inject the CA (`cert-manager.io/inject-ca-from`) instead of an inline caBundle.
    /// Needs --service.
    #[arg(long, value_name = "ISSUER", requires = "service")]
    pub cert_manager: Option<String>,
    /// With --cert-manager: also render that Issuer, a CA of its own bootstrapped by a
    /// self-signed Issuer.
    #[arg(long, requires = "cert_manager")]
    pub create_issuer: bool,
    /// Also render the continuous audit (needs --service): its Deployment running
    /// `tollgate audit --write-reports --interval DURATION`, RBAC and the OpenReports CRDs.
    #[arg(long, value_name = "DURATION", requires = "service", value_parser = parse_interval)]
    pub audit_interval: Option<String>,
    /// Enforce in-tree: render each policy as ValidatingAdmissionPolicies and a
    /// MutatingAdmissionPolicy (with bindings) the apiserver evaluates itself; the webhook
    /// configurations keep only what does not compile (`tollgate check --in-tree` says what).
    #[arg(long)]
    pub in_tree: bool,
    /// With --in-tree: the reconciler's username, whose restores are judged on the state they
    /// return to (default: the rendered reconciler's ServiceAccount with --service, else the
    /// serve default). `""` trusts no one.
    #[arg(long, value_name = "USERNAME", requires = "in_tree")]
    pub restorer: Option<String>,
    /// With --service: the webhook registers itself (`serve --register`) instead of being
    /// registered by these manifests: its RBAC is rendered, the webhook configurations,
    /// conversion stanzas and admission policies are not. Without --cert-manager or
    /// --tls-secret the replicas make and share their own CA through the Secret NAME-tls.
    #[arg(long, requires = "service")]
    pub register: bool,
    /// With --service: serve with this existing kubernetes.io/tls Secret (tls.crt, tls.key,
    /// ca.crt) instead of NAME-tls.
    #[arg(long, value_name = "SECRET", requires = "service")]
    pub tls_secret: Option<String>,
    /// With --service: the webhook exports a trace span per review to this OTLP/HTTP
    /// collector (`serve --otlp-endpoint`).
    #[arg(long, value_name = "URL", requires = "service")]
    pub otlp_endpoint: Option<String>,
    /// Print the values the Helm chart (deploy/chart) takes from the policies instead: the
    /// policy files and the reconciler's and audit's RBAC rules derived from them.
    #[arg(long)]
    pub helm_values: bool,
    /// Write to this file instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// A duration as `--interval` takes it, kept as written for the rendered arguments.
fn parse_interval(text: &str) -> Result<String, String> {
    crate::certs::parse_lifetime(text).map(|_| text.to_string())
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Directory of policy files (.yaml, .yml, .json).
    #[arg(long, default_value = "policies")]
    pub policies: PathBuf,
    /// Directory holding tls.crt/tls.key (and ca.crt/ca.key); generated when missing.
    #[arg(long, default_value = "certs")]
    pub cert_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub addr: String,
    /// Extra subject alternative name for a generated certificate (repeatable).
    #[arg(long = "san", value_name = "NAME")]
    pub sans: Vec<String>,
    /// Lifetime of a generated serving certificate (e.g. 90d, 12h, 30s); renewed from the CA
    /// at two thirds of it.
    #[arg(long, default_value = "365d", value_parser = crate::certs::parse_lifetime)]
    pub cert_lifetime: Duration,
    /// Lifetime of a generated CA.
    #[arg(long, default_value = "3650d", value_parser = crate::certs::parse_lifetime)]
    pub ca_lifetime: Duration,
    /// Log a warning (hourly) when the serving certificate or the CA expires within this.
    #[arg(long, default_value = "30d", value_parser = crate::certs::parse_lifetime)]
    pub expiry_warning: Duration,
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Export one OpenTelemetry span per review (uid, kind, operation, each policy's decision,
    /// durations; the child of the apiserver's `traceparent`) to this OTLP/HTTP collector, e.g.
    /// http://otel-collector:4318 (`/v1/traces` is appended). OTEL_EXPORTER_OTLP_ENDPOINT,
    /// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, _HEADERS, _TIMEOUT, _PROTOCOL (http/protobuf or
    /// http/json), OTEL_TRACES_SAMPLER, OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are read
    /// too. Off when no endpoint is set.
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// Largest accepted request body in bytes.
    #[arg(long, default_value_t = 7 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Seconds between checks for changed policy files and certificates.
    #[arg(long, default_value_t = 10)]
    pub reload_interval: u64,
    /// Seconds in-flight requests may take to finish after SIGTERM.
    #[arg(long, default_value_t = 25)]
    pub shutdown_grace: u64,
    /// Mutual TLS: require a client certificate signed by a CA in this PEM file (reloaded with
    /// the serving certificate). Without it no client certificate is asked for.
    #[arg(long, value_name = "FILE")]
    pub client_ca: Option<PathBuf>,
    /// With --client-ca: an endpoint that clients without a certificate may still call
    /// (repeatable): /convert — the apiserver presents no client certificate to CRD conversion
    /// webhooks — and /healthz, /readyz for kubelet probes. Other endpoints answer them 403; a
    /// certificate from another CA is always refused at the handshake.
    #[arg(
        long = "anonymous-endpoint",
        value_name = "PATH",
        requires = "client_ca"
    )]
    pub anonymous_endpoints: Vec<String>,
    /// The reconciler's username (its ServiceAccount). An update it sends that sets the restore
    /// marker (`tollgate.dev/restored`) is judged on the state it returns to: schema, rules
    /// that do not read the old object, immutable fields against the restored revision. The
    /// same marker from anyone else earns nothing. `""` trusts no one.
    #[arg(long, value_name = "USERNAME", default_value = DEFAULT_RESTORER)]
    pub restorer: String,
    /// Connections served at once; up to 64 more are answered 503 with Retry-After, further
    /// ones closed at once.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Reviews read or judged at once across all connections; more are answered 429 with
    /// Retry-After: 1 (the apiserver retries within its webhook timeout). Memory is bounded by
    /// this times --max-body-bytes.
    #[arg(long, default_value_t = http::DEFAULT_MAX_IN_FLIGHT)]
    pub max_in_flight: usize,
    /// Seconds allowed for the TLS handshake.
    #[arg(long, default_value_t = 10)]
    pub handshake_timeout: u64,
    /// Seconds allowed for a request's headers to arrive; a connection idle this long is closed
    /// too (HTTP/1.1 and h2), so slow or silent clients cannot hold connection slots.
    #[arg(long, default_value_t = 10)]
    pub header_read_timeout: u64,
    /// Requests answered on one connection before the client is asked to reconnect
    /// (`Connection: close` on HTTP/1.1, GOAWAY on h2), so the apiserver's keep-alive traffic
    /// spreads over replicas. 1000 costs one extra handshake per thousand reviews. An h2
    /// connection is retired for its count only once it is 10 s old: every stream of an h2 client
    /// shares it, and each reconnection holds them all up.
    #[arg(long, default_value_t = 1000)]
    pub max_connection_requests: u64,
    /// Seconds after which a connection is asked to reconnect, as above.
    #[arg(long, default_value_t = 300)]
    pub max_connection_age: u64,
    /// h2: concurrent streams per connection.
    #[arg(long, default_value_t = 100)]
    pub h2_max_concurrent_streams: u32,
    /// h2: largest request header list, in bytes.
    #[arg(long, default_value_t = 16 * 1024)]
    pub h2_max_header_list_size: u32,
    /// h2: streams a client may reset before they are served; more ends the connection with
    /// GOAWAY ENHANCE_YOUR_CALM (rapid-reset protection).
    #[arg(long, default_value_t = 20)]
    pub h2_max_pending_resets: usize,
    /// h2: seconds between PINGs on a connection with streams open; a peer that does not answer
    /// within --header-read-timeout is considered gone. 0 (the default) sends none: an idle
    /// connection is closed after --header-read-timeout anyway, and the PINGs' bookkeeping
    /// costs a lock and a clock read for every frame received.
    #[arg(long, default_value_t = 0)]
    pub h2_keep_alive_interval: u64,
    /// Register with the apiserver (kube config from KUBECONFIG, ~/.kube/config or in-cluster):
    /// server-side apply, as field manager "tollgate", of the webhook configurations and CRD
    /// conversion stanzas `tollgate manifests` renders, kept in step with the policies and the
    /// CA (and the CA rotated automatically when due). Needs --url or --service.
    #[arg(long)]
    pub register: bool,
    /// With --register: enforce in-tree where the policies compile, as `manifests --in-tree`
    /// renders it (ValidatingAdmissionPolicies, MutatingAdmissionPolicies, their bindings, and
    /// webhook configurations only for what stays with the webhook); what is no longer needed
    /// is removed.
    #[arg(long, requires = "register")]
    pub in_tree: bool,
    #[command(flatten)]
    pub target: TargetArgs,
    /// With --register: tollgate's own namespace, excluded from the webhooks (default: the
    /// --service namespace, or "tollgate").
    #[arg(long)]
    pub namespace: Option<String>,
    /// Share the CA and serving pair with the other replicas through this Secret
    /// (NAMESPACE/NAME; kube config as for --register): the first replica creates it, the
    /// others adopt it, renewals and CA rotation steps are written once. --cert-dir is then this
    /// replica's working copy.
    #[arg(long, value_name = "NAMESPACE/NAME")]
    pub cert_secret: Option<String>,
    /// With --register: webhook timeoutSeconds (1-30).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u8).range(1..=30))]
    pub timeout_seconds: u8,
    /// Also run the reconciler in this process (leader-elected; webhook serving never waits
    /// for leadership).
    #[arg(long)]
    pub reconcile: bool,
    #[command(flatten)]
    pub lease: LeaseArgs,
}

/// The reconciler's ServiceAccount in the installation `tollgate manifests` renders by default.
pub const DEFAULT_RESTORER: &str = "system:serviceaccount:tollgate:tollgate-reconciler";

#[derive(Debug, clap::Args)]
pub struct ReviewArgs {
    /// Directory of policy files.
    #[arg(long, default_value = "policies")]
    pub policies: PathBuf,
    /// Answer as the mutating webhook (defaults as a JSON Patch) instead of the validating one.
    #[arg(long)]
    pub mutate: bool,
    /// As `serve --restorer`: whose restores are judged on the state they return to.
    #[arg(long, value_name = "USERNAME", default_value = DEFAULT_RESTORER)]
    pub restorer: String,
    /// AdmissionReview or ConversionReview JSON file, or `-` for stdin.
    pub file: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Directory of policy files.
    #[arg(long, default_value = "policies")]
    pub policies: PathBuf,
    /// Also say, per policy, what compiles to in-tree admission policies and what stays with
    /// the webhook (and why), with the generated expressions' estimated cost.
    #[arg(long)]
    pub in_tree: bool,
}

#[derive(Debug, clap::Args)]
pub struct CertsArgs {
    /// Directory to write ca.crt, ca.key, tls.crt and tls.key into.
    #[arg(long, default_value = "certs")]
    pub cert_dir: PathBuf,
    /// Extra subject alternative name (repeatable).
    #[arg(long = "san", value_name = "NAME")]
    pub sans: Vec<String>,
    /// Lifetime of a generated serving certificate (e.g. 90d, 12h, 30s); renewed from the CA
    /// at two thirds of it.
    #[arg(long, default_value = "365d", value_parser = crate::certs::parse_lifetime)]
    pub cert_lifetime: Duration,
    /// Lifetime of a generated CA.
    #[arg(long, default_value = "3650d", value_parser = crate::certs::parse_lifetime)]
    pub ca_lifetime: Duration,
    /// Issue a new serving certificate from the CA in the directory (replacing tls.crt/tls.key).
    #[arg(long, conflicts_with = "rotate_ca")]
    pub rotate: bool,
    /// Take the next step of a CA rotation: stage a new CA (trusted next to the old one), then
    /// switch signing to it, then drop the old one. Publish ca.crt as the caBundle between steps.
    #[arg(long)]
    pub rotate_ca: bool,
}

/// A failure with the exit code it maps to: 2 for bad configuration or input, 1 otherwise.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Runtime(String),
    /// Policy test cases failed (already reported case by case).
    #[error("{0} test case(s) failed")]
    TestsFailed(usize),
    /// Stored objects fail an enforcing policy (already listed).
    #[error("{0} result(s) fail an enforcing policy")]
    AuditFailed(usize),
}

impl CliError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Usage(_) => ExitCode::from(2),
            Self::Runtime(_) | Self::TestsFailed(_) | Self::AuditFailed(_) => ExitCode::from(1),
        }
    }
}

pub fn execute(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Review(args) => review(&args),
        Command::Check(args) => check(&args),
        Command::Certs(args) => certs(&args),
        Command::Manifests(args) => manifests(&args),
        Command::Reconcile(args) => reconcile(&args),
        Command::ReleaseFinalizers(args) => release_finalizers(&args),
        Command::Unregister(args) => unregister(&args),
        Command::Test(args) => policy_test(&args),
        Command::Audit(args) => audit(&args),
    }
}

fn audit(args: &AuditArgs) -> Result<(), CliError> {
    use crate::audit::{AuditError, AuditOptions};
    let options = AuditOptions {
        policies: args.policies.clone(),
        namespace: args.namespace.clone(),
        format: args.output,
        page_size: args.page_size,
        reports: args.write_reports.then_some(args.max_results),
    };
    if let Some(interval) = args.interval {
        return audit_continuously(args, options, interval);
    }
    let summary = runtime()?.block_on(async {
        let client = kube_client().await?;
        let mut out = std::io::stdout().lock();
        crate::audit::run(&options, client, &mut out)
            .await
            .map_err(|e| match e {
                AuditError::Write(_) => CliError::Runtime(e.to_string()),
                _ => CliError::Usage(e.to_string()),
            })
    })?;
    for kind in &summary.not_served {
        eprintln!("warning: {kind} is not served by the cluster; skipped");
    }
    eprintln!(
        "audited {} object(s): {} fail, {} warn, {} pass (object and policy pairs)",
        summary.judged, summary.failed, summary.warned, summary.passed
    );
    if args.write_reports {
        eprintln!(
            "reports: {} written, {} deleted",
            summary.reports_written, summary.reports_deleted
        );
    }
    if summary.failed > 0 {
        return Err(CliError::AuditFailed(summary.failed));
    }
    Ok(())
}

fn serve(args: ServeArgs) -> Result<(), CliError> {
    telemetry::init(args.log_format);
    let addr = resolve_addr(&args.addr)?;
    let mut config = ServeConfig::new(&args.policies, &args.cert_dir, addr);
    config.sans = args.sans.clone();
    config.lifetimes = crate::certs::Lifetimes {
        serving: args.cert_lifetime,
        ca: args.ca_lifetime,
    };
    config.expiry_warning = args.expiry_warning;
    config.http.max_body_bytes = args.max_body_bytes;
    config.reload_interval = Duration::from_secs(args.reload_interval.max(1));
    config.shutdown_grace = Duration::from_secs(args.shutdown_grace);
    apply_connection_args(&args, &mut config)?;
    config.cert_secret = args.cert_secret.clone();
    config.traces.endpoint = args.otlp_endpoint.clone();
    if args.register {
        let target = args.target.target()?;
        config.register = Some(crate::register::RegisterConfig {
            namespace: args.target.namespace(args.namespace.as_ref(), &target),
            target,
            timeout_seconds: args.timeout_seconds,
            in_tree: args.in_tree,
            restorer: Some(args.restorer.clone()).filter(|r| !r.is_empty()),
        });
    }
    let runtime = runtime()?;
    let reconciler = args.reconcile.then(|| {
        let identity = args.lease.identity();
        tollgate_reconciler::ReconcilerConfig {
            policies_dir: config.policies_dir.clone(),
            metrics_addr: None,
            lease: Some(args.lease.config(&identity)),
            identity,
            reload_interval: config.reload_interval,
        }
    });
    runtime.block_on(async move {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        // The webhooks never wait for the reconciler: a reconciler that cannot run is reported
        // at once and the server keeps serving.
        let reconciling = reconciler.map(|r| {
            let until = stopped();
            tokio::spawn(async move {
                let result = tollgate_reconciler::run(r, until).await;
                if let Err(e) = &result {
                    tracing::error!(error = %e, "reconciler stopped; the webhooks keep serving");
                }
                result
            })
        });
        let served = server::run(config, async move {
            shutdown::signal().await;
            let _ = stop_tx.send(true);
        })
        .await
        .map_err(|e| {
            if e.is_config_error() {
                CliError::Usage(e.to_string())
            } else {
                CliError::Runtime(e.to_string())
            }
        });
        if let Some(task) = reconciling {
            if served.is_err() {
                task.abort();
            } else if let Ok(Err(e)) = task.await {
                return Err(reconcile_error(e));
            }
        }
        served
    })
}

/// Mutual TLS and the connection limits, from the `serve` flags.
fn apply_connection_args(args: &ServeArgs, config: &mut ServeConfig) -> Result<(), CliError> {
    let anonymous = args
        .anonymous_endpoints
        .iter()
        .map(|path| {
            http::Endpoint::from_path(path).ok_or_else(|| {
                CliError::Usage(format!(
                    "--anonymous-endpoint {path:?} is not an endpoint ({})",
                    http::Endpoint::ALL.map(http::Endpoint::path).join(", ")
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    config.client_auth = match &args.client_ca {
        None => server::ClientAuth::None,
        Some(ca_file) => server::ClientAuth::Verify {
            ca_file: ca_file.clone(),
            allow_anonymous: !anonymous.is_empty(),
        },
    };
    config.http.anonymous_endpoints = anonymous;
    config.http.restorer = Some(args.restorer.clone()).filter(|r| !r.is_empty());
    config.http.max_in_flight = args.max_in_flight.max(1);
    let limits = &mut config.connections;
    limits.max_connections = args.max_connections.max(1);
    limits.handshake_timeout = Duration::from_secs(args.handshake_timeout.max(1));
    limits.header_read_timeout = Duration::from_secs(args.header_read_timeout.max(1));
    limits.max_requests = args.max_connection_requests.max(1);
    limits.max_age = Duration::from_secs(args.max_connection_age.max(1));
    limits.close_grace = config.shutdown_grace;
    limits.h2_max_concurrent_streams = args.h2_max_concurrent_streams.max(1);
    limits.h2_max_header_list_size = args.h2_max_header_list_size;
    limits.h2_max_pending_reset_streams = args.h2_max_pending_resets.max(1);
    limits.h2_keep_alive_interval =
        (args.h2_keep_alive_interval > 0).then(|| Duration::from_secs(args.h2_keep_alive_interval));
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Runtime::new()
        .map_err(|e| CliError::Runtime(format!("cannot start runtime: {e}")))
}

fn reconcile_error(e: tollgate_reconciler::RunError) -> CliError {
    if e.is_config_error() {
        CliError::Usage(e.to_string())
    } else {
        CliError::Runtime(e.to_string())
    }
}

fn audit_continuously(
    args: &AuditArgs,
    options: crate::audit::AuditOptions,
    interval: Duration,
) -> Result<(), CliError> {
    telemetry::init(LogFormat::Text);
    let metrics_addr = args.metrics_addr.as_deref().map(resolve_addr).transpose()?;
    let lease = args.lease_name.as_ref().map(|name| {
        let lease = LeaseArgs {
            lease_name: name.clone(),
            lease_namespace: args.lease_namespace.clone(),
            identity: args.identity.clone(),
        };
        lease.config(&lease.identity())
    });
    // Bad policies are a usage error before anything connects to a cluster.
    policy::load_dir(&options.policies).map_err(|e| CliError::Usage(e.to_string()))?;
    let schedule = crate::audit::Schedule {
        interval,
        lease,
        metrics_addr,
    };
    runtime()?.block_on(async {
        let client = kube_client().await?;
        crate::audit::run_continuously(options, schedule, client, shutdown::signal())
            .await
            .map_err(|e| CliError::Usage(e.to_string()))
    })
}

fn reconcile(args: &ReconcileArgs) -> Result<(), CliError> {
    telemetry::init(args.log_format);
    let metrics_addr = resolve_addr(&args.metrics_addr)?;
    let identity = args.lease.identity();
    let config = tollgate_reconciler::ReconcilerConfig {
        policies_dir: args.policies.clone(),
        metrics_addr: Some(metrics_addr),
        lease: (!args.no_leader_election).then(|| args.lease.config(&identity)),
        identity,
        reload_interval: Duration::from_secs(args.reload_interval.max(1)),
    };
    // Bad policies are a usage error before anything connects to a cluster.
    tollgate_reconciler::runner::load_kinds(&config.policies_dir).map_err(reconcile_error)?;
    runtime()?
        .block_on(tollgate_reconciler::run(config, shutdown::signal()))
        .map_err(reconcile_error)
}

fn release_finalizers(args: &ReleaseArgs) -> Result<(), CliError> {
    let released = runtime()?
        .block_on(tollgate_reconciler::release_finalizers(&args.policies))
        .map_err(reconcile_error)?;
    println!(
        "removed the {} finalizer from {released} object(s)",
        tollgate_reconciler::controller::FINALIZER
    );
    Ok(())
}

fn unregister(args: &UnregisterArgs) -> Result<(), CliError> {
    telemetry::init(LogFormat::Text);
    let removed = runtime()?.block_on(async {
        let client = kube_client().await?;
        crate::register::Registrar::unregister(client, Duration::from_secs(args.settle))
            .await
            .map_err(|e| CliError::Runtime(e.to_string()))
    })?;
    println!(
        "removed {removed} object(s) tollgate registered (webhook configurations, admission policies, bindings)"
    );
    Ok(())
}

/// The cluster's client from KUBECONFIG, ~/.kube/config or in-cluster; none is a usage error.
async fn kube_client() -> Result<kube::Client, CliError> {
    kube::Client::try_default()
        .await
        .map_err(|e| CliError::Usage(format!("cannot configure a Kubernetes client: {e}")))
}

fn resolve_addr(text: &str) -> Result<SocketAddr, CliError> {
    text.to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| CliError::Usage(format!("--addr {text:?} is not a HOST:PORT address")))
}

fn review(args: &ReviewArgs) -> Result<(), CliError> {
    let store = policy::load_dir(&args.policies).map_err(|e| CliError::Usage(e.to_string()))?;
    let (label, body) = read_input(&args.file)?;
    let located = |e: &dyn std::fmt::Display, json: Option<&serde_json::Error>| match json {
        Some(json) if json.line() > 0 => {
            CliError::Usage(format!("{label}:{}:{}: {e}", json.line(), json.column()))
        }
        _ => CliError::Usage(format!("{label}: {e}")),
    };
    // The document's own kind says which webhook would have received it.
    let is_conversion =
        serde_json::from_slice::<KindProbe>(&body).is_ok_and(|p| p.kind == http::CONVERSION_KIND);
    let text = if is_conversion {
        let out = http::conversion_review(&store, &body).map_err(|e| match &e {
            ConversionParseError::Json(json) => located(&e, Some(json)),
            _ => located(&e, None),
        })?;
        serde_json::to_string_pretty(&out)
    } else {
        let mode = if args.mutate {
            Mode::Mutate
        } else {
            Mode::Validate
        };
        let restorer = Some(args.restorer.as_str()).filter(|r| !r.is_empty());
        let out = http::admission_review(&store, &body, mode, restorer).map_err(|e| match &e {
            ReviewParseError::Json(json) => located(&e, Some(json)),
            _ => located(&e, None),
        })?;
        serde_json::to_string_pretty(&out)
    }
    .map_err(|e| CliError::Runtime(e.to_string()))?;
    println!("{text}");
    Ok(())
}

#[derive(serde::Deserialize)]
struct KindProbe {
    #[serde(default)]
    kind: String,
}

fn read_input(file: &Path) -> Result<(String, Vec<u8>), CliError> {
    if file == Path::new("-") {
        let mut body = Vec::new();
        std::io::stdin()
            .read_to_end(&mut body)
            .map_err(|e| CliError::Usage(format!("cannot read stdin: {e}")))?;
        return Ok(("<stdin>".into(), body));
    }
    let body =
        std::fs::read(file).map_err(|e| CliError::Usage(format!("{}: {e}", file.display())))?;
    Ok((file.display().to_string(), body))
}

fn check(args: &CheckArgs) -> Result<(), CliError> {
    let store = policy::load_dir(&args.policies).map_err(|e| CliError::Usage(e.to_string()))?;
    for p in store.policies() {
        println!(
            "ok   {} ({}:{}) {}/{} {}",
            p.name,
            p.origin.file.display(),
            p.origin.line,
            p.matcher.group,
            p.matcher.kind,
            p.matcher.versions.join(",")
        );
    }
    println!("{} policies valid", store.policies().len());
    if args.in_tree {
        let options = tollgate_engine::in_tree::Options {
            restorer: Some(DEFAULT_RESTORER.to_string()),
        };
        for policy in store.policies() {
            let compiled = tollgate_engine::in_tree::compile(policy, &options);
            print!("{}", crate::manifests::in_tree::report(&compiled));
        }
    }
    Ok(())
}

fn manifests(args: &ManifestsArgs) -> Result<(), CliError> {
    use crate::manifests::{self, Options};
    let usage = |e: manifests::ManifestError| CliError::Usage(e.to_string());
    let store = policy::load_dir(&args.policies).map_err(|e| CliError::Usage(e.to_string()))?;
    if args.helm_values {
        let values = manifests::helm_values(&store, &args.policies).map_err(usage)?;
        let text = format!(
            "# Generated by `tollgate manifests --helm-values` from {}; regenerate instead of editing.\n{}",
            args.policies.display(),
            manifests::to_yaml(std::slice::from_ref(&values)).map_err(usage)?
        );
        return write_output(args.output.as_deref(), &text);
    }
    let target = args.target.target()?;
    // A self-registering webhook publishes the CA itself.
    let ca_bundle = if args.no_ca_bundle || args.cert_manager.is_some() || args.register {
        None
    } else {
        let pem = CertDir::new(&args.cert_dir).ca_pem().map_err(|e| {
            CliError::Usage(format!(
                "{e} (run `tollgate certs --cert-dir {}` first)",
                args.cert_dir.display()
            ))
        })?;
        Some(manifests::ca_bundle_from(&pem))
    };
    let namespace = args.target.namespace(args.namespace.as_ref(), &target);
    let target_for_restorer = target.clone();
    let options = Options {
        target,
        ca_bundle,
        namespace,
        timeout_seconds: args.timeout_seconds,
        crd_files: args.crds.clone(),
        image: args.image.clone(),
        replicas: args.replicas,
        policies_dir: args.policies.clone(),
        cert_manager: args
            .cert_manager
            .clone()
            .map(|issuer| manifests::CertManager {
                issuer,
                create_issuer: args.create_issuer,
            }),
        audit_interval: args.audit_interval.clone(),
        in_tree: args.in_tree,
        restorer: match (&args.restorer, &target_for_restorer) {
            (Some(r), _) => Some(r.clone()).filter(|r| !r.is_empty()),
            (None, manifests::Target::Service { namespace, name }) => {
                Some(manifests::reconciler_username(namespace, name))
            }
            (None, manifests::Target::Url(_)) => Some(DEFAULT_RESTORER.to_string()),
        },
        webhook: manifests::WebhookInstall {
            register: args.register,
            tls_secret: args.tls_secret.clone(),
            otlp_endpoint: args.otlp_endpoint.clone(),
        },
    };
    let docs = manifests::render(&store, &options).map_err(usage)?;
    let text = format!(
        "# Generated by `tollgate manifests` from {}; regenerate instead of editing.\n{}",
        args.policies.display(),
        manifests::to_yaml(&docs).map_err(usage)?
    );
    write_output(args.output.as_deref(), &text)
}

fn write_output(path: Option<&Path>, text: &str) -> Result<(), CliError> {
    match path {
        Some(path) => std::fs::write(path, text)
            .map_err(|e| CliError::Runtime(format!("{}: {e}", path.display()))),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

fn certs(args: &CertsArgs) -> Result<(), CliError> {
    let dir = CertDir::new(&args.cert_dir).with_lifetimes(crate::certs::Lifetimes {
        serving: args.cert_lifetime,
        ca: args.ca_lifetime,
    });
    let usage = |e: crate::certs::CertError| CliError::Usage(e.to_string());
    if args.rotate {
        let validity = dir.renew_serving(&args.sans).map_err(usage)?;
        println!(
            "wrote a new tls.crt and tls.key to {} (signed by its CA, expires at unix time {}); a running server picks them up at its next reload",
            args.cert_dir.display(),
            validity.expires_unix()
        );
        return Ok(());
    }
    if args.rotate_ca {
        let step = dir.rotate_ca_step(&args.sans).map_err(usage)?;
        println!("{}: {}", args.cert_dir.display(), step.describe());
        return Ok(());
    }
    match dir
        .generate(&args.sans)
        .map_err(|e| CliError::Usage(e.to_string()))?
    {
        CertOutcome::Generated { dir, ca_reused } => {
            let ca_note = if ca_reused {
                " (existing CA reused)"
            } else {
                ""
            };
            println!(
                "wrote ca.crt, ca.key, tls.crt, tls.key to {}{ca_note}",
                dir.display()
            );
        }
        CertOutcome::Existing => println!(
            "certificates already present in {}",
            args.cert_dir.display()
        ),
    }
    Ok(())
}

fn policy_test(args: &TestArgs) -> Result<(), CliError> {
    let mut stdout = std::io::stdout();
    let report = crate::policy_test::run(&args.paths, &mut stdout)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    if let Some(path) = &args.junit {
        crate::policy_test::write_junit(path, &report)
            .map_err(|e| CliError::Runtime(format!("{}: {e}", path.display())))?;
    }
    match report.failed() {
        0 => Ok(()),
        n => Err(CliError::TestsFailed(n)),
    }
}
