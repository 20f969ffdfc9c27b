"""Type stubs for the native module omk._omk (hand-written; keep in step with
omk-py/src and the JSON documents of omk-core)."""

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypedDict, final

from typing_extensions import NotRequired

__all__ = [
    "AgentError",
    "CancelledError",
    "ConflictError",
    "CorruptStateError",
    "InvalidInputError",
    "NotFoundError",
    "Omk",
    "OmkError",
    "OmkIOError",
    "OmkTimeoutError",
    "TeamEvents",
    "__version__",
    "version",
]

__version__: str

def version() -> str:
    """The omk version, identical to ``omk --version``."""

StrPath = str | os.PathLike[str]

# ---------------------------------------------------------------- teams

Phase = Literal[
    "Planning", "Executing", "Verifying", "Completed", "Failed", "Shutdown", "Interrupted"
]
"""Where a team run is; the last four are terminal."""

TaskStatus = Literal["pending", "running", "completed", "failed", "cancelled"]

ErrorCode = Literal[
    "invalid_input",
    "not_found",
    "conflict",
    "corrupt_state",
    "agent",
    "timeout",
    "cancelled",
    "io",
]

class ProcessRef(TypedDict):
    pid: int
    start_time: int | None

class TaskEntry(TypedDict):
    """One unit of work of a team."""

    id: str
    title: str
    status: TaskStatus
    worker: str | None
    attempts: int
    summary: str | None
    tokens: int
    errors: list[str]
    started_at: str | None
    finished_at: str | None
    agent: NotRequired[str]
    """The agent profile of the worker that ran the last attempt."""
    files: NotRequired[list[str]]
    """The files the plan said it changes (tasks sharing one never run at
    the same time); absent when the plan did not say."""
    epoch: NotRequired[int]
    """Claims so far: the fence of its holder's writes (absent before the
    first claim)."""
    lease_deadline: NotRequired[str]
    """While running: when its holder's lease ends unless renewed."""
    retry_at: NotRequired[str]
    """While pending after a failed attempt: when it may be claimed again."""

class WorkerEntry(TypedDict):
    """One worker of a team: its role and agent profile."""

    id: str
    role: str
    agent: str

class Cost(TypedDict):
    amount: float
    currency: str

class AgentUsage(TypedDict):
    """What one agent profile used in a team run."""

    protocol: Literal["wire", "acp"]
    workers: int
    tokens: int
    output_tokens: int
    cost: NotRequired[Cost]
    """Only when the agent reports cost (ACP)."""

class AgentProfile(TypedDict):
    """One agent profile (``omk agents list --json``)."""

    name: str
    command: list[str]
    args: list[str]
    protocol: Literal["wire", "acp"]
    source: Literal["built_in", "config"]
    overridden: bool
    default: bool
    installed: bool
    path: str | None
    install: str | None

class AgentsList(TypedDict):
    default: str
    agents: list[AgentProfile]

class TeamDoc(TypedDict):
    """A team document (``omk team status NAME --json``). Timestamps are
    RFC 3339 UTC strings, paths absolute strings."""

    version: int
    name: str
    task: str
    created_at: str
    worker_count: int
    worker_role: str
    phase: Phase
    tasks: list[TaskEntry]
    state_dir: str
    spec: str
    workdir: str
    approval_policy: str
    pool: str
    supervisor: ProcessRef | None
    updated_at: str
    ended_at: str | None
    tokens: int
    output_tokens: int
    reason: str | None
    workers: list[WorkerEntry]
    agents: dict[str, AgentUsage]
    """Usage by agent profile, the planner turn included."""
    isolation: Literal["none", "worktree"]
    """How the workers share the project (docs/teams.md, Isolation)."""
    worktree: NotRequired[IsolationRecord]
    """The git side of a ``worktree`` run."""

class IsolationRecord(TypedDict):
    """A ``worktree`` run's base, integrated result and branch."""

    repo: str
    base_commit: str
    base_head: str | None
    base_dirty: bool
    """Whether uncommitted or untracked work went into the base snapshot."""
    integrated_commit: str
    branch: str | None
    """``omk/<team>`` once the result was delivered there."""
    attempts: list[AttemptRecord]
    """Every attempt that changed something, with its commit and outcome."""
    gates_commit: NotRequired[str]
    result: NotRequired[IsolationResult]
    delivery: NotRequired[DeliveryRecord]
    reconciled: NotRequired[ReconcileRecord]
    """What ``team_status`` did with the worktrees of a run whose supervisor died."""

