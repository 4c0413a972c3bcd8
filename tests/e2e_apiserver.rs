//! End-to-end against a real kube-apiserver (built from source, on loopback): registration
//! with `tollgate manifests --url`, admission, defaulting, conversion, dry-run, outage and
//! certificate rotation, exactly as the apiserver's own client exercises them.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed step should fail the test loudly

mod support;

use support::eventually;

use std::net::SocketAddr;

use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, Error};
use serde_json::{Value, json};
use support::cluster::Cluster;
use support::server::RestartableServer as Tollgate;

const NS: &str = "payments";

fn manifests(tollgate: &Tollgate) -> Vec<Value> {
    let url = format!("https://127.0.0.1:{}", tollgate.addr.port());
    let cert_dir = tollgate.cert_dir.display().to_string();
    let text = support::tollgate_stdout([
        "manifests",
        "--policies",
        "policies",
        "--crd",
        "deploy/crd-paymentgateway.yaml",
        "--url",
        &url,
        "--cert-dir",
        &cert_dir,
    ]);
    assert!(
        !text.contains("service:"),
        "local registration must use url, never a service reference"
    );
    support::documents(&text)
}

fn cluster_scoped(client: &Client, doc: &Value) -> (Api<DynamicObject>, String) {
    let api_version = doc["apiVersion"].as_str().expect("apiVersion");
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let kind = doc["kind"].as_str().expect("kind");
    let plural = match kind {
        "CustomResourceDefinition" => "customresourcedefinitions",
        "ValidatingWebhookConfiguration" => "validatingwebhookconfigurations",
        "MutatingWebhookConfiguration" => "mutatingwebhookconfigurations",
        other => panic!("unexpected kind in local manifests: {other}"),
    };
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    let name = doc["metadata"]["name"].as_str().expect("name").to_string();
    (Api::all_with(client.clone(), &resource), name)
}

async fn apply_all(client: &Client, docs: &[Value]) {
    for doc in docs {
        let (api, name) = cluster_scoped(client, doc);
        api.patch(
            &name,
            &PatchParams::apply("tollgate-e2e").force(),
            &Patch::Apply(doc),
        )
        .await
        .unwrap_or_else(|e| panic!("apply {name}: {e}"));
    }
}

fn gateways(client: &Client, version: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("payments.example.com", version, "PaymentGateway");
    Api::namespaced_with(
        client.clone(),
        NS,
        &ApiResource::from_gvk_with_plural(&gvk, "paymentgateways"),
    )
}

fn object(version: &str, name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": format!("payments.example.com/{version}"),
        "kind": "PaymentGateway",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }))
    .expect("object")
}

fn minimal(name: &str) -> DynamicObject {
    object(
        "v1",
        name,
        json!({"provider": "adyen", "endpoint": "https://checkout.adyen.example", "credentialsSecretRef": {"name": "adyen-credentials"}}),
    )
}

fn api_message(result: Result<DynamicObject, Error>) -> String {
    match result {
        Ok(o) => panic!("expected a rejection, got {:?}", o.metadata.name),
        Err(Error::Api(status)) => status.message.clone(),
        Err(other) => panic!("expected an API error, got {other}"),
    }
}

