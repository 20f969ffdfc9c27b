//! Teams in the PostgreSQL store, and their coordination as a leased job.
//!
//! A team's document (the API's team document, as jsonb) is kept by its
//! coordinator: the `omk team run --store` that submitted it, or, once that
//! process's lease expired (it died, or `--detach` left none), any `omk
//! worker` that takes coordination over. The coordinator lease works as a
//! task's does: a deadline from the server's clock, an epoch raised by each
//! claim, and every write of the document fenced by that epoch.

use std::time::Duration;

use serde_json::{json, Value};

use super::events::{append_in, notify, CANCEL_CHANNEL, TEAMS_CHANNEL, WORK_CHANNEL};
use super::tasks::NewTask;
use super::PgStore;
use crate::error::{Error, Result};
use crate::events::{Event, EventKind};

/// Phases after which nobody coordinates a team any more.
pub const TERMINAL_PHASES: [&str; 4] = ["Completed", "Failed", "Shutdown", "Interrupted"];

/// What [`PgStore::request_shutdown`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Shutdown {
    /// The team's phase when asked.
    pub phase: String,
    /// Tasks cancelled before they started, and while they ran.
    pub pending: u64,
    pub running: u64,
}

/// The right to keep a team's document and end its run.
#[derive(Debug, Clone, PartialEq)]
pub struct Coordination {
    pub team: String,
    pub epoch: i64,
    pub holder: String,
    /// The team document as the store has it.
    pub doc: Value,
}

fn lost(c: &Coordination, doing: &str) -> Error {
    Error::Conflict(format!(
        "cannot {doing} team {}: coordination epoch {} of {} is no longer valid \
         (expired, or taken over)",
        c.team, c.epoch, c.holder
    ))
}