class ReconcileRecord(TypedDict):
    wip_refs: list[tuple[str, str]]
    """``(ref, commit)`` of each worktree that held uncommitted work."""
    removed: list[str]
    left_behind: list[str]
    integrated: list[str]
    """The tasks the integration ref holds (marked completed), in order."""

class DeliveryRecord(TypedDict):
    mode: Literal["branch", "apply"]
    branch: str | None
    applied: bool
    """Whether the result was applied to the checkout (``deliver="apply"``)."""
    reason: NotRequired[str]
    """Why it was not applied, when asked to."""

class AttemptRecord(TypedDict):
    task_id: str
    attempt: int
    commit: str
    parent: str
    files: list[str]
    outcome: Literal["integrated", "unchanged", "conflict", "not_integrated"]
    conflict_files: list[str]
    conflict_commit: NotRequired[str]
    """For a ``conflict``: the merge with git's markers
    (``refs/omk/<team>/conflicts/<task>/<attempt>``)."""
    integrator: NotRequired[bool]
    """True for an integrator turn's resolution of an earlier conflict."""

class IsolationResult(TypedDict):
    """The end of a ``worktree`` run: the final diff and the cleanup."""

    integrated_tree: str
    diff_stat: str
    patch: str
    """``final.patch`` in the team dir (``git diff --binary base integrated``)."""
    patch_bytes: int
    patch_sha256: str
    left_behind: list[str]

class ShutdownOutcome(TeamDoc):
    """``team_shutdown``: the team document after the request, plus what
    the request did."""

    stopped: bool
    """True when this request stopped a running team; False when the team
    had already ended (``phase`` says how) and nothing was stopped."""
    outcome: str

class GcTeam(TypedDict):
    name: str
    repo: str
    removed: list[str]
    kept: list[str]
    """Refs left in place, each with why (a branch moved since omk left it)."""
    error: NotRequired[str]

class GcReport(TypedDict):
    """``team_gc`` / ``omk team gc --json``."""

    older_than_secs: int
    dry_run: bool
    teams: list[GcTeam]
    removed: int

class ErrorInfo(TypedDict):
    code: ErrorCode
    message: str

class TeamListError(TypedDict):
    name: str
    error: ErrorInfo

class TeamList(TypedDict):
    """``omk team list --json``."""

    teams: list[TeamDoc]
    errors: list[TeamListError]

class Event(TypedDict):
    """One line of a team's ``events.jsonl``."""

    id: str
    ts: str
    run_id: str
    kind: str
    actor: str | None
    payload: NotRequired[dict[str, Any]]
    schema_version: int
    seq: NotRequired[int]
    """Its number in the log (1, 2, ...), or in a store its sequence;
    absent in logs of an older omk."""

# ---------------------------------------------------------------- gates

BreakerState = Literal["Closed", "Open", "HalfOpen"]

class BreakerConfig(TypedDict):
    failure_threshold: int
    recovery_timeout_secs: int
    half_open_calls: int

class GateInfo(TypedDict):
    name: str
    command_line: str
    required: bool
    timeout_secs: int
    cwd: str | None
    origin: str

class GatesList(TypedDict):
    """``omk gates list --json``."""

    project: str
    source: str
    breaker: BreakerConfig
    gates: list[GateInfo]

class GateResult(TypedDict):
    name: str
    passed: bool
    stdout: str
    stderr: str
    duration_ms: int
    required: bool
    command_line: str
    exit_code: int | None
    timed_out: bool
    skipped: bool
    skip_reason: str | None
    stdout_file: str | None
    stderr_file: str | None
    breaker: BreakerState | None
    origin: str

class GatesReport(TypedDict):
    """``omk gates run --json``. ``passed``: every required gate ran and passed."""

    project: str
    source: str
    passed: bool
    results: list[GateResult]
    started_at: str
    duration_ms: int
    artifacts_dir: str

