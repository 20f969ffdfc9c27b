//! Leased tasks in the PostgreSQL store: one record per task (status,
//! holder, lease deadline, epoch, attempts) instead of a claim in one
//! process's memory.
//!
//! - A claim takes the first claimable task with `FOR UPDATE SKIP LOCKED`
//!   (concurrent claimers never wait on, or take, the same row) of a team
//!   running fewer tasks than its worker count (counted under a lock on
//!   the team's row), raises its epoch and sets its deadline from the
//!   server's clock, never a host's. A running task whose deadline passed
//!   is claimable again: its holder is presumed dead.
//! - Deadlines are computed with `clock_timestamp()`, the time of the
//!   statement, not `now()`, the time the transaction began: a claim that
//!   waited for a lock must not hand out a lease already spent waiting, so
//!   its deadline is set again as its last statement.
//! - Renew, complete, fail and release name the lease's epoch and succeed
//!   only while it is still the task's and not expired: a holder that was
//!   stopped past its deadline can never record a completion, even if
//!   nobody claimed the task since. They fail with `conflict`.
//! - A completion, its event and its counters are one transaction, so each
//!   is recorded exactly once.
//!
//! Advisory locks are not used for any of this: a dead host can hold one
//! for hours.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::events::{append_in, notify, WORK_CHANNEL};
use super::PgStore;
use crate::error::Result;
use crate::events::{Event, EventKind};
use crate::seam::{lost, LeaseRecord, TaskLeases};
pub use crate::seam::{AfterFailure, Lease};

/// A task as submitted.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub id: String,
    /// The pool whose executors may run it.
    pub pool: String,
    /// The agent profile that runs it.
    pub agent: String,
    pub max_attempts: i32,
    /// What the executor needs (title, prompt, files...).
    pub spec: Value,
}

/// A task's record.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    pub team: String,
    pub id: String,
    pub status: String,
    pub holder: Option<String>,
    pub epoch: i64,
    pub attempts: i32,
    pub lease_deadline: Option<DateTime<Utc>>,
    /// A pending task's retry time.
    pub not_before: Option<DateTime<Utc>>,
    pub result: Option<Value>,
    /// The task's spec without its prompt.
    pub spec: Value,
}

/// A task claimable now, in SQL (over `tasks`): pending past its backoff,
/// or running past its deadline with an attempt left.
const CLAIMABLE: &str =
    "((status = 'pending' AND (not_before IS NULL OR not_before <= clock_timestamp()))
      OR (status = 'running' AND lease_deadline < clock_timestamp() AND attempts < max_attempts))";

/// Task `t`'s evidence with one more line for the attempt whose lease it
/// held expired, in SQL: the line of [`crate::seam::expired_line`].
const EXPIRED_EVIDENCE: &str = "COALESCE(t.result->'errors', '[]'::jsonb)
    || to_jsonb(format('attempt %s: lease expired (%s stopped renewing it)', t.attempts, t.holder))";

/// Team `$1`'s running tasks whose lease holds, against its worker count
/// (`N:role`: at most N of its tasks run at once), in SQL.
const RUNNING_AND_CAP: &str = "SELECT
       (SELECT count(*) FROM tasks
        WHERE team = $1 AND status = 'running' AND lease_deadline >= clock_timestamp()),
       COALESCE((doc->>'worker_count')::bigint, 0)
     FROM teams WHERE name = $1";

/// The sequence of `lease`'s completion event if `lease` completed its
/// task (the task is completed at its epoch, by its holder).
async fn completed_by(
    store: &PgStore,
    tx: &impl deadpool_postgres::GenericClient,
    lease: &Lease,
) -> Result<Option<i64>> {
    let row = tx
        .query_opt(
            "SELECT coalesce((SELECT max(e.seq) FROM events e
                              WHERE e.team = t.team AND e.kind = 'task_completed'
                                AND e.payload->>'task_id' = t.id
                                AND e.payload->>'epoch' = t.epoch::text), 0)
             FROM tasks t
             WHERE t.team = $1 AND t.id = $2 AND t.epoch = $3 AND t.holder = $4
               AND t.status = 'completed'",
            &[&lease.team, &lease.task, &lease.epoch, &lease.holder],
        )
        .await
        .map_err(|e| store.error("read a task from", e))?;
    Ok(row.map(|r| r.get(0)))
}

