//! The PostgreSQL store behind the seam's traits ([`crate::seam`]): team
//! documents in `teams` (revision: the MD5 of the stored document), events
//! by their global sequence, the `counters` table, `LISTEN` as the change
//! feed, and named leases in `leases`, deadlines from the server's clock.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::events::{append_in, notify, TEAMS_CHANNEL};
use super::PgStore;
use crate::error::{Error, Result};
use crate::events::Event;
use crate::metrics::Counter;
use crate::seam::{
    lost_named, ChangeFeed, Counters, Documents, EventLogs, Feed, Leases, NamedLease, Versioned,
};

impl Documents for PgStore {
    async fn get(&self, team: &str) -> Result<Option<Versioned>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT doc, md5(doc::text) FROM teams WHERE name = $1",
                &[&team],
            )
            .await
            .map_err(|e| self.error("read a team from", e))?;
        Ok(row.map(|r| Versioned {
            doc: r.get(0),
            revision: r.get(1),
        }))
    }

    async fn list(&self) -> Result<Vec<Value>> {
        Ok(self
            .team_docs()
            .await?
            .into_iter()
            .map(|(_, d)| d)
            .collect())
    }

    async fn compare_and_set(&self, team: &str, expected: &str, doc: &Value) -> Result<String> {
        let err = |e| self.error("write a team to", e);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(err)?;
        let row = tx
            .query_opt(
                "UPDATE teams SET doc = $2::jsonb, phase = COALESCE($2::jsonb->>'phase', phase),
                     updated_at = clock_timestamp()
                 WHERE name = $1 AND md5(doc::text) = $3
                 RETURNING md5(doc::text)",
                &[&team, doc, &expected],
            )
            .await
            .map_err(err)?;
        let Some(row) = row else {
            let now = tx
                .query_opt("SELECT md5(doc::text) FROM teams WHERE name = $1", &[&team])
                .await
                .map_err(err)?;
            return Err(match now {
                None => Error::NotFound(format!("no team named {team} in store {}", self.shown())),
                Some(r) => Error::Conflict(format!(
                    "team {team}'s document changed meanwhile (revision {}, not {expected})",
                    r.get::<_, String>(0)
                )),
            });
        };
        notify(self, &tx, TEAMS_CHANNEL).await?;
        tx.commit().await.map_err(err)?;
        Ok(row.get(0))
    }
}

impl EventLogs for PgStore {
    async fn append(&self, events: Vec<Event>) -> Result<Vec<u64>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let err = |e| self.error("append events to", e);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(err)?;
        let last = append_in(self, &tx, &events).await?;
        tx.commit().await.map_err(err)?;
        let first = last - events.len() as i64 + 1;
        Ok((first..=last).map(|s| s.max(0) as u64).collect())
    }

    async fn read_after(&self, team: &str, after: u64, limit: usize) -> Result<Vec<Event>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        Ok(self
            .events_after(Some(team), after, limit)
            .await?
            .into_iter()
            .map(|s| s.event)
            .collect())
    }
}

/// A counter's name, as both stores name it.
fn counter_name(c: Counter) -> String {
    serde_json::to_value(c)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

impl Counters for PgStore {
    async fn add(&self, deltas: &[(Counter, u64)]) -> Result<()> {
        let err = |e| self.error("count in", e);
        let named: Vec<(String, i64)> = deltas
            .iter()
            .map(|(c, n)| (counter_name(*c), i64::try_from(*n).unwrap_or(i64::MAX)))
            .collect();
        let refs: Vec<(&str, i64)> = named.iter().map(|(n, d)| (n.as_str(), *d)).collect();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(err)?;
        super::tasks::add_counters(self, &tx, &refs).await?;
        tx.commit().await.map_err(err)
    }

    async fn all(&self) -> Result<BTreeMap<String, u64>> {
        Ok(self
            .counters()
            .await?
            .into_iter()
            .filter(|(_, v)| *v > 0)
            .map(|(k, v)| (k, v as u64))
            .collect())
    }
}

impl ChangeFeed for PgStore {
    /// Raised by every commit of events (of any team: a notification
    /// names no team, and a woken reader reads by sequence anyway).
    async fn changes(&self, _team: Option<&str>) -> Result<Feed> {
        Ok(Feed {
            signal: self.listen().await?,
            _source: None,
        })
    }
}

impl Leases for PgStore {
    async fn acquire(&self, name: &str, holder: &str, ttl: Duration) -> Result<Option<NamedLease>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "INSERT INTO leases (name, holder, epoch, deadline)
                 VALUES ($1, $2, 1, clock_timestamp() + make_interval(secs => $3))
                 ON CONFLICT (name) DO UPDATE
                 SET holder = $2, epoch = leases.epoch + 1,
                     deadline = clock_timestamp() + make_interval(secs => $3)
                 WHERE leases.holder IS NULL OR leases.deadline < clock_timestamp()
                 RETURNING epoch, deadline",
                &[&name, &holder, &ttl.as_secs_f64()],
            )
            .await
            .map_err(|e| self.error("acquire a lease in", e))?;
        Ok(row.map(|r| NamedLease {
            name: name.to_string(),
            holder: holder.to_string(),
            epoch: r.get(0),
            deadline: r.get(1),
        }))
    }

    async fn renew(&self, lease: &mut NamedLease, ttl: Duration) -> Result<()> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "UPDATE leases SET deadline = clock_timestamp() + make_interval(secs => $4)
                 WHERE name = $1 AND epoch = $2 AND holder = $3
                   AND deadline >= clock_timestamp()
                 RETURNING deadline",
                &[&lease.name, &lease.epoch, &lease.holder, &ttl.as_secs_f64()],
            )
            .await
            .map_err(|e| self.error("renew a lease in", e))?;
        match row {
            Some(r) => {
                lease.deadline = r.get(0);
                Ok(())
            }
            None => Err(lost_named(lease, "renew")),
        }
    }

    async fn release(&self, lease: &NamedLease) -> Result<()> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE leases SET holder = NULL, deadline = NULL
                 WHERE name = $1 AND epoch = $2 AND holder = $3
                   AND deadline >= clock_timestamp()",
                &[&lease.name, &lease.epoch, &lease.holder],
            )
            .await
            .map_err(|e| self.error("release a lease in", e))?;
        if n == 0 {
            return Err(lost_named(lease, "release"));
        }
        Ok(())
    }
}
