//! An agent's stdin, owned by one writer task on omk's runtime.
//!
//! Every write to an agent happens on a runtime worker thread, where SIGPIPE
//! is blocked ([`crate::process::block_sigpipe`]): an agent that exits before
//! reading its input makes the write fail with `EPIPE`, an error like any
//! other, instead of a signal that kills the host process. (Callers of the
//! blocking API poll their futures on their own thread, whose signal mask is
//! the host's business; they never write to a pipe themselves.)

use tokio::io::AsyncWriteExt;
use tokio::process::ChildStdin;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};

type Write = (Vec<u8>, oneshot::Sender<std::io::Result<()>>);

/// The writing end of an agent's stdin. Closing it (or dropping it) ends
/// the writer task, which closes the pipe after the writes queued before.
pub struct AgentInput {
    tx: std::sync::Mutex<Option<mpsc::UnboundedSender<Write>>>,
}

impl AgentInput {
    /// Start the writer task for `stdin` (`None`: an input that is closed).
    pub fn spawn(stdin: Option<ChildStdin>) -> AgentInput {
        let tx = stdin.map(|mut stdin| {
            let (tx, mut rx) = mpsc::unbounded_channel::<Write>();
            tokio::spawn(async move {
                while let Some((bytes, done)) = rx.recv().await {
                    let r = async {
                        stdin.write_all(&bytes).await?;
                        stdin.flush().await
                    }
                    .await;
                    let failed = r.is_err();
                    let _ = done.send(r);
                    if failed {
                        // A broken pipe stays broken: later writes fail at once.
                        break;
                    }
                }
            });
            tx
        });
        AgentInput {
            tx: std::sync::Mutex::new(tx),
        }
    }

    /// Write `line` and a newline; resolves once the bytes are in the pipe.
    pub async fn write_line(&self, line: &str) -> Result<()> {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        let (done, result) = oneshot::channel();
        let sent = match self.tx.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            Some(tx) => tx.send((bytes, done)).is_ok(),
            None => {
                return Err(Error::Agent(
                    "agent input is closed (agent stopping)".into(),
                ))
            }
        };
        let outcome = if sent { result.await.ok() } else { None };
        match outcome {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(Error::Agent(format!("cannot write to the agent: {e}"))),
            None => Err(Error::Agent(
                "cannot write to the agent: its input is broken (the agent exited?)".into(),
            )),
        }
    }

    /// Close the agent's stdin once the writes already queued are done.
    pub fn close(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}
