//! Events in the PostgreSQL store: one global sequence in commit order, and
//! a `NOTIFY` that wakes followers.
//!
//! A sequence taken from a `bigserial` is allocation order, not commit
//! order: a follower reading "after 41" could pass over 42 while the
//! transaction holding it is still open. So each appending transaction
//! takes the next number from a one-row counter, whose row lock it holds
//! until it commits: numbers become visible in order, and a follower that
//! reads by sequence never misses one. The append is the last statement of
//! its transaction, so the lock is held for as short as possible.
//!
//! The notification carries nothing a follower needs: it is only a wake-up
//! (coalesced by PostgreSQL, lost if the follower was reconnecting), after
//! which the follower reads everything past its last sequence.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde_json::Value;

use super::PgStore;
use crate::error::Result;
use crate::events::{Event, EventKind};
use crate::watch::Signal;

/// The channel every appended event notifies.
pub const CHANNEL: &str = "omk_events";

/// The channel notified when a task may have become claimable (a team
/// submitted, an attempt failed into its backoff, a task released): what
/// idle workers listen to, so the claims, starts and completions of a busy
/// team do not wake every idle slot of every host.
pub const WORK_CHANNEL: &str = "omk_work";

/// An event as the store keeps it: the envelope plus its sequence.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub seq: i64,
    pub event: Event,
}

/// Append `events` inside `tx` (the last statement before its commit), and
/// notify. Returns the sequence of the last one.
///
/// [`notify`] of [`WORK_CHANNEL`] in the same transaction also wakes idle
/// workers.
pub(crate) async fn append_in(
    store: &PgStore,
    tx: &impl GenericClient,
    events: &[Event],
) -> Result<i64> {
    let n = events.len() as i64;
    let row = tx
        .query_one(
            "UPDATE event_sequence SET last = last + $1 RETURNING last",
            &[&n],
        )
        .await
        .map_err(|e| store.error("append events to", e))?;
    let last: i64 = row.get(0);
    let first = last - n + 1;
    for (i, e) in events.iter().enumerate() {
        let mut payload = e.payload.clone();
        crate::redact::redact_value(&mut payload);
        tx.execute(
            "INSERT INTO events (seq, team, id, ts, kind, actor, payload)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &(first + i as i64),
                &e.run_id,
                &e.id,
                &e.ts,
                &e.kind.as_str(),
                &e.actor,
                &payload,
            ],
        )
        .await
        .map_err(|e| store.error("append events to", e))?;
    }
    tx.execute("SELECT pg_notify($1, '')", &[&CHANNEL])
        .await
        .map_err(|e| store.error("notify", e))?;
    Ok(last)
}

/// The channel notified when a team document is created or saved: what
/// document followers (the dashboard) listen to.
pub const TEAMS_CHANNEL: &str = "omk_teams";

/// The channel notified when running tasks were cancelled (a team shut
/// down): what workers running a task listen to, to stop its agent.
pub const CANCEL_CHANNEL: &str = "omk_cancel";

/// The channel notified when the cluster's shape changed: a worker joined
/// (or came back after its registration lapsed) or left, a pool's capacity
/// was set, a leased pool slot was admitted or released. What the
/// dashboard's cluster pool cards follow. A worker that dies is not
/// announced: its registration lapses, which followers see on their next
/// look.
pub const CLUSTER_CHANNEL: &str = "omk_cluster";

/// Notify `channel` at `tx`'s commit: [`WORK_CHANNEL`] (a task may be
/// claimable), [`TEAMS_CHANNEL`] (a team document changed),
/// [`CANCEL_CHANNEL`] (running tasks were cancelled), [`CLUSTER_CHANNEL`]
/// (workers or pool capacities changed).
pub(crate) async fn notify(
    store: &PgStore,
    tx: &impl GenericClient,
    channel: &'static str,
) -> Result<()> {
    tx.execute("SELECT pg_notify($1, '')", &[&channel])
        .await
        .map_err(|e| store.error("notify", e))?;
    Ok(())
}

