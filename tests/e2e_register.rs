//! `tollgate serve --register` against a real kube-apiserver (on loopback): registration from
//! nothing, a policy for a new kind picked up and dropped without any manual apply, and serving
//! certificate renewal plus a full CA rotation under a steady stream of creates.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed step should fail the test loudly

mod support;

use support::eventually;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, Error};
use serde_json::json;
use support::cluster::{Cluster, free_port};

const NS: &str = "payments";

struct Tollgate(Child);

impl Drop for Tollgate {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn api(
    client: &Client,
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(group, version, kind);
    Api::namespaced_with(
        client.clone(),
        NS,
        &ApiResource::from_gvk_with_plural(&gvk, plural),
    )
}

fn gateways(client: &Client, version: &str) -> Api<DynamicObject> {
    api(
        client,
        "payments.example.com",
        version,
        "PaymentGateway",
        "paymentgateways",
    )
}

fn widgets(client: &Client) -> Api<DynamicObject> {
    api(client, "tests.example.com", "v1", "Widget", "widgets")
}

fn gateway(name: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "payments.example.com/v1", "kind": "PaymentGateway",
        "metadata": {"name": name},
        "spec": {"provider": "adyen", "endpoint": "https://checkout.adyen.example",
                 "credentialsSecretRef": {"name": "adyen-credentials"}},
    }))
    .unwrap()
}

fn widget(name: &str, size: i64) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "tests.example.com/v1", "kind": "Widget",
        "metadata": {"name": name}, "spec": {"size": size},
    }))
    .unwrap()
}

const WIDGET_POLICY: &str = r#"apiVersion: tollgate.dev/v1alpha1
kind: Policy
metadata:
  name: widget
spec:
  match:
    group: tests.example.com
    kind: Widget
    resource: widgets
    versions: ["v1"]
    scope: Namespaced
    operations: ["CREATE", "UPDATE"]
  enforcement: enforce
  schema:
    type: object
    properties:
      spec:
        type: object
        properties:
          size: {type: integer, maximum: 10}
"#;

async fn install_widget_crd(client: &Client) {
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.tests.example.com"},
        "spec": {
            "group": "tests.example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                          "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}],
        },
    }))
    .unwrap();
    Api::<CustomResourceDefinition>::all(client.clone())
        .create(&PostParams::default(), &crd)
        .await
        .expect("Widget CRD created");
}

fn denial(result: Result<DynamicObject, Error>) -> Result<String, String> {
    match result {
        Err(Error::Api(status))
            if status.code == 400 || status.code == 422 || status.code == 403 =>
        {
            Ok(status.message)
        }
        Err(other) => Err(other.to_string()),
        Ok(_) => Err("allowed".into()),
    }
}

/// The number of CA certificates in the ValidatingWebhookConfiguration's caBundle, and the text.
async fn registered_bundle(client: &Client) -> Option<(usize, String)> {
    let vwc: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(
                "admissionregistration.k8s.io",
                "v1",
                "ValidatingWebhookConfiguration",
            ),
            "validatingwebhookconfigurations",
        ),
    );
    let found = vwc.get_opt("tollgate").await.ok()??;
    let encoded = found.data["webhooks"][0]["clientConfig"]["caBundle"]
        .as_str()?
        .to_string();
    let pem = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?,
    )
    .ok()?;
    Some((pem.matches("BEGIN CERTIFICATE").count(), pem))
}

/// A directory whose `policies/` holds the example policy.
fn example_policy_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    std::fs::copy(
        support::repo_path("policies/paymentgateway.yaml"),
        dir.path().join("policies/paymentgateway.yaml"),
    )
    .unwrap();
    dir
}

/// The namespace and example CRD in the cluster, and a policy directory with the example policy.
async fn prepare(cluster: &Cluster) -> (Client, tempfile::TempDir) {
    let client = cluster.client.clone();
    support::create_namespace(&client, NS).await;
    support::install_example_crd(&client, NS).await;
    let dir = example_policy_dir();
    (client, dir)
}