class Breaker(TypedDict):
    gate_name: str
    state: BreakerState
    failure_count: int
    last_failure_at: str | None
    recovery_timeout_secs: int
    half_open_calls_remaining: int
    project: str

class BreakersStatus(TypedDict):
    """``omk gates status --json``."""

    breakers: list[Breaker]

class BreakerReset(TypedDict):
    project: str
    gate_name: str
    previous_state: BreakerState

class GatesReset(TypedDict):
    """``omk gates reset --json``: exactly what was reset."""

    reset: list[BreakerReset]
    count: int

# ---------------------------------------------------------------- pools

class PoolStatus(TypedDict):
    name: str
    max_workers: int
    max_disk_gb: float | None
    active_tasks: int
    queued_tasks: int
    total_admitted: int
    total_rejected: int
    queue_capacity: int | None
    stale_entries: int

class PoolsStatus(TypedDict):
    """``omk pools status --json``."""

    pools: list[PoolStatus]

class ClusterPool(TypedDict):
    name: str
    #: The slots of the live workers serving the pool.
    max_workers: int
    #: Tasks running under a lease in time.
    active_tasks: int
    #: Pending tasks (backoff included).
    queued_tasks: int
    #: The holders of the live workers serving the pool.
    workers: list[str]
    #: The declared capacity across the cluster (``pool_capacity_set``).
    capacity: int | None
    #: Slots held through pool admission besides its tasks.
    leased_slots: int

class ClusterWorker(TypedDict):
    holder: str
    host: str
    pools: list[str]
    agents: list[str]
    max_agents: int
    started_at: str
    deadline: str

class PoolsCluster(TypedDict):
    """A PostgreSQL store's cluster (``omk pools status --store``'s ``cluster``)."""

    #: The store's URL without its password.
    store: str
    pools: list[ClusterPool]
    workers: list[ClusterWorker]

class PoolCapacity(TypedDict):
    store: str
    pool: ClusterPool

class RemovedSlot(TypedDict):
    id: str
    run: str
    worker: str
    pid: int

class RemovedQueueEntry(TypedDict):
    ticket: int
    run: str
    worker: str
    pid: int

class PoolCleanup(TypedDict):
    pool: str
    removed_slots: list[RemovedSlot]
    removed_queue_entries: list[RemovedQueueEntry]

class PoolsCleanup(TypedDict):
    """``omk pools cleanup --json``."""

    removed: int
    pools: list[PoolCleanup]
    #: Dead isolated runs whose worktrees were reconciled (refs kept).
    reconciled_teams: list[str]

# ---------------------------------------------------------------- metrics, health, doctor

class Metrics(TypedDict):
    """Runtime counters (API.md ``/api/metrics``)."""

    version: int
    created_at: str
    updated_at: str
    total_team_runs: int
    total_shutdowns: int
    total_tasks_created: int
    total_tasks_completed: int
    total_tasks_failed: int
    total_ask_calls: int
    total_ask_errors: int
    total_autopilot_runs: int
    total_ralph_runs: int
    total_spawns: int

CheckStatus = Literal["ok", "warn", "error"]

class HealthCheck(TypedDict):
    """One check; the facts beyond ``status`` and ``detail`` depend on it."""

    status: CheckStatus
    detail: str
    path: NotRequired[str]
    bin: NotRequired[str]
    version: NotRequired[str]
    cached: NotRequired[bool]
    files: NotRequired[list[str]]
    free_mb: NotRequired[int]
    min_free_mb: NotRequired[int]

class DoctorCheck(HealthCheck):
    name: str

class Health(TypedDict):
    """API.md ``/api/health``."""

    status: Literal["ok", "degraded"]
    version: str
    checks: dict[str, HealthCheck]

class Doctor(TypedDict):
    """``omk doctor --json``. Finding issues is a result, not an error."""

    status: Literal["healthy", "unhealthy"]
    healthy: bool
    version: str
    checks: list[DoctorCheck]

# ---------------------------------------------------------------- goals

GoalStatus = Literal[
    "running",
    "ready",
    "not_ready",
    "blocked_on_human",
    "blocked_on_external",
    "needs_more_budget",
    "failed_infra",
    "paused",
    "cancelled",
]
GoalPhase = Literal[
    "intake", "planning", "decomposition", "execution", "verification_design", "proof"
]