impl PgStore {
    /// Claim the first claimable task (pending and past its backoff, or
    /// running past its deadline) of `pools` that one of `agents` runs, for
    /// `holder`, under a lease of `ttl`, of a team running fewer tasks than
    /// its worker count. `None` when there is nothing to claim now.
    ///
    /// The team's row is locked before any task row (as a shutdown and a
    /// reopening lock them), and its running tasks are counted under that
    /// lock: two claims of one team never both pass its cap.
    pub async fn claim(
        &self,
        holder: &str,
        pools: &[String],
        agents: &[String],
        ttl: Duration,
    ) -> Result<Option<Lease>> {
        let err = |e| self.error("claim a task in", e);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(err)?;
        let mut capped: Vec<String> = Vec::new();
        let mut full_pools: Vec<String> = Vec::new();
        let mut claimed = None;
        loop {
            let candidate = tx
                .query_opt(
                    &format!(
                        "SELECT team, pool FROM tasks
                         WHERE pool = ANY($1) AND agent = ANY($2) AND team <> ALL($3)
                           AND pool <> ALL($4) AND {CLAIMABLE}
                         ORDER BY team, position LIMIT 1"
                    ),
                    &[&pools, &agents, &capped, &full_pools],
                )
                .await
                .map_err(err)?;
            let Some(candidate) = candidate else { break };
            let (team, pool): (String, String) = (candidate.get(0), candidate.get(1));
            // The lock first, then the count in a statement of its own: a
            // statement that waited for the lock would count from the
            // snapshot it started with, before the claim it waited for.
            tx.query_opt("SELECT 1 FROM teams WHERE name = $1 FOR UPDATE", &[&team])
                .await
                .map_err(err)?;
            let room = tx.query_opt(RUNNING_AND_CAP, &[&team]).await.map_err(err)?;
            let full = room.is_none_or(|r| {
                let (running, cap): (i64, i64) = (r.get(0), r.get(1));
                cap > 0 && running >= cap
            });
            if full {
                capped.push(team);
                continue;
            }
            // Then the team's pool, declared capacity across the cluster.
            if super::pools::pool_full(self, &tx, &pool).await?.is_some() {
                full_pools.push(pool);
                continue;
            }
            let row = tx
                .query_opt(
                    &format!(
                        "WITH next AS (
                             SELECT team, id, status AS was FROM tasks
                             WHERE team = $5 AND pool = ANY($1) AND agent = ANY($2)
                               AND {CLAIMABLE}
                             ORDER BY position
                             LIMIT 1
                             FOR UPDATE SKIP LOCKED)
                         UPDATE tasks t
                         SET status = 'running', holder = $3, epoch = t.epoch + 1,
                             attempts = t.attempts + 1, not_before = NULL,
                             -- A lease taken over: the attempt it ended is one
                             -- more piece of the task's evidence.
                             result = CASE WHEN t.status = 'running'
                                 THEN jsonb_build_object('errors', {EXPIRED_EVIDENCE})
                                 ELSE t.result END,
                             lease_deadline = clock_timestamp() + make_interval(secs => $4)
                         FROM next
                         WHERE t.team = next.team AND t.id = next.id
                         RETURNING t.team, t.id, t.epoch, t.attempts, t.lease_deadline, t.spec,
                                   next.was, t.agent"
                    ),
                    &[&pools, &agents, &holder, &ttl.as_secs_f64(), &team],
                )
                .await
                .map_err(err)?;
            match row {
                Some(row) => {
                    claimed = Some(row);
                    break;
                }
                // Its claimable tasks were taken meanwhile.
                None => capped.push(team),
            }
        }
        // Running tasks past their deadline with no attempt left end here:
        // their holder is presumed dead and nobody may take them again.
        let exhausted = tx
            .query(
                &format!(
                    "UPDATE tasks t SET status = 'failed', holder = NULL, lease_deadline = NULL,
                         result = jsonb_build_object('error', 'lease expired on the last attempt',
                             'errors', {EXPIRED_EVIDENCE})
                     WHERE pool = ANY($1) AND status = 'running'
                       AND lease_deadline < clock_timestamp() AND attempts >= max_attempts
                     RETURNING team, id, epoch, attempts, result->'errors'"
                ),
                &[&pools],
            )
            .await
            .map_err(err)?;
        let mut events = Vec::new();
        for r in &exhausted {
            let (team, task, epoch, attempt, evidence): (String, String, i64, i32, Value) =
                (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
            events.push(Event::new(
                &team,
                EventKind::LeaseExpired,
                Some(holder),
                json!({ "task_id": task, "epoch": epoch, "attempt": attempt }),
            ));
            events.push(Event::new(
                &team,
                EventKind::TaskFailed,
                Some(holder),
                json!({ "task_id": task, "epoch": epoch, "attempts": attempt,
                        "reason": "lease expired on the last attempt", "evidence": evidence }),
            ));
        }
        let Some(row) = claimed else {
            if !events.is_empty() {
                append_in(self, &tx, &events).await?;
                tx.commit().await.map_err(err)?;
            }
            return Ok(None);
        };
        let lease = Lease {
            team: row.get(0),
            task: row.get(1),
            epoch: row.get(2),
            attempt: row.get(3),
            holder: holder.to_string(),
            deadline: row.get(4),
            agent: row.get(7),
            spec: row.get(5),
        };
        let was: String = row.get(6);
        if was == "running" {
            events.push(Event::new(
                &lease.team,
                EventKind::LeaseExpired,
                Some(holder),
                json!({ "task_id": lease.task, "epoch": lease.epoch - 1, "reclaimed_by": holder }),
            ));
        }
        events.push(Event::new(
            &lease.team,
            EventKind::TaskClaimed,
            Some(holder),
            json!({ "task_id": lease.task, "attempt": lease.attempt, "epoch": lease.epoch,
                    "lease_secs": ttl.as_secs(), "holder": holder }),
        ));
        append_in(self, &tx, &events).await?;
        // The lease runs from now, whatever the waits above took.
        let mut lease = lease;
        lease.deadline = tx
            .query_one(
                "UPDATE tasks SET lease_deadline = clock_timestamp() + make_interval(secs => $4)
                 WHERE team = $1 AND id = $2 AND epoch = $3 RETURNING lease_deadline",
                &[&lease.team, &lease.task, &lease.epoch, &ttl.as_secs_f64()],
            )
            .await
            .map_err(err)?
            .get(0);
        tx.commit().await.map_err(err)?;
        Ok(Some(lease))
    }

