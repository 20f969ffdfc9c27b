//! Process identity: liveness checks that survive pid reuse, and killing a
//! process group only when it is still the one omk started.

use serde::{Deserialize, Serialize};

/// A process as omk recorded it: pid plus its start time (clock ticks since
/// boot, from `/proc/<pid>/stat`), so a recycled pid is never mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProcessId {
    pub pid: u32,
    #[serde(default)]
    pub start_time: Option<u64>,
}

impl ProcessId {
    /// The identity of a live process, now.
    pub fn of(pid: u32) -> ProcessId {
        ProcessId {
            pid,
            start_time: start_time(pid),
        }
    }

    /// This process. Its start time is read once (per pid: a forked child
    /// reads its own), since every heartbeat and pool entry names it.
    pub fn current() -> ProcessId {
        static CURRENT: std::sync::Mutex<Option<ProcessId>> = std::sync::Mutex::new(None);
        let pid = std::process::id();
        let mut cached = CURRENT.lock().unwrap_or_else(|p| p.into_inner());
        match *cached {
            Some(me) if me.pid == pid => me,
            _ => *cached.insert(ProcessId::of(pid)),
        }
    }

    /// True while the recorded process is running (and is not a zombie).
    pub fn is_alive(&self) -> bool {
        if *self == ProcessId::current() {
            return true;
        }
        match (stat_fields(self.pid), self.start_time) {
            (Some((state, _)), _) if state == 'Z' || state == 'X' => false,
            (Some((_, now)), Some(recorded)) => now == recorded,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    /// SIGKILL the process group led by this process, if it is still ours.
    /// Returns whether a signal was sent.
    pub fn kill_group(&self) -> bool {
        match (stat_fields(self.pid), self.start_time) {
            // The pid now names another process: Linux does not hand out a
            // pid still used as a process group id, so our group is empty.
            (Some((_, now)), Some(recorded)) if now != recorded => false,
            // Our leader, or no process with that pid: members of the group
            // may outlive the leader, and nobody else can own that group id.
            _ => kill_group(self.pid),
        }
    }
}

/// A process group omk may signal: never 0 (our own group) or 1 (init).
fn group_pid(pgid: u32) -> Option<nix::unistd::Pid> {
    i32::try_from(pgid)
        .ok()
        .filter(|p| *p > 1)
        .map(nix::unistd::Pid::from_raw)
}

/// SIGKILL process group `pgid` (a child started with `process_group(0)`
/// leads a group with its own pid). Returns whether a signal was sent.
pub fn kill_group(pgid: u32) -> bool {
    group_pid(pgid)
        .is_some_and(|pid| nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL).is_ok())
}

/// Whether any process of group `pgid` is still running.
pub fn group_alive(pgid: u32) -> bool {
    // Signal 0 checks existence; zombies of an exited group count as gone
    // once reaped by their parent.
    group_pid(pgid).is_some_and(|pid| nix::sys::signal::killpg(pid, None).is_ok())
}

fn start_time(pid: u32) -> Option<u64> {
    stat_fields(pid).map(|(_, t)| t)
}

/// (state char, start time) from `/proc/<pid>/stat`.
fn stat_fields(pid: u32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses; the
    // fields after the last ')' are well-formed.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    // Field 22 overall (starttime) is index 19 after the state (field 3).
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

/// Block SIGPIPE on the calling thread, for the threads omk itself starts
/// (runtime workers, the blocking pool, persisters, detached runs).
///
/// A library must not die of what its children do: a host written in C
/// keeps SIGPIPE's default action (terminate), and a write to an agent that
/// exited would otherwise kill the host. With the signal blocked, the
/// kernel leaves it pending on this thread and the write fails with
/// `EPIPE`. The host's own threads and its signal dispositions are left
/// alone. Children do not inherit the mask: std's `Command` resets it (and
/// SIGPIPE's disposition) before `exec`.
pub fn block_sigpipe() {
    use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGPIPE);
    if let Err(e) = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None) {
        tracing::warn!("cannot block SIGPIPE on an omk thread: {e}");
    }
}

/// A crash-test fault point: when `OMK_TEST_FAULT_POINT` names `point`,
/// this process SIGKILLs itself there (no destructor, no flush: as the OOM
/// killer or `kill -9` would), so tests can kill a supervisor at an exact
/// step. Never set it outside tests.
pub(crate) fn fault_point(point: &str) {
    static WANTED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let wanted = WANTED.get_or_init(|| std::env::var("OMK_TEST_FAULT_POINT").ok());
    if wanted.as_deref() == Some(point) {
        tracing::error!("fault point {point} reached: killing this process (OMK_TEST_FAULT_POINT)");
        let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_process_is_alive_and_a_fake_start_time_is_not() {
        let me = ProcessId::current();
        assert!(me.is_alive());
        assert!(me.start_time.is_some());
        let impostor = ProcessId {
            pid: me.pid,
            start_time: me.start_time.map(|t| t + 1),
        };
        assert!(!impostor.is_alive());
    }

    #[test]
    fn exited_child_is_dead() {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let id = ProcessId::of(c.id());
        c.wait().unwrap();
        assert!(!id.is_alive());
    }
}
