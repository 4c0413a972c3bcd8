//! The ControllerRevisions tollgate manages, as the controller's watch sees them, so a reconcile
//! reads an object's revisions from memory instead of listing the namespace from the apiserver
//! (a label-selected list reads every revision there: a first sync of N objects cost N² reads).
//!
//! A watch lags the writes that caused it. The reconciler's own writes are remembered as
//! expectations (the resourceVersion each create or update returned, the absence each delete
//! left); until the cache shows all of an object's, its revisions are listed from the apiserver.
//! An expectation lapses after `EXPECTATION_TTL`: someone else may have written the revision
//! again since, and the cache would never show our resourceVersion.
//! Writes by a previous leader need no expectation: a follower watches all along, and a leader
//! stops writing well before its lease can pass on (see `leader`), so they have long arrived.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::ControllerRevision;
use kube::ResourceExt;
use kube::runtime::watcher::Event;

use crate::revisions::{OWNER_UID_LABEL, RevisionRecord};

/// Far longer than a watch takes to deliver an event; short enough that a revision someone else
/// rewrote does not keep its object on apiserver lists for long.
const EXPECTATION_TTL: Duration = Duration::from_secs(30);

/// What one write of the reconciler left behind: the revision at that resourceVersion, or gone.
#[derive(Debug, Clone)]
struct Expectation {
    key: Key,
    resource_version: Option<String>,
    written: Instant,
}

/// A revision's namespace and name.
type Key = (String, String);

/// One revision as the watch last showed it: read back into a record once, on arrival.
struct Cached {
    resource_version: Option<String>,
    record: RevisionRecord,
}

/// Owner uid -> that object's revisions, so a read costs what the object has, not the cluster.
type ByOwner = HashMap<String, HashMap<Key, Cached>>;

#[derive(Default)]
struct Seen {
    /// `None` until the watch's first list has completed.
    live: Option<ByOwner>,
    /// A (re)list in progress, swapped in whole when it completes.
    relisting: ByOwner,
}

#[derive(Default)]
pub struct RevisionCache {
    seen: Mutex<Seen>,
    /// Per owner uid, the reconciler's writes the cache has not shown yet.
    expected: Mutex<HashMap<String, Vec<Expectation>>>,
}

fn owner_and_key(revision: &ControllerRevision) -> Option<(String, Key)> {
    let uid = revision.labels().get(OWNER_UID_LABEL)?.clone();
    Some((uid, (revision.namespace()?, revision.name_any())))
}

fn insert(map: &mut ByOwner, revision: &ControllerRevision) {
    let (Some((uid, key)), Some(record)) = (
        owner_and_key(revision),
        RevisionRecord::from_controller_revision(revision),
    ) else {
        return;
    };
    let cached = Cached {
        resource_version: revision.resource_version(),
        record,
    };
    map.entry(uid).or_default().insert(key, cached);
}

impl RevisionCache {
    /// Follows the revisions watch (called with each of its events).
    pub fn apply(&self, event: &Event<ControllerRevision>) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match event {
            Event::Init => seen.relisting = ByOwner::new(),
            Event::InitApply(revision) => insert(&mut seen.relisting, revision),
            Event::InitDone => seen.live = Some(std::mem::take(&mut seen.relisting)),
            Event::Apply(revision) => {
                if let Some(live) = seen.live.as_mut() {
                    insert(live, revision);
                }
            }
            Event::Delete(revision) => {
                if let (Some(live), Some((uid, key))) =
                    (seen.live.as_mut(), owner_and_key(revision))
                    && let Some(owned) = live.get_mut(&uid)
                {
                    owned.remove(&key);
                    if owned.is_empty() {
                        live.remove(&uid);
                    }
                }
            }
        }
    }

    /// The revisions owned by `uid` in `namespace`, oldest first; `None` when the cache cannot
    /// be trusted for them yet (not synced, or a write of ours not seen).
    pub fn revisions(&self, namespace: &str, uid: &str) -> Option<Vec<RevisionRecord>> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let live = seen.live.as_ref()?;
        let owned = live.get(uid);
        {
            let mut expected = self.expected.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(pending) = expected.get(uid) {
                if !pending.iter().all(|e| shows(owned, e)) {
                    return None;
                }
                expected.remove(uid);
            }
        }
        let mut records: Vec<RevisionRecord> = owned
            .into_iter()
            .flatten()
            .filter(|((ns, _), _)| ns == namespace)
            .map(|(_, cached)| cached.record.clone())
            .collect();
        records.sort_by_key(|r| r.number);
        Some(records)
    }

    /// Remembers a write of ours to `uid`'s revision `name`; `resource_version` `None` for a delete.
    pub fn expect(&self, uid: &str, namespace: &str, name: &str, resource_version: Option<String>) {
        let expectation = Expectation {
            key: (namespace.to_string(), name.to_string()),
            resource_version,
            written: Instant::now(),
        };
        let mut expected = self.expected.lock().unwrap_or_else(|p| p.into_inner());
        let pending = expected.entry(uid.to_string()).or_default();
        pending.retain(|e| e.key != expectation.key);
        pending.push(expectation);
    }

    /// The object is gone: its expectations go with it.
    pub fn forget(&self, uid: &str) {
        self.expected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(uid);
    }
}

