//! `omk gates list|run|status|reset`.

use omk_core::Omk;
use serde_json::Value;

use crate::cli::GatesCommand;
use crate::output::print_json;
use crate::Outcome;

pub fn run(omk: &Omk, cmd: GatesCommand) -> omk_core::Result<Outcome> {
    match cmd {
        GatesCommand::List(a) => {
            let v = omk.gates_list()?;
            if a.json {
                print_json(&v);
            } else {
                crate::outln!("gates of {} ({})", s(&v["project"]), s(&v["source"]));
                let gates = v["gates"].as_array().cloned().unwrap_or_default();
                if gates.is_empty() {
                    crate::outln!("  none: add .omk/gates.toml (see docs/gates.md)");
                }
                for g in gates {
                    crate::outln!(
                        "  {:<16} {:<9} {:>5}s  {:<44} {}",
                        s(&g["name"]),
                        if g["required"] == true {
                            "required"
                        } else {
                            "optional"
                        },
                        g["timeout_secs"].as_u64().unwrap_or(0),
                        s(&g["command_line"]),
                        s(&g["origin"])
                    );
                }
            }
            Ok(Outcome::Success)
        }
        GatesCommand::Run(a) => {
            let report = omk.gates_run(&a.gates)?;
            if a.json {
                print_json(&serde_json::to_value(&report).unwrap_or_default());
            } else {
                for r in &report.results {
                    let verdict = if r.skipped {
                        "SKIP"
                    } else if r.passed {
                        "PASS"
                    } else if r.timed_out {
                        "TIME"
                    } else {
                        "FAIL"
                    };
                    crate::outln!(
                        "{verdict}  {:<16} {:>7} ms  {}{}",
                        r.name,
                        r.duration_ms,
                        r.command_line,
                        if r.required { "" } else { "  (optional)" }
                    );
                    if let Some(why) = &r.skip_reason {
                        crate::outln!("      {why}");
                    } else if !r.passed {
                        for line in r
                            .stderr
                            .lines()
                            .rev()
                            .take(5)
                            .collect::<Vec<_>>()
                            .into_iter()
                            .rev()
                        {
                            crate::outln!("      {line}");
                        }
                    }
                }
                let blocking = report.blocking().len();
                if report.results.is_empty() {
                    crate::outln!("no gates to run in {}", report.project.display());
                } else if report.passed {
                    crate::outln!("all required gates passed ({} ms)", report.duration_ms);
                } else {
                    crate::outln!(
                        "{blocking} required gate(s) failed or were skipped; outputs in {}",
                        report.artifacts_dir.display()
                    );
                }
            }
            Ok(if report.passed {
                Outcome::Success
            } else {
                Outcome::Failed
            })
        }
        GatesCommand::Status(a) => {
            let v = omk.gates_status(a.all_projects)?;
            if a.json {
                print_json(&v);
            } else {
                crate::outln!(
                    "{:<20} {:<9} {:>8}  {:<26} {:>10}",
                    "GATE",
                    "STATE",
                    "FAILURES",
                    "LAST FAILURE",
                    "RECOVERY"
                );
                for b in v["breakers"].as_array().into_iter().flatten() {
                    crate::outln!(
                        "{:<20} {:<9} {:>8}  {:<26} {:>9}s{}",
                        s(&b["gate_name"]),
                        s(&b["state"]),
                        b["failure_count"].as_u64().unwrap_or(0),
                        b["last_failure_at"].as_str().unwrap_or("-"),
                        b["recovery_timeout_secs"].as_u64().unwrap_or(0),
                        if a.all_projects {
                            format!("  {}", s(&b["project"]))
                        } else {
                            String::new()
                        }
                    );
                }
            }
            Ok(Outcome::Success)
        }
        GatesCommand::Reset(a) => {
            let v = omk.gates_reset(a.gate.as_deref(), a.all_projects)?;
            if a.json {
                print_json(&v);
            } else {
                let reset = v["reset"].as_array().cloned().unwrap_or_default();
                if reset.is_empty() {
                    match &a.gate {
                        Some(g) => crate::outln!("{g}: already Closed; nothing to reset"),
                        None => crate::outln!("no breaker was open; nothing to reset"),
                    }
                }
                for r in reset {
                    crate::outln!(
                        "{}: {} -> Closed",
                        s(&r["gate_name"]),
                        s(&r["previous_state"])
                    );
                }
            }
            Ok(Outcome::Success)
        }
    }
}

fn s(v: &Value) -> String {
    v.as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| v.to_string())
}
