//! The `omk` command: a thin consumer of `omk_core::Omk`. Each subcommand
//! parses its arguments, calls one operation, and renders the result as text
//! or (with `--json`) as the operation's JSON document.

mod agents;
mod chat;
mod cli;
mod dashboard;
mod doctor;
mod gates;
mod goal;
mod interrupt;
mod mcp;
mod modes;
mod output;
mod pools;
mod remote;
mod team;
mod worker;

use std::io::IsTerminal;
use std::process::ExitCode;

use cli::{Cli, Command};

fn main() -> ExitCode {
    // SIGPIPE stays ignored (Rust's default): a closed stdout is handled by
    // `output::out`, and an agent or MCP peer that dies makes a write fail
    // with EPIPE instead of killing omk (and the team it supervises).
    let cli = parse_args();
    init_tracing(cli.global.verbose);
    let json = cli.command.wants_json();
    let outcome = run(cli);
    output::finish(outcome, json)
}

/// The command line, parsed. The clap command tree is left to the process
/// exit instead of being dropped node by node: that drop was an eighth of
/// the instructions of a whole `omk team status`.
fn parse_args() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let mut command = Cli::command();
    let matches = command.get_matches_mut();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut command).exit());
    std::mem::forget(command);
    cli
}

/// What a command produced: success, or a run that finished but failed
/// (exit 1, its document already printed).
pub enum Outcome {
    Success,
    Failed,
}

fn run(cli: Cli) -> omk_core::Result<Outcome> {
    let omk = omk_core::Omk::open(cli.global.open_options())?;
    // A broken config file stops every command but `doctor`, which reports
    // it (docs/configuration.md): nothing runs on settings omk could not read.
    if !matches!(cli.command, Command::Doctor(_)) {
        omk.config()?;
    }
    match cli.command {
        Command::Doctor(args) => doctor::run(&omk, &args),
        Command::Team(cmd) => team::run(&omk, &cli.global, cmd),
        Command::Pools(cmd) => pools::run(&omk, cmd),
        Command::Agents(cli::AgentsCommand::List(a)) => agents::list(&omk, a.json),
        Command::Gates(cmd) => gates::run(&omk, cmd),
        Command::Goal(cmd) => goal::run(&omk, &cli.global, cmd),
        Command::Chat(args) => chat::run(&omk, args),
        Command::Autopilot(cmd) => modes::autopilot(&omk, cmd),
        Command::Ralph(cmd) => modes::ralph(&omk, cmd),
        Command::McpServer => mcp::serve(&omk),
        Command::Mcp(cmd) => mcp::run(&omk, cmd),
        Command::Dashboard(args) => dashboard::run(&omk, args),
        Command::Worker(args) => worker::run(&omk, args),
    }
}

/// The runtime of an async consumer (MCP, dashboard): two workers, like
/// omk's own; the blocking `Omk` calls run on its blocking pool.
pub(crate) fn async_runtime(what: &str) -> omk_core::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| crate::chat::io_err(&format!("start the {what} runtime"), e))
}

/// Logs go to stderr, quiet by default: warnings only unless `-v` or
/// `RUST_LOG`. Without `RUST_LOG` the filter is a plain target list: an
/// `EnvFilter` compiles its directive regexes at every start, a tenth of a
/// whole `omk team status`.
fn init_tracing(verbose: u8) {
    use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal());
    let registry = tracing_subscriber::registry();
    let _ = match EnvFilter::try_from_default_env() {
        Ok(filter) => registry.with(layer.with_filter(filter)).try_init(),
        // Without -v, omk's own warnings only: the MCP transport's internal
        // errors (a refused connection logged as ERROR by rmcp's worker) are
        // reported once, as the command's own error sentence.
        Err(_) => {
            let targets = match verbose {
                0 => Targets::new()
                    .with_default(LevelFilter::WARN)
                    .with_target("rmcp", LevelFilter::OFF),
                1 => Targets::new().with_default(LevelFilter::INFO),
                _ => Targets::new().with_default(LevelFilter::DEBUG),
            };
            registry.with(layer.with_filter(targets)).try_init()
        }
    };
}