impl PgStore {
    /// Create a team (its document, phase `doc.phase`) and its tasks in one
    /// transaction, with a `task_created` event each; `coordinator`: the
    /// holder that coordinates it from the start, under a lease of the given
    /// length (none: the first worker to look takes it). A team of that name
    /// already there is a conflict.
    pub async fn create_team(
        &self,
        name: &str,
        doc: &Value,
        tasks: &[NewTask],
        coordinator: Option<(&str, Duration)>,
    ) -> Result<Option<Coordination>> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| self.error("create a team in", e))?;
        let phase = doc["phase"].as_str().unwrap_or("Planning");
        let (holder, ttl) = match coordinator {
            Some((h, ttl)) => (Some(h), ttl.as_secs_f64()),
            None => (None, 0.0),
        };
        let inserted = tx
            .execute(
                "INSERT INTO teams (name, doc, phase, coordinator, coordinator_epoch, coordinator_deadline)
                 VALUES ($1, $2, $3, $4, CASE WHEN $4::text IS NULL THEN 0 ELSE 1 END,
                         CASE WHEN $4::text IS NULL THEN NULL
                              ELSE clock_timestamp() + make_interval(secs => $5) END)
                 ON CONFLICT DO NOTHING",
                &[&name, doc, &phase, &holder, &ttl],
            )
            .await
            .map_err(|e| self.error("create a team in", e))?;
        if inserted == 0 {
            return Err(Error::Conflict(format!(
                "team {name} already exists in the store {}",
                self.shown()
            )));
        }
        let events = self.insert_tasks(&tx, name, tasks, "supervisor").await?;
        notify(self, &tx, TEAMS_CHANNEL).await?;
        if !events.is_empty() {
            notify(self, &tx, WORK_CHANNEL).await?;
            append_in(self, &tx, &events).await?;
        }
        tx.commit()
            .await
            .map_err(|e| self.error("create a team in", e))?;
        Ok(holder.map(|h| Coordination {
            team: name.to_string(),
            epoch: 1,
            holder: h.to_string(),
            doc: doc.clone(),
        }))
    }

    /// Insert `tasks` (pending, after any the team has), returning their
    /// `task_created` events.
    async fn insert_tasks(
        &self,
        tx: &impl deadpool_postgres::GenericClient,
        team: &str,
        tasks: &[NewTask],
        actor: &str,
    ) -> Result<Vec<Event>> {
        let mut events = Vec::with_capacity(tasks.len());
        for t in tasks {
            tx.execute(
                "INSERT INTO tasks (team, id, position, pool, agent, status, max_attempts, spec)
                 VALUES ($1, $2, (SELECT count(*) FROM tasks WHERE team = $1)::integer,
                         $3, $4, 'pending', $5, $6)",
                &[
                    &team,
                    &t.id,
                    &t.pool,
                    &t.agent,
                    &t.max_attempts.max(1),
                    &t.spec,
                ],
            )
            .await
            .map_err(|e| self.error("create a task in", e))?;
            events.push(Event::new(
                team,
                EventKind::TaskCreated,
                Some(actor),
                json!({ "task_id": t.id, "title": t.spec.get("title") }),
            ));
        }
        Ok(events)
    }

    /// Add the planned `tasks` to the team and save its document with
    /// `events`, fenced by the coordination epoch, in one transaction.
    pub async fn add_tasks(
        &self,
        c: &Coordination,
        doc: &Value,
        tasks: &[NewTask],
        events: &[Event],
    ) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| self.error("add tasks in", e))?;
        let phase = doc["phase"].as_str().unwrap_or("Executing");
        let n = tx
            .execute(
                "UPDATE teams SET doc = $3, phase = $4, updated_at = clock_timestamp()
                 WHERE name = $1 AND coordinator_epoch = $2 AND coordinator_deadline >= clock_timestamp()",
                &[&c.team, &c.epoch, doc, &phase],
            )
            .await
            .map_err(|e| self.error("add tasks in", e))?;
        if n == 0 {
            return Err(lost(c, "add the tasks of"));
        }
        let mut all = self.insert_tasks(&tx, &c.team, tasks, &c.holder).await?;
        all.extend_from_slice(events);
        notify(self, &tx, TEAMS_CHANNEL).await?;
        notify(self, &tx, WORK_CHANNEL).await?;
        append_in(self, &tx, &all).await?;
        tx.commit().await.map_err(|e| self.error("add tasks in", e))
    }

    /// Send completed task `task` back to work after its work conflicted
    /// at integration: pending again with `patch` merged into its spec and
    /// `prompt` as its prompt (`append`: added to its first prompt), the
    /// conflict as one more line of evidence, its completion uncounted,
    /// with `events`; fenced by the coordination epoch, in one
    /// transaction.
    pub async fn reopen_task(
        &self,
        c: &Coordination,
        task: &str,
        patch: &Value,
        (prompt, append): (&str, bool),
        evidence: &str,
        events: &[Event],
    ) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| self.error("reopen a task in", e))?;
        let n = tx
            .execute(
                "UPDATE teams SET updated_at = clock_timestamp()
                 WHERE name = $1 AND coordinator_epoch = $2 AND coordinator_deadline >= clock_timestamp()",
                &[&c.team, &c.epoch],
            )
            .await
            .map_err(|e| self.error("reopen a task in", e))?;
        if n == 0 {
            return Err(lost(c, "reopen a task of"));
        }
        let n = tx
            .execute(
                "UPDATE tasks SET status = 'pending', holder = NULL, lease_deadline = NULL,
                     not_before = NULL,
                     spec = spec || $3::jsonb || jsonb_build_object(
                         'first_prompt', COALESCE(spec->'first_prompt', spec->'prompt'),
                         'prompt', CASE WHEN $5 THEN COALESCE(spec->>'first_prompt', spec->>'prompt') || $4
                                        ELSE $4 END),
                     result = jsonb_build_object('errors',
                         COALESCE(result->'errors', '[]'::jsonb) || to_jsonb($6::text))
                 WHERE team = $1 AND id = $2 AND status = 'completed'",
                &[&c.team, &task, patch, &prompt, &append, &evidence],
            )
            .await
            .map_err(|e| self.error("reopen a task in", e))?;
        if n == 0 {
            return Err(Error::Conflict(format!(
                "task {task} of team {} is not completed: nothing to reopen",
                c.team
            )));
        }
        super::tasks::add_counters(self, &tx, &[("tasks_completed", -1)]).await?;
        notify(self, &tx, WORK_CHANNEL).await?;
        append_in(self, &tx, events).await?;
        tx.commit()
            .await
            .map_err(|e| self.error("reopen a task in", e))
    }

    /// Take over the coordination of an unfinished team nobody coordinates
    /// (none ever did, or the lease expired), raising its epoch: the oldest
    /// such team, or team `only`.
    pub async fn claim_coordination(
        &self,
        holder: &str,
        ttl: Duration,
        only: Option<&str>,
    ) -> Result<Option<Coordination>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "WITH next AS (
                     SELECT name FROM teams
                     WHERE phase <> ALL($1)
                       AND (coordinator IS NULL OR coordinator_deadline < clock_timestamp())
                       AND ($4::text IS NULL OR name = $4)
                     ORDER BY created_at
                     LIMIT 1
                     FOR UPDATE SKIP LOCKED)
                 UPDATE teams t
                 SET coordinator = $2, coordinator_epoch = t.coordinator_epoch + 1,
                     coordinator_deadline = clock_timestamp() + make_interval(secs => $3)
                 FROM next WHERE t.name = next.name
                 RETURNING t.name, t.coordinator_epoch, t.doc",
                &[&&TERMINAL_PHASES[..], &holder, &ttl.as_secs_f64(), &only],
            )
            .await
            .map_err(|e| self.error("claim coordination in", e))?;
        Ok(row.map(|r| Coordination {
            team: r.get(0),
            epoch: r.get(1),
            holder: holder.to_string(),
            doc: r.get(2),
        }))
    }

    /// Extend a coordination lease; refused once expired.
    pub async fn renew_coordination(&self, c: &Coordination, ttl: Duration) -> Result<()> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE teams SET coordinator_deadline = clock_timestamp() + make_interval(secs => $3)
                 WHERE name = $1 AND coordinator_epoch = $2 AND coordinator_deadline >= clock_timestamp()",
                &[&c.team, &c.epoch, &ttl.as_secs_f64()],
            )
            .await
            .map_err(|e| self.error("renew coordination in", e))?;
        if n == 0 {
            return Err(lost(c, "renew the coordination of"));
        }
        Ok(())
    }

    /// Write the team document (and its phase) with `events`, fenced by the
    /// coordination epoch; a terminal phase also ends the coordination.
    pub async fn save_team(&self, c: &Coordination, doc: &Value, events: &[Event]) -> Result<()> {
        self.end_team(c, doc, events, None).await
    }

    /// [`PgStore::save_team`] with the run's proof or failure document.
    pub async fn end_team(
        &self,
        c: &Coordination,
        doc: &Value,
        events: &[Event],
        proof: Option<&Value>,
    ) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| self.error("save a team in", e))?;
        let phase = doc["phase"].as_str().unwrap_or("Planning");
        let n = tx
            .execute(
                "UPDATE teams SET doc = $3, phase = $4, updated_at = clock_timestamp(),
                     coordinator = CASE WHEN $4 = ANY($5) THEN NULL ELSE coordinator END,
                     proof = coalesce($6, proof)
                 WHERE name = $1 AND coordinator_epoch = $2 AND coordinator_deadline >= clock_timestamp()",
                &[
                    &c.team,
                    &c.epoch,
                    doc,
                    &phase,
                    &&TERMINAL_PHASES[..],
                    &proof,
                ],
            )
            .await
            .map_err(|e| self.error("save a team in", e))?;
        if n == 0 {
            return Err(lost(c, "save"));
        }
        notify(self, &tx, TEAMS_CHANNEL).await?;
        if !events.is_empty() {
            append_in(self, &tx, events).await?;
        }
        tx.commit()
            .await
            .map_err(|e| self.error("save a team in", e))
    }

    /// Shut team `name` down: record the request, cancel its pending and
    /// running tasks (a worker running one stops its agent when told on
    /// `omk_cancel`, and can record nothing for it), with a
    /// `shutdown_requested` event; one transaction. Its coordinator then
    /// ends the run as `Shutdown`. `None`: no such team.
    pub async fn request_shutdown(&self, name: &str, by: &str) -> Result<Option<Shutdown>> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| self.error("shut a team down in", e))?;
        let Some(team) = tx
            .query_opt(
                "UPDATE teams SET shutdown_requested_at = coalesce(shutdown_requested_at, clock_timestamp())
                 WHERE name = $1 RETURNING phase",
                &[&name],
            )
            .await
            .map_err(|e| self.error("shut a team down in", e))?
        else {
            return Ok(None);
        };
        let rows = tx
            .query(
                "WITH open AS (
                     SELECT id, status FROM tasks
                     WHERE team = $1 AND status IN ('pending', 'running') FOR UPDATE)
                 UPDATE tasks t SET status = 'cancelled', lease_deadline = NULL,
                     not_before = NULL
                 FROM open WHERE t.team = $1 AND t.id = open.id
                 RETURNING open.status",
                &[&name],
            )
            .await
            .map_err(|e| self.error("shut a team down in", e))?;
        let was = |s: &str| rows.iter().filter(|r| r.get::<_, &str>(0) == s).count() as u64;
        let out = Shutdown {
            phase: team.get(0),
            pending: was("pending"),
            running: was("running"),
        };
        let event = Event::new(
            name,
            EventKind::ShutdownRequested,
            Some(by),
            json!({ "cancelled_pending": out.pending, "cancelled_running": out.running }),
        );
        if out.running > 0 {
            notify(self, &tx, CANCEL_CHANNEL).await?;
        }
        notify(self, &tx, TEAMS_CHANNEL).await?;
        append_in(self, &tx, &[event]).await?;
        tx.commit()
            .await
            .map_err(|e| self.error("shut a team down in", e))?;
        Ok(Some(out))
    }

    /// Whether a shutdown of team `name` was requested.
    pub async fn shutdown_requested(&self, name: &str) -> Result<bool> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT shutdown_requested_at IS NOT NULL FROM teams WHERE name = $1",
                &[&name],
            )
            .await
            .map_err(|e| self.error("read a team from", e))?;
        Ok(row.is_some_and(|r| r.get(0)))
    }

    /// Every team's `(name, document)`, oldest first.
    pub async fn team_docs(&self) -> Result<Vec<(String, Value)>> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT name, doc FROM teams ORDER BY created_at, name", &[])
            .await
            .map_err(|e| self.error("read the teams of", e))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// The `(name, document)` of the teams a follower must look at again:
    /// those still running, those in `also` (what it last saw running), and
    /// those saved in the last `recent` (a team that started and ended
    /// between two looks).
    pub async fn changing_team_docs(
        &self,
        also: &[String],
        recent: Duration,
    ) -> Result<Vec<(String, Value)>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT name, doc FROM teams
                 WHERE NOT (phase = ANY($1)) OR name = ANY($2)
                    OR updated_at > clock_timestamp() - make_interval(secs => $3)
                 ORDER BY created_at, name",
                &[&&TERMINAL_PHASES[..], &also, &recent.as_secs_f64()],
            )
            .await
            .map_err(|e| self.error("read the teams of", e))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// A team's proof or failure document: `None` for no such team,
    /// `Some(None)` while its run has not ended.
    pub async fn team_proof(&self, name: &str) -> Result<Option<Option<Value>>> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT proof FROM teams WHERE name = $1", &[&name])
            .await
            .map_err(|e| self.error("read a team from", e))?;
        Ok(row.map(|r| r.get(0)))
    }

    /// A team's document, if the store has the team.
    pub async fn team_doc(&self, name: &str) -> Result<Option<Value>> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT doc FROM teams WHERE name = $1", &[&name])
            .await
            .map_err(|e| self.error("read a team from", e))?;
        Ok(row.map(|r| r.get(0)))
    }
}
