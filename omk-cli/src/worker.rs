//! `omk worker`: run tasks of teams in a PostgreSQL store on this host
//! until SIGTERM or Ctrl-C (omk_core::executor does the work).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use omk_core::executor::{self, WorkerOptions};
use omk_core::Omk;

use crate::output::print_json;
use crate::Outcome;

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The store: a postgres:// URL (default: [store] url or $OMK_STORE).
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// A pool whose tasks this worker runs (repeatable).
    #[arg(long = "pool", default_values_t = ["default".to_string()])]
    pub pools: Vec<String>,
    /// Agent profiles this worker runs, comma-separated (default: the
    /// configured default profile).
    #[arg(long, value_delimiter = ',')]
    pub agents: Vec<String>,
    /// Tasks run at once.
    #[arg(long, default_value_t = 1)]
    pub max_agents: usize,
    /// Where tasks work (default: <state dir>/worker).
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// This host's name in leases and events (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// Lease length in seconds (default: [team] lease_secs).
    #[arg(long)]
    pub lease_secs: Option<u64>,
}

pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into())
}

pub fn run(omk: &Omk, args: WorkerArgs) -> omk_core::Result<Outcome> {
    let config = omk.config()?.clone();
    let agents = if args.agents.is_empty() {
        vec![omk_core::agents::default_name(&config).to_string()]
    } else {
        args.agents
    };
    let store = crate::remote::store_url(omk, args.store.as_deref())?.ok_or_else(|| {
        omk_core::Error::InvalidInput(
            "omk worker needs a store: --store URL, $OMK_STORE or [store] url (docs/distributed.md)"
                .into(),
        )
    })?;
    let opts = WorkerOptions {
        store,
        pools: args.pools,
        agents,
        max_agents: args.max_agents,
        root: args
            .root
            .unwrap_or_else(|| omk.paths().root().join("worker")),
        name: args.name.unwrap_or_else(host_name),
        lease: Duration::from_secs(args.lease_secs.unwrap_or(config.team.lease_secs).max(1)),
        retry_backoff: Duration::from_millis(config.team.retry_backoff_ms),
        state: omk.paths().clone(),
    };
    let rt = crate::async_runtime("worker")?;
    let report = rt.block_on(async {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| crate::chat::io_err("listen for SIGTERM", e))?;
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            let _ = tx.send(true);
        });
        executor::serve(&config, opts, rx).await
    })?;
    print_json(&report.to_json());
    Ok(Outcome::Success)
}