class GoalArtifact(TypedDict):
    kind: str
    path: str
    created_at: str

class GoalFailure(TypedDict):
    reason: str
    recorded_at: str

class TerminalCriteria(TypedDict):
    proof_required: bool
    gates_required: bool
    human_blockers_stop: bool

class GoalState(TypedDict):
    """API.md GoalState (``omk goal show --json``)."""

    version: int
    goal_id: str
    original_goal: str
    normalized_goal: str
    status: GoalStatus
    phase: GoalPhase
    created_at: str
    updated_at: str
    completed_at: str | None
    until_ready: bool
    budget_time: str | None
    budget_tokens: int | None
    budget_usd: float | None
    max_agents: int | None
    terminal_criteria: TerminalCriteria
    delivery_policy: str
    merge_policy: str
    slice_execution: bool
    artifacts: list[GoalArtifact]
    failure: GoalFailure | None
    state_dir: str

class GateFailure(TypedDict):
    name: str
    exit_code: int | None
    timed_out: bool
    skipped: bool
    output_tail: str

RunStatus = Literal[
    "running", "complete", "exhausted", "failed", "stopped", "interrupted", "blocked_on_external"
]
AutopilotPhase = Literal["Expansion", "Planning", "Execution", "QA", "Validation", "Complete"]

class AutopilotPhaseRecord(TypedDict):
    phase: AutopilotPhase
    started_at: str
    ended_at: str | None
    ok: bool | None
    note: str | None

class Workspace(TypedDict):
    """A run's own worktree (``slice_execution`` goals, isolated ralph and
    autopilot runs)."""

    dir: str
    repo: str
    base_commit: str
    base_head: str | None
    base_dirty: bool
    lfs: bool
    """Its checkouts fetch Git LFS content (``[team.worktree] lfs``)."""

class Delivery(TypedDict):
    """Where an isolated run's result went: always branch ``omk/<id>``."""

    version: int
    branch: str
    commit: str
    base_commit: str
    diff_stat: str
    applied: bool
    reason: NotRequired[str]

class AutopilotState(TypedDict):
    """``autopilot/<id>/state.json``; the first five fields are the API.md
    ``/api/autopilots`` entry."""

    version: int
    task: str
    phase: AutopilotPhase
    plans_dir: str
    created_at: str
    id: str
    status: RunStatus
    state_dir: str
    project_dir: str
    updated_at: str
    ended_at: str | None
    reason: str | None
    max_agents: int
    approval: str | None
    agent: str | None
    """The agent profile (None: the default one)."""
    active_team: str | None
    teams: list[str]
    tokens: int
    phases: list[AutopilotPhaseRecord]
    gate_failures: list[GateFailure]
    pid: ProcessRef | None
    workspace: NotRequired[Workspace]
    apply: NotRequired[bool]
    delivery: NotRequired[Delivery]

class AutopilotList(TypedDict):
    autopilots: list[AutopilotState]

class RalphIteration(TypedDict):
    iteration: int
    team: str
    team_phase: str | None
    gates_passed: bool | None
    failures: list[GateFailure]
    started_at: str
    ended_at: str | None

class RalphState(TypedDict):
    """``ralph/<id>/state.json``; the first five fields are the API.md
    ``/api/ralphs`` entry."""

    version: int
    task: str
    iteration: int
    max_iterations: int
    state_dir: str
    id: str
    status: RunStatus
    project_dir: str
    created_at: str
    updated_at: str
    ended_at: str | None
    reason: str | None
    active_team: str | None
    tokens: int
    approval: str | None
    agent: str | None
    """The agent profile of every iteration (None: the default one)."""
    iterations: list[RalphIteration]
    pid: ProcessRef | None
    workspace: NotRequired[Workspace]
    """``isolation="worktree"``: the run's own worktree (removed at the end)."""
    apply: NotRequired[bool]
    delivery: NotRequired[Delivery]
    """What the end did with an isolated run's result."""

class RalphList(TypedDict):
    ralphs: list[RalphState]

