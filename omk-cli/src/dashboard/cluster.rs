//! `omk dashboard --store URL`: the teams of a PostgreSQL store
//! (docs/distributed.md) beside this host's own.
//!
//! - `/api/teams` lists the local teams, then the store's; `/api/teams/{name}`
//!   looks locally first, then in the store.
//! - `/api/metrics` adds the store's counters (work done by `omk worker`
//!   hosts) to the local ones: the whole cluster.
//! - `/api/events` carries a `team` event for every new version of a store
//!   team's document, whichever host wrote it. The store notifies
//!   `omk_teams` when a document is created or saved; the follower then
//!   reads the documents that may have changed (the running teams, the ones
//!   it last saw running, and any saved in the last [`RECENT`]) and sends
//!   those that differ from what it last saw. Notifications coalesce, and a
//!   missed one is made up by the re-read every [`SAFETY_SCAN`].
//! - `/api/events` also carries a `pools` event named `cluster` (its
//!   document the store's cluster, as `/api/pools` has it) when the cluster
//!   changed: a worker joined or left, a capacity was set, a pool's load
//!   moved. The store notifies `omk_cluster` for joins, leaves, capacities
//!   and leased slots; a load that moved with a team's claims, and a worker
//!   whose registration lapsed (a dead host), show at the next re-read.

use std::collections::HashMap;
use std::time::Duration;

use omk_core::pg::teams::TERMINAL_PHASES;
use omk_core::pg::PgStore;
use omk_core::seam::{Counters, Documents};
use serde_json::Value;
use tokio::sync::broadcast;

use super::events::Change;

/// Teams saved this recently are read on every look (a team that started
/// and ended between two looks is still sent).
const RECENT: Duration = Duration::from_secs(10);
/// The longest time between two looks without a notification.
const SAFETY_SCAN: Duration = Duration::from_secs(2);

/// The store a dashboard shows besides its own state directory.
pub struct Cluster {
    pub store: PgStore,
}

fn running(doc: &Value) -> bool {
    !TERMINAL_PHASES.contains(&doc["phase"].as_str().unwrap_or_default())
}

impl Cluster {
    pub async fn connect(url: &str) -> omk_core::Result<Cluster> {
        Ok(Cluster {
            store: PgStore::connect(url).await?,
        })
    }

    /// Every team document in the store, oldest first.
    pub async fn teams(&self) -> omk_core::Result<Vec<Value>> {
        Documents::list(&self.store).await
    }

    /// One team's document, checked to be one.
    pub async fn team(&self, name: &str) -> omk_core::Result<Option<Value>> {
        let doc = omk_core::team::remote::team(&self.store, name).await?;
        Ok(doc.map(|d| serde_json::to_value(d).unwrap_or(Value::Null)))
    }

    /// `metrics` with the store's counters added (`tasks_completed` counts
    /// into `total_tasks_completed`, and so on).
    pub async fn add_counters(&self, metrics: &mut Value) -> omk_core::Result<()> {
        for (name, value) in Counters::all(&self.store).await? {
            let key = format!("total_{name}");
            let sum = metrics[&key].as_u64().unwrap_or(0) + value;
            metrics[key] = Value::from(sum);
        }
        Ok(())
    }

    /// Start following the store's team documents and its cluster into
    /// `changes`. The first look at each is the baseline (sent to nobody);
    /// it is taken before this returns, so a client that connects
    /// afterwards misses no change.
    pub async fn follow(&self, changes: broadcast::Sender<Change>) -> omk_core::Result<()> {
        self.follow_cluster(changes.clone()).await?;
        let signal = self.store.listen_for_teams().await?;
        let store = self.store.clone();
        let mut seen = look(&store, &HashMap::new(), None).await?;
        tokio::spawn(async move {
            loop {
                let generation = signal.generation();
                match look(&store, &seen, Some(&changes)).await {
                    Ok(now) => seen = now,
                    Err(e) => tracing::warn!("dashboard: {e}"),
                }
                signal.changed_past(generation, SAFETY_SCAN).await;
            }
        });
        Ok(())
    }

    async fn follow_cluster(&self, changes: broadcast::Sender<Change>) -> omk_core::Result<()> {
        let signal = self.store.listen_for_cluster().await?;
        let store = self.store.clone();
        let mut seen = shape(&store.cluster_pools().await?);
        tokio::spawn(async move {
            loop {
                let generation = signal.generation();
                match store.cluster_pools().await {
                    Ok(cluster) => {
                        let now = shape(&cluster);
                        if now != seen {
                            seen = now;
                            let _ = changes.send(Change {
                                kind: "pools",
                                name: "cluster".into(),
                                document: cluster,
                            });
                        }
                    }
                    Err(e) => tracing::warn!("dashboard: {e}"),
                }
                signal.changed_past(generation, SAFETY_SCAN).await;
            }
        });
        Ok(())
    }
}

/// The cluster without what every renewal moves (the workers'
/// deadlines): what a change is judged on.
fn shape(cluster: &Value) -> Value {
    let mut c = cluster.clone();
    if let Some(workers) = c["workers"].as_array_mut() {
        for w in workers {
            if let Some(w) = w.as_object_mut() {
                w.remove("deadline");
            }
        }
    }
    c
}

/// Read what may have changed since `seen`, send what did, and return the
/// new `seen`.
async fn look(
    store: &PgStore,
    seen: &HashMap<String, Value>,
    changes: Option<&broadcast::Sender<Change>>,
) -> omk_core::Result<HashMap<String, Value>> {
    let was_running: Vec<String> = seen
        .iter()
        .filter(|(_, d)| running(d))
        .map(|(n, _)| n.clone())
        .collect();
    let mut now = HashMap::new();
    for (name, doc) in store.changing_team_docs(&was_running, RECENT).await? {
        if let Some(tx) = changes {
            if seen.get(&name) != Some(&doc) {
                // Nobody listening is not an error.
                let _ = tx.send(Change {
                    kind: "team",
                    name: name.clone(),
                    document: doc.clone(),
                });
            }
        }
        now.insert(name, doc);
    }
    Ok(now)
}