/// Waits until tollgate registered itself and a PaymentGateway named `name` gets through.
/// Creates `name` once tollgate admits it. A create that lands before the webhooks are
/// registered (the apiserver then calls nobody) comes back without tollgate's default label:
/// it is deleted and tried again.
async fn until_admitted(client: &Client, name: &str) {
    eventually(
        "registration and admission",
        Duration::from_secs(60),
        || async {
            let api = gateways(client, "v1");
            let created = api
                .create(&PostParams::default(), &gateway(name))
                .await
                .map_err(|e| e.to_string())?;
            let defaulted = created
                .metadata
                .labels
                .is_some_and(|labels| labels.contains_key("app.kubernetes.io/managed-by"));
            if defaulted {
                return Ok(());
            }
            api.delete(name, &DeleteParams::default())
                .await
                .map_err(|e| e.to_string())?;
            Err("admitted before tollgate was registered".to_string())
        },
    )
    .await;
}

fn start_tollgate(cluster: &Cluster, dir: &Path, port: u16) -> Tollgate {
    let lifetimes = ["--cert-lifetime", "8s", "--ca-lifetime", "60s"];
    start_tollgate_with(cluster, dir, port, port, &lifetimes, "tollgate")
}

/// tollgate on `port`, registered as `https://127.0.0.1:{registered_port}`, with its own cert
/// dir (`NAME-certs`) and log (`NAME.log`).
fn start_tollgate_with(
    cluster: &Cluster,
    dir: &Path,
    port: u16,
    registered_port: u16,
    extra: &[&str],
    name: &str,
) -> Tollgate {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--register", "--reload-interval", "1"])
        .args(extra)
        .args([
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--url",
            &format!("https://127.0.0.1:{registered_port}"),
        ])
        .arg("--policies")
        .arg(dir.join("policies"))
        .arg("--cert-dir")
        .arg(dir.join(format!("{name}-certs")))
        .env("KUBECONFIG", &cluster.kubeconfig)
        .env("RUST_LOG", "tollgate=info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("tollgate starts");
    Tollgate(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_register_keeps_registration_and_certificates_in_step() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let (client, dir) = prepare(&cluster).await;
    install_widget_crd(&client).await;
    let _tollgate = start_tollgate(&cluster, dir.path(), free_port());
    let log = || std::fs::read_to_string(dir.path().join("tollgate.log")).unwrap_or_default();

    // 1. From nothing: registered, then validated, defaulted and converted.
    until_admitted(&client, "pg-first").await;
    let stored = gateways(&client, "v1").get("pg-first").await.unwrap();
    assert_eq!(
        stored.metadata.labels.unwrap()["app.kubernetes.io/managed-by"],
        "tollgate"
    );
    let message = denial(
        gateways(&client, "v1")
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "apiVersion": "payments.example.com/v1", "kind": "PaymentGateway",
                    "metadata": {"name": "pg-bad"}, "spec": {"provider": "adyen"},
                }))
                .unwrap(),
            )
            .await,
    )
    .expect("an invalid gateway is denied");
    assert!(message.contains("tollgate"), "{message}");
    eventually(
        "conversion through the registered CRD stanza",
        Duration::from_secs(30),
        || read_in_v1alpha1(&client, "pg-first"),
    )
    .await;

    // 2. A policy for a new kind is enforced without any manual apply, then dropped again.
    assert!(
        widgets(&client)
            .create(&PostParams::default(), &widget("w-before", 99))
            .await
            .is_ok()
    );
    std::fs::write(dir.path().join("policies/widget.yaml"), WIDGET_POLICY).unwrap();
    eventually("the new kind enforced", Duration::from_secs(30), || async {
        denial(
            widgets(&client)
                .create(&PostParams::default(), &widget("w-big", 99))
                .await,
        )
        .map(|_| ())
    })
    .await;
    assert!(
        widgets(&client)
            .create(&PostParams::default(), &widget("w-small", 3))
            .await
            .is_ok()
    );
    std::fs::remove_file(dir.path().join("policies/widget.yaml")).unwrap();
    eventually("the kind unregistered", Duration::from_secs(30), || async {
        widgets(&client)
            .create(&PostParams::default(), &widget("w-big-again", 99))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;

    // 3. Serving renewals and a full CA rotation under a steady stream of creates.
    let initial = registered_bundle(&client)
        .await
        .expect("a registered caBundle");
    assert_eq!(initial.0, 1);
    let (mut created, mut converted, mut failures) = (0u32, 0u32, Vec::new());
    let mut saw_two_cas = false;
    let started = Instant::now();
    let mut i = 0;
    loop {
        i += 1;
        let name = format!("pg-steady-{i}");
        match gateways(&client, "v1")
            .create(&PostParams::default(), &gateway(&name))
            .await
        {
            Ok(_) => created += 1,
            Err(e) => failures.push(format!("create {name}: {e}")),
        }
        match gateways(&client, "v1alpha1").get(&name).await {
            Ok(_) => converted += 1,
            Err(e) => failures.push(format!("get v1alpha1 {name}: {e}")),
        }
        if i % 20 == 0 {
            let _ = gateways(&client, "v1")
                .delete_collection(&DeleteParams::default(), &Default::default())
                .await;
        }
        if let Some((count, pem)) = registered_bundle(&client).await {
            saw_two_cas |= count == 2;
            if saw_two_cas && count == 1 && pem != initial.1 {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(150),
            "no complete CA rotation within 150 s:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = log();
    let renewals = text.matches("serving certificate renewed").count();
    let rotation_steps = text.matches("CA rotation:").count();
    println!(
        "rotation under load: {created} creates and {converted} conversions in {:.0} s, {} failed; {renewals} serving renewals, {rotation_steps} CA rotation steps",
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "failed requests:\n{}\n{text}",
        failures.join("\n")
    );
    assert!(renewals >= 1, "{text}");
    assert_eq!(rotation_steps, 3, "{text}");
}

async fn secret_files(client: &Client) -> Option<std::collections::BTreeMap<String, Vec<u8>>> {
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), "default");
    let secret = secrets.get_opt("tollgate-certs").await.ok()??;
    Some(secret.data?.into_iter().map(|(k, v)| (k, v.0)).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_ca_through_a_secret_and_write_each_renewal_once() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let (client, dir) = prepare(&cluster).await;
    // Both register the same address, as replicas behind one Service do.
    let (port_a, port_b) = (free_port(), free_port());
    let shared = [
        "--cert-secret",
        "default/tollgate-certs",
        "--cert-lifetime",
        "6s",
    ];
    let _a = start_tollgate_with(&cluster, dir.path(), port_a, port_a, &shared, "a");
    let _b = start_tollgate_with(&cluster, dir.path(), port_b, port_a, &shared, "b");
    let logs = || {
        ["a", "b"]
            .map(|n| {
                std::fs::read_to_string(dir.path().join(format!("{n}.log"))).unwrap_or_default()
            })
            .join("\n")
    };
    until_admitted(&client, "pg-shared").await;

    let (mut bundles, mut serving, mut failures) = (BTreeSet::new(), BTreeSet::new(), Vec::new());
    let started = Instant::now();
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(20) {
        i += 1;
        if let Err(e) = gateways(&client, "v1")
            .create(&PostParams::default(), &gateway(&format!("pg-s-{i}")))
            .await
        {
            failures.push(e.to_string());
        }
        if let Some((_, pem)) = registered_bundle(&client).await {
            bundles.insert(pem);
        }
        if let Some(files) = secret_files(&client).await {
            serving.insert(files["tls.crt"].clone());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let text = logs();
    let stored = text
        .matches("certificate change stored in the shared Secret")
        .count();
    println!(
        "shared Secret: {i} creates, {} failed; caBundle values seen {}; serving certificates in the Secret {}; renewals stored {stored}, adopted from the other replica {}",
        failures.len(),
        bundles.len(),
        serving.len(),
        text.matches("adopting theirs").count()
    );
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(bundles.len(), 1, "the caBundle flapped:\n{text}");
    assert!(serving.len() >= 2, "no renewal reached the Secret:\n{text}");
    // Each renewal is written once: every stored change is a distinct certificate seen in the
    // Secret (a losing replica adopts the winner's instead of writing its own).
    assert!(
        stored <= serving.len() + 1,
        "renewals written more than once:\n{text}"
    );
    eventually(
        "both replicas serve the Secret's pair",
        Duration::from_secs(10),
        || async {
            let secret = secret_files(&client).await.ok_or("no Secret")?;
            for name in ["a", "b"] {
                for file in ["ca.crt", "tls.crt"] {
                    let local = std::fs::read(dir.path().join(format!("{name}-certs/{file}")))
                        .map_err(|e| e.to_string())?;
                    if local != secret[file] {
                        return Err(format!("{name}/{file} differs"));
                    }
                }
            }
            Ok(())
        },
    )
    .await;

    // A broken hand edit is refused loudly; admission keeps working.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), "default");
    secrets
        .patch(
            "tollgate-certs",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"data": {"tls.crt": base64::engine::general_purpose::STANDARD.encode("not a certificate")}})),
        )
        .await
        .expect("Secret edited");
    eventually(
        "the broken Secret refused by both",
        Duration::from_secs(20),
        || async {
            let text = logs();
            let refused = text.matches("does not hold a working CA").count();
            if refused >= 2 {
                Ok(())
            } else {
                Err(format!("{refused} refusals"))
            }
        },
    )
    .await;
    gateways(&client, "v1")
        .create(&PostParams::default(), &gateway("pg-after-broken-secret"))
        .await
        .expect("admission still works with the pair in use");
}

/// Reads gateway `name` in v1alpha1 (through the conversion webhook): converted, or why not.
async fn read_in_v1alpha1(client: &Client, name: &str) -> Result<(), String> {
    let old = gateways(client, "v1alpha1")
        .get(name)
        .await
        .map_err(|e| e.to_string())?;
    match old.data["spec"]["url"].as_str() {
        Some("https://checkout.adyen.example") => Ok(()),
        _ => Err(format!("not converted: {}", old.data["spec"])),
    }
}

fn crds(client: &Client) -> Api<DynamicObject> {
    Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
            "customresourcedefinitions",
        ),
    )
}

