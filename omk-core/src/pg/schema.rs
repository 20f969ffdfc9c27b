//! The store's schema: embedded, versioned migrations, applied in one
//! transaction on first use (docs/state.md has the tables).
//!
//! `omk_schema` holds the version. A database whose version is newer than
//! [`LATEST`] belongs to a newer omk: it is refused before anything is
//! written, as a newer state document is.

use super::PgStore;
use crate::error::{Error, Result};

/// Migrations in order; the version after `MIGRATIONS[i]` is `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: teams, their tasks (one leased record each), events in commit
    // order, counters.
    r#"
    CREATE TABLE teams (
        name        text PRIMARY KEY,
        doc         jsonb NOT NULL,
        created_at  timestamptz NOT NULL DEFAULT now(),
        updated_at  timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE tasks (
        team            text NOT NULL REFERENCES teams (name) ON DELETE CASCADE,
        id              text NOT NULL,
        position        integer NOT NULL,
        pool            text NOT NULL,
        agent           text NOT NULL,
        status          text NOT NULL CHECK (status IN
                            ('pending', 'running', 'completed', 'failed', 'cancelled')),
        holder          text,
        epoch           bigint NOT NULL DEFAULT 0,
        attempts        integer NOT NULL DEFAULT 0,
        max_attempts    integer NOT NULL CHECK (max_attempts > 0),
        lease_deadline  timestamptz,
        not_before      timestamptz,
        spec            jsonb NOT NULL,
        result          jsonb,
        PRIMARY KEY (team, id)
    );
    CREATE INDEX tasks_claimable ON tasks (pool, status, not_before);
    CREATE TABLE event_sequence (
        only_row  boolean PRIMARY KEY DEFAULT true CHECK (only_row),
        last      bigint NOT NULL
    );
    INSERT INTO event_sequence VALUES (true, 0);
    CREATE TABLE events (
        seq      bigint PRIMARY KEY,
        team     text NOT NULL,
        id       text NOT NULL,
        ts       timestamptz NOT NULL DEFAULT now(),
        kind     text NOT NULL,
        actor    text,
        payload  jsonb NOT NULL
    );
    CREATE INDEX events_by_team ON events (team, seq);
    CREATE TABLE counters (
        name   text PRIMARY KEY,
        value  bigint NOT NULL
    );
    "#,
    // 2: a team's coordination is a leased job too: whoever holds the
    // lease (the submitting `omk team run`, or a worker that took over)
    // keeps the team document and ends the run.
    r#"
    ALTER TABLE teams
        ADD COLUMN phase text NOT NULL DEFAULT 'Planning',
        ADD COLUMN coordinator text,
        ADD COLUMN coordinator_epoch bigint NOT NULL DEFAULT 0,
        ADD COLUMN coordinator_deadline timestamptz;
    CREATE INDEX teams_unfinished ON teams (phase, coordinator_deadline);
    "#,
    // 3: `omk team shutdown --store` records when it was asked, so the
    // coordinator ends the run as `Shutdown`, not `Failed`.
    r#"
    ALTER TABLE teams ADD COLUMN shutdown_requested_at timestamptz;
    "#,
    // 4: the `omk worker` daemons, each under a lease it renews, for the
    // cluster's capacity and load per pool.
    r#"
    CREATE TABLE workers (
        holder      text PRIMARY KEY,
        host        text NOT NULL,
        pools       text[] NOT NULL,
        agents      text[] NOT NULL,
        max_agents  integer NOT NULL,
        started_at  timestamptz NOT NULL DEFAULT now(),
        deadline    timestamptz NOT NULL
    );
    "#,
    // 5: the evidence a store team's run leaves (its proof, or its
    // failure document), written with its last document.
    r#"
    ALTER TABLE teams ADD COLUMN proof jsonb;
    "#,
    // 6: named leases (the seam's `Leases`): one holder at a time, fenced
    // by an epoch raised with every acquisition.
    r#"
    CREATE TABLE leases (
        name      text PRIMARY KEY,
        holder    text,
        epoch     bigint NOT NULL DEFAULT 0,
        deadline  timestamptz
    );
    "#,
    // 7: cluster-wide pool admission (the seam's `PoolAdmission`): a
    // pool's declared capacity, and the slots leased in it besides its
    // running tasks.
    r#"
    CREATE TABLE pools (
        name         text PRIMARY KEY,
        max_workers  integer NOT NULL CHECK (max_workers >= 0)
    );
    CREATE TABLE pool_slots (
        id           text PRIMARY KEY,
        pool         text NOT NULL,
        holder       text NOT NULL,
        epoch        bigint NOT NULL,
        admitted_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
        deadline     timestamptz NOT NULL
    );
    CREATE INDEX pool_slots_by_pool ON pool_slots (pool, deadline);
    CREATE SEQUENCE pool_slot_epochs;
    "#,
];

/// The schema version this omk reads and writes.
pub const LATEST: i32 = MIGRATIONS.len() as i32;

/// An arbitrary key serializing concurrent first uses of one database (an
/// advisory lock held by the migrating transaction only).
const MIGRATION_LOCK: i64 = 0x6f6d_6b5f_7363_6865; // "omk_sche"

/// The database's schema version (0 for a database omk never used).
pub async fn version(store: &PgStore) -> Result<i32> {
    let client = store.client().await?;
    read_version(store, &client).await
}

async fn read_version(
    store: &PgStore,
    client: &impl deadpool_postgres::GenericClient,
) -> Result<i32> {
    let fail = |e| store.error("read the schema of", e);
    // Two statements: a query naming a missing table fails to plan, even in
    // a branch that would not run. The catalog is read as a table (with the
    // statement's snapshot), not through `to_regclass`: its lookup cache
    // can still hold this session's "no such table" from before another
    // process's migration committed, while this one waited for the lock.
    let exists: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.relname = 'omk_schema' AND n.nspname = current_schema())",
            &[],
        )
        .await
        .map_err(fail)?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let row = client
        .query_opt("SELECT version FROM omk_schema", &[])
        .await
        .map_err(fail)?;
    Ok(row.map_or(0, |r| r.get(0)))
}

fn too_new(store: &PgStore, found: i32) -> Error {
    Error::CorruptState {
        path: store.shown().into(),
        message: format!(
            "the database has schema version {found}, newer than this omk's {LATEST}: \
             upgrade omk (nothing was written)"
        ),
    }
}

/// Bring the schema up to [`LATEST`], or refuse a newer one.
pub async fn migrate(store: &PgStore) -> Result<()> {
    let mut client = store.client().await?;
    let found = read_version(store, &client).await?;
    if found > LATEST {
        return Err(too_new(store, found));
    }
    if found == LATEST {
        return Ok(());
    }
    let tx = client
        .transaction()
        .await
        .map_err(|e| store.error("migrate", e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| store.error("migrate", e))?;
    // Another process may have migrated while this one waited.
    let found = read_version(store, &tx).await?;
    if found > LATEST {
        return Err(too_new(store, found));
    }
    if found == 0 {
        tx.batch_execute("CREATE TABLE omk_schema (version integer NOT NULL); INSERT INTO omk_schema VALUES (0);")
            .await
            .map_err(|e| store.error("migrate", e))?;
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.batch_execute(sql)
            .await
            .map_err(|e| store.error(&format!("apply migration {} to", i + 1), e))?;
    }
    tx.execute("UPDATE omk_schema SET version = $1", &[&LATEST])
        .await
        .map_err(|e| store.error("migrate", e))?;
    tx.commit().await.map_err(|e| store.error("migrate", e))
}