class GoalList(TypedDict):
    goals: list[GoalState]
    unreadable: list[dict[str, Any]]

class TaskGraphSummary(TypedDict):
    total_tasks: int
    pending_tasks: int
    blocked_tasks: int
    done_tasks: int

class GoalProof(TypedDict):
    """API.md GoalProof (``omk goal proof --json``)."""

    version: int
    goal_id: str
    status: GoalStatus
    readiness: str
    summary: str
    generated_at: str
    artifacts: list[GoalArtifact]
    task_graph_summary: TaskGraphSummary
    changed_files: list[str]
    commits: list[str]
    gates: list[GateResult]
    post_mutation_gates_ran: bool
    known_gaps: list[str]
    human_decisions_required: list[str]

class TimelineEntry(TypedDict):
    index: int
    ts: str
    kind: str
    actor: str | None
    summary: str | None

class GoalReplay(TypedDict):
    """API.md GoalReplay (``omk goal replay --json``)."""

    version: int
    goal_id: str
    status: GoalStatus
    phase: GoalPhase
    generated_at: str
    event_count: int
    task_graph_summary: TaskGraphSummary
    timeline: list[TimelineEntry]
    recovery_status: str | None
    known_gaps: list[str]
    duplicate_events: int
    parse_failures: int

class BudgetCheckpoint(TypedDict):
    version: int
    goal_id: str
    label: str
    status: str
    phase: str
    recorded_at: str
    budget_time: str | None
    total_budget_secs: int | None
    elapsed_since_created_secs: int
    remaining_budget_secs: int | None
    budget_tokens: int | None
    used_tokens: int
    remaining_budget_tokens: int | None
    budget_usd: float | None
    estimated_cost_usd: float
    remaining_budget_usd: float | None

class GoalBudgetReport(TypedDict):
    """API.md GoalBudgetReport (``omk goal budget --json``)."""

    version: int
    goal_id: str
    generated_at: str
    budget_time: str | None
    total_budget_secs: int | None
    budget_tokens: int | None
    used_tokens: int
    remaining_budget_tokens: int | None
    budget_usd: float | None
    estimated_cost_usd: float
    remaining_budget_usd: float | None
    latest: BudgetCheckpoint | None
    checkpoints: list[BudgetCheckpoint]
    spent_usd: float
    spent_tokens: int
    spent_seconds: int

class Diagnosis(TypedDict):
    primary: str | None
    secondary: str | None
    affected_metrics: list[str]
    affected_files: list[str]
    evidence: list[str]

class MetricsWindow(TypedDict):
    window_size: int
    warmup_iterations: int
    evaluated_at: str
    iterations_evaluated: int

class StagnationReport(TypedDict):
    """API.md StagnationReport (``omk goal diagnose --json``)."""

    goal_id: str
    stagnant: bool
    confidence: float
    diagnosis: Diagnosis
    recommended_action: str
    metrics_window: MetricsWindow

class EstimatedCost(TypedDict):
    tokens: int
    usd: float

class RecoveryPlan(TypedDict):
    version: int
    goal_id: str
    checkpoint_id: int
    created_at: str
    diagnosis: str | None
    strategy: str
    risk_level: Literal["low", "medium", "high"]
    estimated_cost: EstimatedCost
    rationale: str
    steps: list[str]

class Recovery(TypedDict):
    checkpoint_id: int
    checkpoint_path: str
    diagnosis: StagnationReport
    plan: RecoveryPlan

class Rollback(TypedDict):
    goal_id: str
    checkpoint_id: int
    label: str
    restored: list[str]
    git_reset_to: str | None
    git_work_tree: str | None
    state: GoalState

# ---------------------------------------------------------------- exceptions

class OmkError(Exception):
    """Base class of every error omk raises."""

    code: str
    """The stable error code (``"panic"`` for a bug inside omk)."""

class InvalidInputError(OmkError):
    code: Literal["invalid_input"]

class NotFoundError(OmkError):
    code: Literal["not_found"]

class ConflictError(OmkError):
    code: Literal["conflict"]

class CorruptStateError(OmkError):
    code: Literal["corrupt_state"]

class AgentError(OmkError):
    code: Literal["agent"]

