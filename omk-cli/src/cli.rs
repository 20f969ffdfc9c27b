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
    /// Run and control teams of agents.
    #[command(subcommand)]
    Team(TeamCommand),
    /// Agent profiles: which agents omk can run, and whether they are installed.
    #[command(subcommand)]
    Agents(AgentsCommand),
    /// Agent pool admission control.
    #[command(subcommand)]
    Pools(PoolsCommand),
    /// Verification gates and their circuit breakers.
    #[command(subcommand)]
    Gates(GatesCommand),
    /// Durable goals: plan, execute, verify and prove an outcome.
    Goal(crate::goal::GoalArgs),
    /// Talk to the agent in a terminal REPL; sessions are kept and resumable.
    #[command(visible_alias = "c")]
    Chat(crate::chat::ChatArgs),
    /// Take a task through Expansion, Planning, Execution, QA and Validation.
    #[command(visible_alias = "ap")]
    Autopilot(crate::modes::AutopilotCommand),
    /// Agent turn, gates, failures fed back, repeat until the gates pass.
    Ralph(crate::modes::RalphCommand),
    /// Serve omk's operations as MCP tools on stdin/stdout.
    McpServer,
    /// Use the MCP servers configured in .omk/mcp.json and ~/.config/omk/mcp.json.
    #[command(subcommand)]
    Mcp(crate::mcp::McpCommand),
    /// Serve the web dashboard and its REST API (loopback by default).
    Dashboard(crate::dashboard::DashboardArgs),
    /// Run tasks of teams in a PostgreSQL store on this host, until SIGTERM.
    Worker(crate::worker::WorkerArgs),
}

