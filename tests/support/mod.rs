//! Test support shared by every integration test: repository paths and fixtures, a real tollgate
//! server over TLS (`server`), and a real etcd + kube-apiserver on loopback (`cluster`).
#![allow(dead_code)]

pub mod cluster;
pub mod h2;
pub mod otlp;
pub mod reconciler;
pub mod server;

use std::path::{Path, PathBuf};

use serde_json::Value;

pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// A JSON fixture from `tests/fixtures`; a missing or malformed file fails the test by name.
pub fn fixture(name: &str) -> Value {
    let path = repo_path("tests/fixtures").join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// What `tollgate review` prints for `file` against `policies` (`--mutate` when asked), run from
/// the repository root as a user runs it; a failed run fails the test with its stderr.
pub fn review(policies: &Path, file: &Path, mutate: bool) -> Value {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"));
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("review")
        .arg("--policies")
        .arg(policies);
    if mutate {
        command.arg("--mutate");
    }
    let out = command
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("tollgate review {}: {e}", file.display()));
    assert!(
        out.status.success(),
        "tollgate review {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("tollgate review {} printed no JSON: {e}", file.display()))
}

/// The release build of tollgate a benchmark drives; `None` (with the reason printed) when it
/// is not built.
pub fn release_binary() -> Option<PathBuf> {
    let binary = repo_path("target/release/tollgate");
    if binary.exists() {
        Some(binary)
    } else {
        eprintln!(
            "SKIPPED: {} not built (cargo build --release)",
            binary.display()
        );
        None
    }
}

/// What `tollgate ARGS` prints, run from the repository root; a failed run fails the test with
/// its stderr.
pub fn tollgate_stdout<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("tollgate runs: {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap_or_else(|e| panic!("tollgate printed no UTF-8: {e}"))
}

/// The documents of a YAML (or JSON) stream, as `tollgate manifests` prints them.
pub fn documents(text: &str) -> Vec<Value> {
    tollgate_engine::policy::yaml::parse_documents(text)
        .unwrap_or_else(|e| panic!("documents do not parse: {e:?}"))
        .into_iter()
        .map(|d| d.value)
        .collect()
}

/// Waits (up to `limit`) until `api`'s kind is served (a CRD just created takes a moment).
pub async fn until_served(
    what: &str,
    api: kube::Api<kube::core::DynamicObject>,
    limit: std::time::Duration,
) {
    eventually(what, limit, || {
        let api = api.clone();
        async move {
            api.list(&Default::default())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
    .await;
}

/// The example PaymentGateway kind (v1) in `namespace`.
pub fn payment_gateways(
    client: &kube::Client,
    namespace: &str,
) -> kube::Api<kube::core::DynamicObject> {
    let resource = kube::core::ApiResource::from_gvk_with_plural(
        &kube::core::GroupVersionKind::gvk("payments.example.com", "v1", "PaymentGateway"),
        "paymentgateways",
    );
    kube::Api::namespaced_with(client.clone(), namespace, &resource)
}

/// Installs the example CRD without its conversion stanza (no conversion webhook: v1 only) and
/// waits until it is served in `namespace`.
pub async fn install_example_crd(client: &kube::Client, namespace: &str) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let text = std::fs::read_to_string(repo_path("deploy/crd-paymentgateway.yaml"))
        .unwrap_or_else(|e| panic!("deploy/crd-paymentgateway.yaml: {e}"));
    let mut crd = tollgate_engine::policy::yaml::parse_documents(&text)
        .unwrap_or_else(|e| panic!("CRD does not parse: {e:?}"))[0]
        .value
        .clone();
    if let Some(spec) = crd["spec"].as_object_mut() {
        spec.remove("conversion");
    }
    let crd: CustomResourceDefinition =
        serde_json::from_value(crd).unwrap_or_else(|e| panic!("CRD: {e}"));
    kube::Api::<CustomResourceDefinition>::all(client.clone())
        .create(&kube::api::PostParams::default(), &crd)
        .await
        .unwrap_or_else(|e| panic!("CRD not created: {e}"));
    let started = std::time::Instant::now();
    while payment_gateways(client, namespace)
        .list(&kube::api::ListParams::default())
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "CRD never served"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

pub async fn create_namespace(client: &kube::Client, name: &str) {
    let namespace: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))
            .unwrap_or_else(|e| panic!("namespace: {e}"));
    kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(&kube::api::PostParams::default(), &namespace)
        .await
        .unwrap_or_else(|e| panic!("namespace {name} not created: {e}"));
}

/// Polls until `check` passes (printing how long it took); registration and certificate changes
/// reach the apiserver's webhook clients asynchronously.
pub async fn eventually<F, Fut>(what: &str, limit: std::time::Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let started = std::time::Instant::now();
    loop {
        match check().await {
            Ok(()) => {
                eprintln!("{what}: after {:.1}s", started.elapsed().as_secs_f64());
                return;
            }
            Err(last) if started.elapsed() > limit => {
                panic!("{what}: still failing after {limit:?}: {last}")
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
        }
    }
}

/// Creates one rendered document (any kind the apiserver serves), for real or as a server-side
/// dry run; panics with the apiserver's reason when it is refused.
pub async fn create_document(client: &kube::Client, value: &Value, dry_run: bool) {
    use kube::ResourceExt;
    use kube::api::{Api, DynamicObject, PostParams};
    let kind = value["kind"].as_str().unwrap_or_default();
    let api_version = value["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let (resource, caps) = kube::discovery::pinned_kind(
        client,
        &kube::core::GroupVersionKind::gvk(group, version, kind),
    )
    .await
    .unwrap_or_else(|e| panic!("{kind} is not served: {e}"));
    let object: DynamicObject =
        serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{kind}: {e}"));
    let api: Api<DynamicObject> = match (caps.scope, object.metadata.namespace.as_deref()) {
        (kube::discovery::Scope::Namespaced, Some(ns)) => {
            Api::namespaced_with(client.clone(), ns, &resource)
        }
        _ => Api::all_with(client.clone(), &resource),
    };
    let params = PostParams {
        dry_run,
        ..PostParams::default()
    };
    api.create(&params, &object)
        .await
        .unwrap_or_else(|e| panic!("{kind} {} refused: {e}", object.name_any()));
}
