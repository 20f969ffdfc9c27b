//! `omk pools status|cleanup|set`.

use omk_core::Omk;

use crate::cli::PoolsCommand;
use crate::output::print_json;
use crate::Outcome;

pub fn run(omk: &Omk, cmd: PoolsCommand) -> omk_core::Result<Outcome> {
    match cmd {
        PoolsCommand::Status(a) => {
            let mut v = omk.pools_status()?;
            // The store's cluster beside this host's pools.
            if let Some(url) = crate::remote::store_url(omk, a.store.as_deref())? {
                if let Some(cluster) = omk.pools_cluster(Some(&url))? {
                    v["cluster"] = cluster;
                }
            }
            if a.json {
                print_json(&v);
            } else {
                crate::outln!(
                    "{:<16} {:>7} {:>7} {:>7} {:>9} {:>9}",
                    "POOL",
                    "ACTIVE",
                    "QUEUED",
                    "MAX",
                    "ADMITTED",
                    "REJECTED"
                );
                for p in v["pools"].as_array().into_iter().flatten() {
                    crate::outln!(
                        "{:<16} {:>7} {:>7} {:>7} {:>9} {:>9}",
                        p["name"].as_str().unwrap_or(""),
                        p["active_tasks"].as_u64().unwrap_or(0),
                        p["queued_tasks"].as_u64().unwrap_or(0),
                        p["max_workers"].as_u64().unwrap_or(0),
                        p["total_admitted"].as_u64().unwrap_or(0),
                        p["total_rejected"].as_u64().unwrap_or(0)
                    );
                }
                if let Some(c) = v.get("cluster") {
                    crate::outln!(
                        "\ncluster {}: {} worker(s)",
                        c["store"].as_str().unwrap_or(""),
                        c["workers"].as_array().map_or(0, |w| w.len())
                    );
                    crate::outln!(
                        "{:<16} {:>7} {:>7} {:>7} {:>9}  WORKERS",
                        "POOL",
                        "ACTIVE",
                        "QUEUED",
                        "SLOTS",
                        "CAPACITY"
                    );
                    for p in c["pools"].as_array().into_iter().flatten() {
                        let workers: Vec<&str> = p["workers"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|w| w.as_str())
                            .collect();
                        crate::outln!(
                            "{:<16} {:>7} {:>7} {:>7} {:>9}  {}",
                            p["name"].as_str().unwrap_or(""),
                            p["active_tasks"].as_u64().unwrap_or(0)
                                + p["leased_slots"].as_u64().unwrap_or(0),
                            p["queued_tasks"].as_u64().unwrap_or(0),
                            p["max_workers"].as_u64().unwrap_or(0),
                            capacity_text(&p["capacity"]),
                            workers.join(", ")
                        );
                    }
                }
            }
        }
        PoolsCommand::Cleanup(a) => {
            let v = omk.pools_cleanup()?;
            if a.json {
                print_json(&v);
            } else {
                for p in v["pools"].as_array().into_iter().flatten() {
                    for s in p["removed_slots"].as_array().into_iter().flatten() {
                        crate::outln!(
                            "{}: removed slot {} (team {}, worker {}, pid {})",
                            p["pool"].as_str().unwrap_or(""),
                            s["id"].as_str().unwrap_or(""),
                            s["run"].as_str().unwrap_or(""),
                            s["worker"].as_str().unwrap_or(""),
                            s["pid"]
                        );
                    }
                    for q in p["removed_queue_entries"].as_array().into_iter().flatten() {
                        crate::outln!(
                            "{}: removed queue entry #{} (team {}, worker {}, pid {})",
                            p["pool"].as_str().unwrap_or(""),
                            q["ticket"],
                            q["run"].as_str().unwrap_or(""),
                            q["worker"].as_str().unwrap_or(""),
                            q["pid"]
                        );
                    }
                }
                for t in v["reconciled_teams"].as_array().into_iter().flatten() {
                    crate::outln!(
                        "team {}: its supervisor had died; its worktrees were reconciled (refs kept)",
                        t.as_str().unwrap_or("")
                    );
                }
                crate::outln!(
                    "removed {} stale entr{}",
                    v["removed"],
                    if v["removed"] == 1 { "y" } else { "ies" }
                );
            }
        }
        PoolsCommand::Set(a) => {
            // (An empty --store is none: the error says where capacities go.)
            let url = crate::remote::store_url(omk, a.store.as_deref())?;
            let cap = if a.unlimited { None } else { a.max_workers };
            let v = match url {
                Some(url) => omk.pool_capacity_set(&a.name, cap, Some(&url))?,
                None => return Err(omk_core::pool::capacity_needs_a_store(&a.name)),
            };
            if a.json {
                print_json(&v);
            } else {
                crate::outln!(
                    "pool {} in {}: capacity {}",
                    a.name,
                    v["store"].as_str().unwrap_or(""),
                    capacity_text(&v["pool"]["capacity"])
                );
            }
        }
    }
    Ok(Outcome::Success)
}

/// A declared cluster capacity, or `-` for none.
fn capacity_text(cap: &serde_json::Value) -> String {
    cap.as_u64()
        .map_or_else(|| "-".to_string(), |c| c.to_string())
}
