//! cert-manager instead of an inline `caBundle`: a Certificate for the Service (optionally with
//! its own CA Issuer chain), and the `cert-manager.io/inject-ca-from` annotation on everything
//! that needs the CA, so cert-manager's CA injector keeps the bundles current.

use serde_json::{Value, json};

use super::labels;

pub const INJECT_ANNOTATION: &str = "cert-manager.io/inject-ca-from";

#[derive(Debug, Clone)]
pub struct CertManager {
    /// The Issuer (in tollgate's namespace) that signs the serving certificate.
    pub issuer: String,
    /// Also render that Issuer: a CA of its own, bootstrapped by a self-signed Issuer.
    pub create_issuer: bool,
}

/// The Certificate whose Secret the Deployment mounts (`NAME-tls`), and the Issuer chain when
/// asked for.
pub fn documents(cert_manager: &CertManager, namespace: &str, name: &str) -> Vec<Value> {
    let meta = |object: &str| json!({"name": object, "namespace": namespace, "labels": labels()});
    let issuer = &cert_manager.issuer;
    let mut docs = Vec::new();
    if cert_manager.create_issuer {
        let bootstrap = format!("{issuer}-selfsigned");
        let ca = format!("{issuer}-ca");
        docs.extend([
            json!({"apiVersion": "cert-manager.io/v1", "kind": "Issuer", "metadata": meta(&bootstrap),
                   "spec": {"selfSigned": {}}}),
            json!({"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": meta(&ca),
                   "spec": {"isCA": true, "commonName": format!("{name} CA"), "secretName": ca,
                            "duration": "87600h", "renewBefore": "720h",
                            "privateKey": {"algorithm": "ECDSA", "size": 256},
                            "issuerRef": {"kind": "Issuer", "name": bootstrap}}}),
            json!({"apiVersion": "cert-manager.io/v1", "kind": "Issuer", "metadata": meta(issuer),
                   "spec": {"ca": {"secretName": ca}}}),
        ]);
    }
    docs.push(json!({
        "apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": meta(&format!("{name}-tls")),
        "spec": {
            "secretName": format!("{name}-tls"),
            "dnsNames": [format!("{name}.{namespace}.svc"), format!("{name}.{namespace}.svc.cluster.local")],
            "duration": "2160h", "renewBefore": "720h",
            "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
            "usages": ["server auth", "digital signature", "key encipherment"],
            "issuerRef": {"kind": "Issuer", "name": issuer},
        },
    }));
    docs
}

/// Marks webhook configurations and CRDs for CA injection from the serving Certificate.
pub fn annotate(docs: &mut [Value], namespace: &str, name: &str) {
    let source = format!("{namespace}/{name}-tls");
    for doc in docs.iter_mut().filter(|doc| {
        matches!(
            doc["kind"].as_str(),
            Some(
                "ValidatingWebhookConfiguration"
                    | "MutatingWebhookConfiguration"
                    | "CustomResourceDefinition"
            )
        )
    }) {
        doc["metadata"]["annotations"][INJECT_ANNOTATION] = json!(source);
    }
}
