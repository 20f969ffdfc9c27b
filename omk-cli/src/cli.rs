//! Command-line grammar (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "omk",
    version,
    about = "Run teams of AI coding agents toward verified engineering outcomes",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// State directory (default: $OMK_STATE_DIR, $XDG_STATE_HOME/omk, ~/.local/state/omk).
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Project directory agents and gates work in (default: current directory).
    #[arg(long, short = 'C', global = true, value_name = "DIR")]
    pub project: Option<PathBuf>,
    /// Extra config file, read last (default: $OMK_CONFIG).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// More log output on stderr (-v info, -vv debug).
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

impl GlobalArgs {
    pub fn open_options(&self) -> omk_core::OpenOptions {
        omk_core::OpenOptions {
            state_dir: self.state_dir.clone(),
            project_dir: self.project.clone(),
            config: self.config.clone(),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the agent executable, the state directory, free disk and config.
    Doctor(DoctorArgs),
}

impl Command {
    /// Whether errors should be printed as JSON.
    pub fn wants_json(&self) -> bool {
        match self {
            Command::Doctor(a) => a.json,
        }
    }
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}