    /// Extend a lease by `ttl` from now (the server's now). Refused once the
    /// lease expired, even if nobody claimed the task since.
    pub async fn renew(&self, lease: &mut Lease, ttl: Duration) -> Result<()> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "UPDATE tasks SET lease_deadline = clock_timestamp() + make_interval(secs => $4)
                 WHERE team = $1 AND id = $2 AND epoch = $3 AND status = 'running'
                   AND lease_deadline >= clock_timestamp()
                 RETURNING lease_deadline",
                &[&lease.team, &lease.task, &lease.epoch, &ttl.as_secs_f64()],
            )
            .await
            .map_err(|e| self.error("renew a lease in", e))?;
        match row {
            Some(r) => {
                lease.deadline = r.get(0);
                Ok(())
            }
            None => Err(lost(lease, "renew the lease of")),
        }
    }

    /// Whether `lease` still holds its task (running under its epoch): false
    /// once the task was taken over or cancelled.
    pub async fn holds(&self, lease: &Lease) -> Result<bool> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT 1 FROM tasks
                 WHERE team = $1 AND id = $2 AND epoch = $3 AND status = 'running'",
                &[&lease.team, &lease.task, &lease.epoch],
            )
            .await
            .map_err(|e| self.error("read a task from", e))?;
        Ok(row.is_some())
    }

    /// Record the task completed with `result`, its `task_completed` event
    /// and its counter increments, in one transaction; refused (and nothing
    /// recorded) unless the lease is still valid. The lease that completed
    /// the task completing again gets its completion's sequence and
    /// records nothing (a retry after a reply lost with the connection).
    pub async fn complete(
        &self,
        lease: &Lease,
        result: &Value,
        counters: &[(&str, i64)],
    ) -> Result<i64> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| self.error("complete a task in", e))?;
        let n = tx
            .execute(
                "UPDATE tasks SET status = 'completed', lease_deadline = NULL,
                     result = $4::jsonb || jsonb_build_object('errors',
                         COALESCE(result->'errors', '[]'::jsonb))
                 WHERE team = $1 AND id = $2 AND epoch = $3 AND status = 'running'
                   AND lease_deadline >= clock_timestamp()",
                &[&lease.team, &lease.task, &lease.epoch, result],
            )
            .await
            .map_err(|e| self.error("complete a task in", e))?;
        if n == 0 {
            return match completed_by(self, &tx, lease).await? {
                Some(seq) => Ok(seq),
                None => Err(lost(lease, "complete")),
            };
        }
        add_counters(self, &tx, counters).await?;
        // A slot waiting on the team's worker count may claim now.
        notify(self, &tx, WORK_CHANNEL).await?;
        // A local team's payload (the result's fields), plus the lease's.
        let mut payload = json!({ "task_id": lease.task, "attempt": lease.attempt,
                                  "epoch": lease.epoch });
        if let (Some(p), Some(r)) = (payload.as_object_mut(), result.as_object()) {
            for (k, v) in r {
                p.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        let seq = append_in(
            self,
            &tx,
            &[Event::new(
                &lease.team,
                EventKind::TaskCompleted,
                Some(&lease.holder),
                payload,
            )],
        )
        .await?;
        tx.commit()
            .await
            .map_err(|e| self.error("complete a task in", e))?;
        Ok(seq)
    }

    /// Record a failed attempt: claimable again after `backoff` (a time in
    /// the record, from the server's clock) while attempts remain, failed
    /// otherwise. Refused unless the lease is still valid.
    pub async fn fail(&self, lease: &Lease, why: &str, backoff: Duration) -> Result<AfterFailure> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| self.error("fail a task in", e))?;
        let row = tx
            .query_opt(
                "UPDATE tasks SET
                     status = CASE WHEN attempts < max_attempts THEN 'pending' ELSE 'failed' END,
                     not_before = CASE WHEN attempts < max_attempts
                                  THEN clock_timestamp() + make_interval(secs => $4) END,
                     holder = NULL, lease_deadline = NULL,
                     result = jsonb_build_object('error', $5::text, 'errors',
                         COALESCE(result->'errors', '[]'::jsonb) || to_jsonb($6::text))
                 WHERE team = $1 AND id = $2 AND epoch = $3 AND status = 'running'
                   AND lease_deadline >= clock_timestamp()
                 RETURNING status, max_attempts, result->'errors'",
                &[
                    &lease.team,
                    &lease.task,
                    &lease.epoch,
                    &backoff.as_secs_f64(),
                    &why,
                    &format!("attempt {}: {why}", lease.attempt),
                ],
            )
            .await
            .map_err(|e| self.error("fail a task in", e))?;
        let Some(row) = row else {
            return Err(lost(lease, "fail"));
        };
        let after = if row.get::<_, String>(0) == "failed" {
            AfterFailure::Failed
        } else {
            AfterFailure::Retry
        };
        // Claimable again after the backoff, and a slot waiting on the
        // team's worker count may claim another now.
        notify(self, &tx, WORK_CHANNEL).await?;
        // The payloads of a local team's events, plus the lease's epoch.
        let max_attempts: i32 = row.get(1);
        let evidence: Value = row.get(2);
        let (kind, payload) = match after {
            AfterFailure::Failed => (
                EventKind::TaskFailed,
                json!({ "task_id": lease.task, "attempts": lease.attempt, "epoch": lease.epoch,
                        "reason": why, "evidence": evidence }),
            ),
            AfterFailure::Retry => (
                EventKind::RetryScheduled,
                json!({ "task_id": lease.task, "failed_attempt": lease.attempt, "epoch": lease.epoch,
                        "reason": why, "max_attempts": max_attempts,
                        "backoff_ms": backoff.as_millis() as u64 }),
            ),
        };
        append_in(
            self,
            &tx,
            &[Event::new(&lease.team, kind, Some(&lease.holder), payload)],
        )
        .await?;
        tx.commit()
            .await
            .map_err(|e| self.error("fail a task in", e))?;
        Ok(after)
    }

    /// Give a task back unfinished (the holder is stopping): claimable at
    /// once, the attempt not counted. Refused unless the lease is still
    /// valid.
    pub async fn release(&self, lease: &Lease) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| self.error("release a task in", e))?;
        let n = tx
            .execute(
                "UPDATE tasks SET status = 'pending', holder = NULL, lease_deadline = NULL,
                     attempts = attempts - 1
                 WHERE team = $1 AND id = $2 AND epoch = $3 AND status = 'running'
                   AND lease_deadline >= clock_timestamp()",
                &[&lease.team, &lease.task, &lease.epoch],
            )
            .await
            .map_err(|e| self.error("release a task in", e))?;
        if n == 0 {
            return Err(lost(lease, "release"));
        }
        notify(self, &tx, WORK_CHANNEL).await?;
        tx.commit()
            .await
            .map_err(|e| self.error("release a task in", e))
    }

    /// Seconds until a task of `pools` that one of `agents` runs may become
    /// claimable without any notification: the soonest backoff end of a
    /// pending task or lease deadline of a running one (by the server's
    /// clock; 0 when one is due now), or `None` when there is none.
    pub async fn next_claimable_in(
        &self,
        pools: &[String],
        agents: &[String],
    ) -> Result<Option<f64>> {
        let client = self.client().await?;
        let row = client
            .query_one(
                &format!(
                    "SELECT EXTRACT(EPOCH FROM (least(
                     (SELECT min(CASE WHEN t.status = 'pending'
                                      THEN coalesce(t.not_before, clock_timestamp())
                                      ELSE t.lease_deadline END)
                      FROM tasks t
                      WHERE t.pool = ANY($1) AND t.agent = ANY($2)
                        AND (t.status = 'running'
                          -- A team at its worker count: its pending tasks
                          -- wait for a completion, which is announced.
                          OR (t.status = 'pending' AND (
                              SELECT count(*) FROM tasks r
                              WHERE r.team = t.team AND r.status = 'running'
                                AND r.lease_deadline >= clock_timestamp())
                            < COALESCE((SELECT NULLIF((doc->>'worker_count')::bigint, 0)
                                        FROM teams WHERE name = t.team), 9223372036854775807)
                            -- So do those of a pool at its capacity.
                            AND NOT EXISTS (SELECT 1 FROM pools p WHERE p.name = t.pool
                                AND p.max_workers <= {pool_taken})))),
                     -- A leased slot that lapses is not announced.
                     (SELECT min(s.deadline) FROM pool_slots s
                      WHERE s.pool = ANY($1) AND s.deadline >= clock_timestamp()
                        AND EXISTS (SELECT 1 FROM tasks t WHERE t.pool = s.pool
                                      AND t.agent = ANY($2) AND t.status = 'pending')))
                   - clock_timestamp()))::float8",
                    pool_taken = super::pools::taken("t.pool")
                ),
                &[&pools, &agents],
            )
            .await
            .map_err(|e| self.error("read the tasks of", e))?;
        Ok(row.get::<_, Option<f64>>(0).map(|s| s.max(0.0)))
    }

    /// Whether team `team` may still have work for agent profile `agent`:
    /// a task of it pending or running, or its plan not yet turned into
    /// tasks (a team still `Planning`).
    pub async fn has_work(&self, team: &str, agent: &str) -> Result<bool> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM tasks WHERE team = $1 AND agent = $2
                                  AND status IN ('pending', 'running'))
                     OR EXISTS (SELECT 1 FROM teams WHERE name = $1 AND phase = 'Planning')",
                &[&team, &agent],
            )
            .await
            .map_err(|e| self.error("read the tasks of", e))?;
        Ok(row.get(0))
    }

    /// The tasks of `team`, in order.
    pub async fn tasks(&self, team: &str) -> Result<Vec<TaskRecord>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT team, id, status, holder, epoch, attempts, lease_deadline, result,
                        spec - 'prompt', not_before
                 FROM tasks WHERE team = $1 ORDER BY position",
                &[&team],
            )
            .await
            .map_err(|e| self.error("read the tasks of", e))?;
        Ok(rows
            .iter()
            .map(|r| TaskRecord {
                team: r.get(0),
                id: r.get(1),
                status: r.get(2),
                holder: r.get(3),
                epoch: r.get(4),
                attempts: r.get(5),
                lease_deadline: r.get(6),
                not_before: r.get(9),
                result: r.get(7),
                spec: r.get(8),
            })
            .collect())
    }

    /// Every counter, by name.
    pub async fn counters(&self) -> Result<std::collections::BTreeMap<String, i64>> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT name, value FROM counters", &[])
            .await
            .map_err(|e| self.error("read counters from", e))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// A counter's value (0 when never counted).
    pub async fn counter(&self, name: &str) -> Result<i64> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT value FROM counters WHERE name = $1", &[&name])
            .await
            .map_err(|e| self.error("read counters from", e))?;
        Ok(row.map_or(0, |r| r.get(0)))
    }
}