/// The conversion client config of the example CRD as the apiserver holds it.
async fn conversion_client_config(client: &Client) -> serde_json::Value {
    crds(client)
        .get("paymentgateways.payments.example.com")
        .await
        .map(|crd| crd.data["spec"]["conversion"]["webhook"]["clientConfig"].clone())
        .unwrap_or_default()
}

/// The shipped CRD as `kubectl apply` leaves it (its conversion names the Service
/// tollgate/tollgate, a field owned by kubectl's manager), then `serve --register --url`:
/// tollgate takes the stanza over and stored objects read in v1alpha1 again. Then a server
/// registered with `--service` makes the stanza name exactly that Service (no `url` left).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_takes_over_a_conversion_stanza_another_manager_wrote() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let client = cluster.client.clone();
    support::create_namespace(&client, NS).await;
    let text = std::fs::read_to_string(support::repo_path("deploy/crd-paymentgateway.yaml"))
        .expect("shipped CRD");
    let mut crd = tollgate_engine::policy::yaml::parse_documents(&text).expect("CRD parses")[0]
        .value
        .clone();
    assert_eq!(
        crd["spec"]["conversion"]["webhook"]["clientConfig"]["service"]["name"],
        "tollgate"
    );
    // What `kubectl apply` sends on create: the object, its last-applied annotation, and
    // kubectl's field manager (an Update, not a server-side apply).
    crd["metadata"]["annotations"] = json!({
        "kubectl.kubernetes.io/last-applied-configuration": crd.to_string()
    });
    let params = PostParams {
        field_manager: Some("kubectl-client-side-apply".into()),
        ..PostParams::default()
    };
    crds(&client)
        .create(&params, &serde_json::from_value(crd).unwrap())
        .await
        .expect("CRD created as kubectl apply creates it");
    support::until_served("the CRD", gateways(&client, "v1"), Duration::from_secs(60)).await;
    // Stored in v1 (the storage version: no conversion needed to write it).
    let mut stored = gateway("gw-stored");
    stored.metadata.namespace = Some(NS.into());
    gateways(&client, "v1")
        .create(&PostParams::default(), &stored)
        .await
        .expect("stored");
    let unreadable = gateways(&client, "v1alpha1").get("gw-stored").await;
    assert!(
        unreadable.is_err(),
        "read in v1alpha1 without a reachable converter"
    );

    let dir = example_policy_dir();
    let port = free_port();
    let server = start_tollgate_with(&cluster, dir.path(), port, port, &[], "takeover");
    eventually(
        "stored objects read in v1alpha1 after serve --register --url",
        Duration::from_secs(30),
        || read_in_v1alpha1(&client, "gw-stored"),
    )
    .await;
    let config = conversion_client_config(&client).await;
    assert_eq!(
        config["url"],
        format!("https://127.0.0.1:{port}/convert"),
        "{config}"
    );
    assert!(
        config.get("service").is_none() && config["caBundle"].is_string(),
        "{config}"
    );
    drop(server);

    // Registered for in-cluster use: the stanza names exactly the Service.
    let log = std::fs::File::create(dir.path().join("service.log")).unwrap();
    let _service = Tollgate(
        Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["serve", "--register", "--reload-interval", "1"])
            .args(["--addr", &format!("127.0.0.1:{}", free_port())])
            .args(["--service", "tollgate-system/tollgate"])
            .arg("--policies")
            .arg(dir.path().join("policies"))
            .arg("--cert-dir")
            .arg(dir.path().join("service-certs"))
            .env("KUBECONFIG", &cluster.kubeconfig)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("tollgate starts"),
    );
    eventually(
        "the stanza names the Service and nothing else",
        Duration::from_secs(30),
        || async {
            let config = conversion_client_config(&client).await;
            let service = &config["service"];
            let exact = service["namespace"] == "tollgate-system"
                && service["name"] == "tollgate"
                && config.get("url").is_none()
                && config["caBundle"].is_string();
            exact.then_some(()).ok_or_else(|| config.to_string())
        },
    )
    .await;

    drop(_service);

    // An identity that may read CRDs and nothing else: its applies are refused, and the
    // failure is in /readyz and the metrics.
    for (kind, plural, object) in [
        (
            "ClusterRole",
            "clusterroles",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                   "metadata": {"name": "e2e-crd-reader"},
                   "rules": [{"apiGroups": ["apiextensions.k8s.io"],
                              "resources": ["customresourcedefinitions"], "verbs": ["get", "list"]}]}),
        ),
        (
            "ClusterRoleBinding",
            "clusterrolebindings",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                   "metadata": {"name": "e2e-crd-reader"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                               "name": "e2e-crd-reader"},
                   "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "nobody"}]}),
        ),
    ] {
        let gvk = GroupVersionKind::gvk("rbac.authorization.k8s.io", "v1", kind);
        Api::<DynamicObject>::all_with(
            client.clone(),
            &ApiResource::from_gvk_with_plural(&gvk, plural),
        )
        .create(
            &PostParams::default(),
            &serde_json::from_value(object).unwrap(),
        )
        .await
        .expect("RBAC");
    }
    let mut kubeconfig = kube::config::Kubeconfig::read_from(&cluster.kubeconfig).unwrap();
    for auth in &mut kubeconfig.auth_infos {
        if let Some(info) = auth.auth_info.as_mut() {
            info.impersonate = Some("nobody".into());
        }
    }
    let refused_config = dir.path().join("nobody-kubeconfig");
    std::fs::write(&refused_config, serde_json::to_vec(&kubeconfig).unwrap()).unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("refused.log")).unwrap();
    let _refused = Tollgate(
        Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["serve", "--register", "--reload-interval", "1"])
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .args(["--url", &format!("https://127.0.0.1:{port}")])
            .arg("--policies")
            .arg(dir.path().join("policies"))
            .arg("--cert-dir")
            .arg(dir.path().join("refused-certs"))
            .env("KUBECONFIG", &refused_config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("tollgate starts"),
    );
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    eventually(
        "a refused registration reported by /readyz and the metrics",
        Duration::from_secs(30),
        || async {
            let ca = std::fs::read(dir.path().join("refused-certs/ca.crt"))
                .map_err(|e| e.to_string())?;
            let https = support::server::https_client(&ca, addr)
                .build()
                .map_err(|e| e.to_string())?;
            let get = |path: &str| {
                let request = https.get(format!("https://localhost:{port}{path}"));
                async move {
                    let response = request.send().await.map_err(|e| e.to_string())?;
                    Ok::<_, String>((
                        response.status().as_u16(),
                        response.text().await.unwrap_or_default(),
                    ))
                }
            };
            let (status, ready) = get("/readyz").await?;
            let (_, metrics) = get("/metrics").await?;
            let reported = status == 200
                && ready.contains("\"failing\"")
                && ready.contains("forbidden")
                && metrics.contains("tollgate_registration_failing 1");
            reported
                .then_some(())
                .ok_or_else(|| format!("{status} {ready}"))
        },
    )
    .await;
}