fn shows(owned: Option<&HashMap<Key, Cached>>, e: &Expectation) -> bool {
    if e.written.elapsed() > EXPECTATION_TTL {
        return true;
    }
    match (&e.resource_version, owned.and_then(|o| o.get(&e.key))) {
        (Some(wanted), Some(seen)) => seen.resource_version.as_ref() == Some(wanted),
        (None, None) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn revision(name: &str, uid: &str, number: i64, rv: &str) -> ControllerRevision {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": rv, "labels": {
                OWNER_UID_LABEL: uid, "controller-revision-hash": name}},
            "revision": number,
            "data": {"image": name}
        }))
        .unwrap_or_default()
    }

    fn synced(cache: &RevisionCache, revisions: Vec<ControllerRevision>) {
        cache.apply(&Event::Init);
        for r in revisions {
            cache.apply(&Event::InitApply(r));
        }
        cache.apply(&Event::InitDone);
    }

    #[test]
    fn not_trusted_before_the_first_list_completes() {
        let cache = RevisionCache::default();
        assert!(cache.revisions("ns", "u1").is_none());
        synced(&cache, vec![]);
        assert_eq!(cache.revisions("ns", "u1").map(|r| r.len()), Some(0));
    }

    #[test]
    fn an_objects_revisions_in_order_and_no_one_elses() {
        let cache = RevisionCache::default();
        synced(
            &cache,
            vec![
                revision("b", "u1", 2, "11"),
                revision("a", "u1", 1, "10"),
                revision("c", "u2", 1, "12"),
            ],
        );
        let numbers: Vec<(String, i64)> = cache
            .revisions("ns", "u1")
            .unwrap_or_default()
            .into_iter()
            .map(|r| (r.hash, r.number))
            .collect();
        assert_eq!(numbers, [("a".into(), 1), ("b".into(), 2)]);
        assert_eq!(cache.revisions("other", "u1").map(|r| r.len()), Some(0));
    }

    #[test]
    fn our_writes_are_waited_for_until_the_watch_shows_them() {
        let cache = RevisionCache::default();
        synced(&cache, vec![revision("a", "u1", 1, "10")]);
        // Created b, updated a, deleted nothing yet: not trusted until both show.
        cache.expect("u1", "ns", "b", Some("20".into()));
        cache.expect("u1", "ns", "a", Some("21".into()));
        assert!(cache.revisions("ns", "u1").is_none());
        cache.apply(&Event::Apply(revision("b", "u1", 2, "20")));
        assert!(
            cache.revisions("ns", "u1").is_none(),
            "a's update not seen yet"
        );
        // Others' objects are unaffected meanwhile.
        assert!(cache.revisions("ns", "u2").is_some());
        cache.apply(&Event::Apply(revision("a", "u1", 3, "21")));
        assert_eq!(cache.revisions("ns", "u1").map(|r| r.len()), Some(2));
        // A delete is seen once the revision is gone.
        cache.expect("u1", "ns", "a", None);
        assert!(cache.revisions("ns", "u1").is_none());
        cache.apply(&Event::Delete(revision("a", "u1", 3, "21")));
        assert_eq!(cache.revisions("ns", "u1").map(|r| r.len()), Some(1));
    }
}