/// [`TaskLeases`] over the store's tasks of some pools that some agent
/// profiles run: what one `omk worker` claims from.
#[derive(Debug, Clone)]
pub struct PgQueue {
    store: PgStore,
    pools: Vec<String>,
    agents: Vec<String>,
}

impl PgStore {
    /// The tasks of `pools` that one of `agents` runs, as a [`TaskLeases`].
    pub fn queue(&self, pools: &[String], agents: &[String]) -> PgQueue {
        PgQueue {
            store: self.clone(),
            pools: pools.to_vec(),
            agents: agents.to_vec(),
        }
    }
}

impl TaskLeases for PgQueue {
    async fn claim(&self, holder: &str, ttl: Duration) -> Result<Option<Lease>> {
        self.store
            .claim(holder, &self.pools, &self.agents, ttl)
            .await
    }

    async fn renew(&self, lease: &mut Lease, ttl: Duration) -> Result<()> {
        self.store.renew(lease, ttl).await
    }

    async fn complete(&self, lease: &Lease, result: &Value) -> Result<()> {
        let counters = [("tasks_completed", 1)];
        self.store
            .complete(lease, result, &counters)
            .await
            .map(|_| ())
    }

    async fn fail(&self, lease: &Lease, why: &str, backoff: Duration) -> Result<AfterFailure> {
        self.store.fail(lease, why, backoff).await
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        self.store.release(lease).await
    }

