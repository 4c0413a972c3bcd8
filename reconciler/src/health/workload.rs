//! A workload named by the object (same namespace) whose rollout is the object's health: the
//! watch and the read that Deployments and StatefulSets share; each kind brings its judgement.

use std::fmt::Debug;

use futures_util::future::BoxFuture;
use kube::core::DynamicObject;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tollgate_engine::FieldPath;

use super::{Health, HealthSource, Related, read_str};

pub struct Workload<K> {
    pub name_from: FieldPath,
    /// The kind's name in messages.
    pub noun: &'static str,
    pub judge: fn(&K) -> Health,
}

impl<K> HealthSource for Workload<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
{
    fn watch(
        &self,
        controller: Controller<DynamicObject>,
        client: &Client,
        related: Related,
    ) -> Controller<DynamicObject> {
        let name_from = self.name_from.clone();
        controller.watches(
            Api::<K>::all(client.clone()),
            watcher::Config::default(),
            move |workload| {
                related.matching(workload.namespace(), &name_from, |name| {
                    name.as_str() == Some(workload.name_any().as_str())
                })
            },
        )
    }

    fn observe<'a>(
        &'a self,
        client: &'a Client,
        object: &'a Value,
        namespace: &'a str,
    ) -> BoxFuture<'a, Result<Health, kube::Error>> {
        Box::pin(async move {
            let Some(name) = read_str(object, &self.name_from) else {
                return Ok(Health::Missing(format!("{} is not set", self.name_from)));
            };
            Ok(
                match Api::<K>::namespaced(client.clone(), namespace)
                    .get_opt(name)
                    .await?
                {
                    Some(workload) => (self.judge)(&workload),
                    None => Health::Missing(format!("{} {name} not found", self.noun)),
                },
            )
        })
    }
}
