//! Doorbells: wake a waiting process at once, without a file-system watch
//! (docs/architecture.md, "How changes propagate").
//!
//! A short-lived process that waits for one known writer (a supervisor for
//! `team shutdown`, a queued pool worker for whoever releases a slot) binds
//! a doorbell: a Unix datagram socket in Linux's abstract namespace, named
//! after what it waits for, so it leaves no file behind and cannot go stale.
//! The writer changes the state file first, then rings (one datagram, best
//! effort): the waiter's [`Signal`] is raised and it re-reads the state.
//!
//! Why not inotify for these: closing an inotify instance that had a watch
//! waits for the kernel's mark reaper (an SRCU grace period), 7-15 ms on this
//! project's machines, and a process cannot exit before that close is done.
//! Every team run would pay it. A socket closes in microseconds.
//!
//! A ring that cannot arrive (no such waiter, another network namespace, a
//! non-Linux host, a full socket buffer) is lost without harm: every waiter
//! keeps its slow safety re-check, and a ring only ever means "look again".
//! `OMK_WATCH=off` binds no doorbell, to test exactly that.

use std::io;
use std::sync::Arc;

use crate::watch::Signal;

/// Bytes of the name's hash (hex): enough to keep two state roots apart.
const NAME_HASH_BYTES: usize = 16;

/// The abstract socket name of a doorbell: `omk/<kind>/<hash of scope>`
/// plus `/<pid>` when several processes wait on the same scope.
/// The scope is canonicalized when it exists, so two processes that spell
/// the state root differently (relative, through a symlink) meet.
pub fn name(kind: &str, scope: &std::path::Path, pid: Option<u32>) -> String {
    use sha2::Digest;
    let scope = std::fs::canonicalize(scope).unwrap_or_else(|_| scope.to_path_buf());
    let digest = sha2::Sha256::digest(scope.as_os_str().as_encoded_bytes());
    let hex: String = digest[..NAME_HASH_BYTES]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    match pid {
        Some(pid) => format!("omk/{kind}/{hex}/{pid}"),
        None => format!("omk/{kind}/{hex}"),
    }
}

/// A bound doorbell: a thread waits on its socket and raises the signal on
/// every ring. Dropping it closes the socket and ends the thread.
#[derive(Debug)]
pub struct Doorbell {
    #[cfg(target_os = "linux")]
    sock: Arc<std::os::unix::net::UnixDatagram>,
}

impl Doorbell {
    /// Bind the doorbell `name` (see [`name`]); each ring raises `signal`.
    /// Fails when the name is taken (another waiter has it) or where there
    /// are no abstract sockets.
    #[cfg(target_os = "linux")]
    pub fn bind(name: &str, signal: Arc<Signal>) -> io::Result<Doorbell> {
        use std::os::linux::net::SocketAddrExt;
        if std::env::var("OMK_WATCH").is_ok_and(|v| v == "off") {
            return Err(io::Error::other(
                "change notifications are off (OMK_WATCH=off)",
            ));
        }
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        let sock = Arc::new(std::os::unix::net::UnixDatagram::bind_addr(&addr)?);
        let reader = sock.clone();
        std::thread::Builder::new()
            .name("omk-doorbell".into())
            .spawn(move || {
                let mut buf = [0u8; 16];
                // `shutdown` on drop makes recv return Ok(0) or an error.
                while let Ok(n) = reader.recv(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    signal.raise();
                }
            })?;
        Ok(Doorbell { sock })
    }

    #[cfg(not(target_os = "linux"))]
    pub fn bind(_name: &str, _signal: Arc<Signal>) -> io::Result<Doorbell> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "doorbells need Linux's abstract sockets",
        ))
    }
}

#[cfg(target_os = "linux")]
impl Drop for Doorbell {
    fn drop(&mut self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
    }
}

/// Ring the doorbell `name`, if anyone listens; never blocks.
pub fn ring(name: &str) {
    #[cfg(target_os = "linux")]
    {
        use std::os::linux::net::SocketAddrExt;
        let Ok(addr) = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()) else {
            return;
        };
        let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
            return;
        };
        let _ = sock.set_nonblocking(true);
        let _ = sock.send_to_addr(b"!", &addr);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = name;
}

/// This process's doorbells that many waiters share: one per `(kind,
/// scope)`, named with this process's pid, bound by the first waiter and
/// kept for the life of the process.
type Shared = Vec<(String, Arc<Signal>, Option<Doorbell>)>;

fn shared() -> std::sync::MutexGuard<'static, Shared> {
    static SHARED: std::sync::OnceLock<std::sync::Mutex<Shared>> = std::sync::OnceLock::new();
    SHARED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// The signal this process's waiters on `(kind, scope)` share, raised by
/// [`wake`] from any process. Binds the doorbell on first use.
pub fn shared_signal(kind: &str, scope: &std::path::Path) -> Arc<Signal> {
    let me = name(kind, scope, Some(std::process::id()));
    let mut reg = shared();
    if let Some((_, s, _)) = reg.iter().find(|(n, _, _)| *n == me) {
        return s.clone();
    }
    let signal = Signal::new();
    let bell = Doorbell::bind(&me, signal.clone())
        .map_err(|e| tracing::debug!("no doorbell {me}: {e}; waiters re-check on a timer"))
        .ok();
    reg.push((me, signal.clone(), bell));
    signal
}

/// Wake the waiters on `(kind, scope)` of the processes `pids`: this
/// process's at once, the others' by ringing their doorbells.
pub fn wake(kind: &str, scope: &std::path::Path, pids: impl IntoIterator<Item = u32>) {
    let me = std::process::id();
    let mut seen = std::collections::BTreeSet::new();
    for pid in pids {
        if !seen.insert(pid) {
            continue;
        }
        let n = name(kind, scope, Some(pid));
        if pid == me {
            if let Some((_, s, _)) = shared().iter().find(|(k, _, _)| *k == n) {
                s.raise();
            }
        } else {
            ring(&n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::time::Duration;

    #[test]
    fn a_ring_raises_the_signal_and_a_dropped_doorbell_is_gone() {
        let n = name(
            "test",
            Path::new(&format!("/x/{}", std::process::id())),
            None,
        );
        let signal = Signal::new();
        let bell = Doorbell::bind(&n, signal.clone()).unwrap();
        // The name is taken while bound.
        assert!(Doorbell::bind(&n, Signal::new()).is_err());
        let g = signal.generation();
        ring(&n);
        assert!(signal.wait_past(g, Duration::from_secs(5)) > g);
        drop(bell);
        // Free again, and a ring into the void is harmless.
        std::thread::sleep(Duration::from_millis(20));
        ring(&n);
        let again = Doorbell::bind(&n, Signal::new()).unwrap();
        drop(again);
    }

    #[test]
    fn names_differ_by_scope_and_pid() {
        let a = name("pool", Path::new("/s/pools"), Some(1));
        assert_ne!(a, name("pool", Path::new("/t/pools"), Some(1)));
        assert_ne!(a, name("pool", Path::new("/s/pools"), Some(2)));
        assert!(a.starts_with("omk/pool/") && a.ends_with("/1"));
    }
}