    async fn records(&self) -> Result<Vec<LeaseRecord>> {
        let client = self.store.client().await?;
        let rows = client
            .query(
                "SELECT id, status, holder, epoch, attempts, lease_deadline, not_before,
                        COALESCE(result->'errors', '[]'::jsonb)
                 FROM tasks WHERE pool = ANY($1) AND agent = ANY($2)
                 ORDER BY team, position",
                &[&self.pools, &self.agents],
            )
            .await
            .map_err(|e| self.store.error("read the tasks of", e))?;
        Ok(rows
            .iter()
            .map(|r| LeaseRecord {
                task: r.get(0),
                status: r.get(1),
                holder: r.get(2),
                epoch: r.get(3),
                attempts: r.get(4),
                lease_deadline: r.get(5),
                retry_at: r.get(6),
                errors: serde_json::from_value(r.get(7)).unwrap_or_default(),
            })
            .collect())
    }
}

pub(super) async fn add_counters(
    store: &PgStore,
    tx: &impl deadpool_postgres::GenericClient,
    counters: &[(&str, i64)],
) -> Result<()> {
    for (name, delta) in counters {
        tx.execute(
            "INSERT INTO counters (name, value) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET value = counters.value + EXCLUDED.value",
            &[name, delta],
        )
        .await
        .map_err(|e| store.error("count in", e))?;
    }
    Ok(())
}