async fn wait_until_served(client: &Client) {
    eventually(
        "webhooks and CRD serving",
        Duration::from_secs(60),
        || async {
            let probe = object("v1", "probe", json!({"provider": "nope"}));
            let dry = PostParams {
                dry_run: true,
                ..PostParams::default()
            };
            match gateways(client, "v1").create(&dry, &probe).await {
                Err(Error::Api(s)) if s.message.contains("denied the request") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_apiserver_scenarios() {
    let started = Instant::now();
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let client = cluster.client.clone();
    eprintln!("kubeconfig: {}", cluster.kubeconfig.display());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in [NS, "other"] {
        let doc: Namespace =
            serde_json::from_value(json!({"metadata": {"name": ns}})).expect("namespace");
        namespaces
            .create(&PostParams::default(), &doc)
            .await
            .expect("namespace created");
    }

    let mut tollgate = Tollgate::new(
        SocketAddr::from(([127, 0, 0, 1], support::cluster::free_port())),
        cluster.dir.path().join("tollgate-certs"),
    );
    // Every scenario runs with mutual TLS: admission calls carry the apiserver's client
    // certificate (AdmissionConfiguration), conversion calls none.
    tollgate.client_ca = Some(cluster.webhook_client_ca());
    tollgate.start().await;
    apply_all(&client, &manifests(&tollgate)).await;
    wait_until_served(&client).await;
    eprintln!("registered after {:.1}s", started.elapsed().as_secs_f64());

    scenario_0_mutual_tls(&tollgate).await;
    scenario_1_defaults(&client).await;
    scenario_2_every_violation(&client).await;
    scenario_3_immutable(&client).await;
    scenario_3b_cel_rules(&client).await;
    scenario_4_conversion(&client).await;
    scenario_5_dry_run(&client).await;
    scenario_6_outage_and_7_other_objects(&client, &mut tollgate).await;
    scenario_8_new_certificates(&client, &mut tollgate).await;
    tollgate.stop().await;
    eprintln!(
        "e2e scenarios passed in {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

/// Only the apiserver's certificate opens the admission endpoints.
async fn scenario_0_mutual_tls(tollgate: &Tollgate) {
    let ca_pem = std::fs::read_to_string(tollgate.cert_dir.join("ca.crt")).expect("tollgate CA");
    let review = support::fixture("validate-allow.json");
    let anonymous = support::server::https_client(ca_pem.as_bytes(), tollgate.addr)
        .build()
        .expect("client");
    let url = format!("https://localhost:{}/validate", tollgate.addr.port());
    let response = anonymous
        .post(&url)
        .json(&review)
        .send()
        .await
        .expect("anonymous request answered");
    assert_eq!(response.status(), 403);
    let stranger = support::server::TestCa::new("not-the-apiserver").client("kube-apiserver");
    let handshake = support::server::tls_connect(
        tollgate.addr,
        &ca_pem,
        &[b"http/1.1"],
        rustls::DEFAULT_VERSIONS,
        Some(&stranger),
    )
    .await;
    if let Ok(mut stream) = handshake {
        // TLS 1.3: the refusal arrives with the first read.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let _ = stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        let mut byte = [0u8; 1];
        assert!(
            !matches!(stream.read(&mut byte).await, Ok(n) if n > 0),
            "a certificate from another CA must be refused"
        );
    }
}

async fn scenario_1_defaults(client: &Client) {
    let api = gateways(client, "v1");
    api.create(&PostParams::default(), &minimal("pg-minimal"))
        .await
        .expect("valid object admitted");
    let stored = api.get("pg-minimal").await.expect("stored");
    assert_eq!(
        stored.data["spec"],
        json!({"provider": "adyen", "endpoint": "https://checkout.adyen.example",
               "credentialsSecretRef": {"name": "adyen-credentials"}, "timeoutSeconds": 30,
               "retry": {"maxAttempts": 3, "backoffSeconds": 1}, "currencies": ["USD"], "replicas": 2})
    );
    let labels = stored.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("tollgate")
    );
}

async fn scenario_2_every_violation(client: &Client) {
    let invalid = object(
        "v1",
        "pg-invalid",
        json!({"provider": "paypal", "endpoint": "http://insecure.example", "timeoutSeconds": 500,
               "retry": {"maxAttempts": 11}, "currencies": ["usd", "usd"], "replicas": 0, "colour": "blue"}),
    );
    let message = api_message(
        gateways(client, "v1")
            .create(&PostParams::default(), &invalid)
            .await,
    );
    for field in [
        "spec.provider",
        "spec.endpoint",
        "spec.credentialsSecretRef",
        "spec.timeoutSeconds",
        "spec.retry.maxAttempts",
        "spec.currencies",
        "spec.replicas",
        "spec.colour",
    ] {
        assert!(message.contains(field), "{field} missing from: {message}");
    }
}

async fn scenario_3_immutable(client: &Client) {
    let api = gateways(client, "v1");
    let mut current = api.get("pg-minimal").await.expect("get");
    current.data["spec"]["provider"] = json!("stripe");
    let message = api_message(
        api.replace("pg-minimal", &PostParams::default(), &current)
            .await,
    );
    assert!(message.contains("spec.provider: is immutable"), "{message}");

    let mut current = api.get("pg-minimal").await.expect("get");
    current.data["spec"]["timeoutSeconds"] = json!(60);
    api.replace("pg-minimal", &PostParams::default(), &current)
        .await
        .expect("mutable field updates");
    assert_eq!(
        api.get("pg-minimal").await.expect("get").data["spec"]["timeoutSeconds"],
        60
    );
}

/// CEL rules of the policy, through the real apiserver: a cross-field rule on CREATE (with the
/// defaults /mutate inserted first) and a transition rule on UPDATE, in the one denial.
async fn scenario_3b_cel_rules(client: &Client) {
    let api = gateways(client, "v1");
    let slow = object(
        "v1",
        "pg-slow",
        json!({"provider": "stripe", "endpoint": "https://pay.example", "credentialsSecretRef": {"name": "k"},
               "timeoutSeconds": 4, "retry": {"backoffSeconds": 2}}),
    );
    let message = api_message(api.create(&PostParams::default(), &slow).await);
    assert!(
        message.contains(
            "spec.retry: retry.maxAttempts × retry.backoffSeconds must fit within timeoutSeconds"
        ),
        "{message}"
    );

    let scaled = object(
        "v1",
        "pg-scaled",
        json!({"provider": "stripe", "endpoint": "https://pay.example", "credentialsSecretRef": {"name": "k"}, "replicas": 8}),
    );
    api.create(&PostParams::default(), &scaled)
        .await
        .expect("create pg-scaled");
    let mut current = api.get("pg-scaled").await.expect("get");
    current.data["spec"]["replicas"] = json!(3);
    let message = api_message(
        api.replace("pg-scaled", &PostParams::default(), &current)
            .await,
    );
    assert!(
        message.contains("spec.replicas: replicas may drop by at most half in one change"),
        "{message}"
    );
    current.data["spec"]["replicas"] = json!(4);
    api.replace("pg-scaled", &PostParams::default(), &current)
        .await
        .expect("halving is allowed");
}

async fn scenario_4_conversion(client: &Client) {
    let (v1, alpha) = (gateways(client, "v1"), gateways(client, "v1alpha1"));
    let legacy = object(
        "v1alpha1",
        "pg-legacy",
        json!({"provider": "alipay", "url": "https://openapi.alipay.example/gateway.do",
               "secretName": "alipay-credentials", "maxRetries": 2}),
    );
    alpha
        .create(&PostParams::default(), &legacy)
        .await
        .expect("created through v1alpha1");

    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    let crd = crds
        .get("paymentgateways.payments.example.com")
        .await
        .expect("crd");
    let stored_versions = crd
        .status
        .and_then(|s| s.stored_versions)
        .unwrap_or_default();
    assert_eq!(
        stored_versions,
        vec!["v1".to_string()],
        "objects are stored as v1 only"
    );
    let as_v1 = v1.get("pg-legacy").await.expect("read as v1");
    assert_eq!(
        as_v1.types.as_ref().map(|t| t.api_version.as_str()),
        Some("payments.example.com/v1")
    );
    assert_eq!(
        as_v1.data["spec"],
        json!({"provider": "alipay", "endpoint": "https://openapi.alipay.example/gateway.do",
               "credentialsSecretRef": {"name": "alipay-credentials"}, "timeoutSeconds": 30,
               "retry": {"maxAttempts": 2, "backoffSeconds": 1}, "currencies": ["USD"], "replicas": 2}),
        "stored in v1 with defaults applied to the v1 form"
    );
    let as_alpha = alpha.get("pg-legacy").await.expect("read as v1alpha1");
    assert_eq!(
        as_alpha.data["spec"]["url"],
        "https://openapi.alipay.example/gateway.do"
    );
    assert_eq!(as_alpha.data["spec"]["secretName"], "alipay-credentials");
    assert_eq!(as_alpha.data["spec"]["maxRetries"], 2);
    for api in [&v1, &alpha] {
        let names: Vec<String> = api
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .into_iter()
            .filter_map(|o| o.metadata.name)
            .collect();
        assert!(
            names.contains(&"pg-legacy".to_string()) && names.contains(&"pg-minimal".to_string()),
            "{names:?}"
        );
    }

    // A v1-only field set through v1 survives an update made through v1alpha1.
    let mut current = v1.get("pg-legacy").await.expect("get");
    current.data["spec"]["currencies"] = json!(["EUR", "GBP"]);
    current.data["spec"]["retry"]["backoffSeconds"] = json!(7);
    v1.replace("pg-legacy", &PostParams::default(), &current)
        .await
        .expect("v1 update");

    let version = alpha
        .list(&ListParams::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .unwrap_or_default();
    let watch = alpha
        .watch(
            &WatchParams::default()
                .fields("metadata.name=pg-legacy")
                .timeout(30),
            &version,
        )
        .await
        .expect("watch in v1alpha1");

    let mut old_client_view = alpha.get("pg-legacy").await.expect("get v1alpha1");
    old_client_view.data["spec"]["replicas"] = json!(5);
    alpha
        .replace("pg-legacy", &PostParams::default(), &old_client_view)
        .await
        .expect("v1alpha1 update");
    let after = v1.get("pg-legacy").await.expect("get v1");
    assert_eq!(after.data["spec"]["currencies"], json!(["EUR", "GBP"]));
    assert_eq!(
        after.data["spec"]["retry"],
        json!({"maxAttempts": 2, "backoffSeconds": 7})
    );
    assert_eq!(after.data["spec"]["replicas"], 5);
    let preserved = after
        .metadata
        .annotations
        .unwrap_or_default()
        .into_keys()
        .any(|k| k.contains("conversion.tollgate.dev"));
    assert!(
        !preserved,
        "the preservation annotation is gone once the data is back in v1"
    );

    let mut events = Box::pin(watch);
    let seen = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(event) = events.try_next().await.expect("watch stream") {
            if let WatchEvent::Modified(o) = event
                && o.data["spec"]["replicas"] == 5
            {
                return Some(o);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .expect("the v1alpha1 watch sees the update");
    assert_eq!(
        seen.types.as_ref().map(|t| t.api_version.as_str()),
        Some("payments.example.com/v1alpha1")
    );
    assert_eq!(seen.data["spec"]["maxRetries"], 2);
}

async fn scenario_5_dry_run(client: &Client) {
    let api = gateways(client, "v1");
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let answered = api
        .create(&dry, &minimal("pg-dry"))
        .await
        .expect("dry-run answered");
    assert_eq!(
        answered.data["spec"]["replicas"], 2,
        "defaults apply in dry-run too"
    );
    match api.get("pg-dry").await {
        Err(Error::Api(s)) if s.code == 404 => {}
        other => panic!("dry-run must store nothing: {other:?}"),
    }
}

async fn configmap_untouched(client: &Client, namespace: &str, name: &str) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let doc: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": name}, "data": {"spec": "{\"provider\": \"paypal\"}", "replicas": "0"}
    }))
    .expect("configmap");
    api.create(&PostParams::default(), &doc)
        .await
        .expect("configmap admitted");
    let stored = api.get(name).await.expect("configmap stored");
    assert!(
        stored.metadata.labels.unwrap_or_default().is_empty(),
        "no label added to a ConfigMap"
    );
    assert_eq!(stored.data, doc.data);
    api.delete(name, &DeleteParams::default())
        .await
        .expect("deleted");
}

async fn scenario_6_outage_and_7_other_objects(client: &Client, tollgate: &mut Tollgate) {
    configmap_untouched(client, NS, "cm-while-up").await;
    tollgate.stop().await;
    let message = api_message(
        gateways(client, "v1")
            .create(&PostParams::default(), &minimal("pg-while-down"))
            .await,
    );
    assert!(
        message.contains("failed calling webhook") && message.contains("tollgate.dev"),
        "{message}"
    );
    // Objects outside the policies never depend on tollgate, in any namespace.
    for ns in [NS, "other", "default"] {
        configmap_untouched(client, ns, "cm-while-down").await;
    }
    tollgate.start().await;
    eventually(
        "creation after restart",
        Duration::from_secs(30),
        || async {
            gateways(client, "v1")
                .create(&PostParams::default(), &minimal("pg-after-restart"))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        },
    )
    .await;
}

async fn scenario_8_new_certificates(client: &Client, tollgate: &mut Tollgate) {
    tollgate.stop().await;
    std::fs::remove_dir_all(&tollgate.cert_dir).expect("old certificates removed");
    tollgate.start().await;
    // The registered caBundle still names the old CA: the apiserver refuses the new certificate.
    let message = api_message(
        gateways(client, "v1")
            .create(&PostParams::default(), &minimal("pg-old-ca"))
            .await,
    );
    assert!(message.contains("certificate"), "{message}");
    apply_all(client, &manifests(tollgate)).await;
    eventually(
        "admission with the new caBundle",
        Duration::from_secs(60),
        || async {
            gateways(client, "v1")
                .create(&PostParams::default(), &minimal("pg-new-ca"))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        },
    )
    .await;
    eventually(
        "conversion with the new caBundle",
        Duration::from_secs(60),
        || async {
            gateways(client, "v1alpha1")
                .get("pg-new-ca")
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        },
    )
    .await;
    let listed = gateways(client, "v1alpha1")
        .list(&ListParams::default())
        .await
        .expect("list v1alpha1");
    assert!(
        listed.items.len() >= 4,
        "{} objects listed in v1alpha1",
        listed.items.len()
    );
}