fn cluster_api(client: &Client, kind: &str, plural: &str) -> Api<DynamicObject> {
    Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", kind),
            plural,
        ),
    )
}

/// The names of the objects of one admission-registration kind.
async fn registered(client: &Client, kind: &str, plural: &str) -> BTreeSet<String> {
    cluster_api(client, kind, plural)
        .list(&Default::default())
        .await
        .map(|list| {
            list.items
                .into_iter()
                .filter_map(|o| o.metadata.name)
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_register_in_tree_enforces_without_the_webhook_and_removes_what_it_no_longer_needs() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let (client, dir) = prepare(&cluster).await;
    let port = free_port();
    let in_tree = start_tollgate_with(&cluster, dir.path(), port, port, &["--in-tree"], "in-tree");
    let policies = || {
        registered(
            &client,
            "ValidatingAdmissionPolicy",
            "validatingadmissionpolicies",
        )
    };
    let mutating = || {
        registered(
            &client,
            "MutatingAdmissionPolicy",
            "mutatingadmissionpolicies",
        )
    };
    let webhooks = || {
        registered(
            &client,
            "ValidatingWebhookConfiguration",
            "validatingwebhookconfigurations",
        )
    };

    // 1. The example's validation and defaults compile: admission policies, no webhook
    //    configuration (conversion stays with the webhook, in the CRD's stanza).
    eventually("in-tree registration", Duration::from_secs(60), || async {
        let (p, m, w) = (policies().await, mutating().await, webhooks().await);
        if p.contains("tollgate-paymentgateway")
            && m.contains("tollgate-paymentgateway")
            && w.is_empty()
        {
            Ok(())
        } else {
            Err(format!("{p:?} {m:?} {w:?}"))
        }
    })
    .await;
    until_admitted(&client, "pg-in-tree").await;

    // 2. With tollgate gone, the apiserver still judges: the policy-level rule (which no CRD
    //    schema can state) refuses a long name (once the apiserver has the new binding).
    drop(in_tree);
    let long = "a-gateway-name-well-beyond-forty-characters-long";
    let refusal = || async {
        let api = gateways(&client, "v1");
        let result = api.create(&PostParams::default(), &gateway(long)).await;
        if result.is_ok() {
            let _ = api.delete(long, &DeleteParams::default()).await;
        }
        denial(result)
    };
    eventually("in-tree refusal", Duration::from_secs(60), || async {
        refusal().await.map(|_| ())
    })
    .await;
    let refused = refusal()
        .await
        .expect("a long name is refused with tollgate stopped");
    assert!(
        refused.contains("ValidatingAdmissionPolicy 'tollgate-paymentgateway'")
            && refused.contains("(object): the name must be at most 40 characters"),
        "{refused}"
    );

    // 3. Back to the webhook: the admission policies go once the webhook configurations are in.
    let _webhook = start_tollgate_with(&cluster, dir.path(), port, port, &[], "webhook");
    eventually("back to the webhook", Duration::from_secs(60), || async {
        let (p, m, w) = (policies().await, mutating().await, webhooks().await);
        if p.is_empty() && m.is_empty() && w.contains("tollgate") {
            Ok(())
        } else {
            Err(format!("{p:?} {m:?} {w:?}"))
        }
    })
    .await;
    eventually("the webhook refuses", Duration::from_secs(60), || async {
        match refusal().await {
            Ok(message) if message.contains("admission webhook") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}