impl PgStore {
    /// Append events in a transaction of their own.
    pub async fn append_events(&self, events: &[Event]) -> Result<i64> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| self.error("append events to", e))?;
        let last = append_in(self, &tx, events).await?;
        tx.commit()
            .await
            .map_err(|e| self.error("append events to", e))?;
        Ok(last)
    }

    /// Events after `after` (of one team, or of all), in sequence order, at
    /// most `limit`.
    pub async fn events_after(
        &self,
        team: Option<&str>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT seq, team, id, ts, kind, actor, payload FROM events
                 WHERE seq > $1 AND ($2::text IS NULL OR team = $2)
                 ORDER BY seq LIMIT $3",
                &[&after, &team, &limit],
            )
            .await
            .map_err(|e| self.error("read events from", e))?;
        Ok(rows
            .iter()
            .map(|r| StoredEvent {
                seq: r.get(0),
                event: Event {
                    id: r.get(2),
                    ts: r.get::<_, DateTime<Utc>>(3),
                    run_id: r.get(1),
                    kind: EventKind::parse(r.get(4)),
                    actor: r.get(5),
                    payload: r.get::<_, Value>(6),
                    schema_version: crate::events::EVENT_SCHEMA_VERSION,
                    seq: Some(r.get::<_, i64>(0).max(0) as u64),
                },
            })
            .collect())
    }

    /// A signal raised on every commit of events (by any process), from a
    /// dedicated `LISTEN` connection. It reconnects with backoff when the
    /// connection drops, raising the signal once connected again (events
    /// may have been appended meanwhile). Dropping the last clone of the
    /// signal stops the listener.
    pub async fn listen(&self) -> Result<Arc<Signal>> {
        self.listen_to(CHANNEL).await
    }

    /// [`PgStore::listen`] to [`WORK_CHANNEL`].
    pub async fn listen_for_work(&self) -> Result<Arc<Signal>> {
        self.listen_to(WORK_CHANNEL).await
    }

    /// [`PgStore::listen`] to [`TEAMS_CHANNEL`].
    pub async fn listen_for_teams(&self) -> Result<Arc<Signal>> {
        self.listen_to(TEAMS_CHANNEL).await
    }

    /// [`PgStore::listen`] to [`CANCEL_CHANNEL`].
    pub async fn listen_for_cancels(&self) -> Result<Arc<Signal>> {
        self.listen_to(CANCEL_CHANNEL).await
    }

    /// [`PgStore::listen`] to [`CLUSTER_CHANNEL`].
    pub async fn listen_for_cluster(&self) -> Result<Arc<Signal>> {
        self.listen_to(CLUSTER_CHANNEL).await
    }

    async fn listen_to(&self, channel: &'static str) -> Result<Arc<Signal>> {
        let signal = Signal::new();
        let first = self.dedicated().await?;
        let store = self.clone();
        let weak = Arc::downgrade(&signal);
        tokio::spawn(async move {
            let mut connection = Some(first);
            let mut backoff = std::time::Duration::from_millis(50);
            loop {
                let (client, conn) = match connection.take() {
                    Some(c) => c,
                    None => match store.dedicated().await {
                        Ok(c) => c,
                        Err(e) => {
                            if weak.strong_count() == 0 {
                                return;
                            }
                            tracing::warn!("event listener: {e}; retrying in {backoff:?}");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(std::time::Duration::from_secs(2));
                            continue;
                        }
                    },
                };
                if !listen_until_closed(client, conn, channel, &weak).await {
                    return;
                }
                // Lost: whatever was appended meanwhile is read on wake-up.
                match weak.upgrade() {
                    Some(s) => s.raise(),
                    None => return,
                }
            }
        });
        Ok(signal)
    }
}

/// Drive one `LISTEN` connection, raising the signal per notification.
/// Returns false once nobody holds the signal any more, true when the
/// connection closed.
async fn listen_until_closed(
    client: tokio_postgres::Client,
    mut conn: tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
    channel: &str,
    weak: &std::sync::Weak<Signal>,
) -> bool {
    use tokio_postgres::AsyncMessage;
    let sql = format!("LISTEN {channel}");
    let listen = client.batch_execute(&sql);
    tokio::pin!(listen);
    let mut listening = false;
    let mut check = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        let message = std::future::poll_fn(|cx| conn.poll_message(cx));
        tokio::select! {
            m = message => match m {
                Some(Ok(AsyncMessage::Notification(_))) => match weak.upgrade() {
                    Some(s) => s.raise(),
                    None => return false,
                },
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::warn!("event listener connection: {e}");
                    return true;
                }
                None => return true,
            },
            r = &mut listen, if !listening => {
                listening = true;
                if let Err(e) = r {
                    tracing::warn!("event listener: LISTEN failed: {e}");
                    return true;
                }
                // Listening now: anything appended before is read on this wake-up.
                match weak.upgrade() {
                    Some(s) => s.raise(),
                    None => return false,
                }
            }
            _ = check.tick() => if weak.strong_count() == 0 {
                return false;
            }
        }
    }
}