impl Command {
    /// Whether errors should be printed as JSON.
    pub fn wants_json(&self) -> bool {
        match self {
            Command::Doctor(a) => a.json,
            Command::Team(TeamCommand::Run(a)) => a.json,
            Command::Team(TeamCommand::Status(a)) => a.team.json,
            Command::Team(TeamCommand::Proof(_)) => true,
            Command::Team(TeamCommand::List(a)) => a.json,
            Command::Team(TeamCommand::Shutdown(a)) => a.json,
            Command::Team(TeamCommand::Gc(a)) => a.json,
            Command::Team(TeamCommand::Supervise(_)) => false,
            Command::Pools(PoolsCommand::Status(a)) => a.json,
            Command::Pools(PoolsCommand::Cleanup(a)) => a.json,
            Command::Pools(PoolsCommand::Set(a)) => a.json,
            Command::Agents(AgentsCommand::List(a)) => a.json,
            Command::Gates(GatesCommand::List(a)) => a.json,
            Command::Gates(GatesCommand::Run(a)) => a.json,
            Command::Gates(GatesCommand::Status(a)) => a.json,
            Command::Gates(GatesCommand::Reset(a)) => a.json,
            Command::Goal(g) => g.command.wants_json(),
            Command::Chat(_) => false,
            Command::Autopilot(c) => c.wants_json(),
            Command::Ralph(c) => c.wants_json(),
            Command::McpServer => false,
            Command::Mcp(c) => c.wants_json(),
            Command::Dashboard(_) => false,
            Command::Worker(_) => true,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// The profiles (built-in and `[agents.NAME]`), where each comes from,
    /// and whether its executable is installed.
    List(JsonArgs),
}

#[derive(Debug, Subcommand)]
pub enum TeamCommand {
    /// Run N agents of one role on a task: `omk team run 3:executor "task"`.
    Run(Box<TeamRunArgs>),
    /// Show one team (`--follow`: its events as they happen, then the
    /// document once the run has ended).
    Status(TeamStatusArgs),
    /// Print the evidence a finished team left: its proof (every task
    /// completed and the required gates passed) or its failure document.
    Proof(TeamNameArgs),
    /// List every team.
    List(StoreViewArgs),
    /// Stop a team (cancel running turns, stop agents); idempotent.
    Shutdown(TeamShutdownArgs),
    /// Delete the git refs and branches of isolated teams that ended long ago.
    Gc(TeamGcArgs),
    /// Internal: drive a prepared team (used by `run --detach`).
    #[command(name = "_supervise", hide = true)]
    Supervise(SuperviseArgs),
}

#[derive(Debug, Args)]
pub struct TeamRunArgs {
    /// Worker spec: N:role[@agent] terms joined by ',', 1 to 64 workers in
    /// all (e.g. 3:executor, or 2:executor@claude,1:reviewer@kimi-acp).
    pub spec: String,
    /// What the team should achieve.
    pub task: String,
    /// Team name (default <role>-<8 hex>).
    #[arg(long)]
    pub name: Option<String>,
    /// A subtask; repeat for several. Without any, a planner turn proposes them.
    #[arg(long = "subtask", value_name = "TEXT")]
    pub subtasks: Vec<String>,
    /// Directory the agents work in (default: the project directory).
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// Approval policy: reject-all, workdir-edits (default) or approve-all.
    #[arg(long, value_name = "POLICY")]
    pub approval: Option<String>,
    /// Agent profile of spec terms without @agent, and of the planner turn
    /// (default `[team] agent`).
    #[arg(long, value_name = "NAME")]
    pub agent: Option<String>,
    /// worktree: a git worktree per worker, committed and integrated by omk,
    /// the result left on branch omk/<team> (default in a git work tree);
    /// none: everyone edits the work dir (default elsewhere).
    #[arg(long, value_name = "MODE", value_parser = ["worktree", "none"])]
    pub isolation: Option<String>,
    /// With --isolation worktree: branch (default: the result stays on
    /// branch omk/<team>) or apply (also into this checkout once the gates
    /// passed, if it did not change since the run began).
    #[arg(long, value_name = "HOW", value_parser = ["branch", "apply"])]
    pub deliver: Option<String>,
    /// Pool to admit workers through (default from config: default).
    #[arg(long)]
    pub pool: Option<String>,
    /// Return at once; the team keeps running in the background.
    #[arg(long)]
    pub detach: bool,
    /// Do not run the verification gates after the tasks (the proof says so).
    #[arg(long)]
    pub no_gates: bool,
    /// Print the team document as JSON.
    #[arg(long)]
    pub json: bool,
    /// Run the team in a PostgreSQL store (a postgres:// URL), on the
    /// `omk worker` daemons serving it (docs/distributed.md). Default:
    /// [store] url or $OMK_STORE; "" runs here.
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
}

#[derive(Debug, Args)]
pub struct TeamNameArgs {
    /// Team name.
    pub name: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Look in a PostgreSQL store when there is no local team of that name
    /// (default: [store] url or $OMK_STORE; "" for none).
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
}

#[derive(Debug, Args)]
pub struct TeamStatusArgs {
    #[command(flatten)]
    pub team: TeamNameArgs,
    /// Print the team's events as they happen (oldest first; JSON lines
    /// with --json), until its run has ended; then the document.
    #[arg(long)]
    pub follow: bool,
}

#[derive(Debug, Args)]
pub struct TeamShutdownArgs {
    /// Team name.
    pub name: String,
    /// Kill the agents' process groups at once instead of cancelling.
    #[arg(long)]
    pub force: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// A PostgreSQL store whose team to shut down when there is no local
    /// one (default: [store] url or $OMK_STORE; "" for none).
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
}

/// `--json` and a store to add (`team list`, `pools status`).
#[derive(Debug, Args)]
pub struct StoreViewArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Also show what a PostgreSQL store has: its teams, its cluster's
    /// pools (default: [store] url or $OMK_STORE; "" for none).
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
}

#[derive(Debug, Args)]
pub struct TeamGcArgs {
    /// Only teams that ended longer ago than this (e.g. 14d, 12h, 30m, 0).
    #[arg(long, value_name = "AGE", default_value = "14d")]
    pub older_than: String,
    /// Say what would be removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SuperviseArgs {
    pub name: String,
}

#[derive(Debug, Args)]
pub struct JsonArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum PoolsCommand {
    /// Active slots, queued workers, limits and counters per pool.
    Status(StoreViewArgs),
    /// Remove queue entries and slots whose owner died or whose run ended.
    Cleanup(JsonArgs),
    /// Declare a pool's capacity across a PostgreSQL store's cluster: the
    /// most of its tasks (and leased slots) running at once on all hosts.
    Set(PoolsSetArgs),
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("cap").required(true).args(["max_workers", "unlimited"])))]
pub struct PoolsSetArgs {
    /// The pool.
    pub name: String,
    /// The most slots taken at once across the cluster (0: admit nobody).
    #[arg(long, value_name = "N")]
    pub max_workers: Option<u32>,
    /// No cap in the store: only the slots of the workers serving the pool
    /// bound it.
    #[arg(long)]
    pub unlimited: bool,
    /// The PostgreSQL store (default: [store] url or $OMK_STORE). A local
    /// pool's capacity is `[pools.NAME] max_workers` in config.
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum GatesCommand {
    /// The gates that would run (from .omk/gates.toml, or detected) and where each came from.
    List(JsonArgs),
    /// Run the gates through their circuit breakers; exit 1 when a required gate fails or is skipped.
    Run(GatesRunArgs),
    /// Circuit breaker state per gate.
    Status(GatesStatusArgs),
    /// Close circuit breakers: one gate (--gate NAME) or every open one (--all).
    Reset(GatesResetArgs),
}

#[derive(Debug, Args)]
pub struct GatesRunArgs {
    /// Run only this gate (repeatable).
    #[arg(long = "gate", value_name = "NAME")]
    pub gates: Vec<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct GatesStatusArgs {
    /// Breakers of every project, not only this one.
    #[arg(long)]
    pub all_projects: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("which").required(true).args(["gate", "all"]))]
pub struct GatesResetArgs {
    /// The gate whose breaker to close.
    #[arg(long, value_name = "NAME")]
    pub gate: Option<String>,
    /// Every breaker that is not already Closed.
    #[arg(long)]
    pub all: bool,
    /// With --all: every project, not only this one.
    #[arg(long, requires = "all")]
    pub all_projects: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}
