//! `omk agents list`: the agent profiles (docs/agents.md).

use omk_core::Omk;

use crate::output::print_json;
use crate::Outcome;

pub fn list(omk: &Omk, json: bool) -> omk_core::Result<Outcome> {
    let v = omk.agents_list()?;
    if json {
        print_json(&v);
        return Ok(Outcome::Success);
    }
    crate::outln!(
        "{:<12} {:<9} {:<8} {:<10} COMMAND",
        "NAME",
        "PROTOCOL",
        "SOURCE",
        "INSTALLED"
    );
    for a in v["agents"].as_array().into_iter().flatten() {
        let mut name = a["name"].as_str().unwrap_or("").to_string();
        if a["default"] == true {
            name.push('*');
        }
        let mut source = a["source"].as_str().unwrap_or("").replace('_', "-");
        if a["overridden"] == true {
            source.push('+');
        }
        let command: Vec<&str> = a["command"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(a["args"].as_array().into_iter().flatten())
            .filter_map(|s| s.as_str())
            .collect();
        let installed = match a["path"].as_str() {
            Some(_) => "yes",
            None => "no",
        };
        crate::outln!(
            "{:<12} {:<9} {:<8} {:<10} {}",
            name,
            a["protocol"].as_str().unwrap_or(""),
            source,
            installed,
            command.join(" ")
        );
    }
    crate::outln!(
        "* default ([team] agent); + changed by [agent] or OMK_KIMI_BIN / OMK_KIMI_ARGS / OMK_AGENT_PROTOCOL"
    );
    Ok(Outcome::Success)
}
