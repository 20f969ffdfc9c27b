//! Line framing in front of rmcp's stdio transport.
//!
//! JSON-RPC requires a `-32700` answer with `id: null` to a line that is not
//! JSON; rmcp drops such lines silently. So stdin is read here, line by
//! line with a size bound: JSON goes on to rmcp through an in-memory pipe,
//! anything else is answered here. rmcp's output and these answers share
//! one writer, so every line on stdout is whole.

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Longest line accepted (a tool call with a large task text fits easily).
pub const MAX_LINE: usize = 4 * 1024 * 1024;
const PIPE: usize = 256 * 1024;

/// The transport to hand to rmcp, and the task that writes stdout (await it
/// after the session ends so the last answers are flushed).
pub fn stdio() -> (
    (tokio::io::DuplexStream, tokio::io::DuplexStream),
    JoinHandle<()>,
) {
    bridge(tokio::io::stdin(), tokio::io::stdout())
}

/// [`stdio`] over any reader and writer (tests).
pub fn bridge<R, W>(
    input: R,
    output: W,
) -> (
    (tokio::io::DuplexStream, tokio::io::DuplexStream),
    JoinHandle<()>,
)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (rmcp_in, mut to_rmcp) = tokio::io::duplex(PIPE);
    let (from_rmcp, rmcp_out) = tokio::io::duplex(PIPE);
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();

    let answers = tx.clone();
    tokio::spawn(async move {
        let mut reader = BufReader::new(input);
        loop {
            match read_line(&mut reader).await {
                Line::Eof => break,
                Line::TooLong(n) => {
                    let _ = answers.send(error_line(
                        -32600,
                        &format!(
                            "request line of {n}+ bytes refused: the limit is {MAX_LINE} bytes"
                        ),
                    ));
                }
                Line::Text(bytes) => {
                    let text = bytes.trim_ascii();
                    if text.is_empty() {
                        continue;
                    }
                    match serde_json::from_slice::<Value>(text) {
                        Ok(Value::Object(_)) | Ok(Value::Array(_)) => {
                            let mut line = text.to_vec();
                            line.push(b'\n');
                            if to_rmcp.write_all(&line).await.is_err() {
                                break;
                            }
                        }
                        Ok(_) => {
                            let _ = answers.send(error_line(
                                -32600,
                                "Invalid Request: a JSON-RPC message is an object",
                            ));
                        }
                        Err(e) => {
                            let _ = answers.send(error_line(-32700, &format!("Parse error: {e}")));
                        }
                    }
                }
            }
        }
        // EOF on stdin ends the session: rmcp sees its input close.
        let _ = to_rmcp.shutdown().await;
    });

    tokio::spawn(async move {
        let mut lines = BufReader::new(from_rmcp).split(b'\n');
        while let Ok(Some(mut line)) = lines.next_segment().await {
            line.push(b'\n');
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let writer = tokio::spawn(async move {
        let mut output = output;
        while let Some(line) = rx.recv().await {
            if output.write_all(&line).await.is_err() || output.flush().await.is_err() {
                break;
            }
        }
    });
    ((rmcp_in, rmcp_out), writer)
}

fn error_line(code: i64, message: &str) -> Vec<u8> {
    let mut line = json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": { "code": code, "message": message },
    })
    .to_string()
    .into_bytes();
    line.push(b'\n');
    line
}

enum Line {
    Text(Vec<u8>),
    /// A line longer than [`MAX_LINE`], skipped up to its end; at least
    /// this many bytes.
    TooLong(usize),
    Eof,
}

/// Read one line without ever holding more than [`MAX_LINE`] bytes of it.
async fn read_line<R: AsyncRead + Unpin>(reader: &mut BufReader<R>) -> Line {
    let mut line = Vec::new();
    let mut skipped = 0usize;
    loop {
        let buf = match reader.fill_buf().await {
            Ok(b) => b,
            Err(_) => return Line::Eof,
        };
        if buf.is_empty() {
            return if skipped > 0 {
                Line::TooLong(skipped)
            } else if line.is_empty() {
                Line::Eof
            } else {
                Line::Text(line)
            };
        }
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        if skipped > 0 || line.len() + chunk.len() > MAX_LINE {
            skipped += line.len() + chunk.len();
            line = Vec::new();
        } else {
            line.extend_from_slice(chunk);
        }
        let used = done.unwrap_or(buf.len());
        reader.consume(used);
        if done.is_some() {
            return if skipped > 0 {
                Line::TooLong(skipped)
            } else {
                Line::Text(line)
            };
        }
    }
}
