//! In-memory object storage with one global, monotonically increasing resourceVersion and a
//! bounded event history, so watches can resume from a version and get `410 Gone` past it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast;

/// How many events are kept for resuming watches; older resourceVersions get `410 Gone`.
pub const HISTORY: usize = 1000;

/// Where an object lives: group, plural, namespace (`""` when cluster-scoped) and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    /// API group.
    pub group: String,
    /// Resource plural.
    pub plural: String,
    /// Namespace, empty for cluster-scoped objects.
    pub namespace: String,
    /// Object name.
    pub name: String,
}

/// One change, as sent on a watch stream.
#[derive(Debug, Clone)]
pub struct Event {
    /// The resourceVersion this change was stored at.
    pub rv: u64,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind: &'static str,
    /// Which object changed.
    pub key: Key,
    /// The object after the change (its final state for `DELETED`).
    pub object: Value,
}

/// The whole cluster state; callers hold the surrounding mutex across read-modify-write.
pub struct Store {
    objects: BTreeMap<Key, Value>,
    rv: u64,
    history: VecDeque<Arc<Event>>,
    /// Lowest resourceVersion a watch can still resume from without missing events.
    oldest: u64,
    tx: broadcast::Sender<Arc<Event>>,
}

impl Default for Store {
    fn default() -> Self {
        let (tx, _) = broadcast::channel(4096);
        Store {
            objects: BTreeMap::new(),
            rv: 1,
            history: VecDeque::new(),
            oldest: 1,
            tx,
        }
    }
}

impl Store {
    /// The current global resourceVersion.
    pub fn rv(&self) -> u64 {
        self.rv
    }

    /// One object.
    pub fn get(&self, key: &Key) -> Option<&Value> {
        self.objects.get(key)
    }

    /// All objects of one resource (and namespace, when given), in name order.
    pub fn list(&self, group: &str, plural: &str, namespace: Option<&str>) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|(k, _)| k.group == group && k.plural == plural)
            .filter(|(k, _)| namespace.is_none_or(|ns| k.namespace == ns))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Stores `object` (ADDED or MODIFIED), stamping a fresh resourceVersion; returns what was stored.
    pub fn put(&mut self, key: Key, mut object: Value) -> Value {
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let kind = if self.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.objects.insert(key.clone(), object.clone());
        self.record(kind, key, object.clone());
        object
    }

    /// Removes an object, emitting DELETED with its final state at a fresh resourceVersion.
    pub fn remove(&mut self, key: &Key) -> Option<Value> {
        let mut object = self.objects.remove(key)?;
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.record("DELETED", key.clone(), object.clone());
        Some(object)
    }

    fn record(&mut self, kind: &'static str, key: Key, object: Value) {
        let event = Arc::new(Event {
            rv: self.rv,
            kind,
            key,
            object,
        });
        self.history.push_back(Arc::clone(&event));
        while self.history.len() > HISTORY {
            if let Some(old) = self.history.pop_front() {
                self.oldest = old.rv;
            }
        }
        let _ = self.tx.send(event);
    }

    /// Events after `since`, and a receiver for later ones with no gap between the two;
    /// `None` when `since` is older than the retained history.
    #[allow(clippy::type_complexity)]
    pub fn watch_from(
        &self,
        since: u64,
    ) -> Option<(Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>)> {
        if since < self.oldest {
            return None;
        }
        let past = self
            .history
            .iter()
            .filter(|e| e.rv > since)
            .cloned()
            .collect();
        Some((past, self.tx.subscribe()))
    }

    /// A receiver for events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}

impl Store {
    /// Keys of every object of one resource, for CRD deletion.
    pub fn keys_of(&self, group: &str, plural: &str) -> Vec<Key> {
        self.objects
            .keys()
            .filter(|k| k.group == group && k.plural == plural)
            .cloned()
            .collect()
    }

    /// Keys of every object in one namespace, for namespace deletion.
    pub fn keys_in_namespace(&self, namespace: &str) -> Vec<Key> {
        self.objects
            .keys()
            .filter(|k| k.namespace == namespace)
            .cloned()
            .collect()
    }
}

impl Store {
    /// Removes an object and, like the garbage collector with background propagation, every
    /// object whose ownerReferences name a removed uid; dependents holding finalizers are only
    /// marked with `deletion_time`.
    pub fn remove_cascading(&mut self, key: &Key, deletion_time: &str) -> Option<Value> {
        let removed = self.remove(key)?;
        let mut gone: Vec<String> = removed["metadata"]["uid"]
            .as_str()
            .map(str::to_string)
            .into_iter()
            .collect();
        while let Some(uid) = gone.pop() {
            let dependents: Vec<(Key, Value)> = self
                .objects
                .iter()
                .filter(|(_, o)| {
                    o["metadata"]["ownerReferences"]
                        .as_array()
                        .is_some_and(|refs| refs.iter().any(|r| r["uid"] == json!(uid)))
                })
                .map(|(k, o)| (k.clone(), o.clone()))
                .collect();
            for (k, mut o) in dependents {
                let held = o["metadata"]["finalizers"]
                    .as_array()
                    .is_some_and(|f| !f.is_empty());
                if held {
                    if o["metadata"]["deletionTimestamp"].is_null() {
                        o["metadata"]["deletionTimestamp"] = json!(deletion_time);
                        self.put(k, o);
                    }
                } else if let Some(d) = self.remove(&k) {
                    gone.extend(d["metadata"]["uid"].as_str().map(str::to_string));
                }
            }
        }
        Some(removed)
    }
}
