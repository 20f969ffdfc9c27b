//! Cluster-wide pool admission in the PostgreSQL store (the seam's
//! [`PoolAdmission`]).
//!
//! A pool's capacity is declared in the store (`pools` table, set with
//! `omk pools set NAME --max-workers N --store URL`), never derived from a
//! host's config: every host's `[pools.default]` exists with 8 slots, and
//! summing or picking those would cap a cluster by accident. A pool with no
//! declared capacity is bounded only by the slots of the workers serving
//! it.
//!
//! The slots taken in a pool are its running tasks whose lease holds (a
//! claim takes one, under the same lock: [`pool_full`]) plus the
//! leased slots of [`PoolAdmission::admit`] (`pool_slots`). Both end at
//! their deadline by the server's clock, so a dead host frees its slots
//! when its leases lapse. Admissions and claims lock the pool's row, and a
//! claim locks its team's row first: the count is never read from a
//! snapshot older than the last admission.

use std::time::Duration;

use deadpool_postgres::GenericClient;

use super::events::{notify, CLUSTER_CHANNEL, WORK_CHANNEL};
use super::PgStore;
use crate::error::{Error, Result};
use crate::seam::{lost_slot, Admit, PoolAdmission, PoolLoad, PoolSlot};

/// The slots taken now in the pool named by SQL expression `pool`: its
/// running tasks in their lease and its leased slots in time. One
/// definition for admissions, claims and the wake-up time of a claimer
/// held back by a full pool.
pub(super) fn taken(pool: &str) -> String {
    format!(
        "((SELECT count(*) FROM tasks r
           WHERE r.pool = {pool} AND r.status = 'running'
             AND r.lease_deadline >= clock_timestamp())
        + (SELECT count(*) FROM pool_slots s
           WHERE s.pool = {pool} AND s.deadline >= clock_timestamp()))"
    )
}

/// Pool `pool`'s slots taken and capacity when every slot is taken (`None`
/// while it has room, or no capacity), in transaction `tx`: its row
/// locked first, then the count in a statement of its own, which sees
/// every admission committed before the lock was granted.
pub(super) async fn pool_full(
    store: &PgStore,
    tx: &impl GenericClient,
    pool: &str,
) -> Result<Option<(i64, i32)>> {
    let err = |e| store.error("read the pools of", e);
    let cap = tx
        .query_opt(
            "SELECT max_workers FROM pools WHERE name = $1 FOR UPDATE",
            &[&pool],
        )
        .await
        .map_err(err)?;
    let Some(cap) = cap else { return Ok(None) };
    let cap: i32 = cap.get(0);
    let taken: i64 = tx
        .query_one(&format!("SELECT {}", taken("$1")), &[&pool])
        .await
        .map_err(err)?
        .get(0);
    Ok((taken >= i64::from(cap)).then_some((taken, cap)))
}

impl PgStore {
    /// Declare pool `pool`'s capacity across the cluster (`None`: no cap,
    /// only the workers' slots bound it). Claims waiting for room are
    /// woken: a raised capacity admits them at once.
    pub async fn set_pool_capacity(&self, pool: &str, max_workers: Option<u32>) -> Result<()> {
        crate::paths::validate_name("pool name", pool)?;
        let err = |e| self.error("set a pool's capacity in", e);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(err)?;
        match max_workers {
            Some(n) => {
                let n = i32::try_from(n)
                    .map_err(|_| Error::InvalidInput(format!("max_workers {n} is out of range")))?;
                tx.execute(
                    "INSERT INTO pools (name, max_workers) VALUES ($1, $2)
                     ON CONFLICT (name) DO UPDATE SET max_workers = EXCLUDED.max_workers",
                    &[&pool, &n],
                )
                .await
                .map_err(err)?
            }
            None => tx
                .execute("DELETE FROM pools WHERE name = $1", &[&pool])
                .await
                .map_err(err)?,
        };
        notify(self, &tx, WORK_CHANNEL).await?;
        notify(self, &tx, CLUSTER_CHANNEL).await?;
        tx.commit().await.map_err(err)
    }
}

impl PoolAdmission for PgStore {
    async fn admit(&self, pool: &str, holder: &str, ttl: Duration) -> Result<Admit> {
        crate::paths::validate_name("pool name", pool)?;
        let err = |e| self.error("admit a pool slot in", e);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(err)?;
        if let Some((taken, cap)) = pool_full(self, &tx, pool).await? {
            return Ok(Admit::Full(format!(
                "pool {pool} is full across the cluster: {taken} of {cap} slots taken"
            )));
        }
        tx.execute(
            "DELETE FROM pool_slots WHERE pool = $1 AND deadline < clock_timestamp()",
            &[&pool],
        )
        .await
        .map_err(err)?;
        let id = crate::ids::random_hex(6);
        let row = tx
            .query_one(
                "INSERT INTO pool_slots (id, pool, holder, epoch, deadline)
                 VALUES ($1, $2, $3, nextval('pool_slot_epochs'),
                         clock_timestamp() + make_interval(secs => $4))
                 RETURNING epoch, deadline",
                &[&id, &pool, &holder, &ttl.as_secs_f64()],
            )
            .await
            .map_err(err)?;
        notify(self, &tx, CLUSTER_CHANNEL).await?;
        tx.commit().await.map_err(err)?;
        Ok(Admit::Admitted(PoolSlot {
            pool: pool.to_string(),
            id,
            holder: holder.to_string(),
            epoch: row.get(0),
            deadline: row.get(1),
        }))
    }

    async fn renew_slot(&self, slot: &mut PoolSlot, ttl: Duration) -> Result<()> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "UPDATE pool_slots SET deadline = clock_timestamp() + make_interval(secs => $3)
                 WHERE id = $1 AND epoch = $2 AND deadline >= clock_timestamp()
                 RETURNING deadline",
                &[&slot.id, &slot.epoch, &ttl.as_secs_f64()],
            )
            .await
            .map_err(|e| self.error("renew a pool slot in", e))?;
        match row {
            Some(r) => {
                slot.deadline = r.get(0);
                Ok(())
            }
            None => Err(lost_slot(slot, "renew")),
        }
    }

    async fn release_slot(&self, slot: &PoolSlot) -> Result<()> {
        let err = |e| self.error("release a pool slot in", e);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(err)?;
        let gone = tx
            .execute(
                "DELETE FROM pool_slots WHERE id = $1 AND epoch = $2",
                &[&slot.id, &slot.epoch],
            )
            .await
            .map_err(err)?;
        if gone > 0 {
            // Claims held back by the pool's capacity look again.
            notify(self, &tx, WORK_CHANNEL).await?;
            notify(self, &tx, CLUSTER_CHANNEL).await?;
        }
        tx.commit().await.map_err(err)
    }

    async fn load(&self, pool: &str) -> Result<PoolLoad> {
        let client = self.client().await?;
        let row = client
            .query_one(
                &format!(
                    "SELECT {}, (SELECT max_workers FROM pools WHERE name = $1)",
                    taken("$1")
                ),
                &[&pool],
            )
            .await
            .map_err(|e| self.error("read the pools of", e))?;
        let (taken, cap): (i64, Option<i32>) = (row.get(0), row.get(1));
        Ok(PoolLoad {
            pool: pool.to_string(),
            capacity: cap.map(|c| c as u32),
            active: taken as u32,
        })
    }
}