class OmkTimeoutError(OmkError):
    code: Literal["timeout"]

class CancelledError(OmkError):
    code: Literal["cancelled"]
    team: str | None
    """The team that was cancelled (``team_run``), else None."""
    goal: str | None
    """The goal that was paused (``goal_run``), else None."""
    run: str | None
    """The autopilot or ralph run that was stopped, else None."""

class OmkIOError(OmkError):
    code: Literal["io"]

# ---------------------------------------------------------------- the handle

class ApprovalRequest(TypedDict):
    """What an agent asks the ``host`` approval policy."""

    id: str
    sender: str
    action: str
    description: str
    paths: list[str]
    commands: list[str]
    agent_id: str | None

#: ``True``/``False``, or ``(approved, reason)``.
Approver = Callable[[ApprovalRequest], bool | tuple[bool, str]]

@final
class TeamEvents(Iterator[Event]):
    """Iterator over a team's events (see ``Omk.team_events``)."""

    @property
    def name(self) -> str: ...
    @property
    def parse_failures(self) -> int:
        """Log lines skipped because they did not parse."""
    def __iter__(self) -> TeamEvents: ...
    def __next__(self) -> Event: ...

@final
class Omk:
    """A handle on one omk state directory and project; safe to share
    between threads. Every blocking method releases the GIL."""

    def __new__(
        cls,
        state_dir: StrPath | None = None,
        project_dir: StrPath | None = None,
        config: StrPath | None = None,
        approval: Approver | None = None,
    ) -> Omk: ...
    def set_approver(self, approver: Approver | None) -> None:
        """Set (or clear) the callable deciding approvals for runs started
        with ``approval="host"``; it may block while a person decides."""
    @property
    def state_dir(self) -> Path: ...
    @property
    def project_dir(self) -> Path: ...
    def team_run(
        self,
        spec: str,
        task: str,
        *,
        name: str | None = None,
        subtasks: Sequence[str] | None = None,
        workdir: StrPath | None = None,
        approval: str | None = None,
        pool: str | None = None,
        detach: bool = False,
        no_gates: bool = False,
        agent: str | None = None,
        isolation: Literal["worktree", "none"] | None = None,
        deliver: Literal["branch", "apply"] | None = None,
    ) -> TeamDoc:
        """Run a team to its end (or, with ``detach``, start it on a background
        thread of this process) and return its team document. Ctrl-C shuts the
        team down and raises ``CancelledError``. ``isolation="worktree"``
        gives each worker a git worktree and integrates onto ``omk/<team>``."""
    def team_status(self, name: str) -> TeamDoc: ...
    def team_list(self) -> TeamList: ...
    def team_shutdown(self, name: str, force: bool = False) -> ShutdownOutcome: ...
    def team_gc(self, older_than: str | None = None, dry_run: bool = False) -> GcReport:
        """Delete the refs and branches of isolated teams that ended more than
        ``older_than`` ago (``"14d"`` when None)."""
    def team_events(
        self, name: str, follow: bool = False, poll_interval: float = 1.0
    ) -> TeamEvents:
        """Iterate over the team's events (a store team's by sequence); with
        ``follow=True``, woken by the log's change notifications (the store's
        ``LISTEN``), reading at least every ``poll_interval`` seconds, until
        the team has ended."""
    def gates_list(self) -> GatesList: ...
    def gates_run(self, gates: Sequence[str] | None = None) -> GatesReport: ...
    def gates_status(self, all_projects: bool = False) -> BreakersStatus: ...
    def gates_reset(self, gate: str | None = None, all_projects: bool = False) -> GatesReset: ...
    def goal_run(
        self,
        outcome: str,
        *,
        until_ready: bool = False,
        budget_time: str | None = None,
        budget_tokens: int | None = None,
        budget_usd: float | None = None,
        max_agents: int | None = None,
        approval: str | None = None,
        detach: bool = False,
        agent: str | None = None,
        slice_execution: bool = False,
        merge_policy: Literal["disabled", "manual", "gated"] | None = None,
        delivery_policy: Literal["local"] | None = None,
    ) -> GoalState:
        """Create a goal and run its controller until it stops. Ctrl-C pauses
        the goal and raises ``CancelledError`` (its ``goal`` attribute).
        ``slice_execution`` works in a worktree of the goal's own, the result
        on branch ``omk/<goal id>``; ``merge_policy`` says what else happens."""
    def goal_list(self) -> GoalList: ...
    def goal_show(self, id: str = "latest") -> GoalState: ...
    def goal_proof(self, id: str = "latest") -> GoalProof: ...
    def goal_replay(self, id: str = "latest") -> GoalReplay: ...
    def goal_budget(self, id: str = "latest") -> GoalBudgetReport: ...
    def goal_budget_add(
        self,
        id: str = "latest",
        *,
        time: str | None = None,
        tokens: int | None = None,
        usd: float | None = None,
    ) -> GoalBudgetReport: ...
    def goal_diagnose(self, id: str = "latest") -> StagnationReport: ...
    def goal_recover(self, id: str = "latest") -> Recovery: ...
    def goal_rollback(
        self, id: str = "latest", *, checkpoint: int | None = None, git: bool = False
    ) -> Rollback: ...
    def goal_pause(self, id: str = "latest") -> GoalState: ...
    def goal_resume(self, id: str = "latest") -> GoalState: ...
    def goal_cancel(self, id: str = "latest") -> GoalState: ...
    def goal_verify(self, id: str = "latest") -> GoalProof: ...
    def goal_execute(self, id: str = "latest") -> GoalState: ...
    def autopilot_run(
        self,
        task: str,
        *,
        name: str | None = None,
        max_agents: int | None = None,
        approval: str | None = None,
        agent: str | None = None,
        isolation: Literal["worktree", "none"] | None = None,
        deliver: Literal["branch", "apply"] | None = None,
    ) -> AutopilotState:
        """Expansion, Planning, Execution, QA, Validation; ``complete`` only
        when the gates passed on the final tree. Ctrl-C stops the run and
        raises ``CancelledError`` (its ``run`` attribute).
        ``isolation="worktree"`` works in a worktree of the run's own, the
        result on branch ``omk/<id>``; ``deliver="apply"`` also applies it
        once complete, to an unchanged checkout."""
    def autopilot_list(self) -> AutopilotList: ...
    def autopilot_status(self, id: str) -> AutopilotState: ...
    def autopilot_stop(self, id: str) -> AutopilotState: ...
    def ralph_run(
        self,
        task: str,
        *,
        max_iterations: int | None = None,
        name: str | None = None,
        approval: str | None = None,
        agent: str | None = None,
        isolation: Literal["worktree", "none"] | None = None,
        deliver: Literal["branch", "apply"] | None = None,
    ) -> RalphState:
        """Agent turn, gates, failures fed back, until the gates pass or
        ``max_iterations``. Ctrl-C stops the loop and raises
        ``CancelledError`` (its ``run`` attribute). ``isolation="worktree"``
        works in a worktree of the run's own, the result on branch
        ``omk/<id>``; ``deliver="apply"`` also applies it once the gates
        passed, to an unchanged checkout."""
    def ralph_list(self) -> RalphList: ...
    def ralph_status(self, id: str) -> RalphState: ...
    def ralph_stop(self, id: str) -> RalphState: ...
    def agents_list(self) -> AgentsList:
        """Every agent profile, where it comes from, and whether it is installed."""
    def pools_status(self) -> PoolsStatus: ...
    def pools_cleanup(self) -> PoolsCleanup: ...
    def pools_cluster(self, store: str | None = None) -> PoolsCluster | None:
        """The cluster's pools in a PostgreSQL store (``store``, else the
        configured one), or None without one."""
    def pool_capacity_set(
        self, pool: str, max_workers: int | None, *, store: str | None = None
    ) -> PoolCapacity:
        """Declare ``pool``'s capacity across a PostgreSQL store's cluster
        (None: no cap). Raises InvalidInputError without a store."""
    def metrics(self) -> Metrics: ...
    def health(self) -> Health: ...
    def doctor(self) -> Doctor: ...
    def call(self, op: str, params: Mapping[str, Any] | None = None) -> Any:
        """Run an operation by name (``"team.status"``, ``"gates.run"``, ...)
        with JSON-like params; returns its JSON result."""
