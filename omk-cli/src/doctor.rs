//! `omk doctor [--json]`.

use omk_core::Omk;

use crate::cli::DoctorArgs;
use crate::output::print_json;
use crate::Outcome;

pub fn run(omk: &Omk, args: &DoctorArgs) -> omk_core::Result<Outcome> {
    let report = omk.doctor()?;
    if args.json {
        print_json(&report);
    } else {
        crate::outln!("omk doctor (omk {})", omk_core::VERSION);
        for check in report["checks"].as_array().into_iter().flatten() {
            let status = match check["status"].as_str().unwrap_or("") {
                "ok" => "ok",
                "warn" => "warn",
                _ => "ERROR",
            };
            crate::outln!(
                "  {status:<5}  {:<10} {}",
                check["name"].as_str().unwrap_or(""),
                check["detail"].as_str().unwrap_or("")
            );
        }
        let issues = report["checks"]
            .as_array()
            .map(|c| c.iter().filter(|c| c["status"] == "error").count())
            .unwrap_or(0);
        if issues == 0 {
            crate::outln!("healthy: all checks passed");
        } else {
            crate::outln!("issues found: {issues}");
        }
    }
    Ok(if report["healthy"] == true {
        Outcome::Success
    } else {
        Outcome::Failed
    })
}
