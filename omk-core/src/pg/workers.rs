//! The `omk worker` hosts of a cluster, as the store sees them: each
//! registers what it serves under a lease it renews (a worker that dies
//! simply stops counting when its deadline passes), so `omk pools status`
//! and the dashboard can show the whole cluster's capacity and load per
//! pool.

use std::time::Duration;

use serde_json::{json, Value};

use super::events::CLUSTER_CHANNEL;
use super::PgStore;
use crate::error::Result;

/// What a worker serves.
#[derive(Debug, Clone)]
pub struct WorkerRecord {
    /// `<host>/<pid>`: one per daemon.
    pub holder: String,
    pub host: String,
    pub pools: Vec<String>,
    pub agents: Vec<String>,
    pub max_agents: i32,
}

impl PgStore {
    /// Register (or re-register) a worker until `ttl` from now. A worker
    /// that joins, comes back after its registration lapsed, or changes
    /// what it serves notifies [`CLUSTER_CHANNEL`]; a renewal does not.
    pub async fn register_worker(&self, w: &WorkerRecord, ttl: Duration) -> Result<()> {
        let client = self.client().await?;
        // `prev` reads the row as it was before the upsert (one snapshot
        // for the whole statement).
        client
            .execute(
                "WITH prev AS (
                     SELECT host, pools, agents, max_agents, deadline >= clock_timestamp() AS live
                     FROM workers WHERE holder = $1),
                 up AS (
                     INSERT INTO workers (holder, host, pools, agents, max_agents, deadline)
                     VALUES ($1, $2, $3, $4, $5, clock_timestamp() + make_interval(secs => $6))
                     ON CONFLICT (holder) DO UPDATE SET
                         host = EXCLUDED.host, pools = EXCLUDED.pools, agents = EXCLUDED.agents,
                         max_agents = EXCLUDED.max_agents, deadline = EXCLUDED.deadline
                     RETURNING 1)
                 SELECT pg_notify($7, '') FROM up
                 WHERE NOT EXISTS (SELECT 1 FROM prev WHERE live AND host = $2 AND pools = $3
                                   AND agents = $4 AND max_agents = $5)",
                &[
                    &w.holder,
                    &w.host,
                    &w.pools,
                    &w.agents,
                    &w.max_agents,
                    &ttl.as_secs_f64(),
                    &CLUSTER_CHANNEL,
                ],
            )
            .await
            .map_err(|e| self.error("register a worker in", e))?;
        Ok(())
    }

    /// A stopping worker leaves at once, notifying [`CLUSTER_CHANNEL`] (a
    /// dead one leaves when its deadline passes, unannounced).
    pub async fn unregister_worker(&self, holder: &str) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "WITH gone AS (DELETE FROM workers WHERE holder = $1 RETURNING 1)
                 SELECT pg_notify($2, '') FROM gone",
                &[&holder, &CLUSTER_CHANNEL],
            )
            .await
            .map_err(|e| self.error("unregister a worker from", e))?;
        Ok(())
    }

    /// The cluster by pool: `{"store", "pools": [{"name", "max_workers"
    /// (slots of the live workers serving it), "active_tasks" (running
    /// under a lease in time), "queued_tasks" (pending, backoff included),
    /// "workers", "capacity" (declared with `omk pools set`, or null),
    /// "leased_slots" (held through the seam's `PoolAdmission`, in time)}],
    /// "workers": [{"holder", "host", "pools", "agents",
    /// "max_agents", "started_at", "deadline"}]}`. A worker serving several
    /// pools counts its slots in each.
    pub async fn cluster_pools(&self) -> Result<Value> {
        let client = self.client().await?;
        let live = client
            .query(
                "SELECT holder, host, pools, agents, max_agents, started_at, deadline
                 FROM workers WHERE deadline >= clock_timestamp() ORDER BY holder",
                &[],
            )
            .await
            .map_err(|e| self.error("read the workers of", e))?;
        let pools = client
            .query(
                "WITH live AS (SELECT * FROM workers WHERE deadline >= clock_timestamp()),
                      names AS (SELECT unnest(pools) AS pool FROM live
                                UNION SELECT pool FROM tasks
                                      WHERE status IN ('pending', 'running')
                                UNION SELECT name FROM pools
                                UNION SELECT pool FROM pool_slots
                                      WHERE deadline >= clock_timestamp())
                 SELECT n.pool,
                     coalesce((SELECT sum(max_agents) FROM live
                               WHERE n.pool = ANY (live.pools)), 0)::bigint,
                     (SELECT count(*) FROM tasks t WHERE t.pool = n.pool
                          AND t.status = 'running' AND t.lease_deadline >= clock_timestamp()),
                     (SELECT count(*) FROM tasks t WHERE t.pool = n.pool
                          AND t.status = 'pending'),
                     coalesce((SELECT array_agg(holder ORDER BY holder) FROM live
                               WHERE n.pool = ANY (live.pools)), '{}'),
                     (SELECT max_workers FROM pools p WHERE p.name = n.pool),
                     (SELECT count(*) FROM pool_slots s WHERE s.pool = n.pool
                          AND s.deadline >= clock_timestamp())
                 FROM names n ORDER BY n.pool",
                &[],
            )
            .await
            .map_err(|e| self.error("read the pools of", e))?;
        let workers: Vec<Value> = live
            .iter()
            .map(|r| {
                json!({
                    "holder": r.get::<_, String>(0),
                    "host": r.get::<_, String>(1),
                    "pools": r.get::<_, Vec<String>>(2),
                    "agents": r.get::<_, Vec<String>>(3),
                    "max_agents": r.get::<_, i32>(4),
                    "started_at": r.get::<_, chrono::DateTime<chrono::Utc>>(5),
                    "deadline": r.get::<_, chrono::DateTime<chrono::Utc>>(6),
                })
            })
            .collect();
        let pools: Vec<Value> = pools
            .iter()
            .map(|r| {
                json!({
                    "name": r.get::<_, String>(0),
                    "max_workers": r.get::<_, i64>(1),
                    "active_tasks": r.get::<_, i64>(2),
                    "queued_tasks": r.get::<_, i64>(3),
                    "workers": r.get::<_, Vec<String>>(4),
                    "capacity": r.get::<_, Option<i32>>(5),
                    "leased_slots": r.get::<_, i64>(6),
                })
            })
            .collect();
        Ok(json!({ "store": self.shown(), "pools": pools, "workers": workers }))
    }
}
