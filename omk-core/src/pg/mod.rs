//! The PostgreSQL store: shared state and the claim queue of teams that span
//! machines (docs/distributed.md). The embedded file store stays the
//! default; this backend is chosen by a `postgres://` store URL.
//!
//! - [`PgStore::connect`] opens a pool of connections (deadpool-postgres)
//!   and applies the embedded, versioned migrations ([`schema`]) on first
//!   use. A database of a newer schema than this omk knows is refused, and
//!   an unreachable server or wrong credentials are clear errors naming the
//!   store (its URL without the password).
//! - Tasks are claimed with `FOR UPDATE SKIP LOCKED` under leases whose
//!   deadlines come from the server's clock, fenced by an epoch that rises
//!   with every claim ([`tasks`]).
//! - Events carry a global sequence taken in commit order, and a
//!   `NOTIFY` wakes followers, who then read by sequence ([`events`]).
//!
//! Every operation is async (the store lives on omk's runtime); the
//! blocking `Omk` API drives it there.

pub mod events;
pub mod pools;
pub mod schema;
pub mod seam;
pub mod tasks;
pub mod teams;
pub mod workers;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use crate::error::{Error, Result};

/// How long opening a connection may take before the store counts as
/// unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a transaction may sit idle (its process stopped) before the
/// server ends it, releasing its locks. Every transaction of omk runs its
/// statements back to back.
const IDLE_IN_TRANSACTION: Duration = Duration::from_secs(10);

/// Connections per process: workers, the coordinator's follower and the
/// API share them.
const POOL_SIZE: usize = 16;

/// A PostgreSQL store.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    config: tokio_postgres::Config,
    /// The URL without its password, for messages.
    shown: String,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("url", &self.shown).finish()
    }
}

/// Whether a store URL names PostgreSQL.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// `url` with any password replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _password)) => format!("{name}:***@{host}"),
            None => format!("{user}@{host}"),
        },
        None => authority.to_string(),
    };
    let tail = match tail.find("password=") {
        Some(i) => {
            let end = tail[i..].find('&').map_or(tail.len(), |j| i + j);
            format!("{}password=***{}", &tail[..i], &tail[end..])
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

impl PgStore {
    /// Connect to the store at `url`, check it answers, and bring its schema
    /// up to date (or refuse a newer one). Nothing is written when the
    /// schema is newer or the connection fails.
    pub async fn connect(url: &str) -> Result<PgStore> {
        let shown = redact_url(url);
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
            Error::invalid(format!("store URL {shown} is not a PostgreSQL URL: {e}"))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.application_name("omk");
        // A transaction left open by a stopped process (SIGSTOP, a paused
        // VM) would hold its row locks for as long as it stays stopped:
        // the server ends it instead, and the locks go with it.
        let options = format!(
            "{} -c idle_in_transaction_session_timeout={}",
            config.get_options().unwrap_or_default(),
            IDLE_IN_TRANSACTION.as_millis()
        );
        config.options(options.trim_start());
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| Error::invalid(format!("store {shown}: {e}")))?;
        let store = PgStore {
            pool,
            config,
            shown,
        };
        schema::migrate(&store).await?;
        Ok(store)
    }

    /// The URL without its password.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// A pooled connection.
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => self.error("connect to", e),
            other => Error::Io {
                context: format!("connect to the store {}", self.shown),
                source: std::io::Error::other(other.to_string()),
            },
        })
    }

    /// A dedicated connection outside the pool (for `LISTEN`), with the task
    /// that drives it.
    pub(crate) async fn dedicated(
        &self,
    ) -> Result<(
        tokio_postgres::Client,
        tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
    )> {
        self.config
            .connect(NoTls)
            .await
            .map_err(|e| self.error("connect to", e))
    }

    /// Turn a driver error into omk's: wrong credentials and bad databases
    /// are the user's input; anything else is I/O with the store.
    pub(crate) fn error(&self, doing: &str, e: tokio_postgres::Error) -> Error {
        use tokio_postgres::error::SqlState;
        let what = format!("{doing} the store {}", self.shown);
        if let Some(db) = e.as_db_error() {
            let code = db.code();
            if *code == SqlState::INVALID_PASSWORD
                || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                || *code == SqlState::INVALID_CATALOG_NAME
                || *code == SqlState::INSUFFICIENT_PRIVILEGE
            {
                return Error::invalid(format!("{what}: {}", db.message()));
            }
            return Error::Io {
                context: what,
                source: std::io::Error::other(format!("{} ({})", db.message(), code.code())),
            };
        }
        let source = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .map(|io| std::io::Error::new(io.kind(), io.to_string()))
            .unwrap_or_else(|| std::io::Error::other(e.to_string()));
        Error::Io {
            context: what,
            source,
        }
    }
}

/// Run `f` again while it fails with `io` (the store is away: a restart, a
/// network cut), with backoff from 50 ms to 2 s, for at most `within`
/// (then its last error). Any other error returns at once: a refused
/// write (`conflict`) is the fence working, not the store away.
pub async fn retry_io<T, F, Fut>(within: std::time::Duration, what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let until = tokio::time::Instant::now() + within;
    let mut backoff = std::time::Duration::from_millis(50);
    loop {
        match f().await {
            Err(e)
                if e.code() == crate::error::ErrorCode::Io
                    && tokio::time::Instant::now() + backoff < until =>
            {
                tracing::warn!("{what}: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact_url("postgres://omk:secret@db:5432/omk"),
            "postgres://omk:***@db:5432/omk"
        );
        assert_eq!(
            redact_url("postgresql://omk@db/omk?host=/run/pg&password=secret&x=1"),
            "postgresql://omk@db/omk?host=/run/pg&password=***&x=1"
        );
        assert_eq!(redact_url("postgres://db/omk"), "postgres://db/omk");
        assert!(is_postgres_url("postgresql://x") && !is_postgres_url("/var/lib/omk"));
    }
}
