//! A tail reader for a run's `events.jsonl`.
//!
//! It reads the rotated generation (`events.jsonl.1`) first when there is
//! one, then follows the live file through its open descriptor, so a
//! rotation (rename to `.1`, new file) loses and repeats nothing: the rest of
//! the old generation is read from the old descriptor before switching. Only
//! complete lines are parsed; a torn last line waits for its newline. Lines
//! that do not parse as a JSON object are skipped and counted, as the core's
//! readers do.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Reads new events from a log as it grows.
#[derive(Debug)]
pub struct Tail {
    path: PathBuf,
    /// The live file, once it exists, and its inode.
    file: Option<(File, u64)>,
    /// Bytes read after the last newline.
    partial: Vec<u8>,
    started: bool,
    /// Unparsable lines skipped so far.
    pub parse_failures: usize,
}

impl Tail {
    pub fn new(path: &Path) -> Tail {
        Tail {
            path: path.to_path_buf(),
            file: None,
            partial: Vec::new(),
            started: false,
            parse_failures: 0,
        }
    }

    /// Append every complete event written since the last call to `out`;
    /// returns how many.
    pub fn poll(&mut self, out: &mut VecDeque<Value>) -> std::io::Result<usize> {
        let before = out.len();
        if !self.started {
            self.started = true;
            let rotated = crate::store::rotated_path(&self.path);
            match File::open(&rotated) {
                Ok(mut f) => {
                    let mut buf = Vec::new();
                    f.read_to_end(&mut buf)?;
                    self.take_lines(&buf, out);
                    // The old generation's last line is complete by now.
                    self.flush_partial(out);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        loop {
            if self.file.is_none() {
                match File::open(&self.path) {
                    Ok(f) => {
                        let ino = f.metadata()?.ino();
                        self.file = Some((f, ino));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) => return Err(e),
                }
            }
            let Some((file, ino)) = self.file.as_mut() else {
                break;
            };
            let mut buf = Vec::new();
            file.read_to_end(&mut buf)?;
            let ino = *ino;
            self.take_lines(&buf, out);
            // Rotated since we opened it? Then what we hold is `.1`, fully
            // read now: continue with the new live file.
            match std::fs::metadata(&self.path) {
                Ok(m) if m.ino() != ino => {
                    let (mut old, _) = self.file.take().expect("file is open");
                    let mut rest = Vec::new();
                    old.read_to_end(&mut rest)?;
                    self.take_lines(&rest, out);
                    self.flush_partial(out);
                }
                _ => break,
            }
        }
        Ok(out.len() - before)
    }

    fn take_lines(&mut self, buf: &[u8], out: &mut VecDeque<Value>) {
        let mut rest = buf;
        while let Some(nl) = rest.iter().position(|b| *b == b'\n') {
            let (line, tail) = rest.split_at(nl);
            rest = &tail[1..];
            if self.partial.is_empty() {
                self.parse(line, out);
            } else {
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(line);
                self.parse(&whole, out);
            }
        }
        self.partial.extend_from_slice(rest);
    }

    fn flush_partial(&mut self, out: &mut VecDeque<Value>) {
        let line = std::mem::take(&mut self.partial);
        self.parse(&line, out);
    }

    fn parse(&mut self, line: &[u8], out: &mut VecDeque<Value>) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        match serde_json::from_slice::<Value>(line) {
            Ok(v @ Value::Object(_)) => out.push_back(v),
            _ => self.parse_failures += 1,
        }
    }
}

/// Whether an event ends a run (the supervisor's last word).
pub fn is_final_event(event: &Value) -> bool {
    matches!(
        event.get("kind").and_then(Value::as_str),
        Some("run_completed" | "run_failed")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    fn ids(q: &VecDeque<Value>) -> Vec<i64> {
        q.iter().map(|v| v["i"].as_i64().unwrap()).collect()
    }

    #[test]
    fn follows_growth_torn_lines_and_garbage() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("events.jsonl");
        let mut t = Tail::new(&p);
        let mut out = VecDeque::new();
        assert_eq!(t.poll(&mut out).unwrap(), 0, "missing file reads as empty");
        append(&p, "{\"i\":1}\n{\"i\":2}\n{\"i\":");
        assert_eq!(t.poll(&mut out).unwrap(), 2);
        append(&p, "3}\nnot json\n[1]\n\n");
        assert_eq!(t.poll(&mut out).unwrap(), 1);
        assert_eq!(ids(&out), [1, 2, 3]);
        assert_eq!(t.parse_failures, 2);
        assert_eq!(t.poll(&mut out).unwrap(), 0);
    }

    #[test]
    fn rotation_loses_and_repeats_nothing() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("events.jsonl");
        let rotated = crate::store::rotated_path(&p);
        append(&rotated, "{\"i\":0}\n");
        append(&p, "{\"i\":1}\n");
        let mut t = Tail::new(&p);
        let mut out = VecDeque::new();
        t.poll(&mut out).unwrap();
        append(&p, "{\"i\":2}\n");
        std::fs::rename(&p, &rotated).unwrap();
        append(&p, "{\"i\":3}\n");
        t.poll(&mut out).unwrap();
        append(&p, "{\"i\":4}\n");
        t.poll(&mut out).unwrap();
        assert_eq!(ids(&out), [0, 1, 2, 3, 4]);
    }

    #[test]
    fn final_events() {
        assert!(is_final_event(&serde_json::json!({"kind": "run_failed"})));
        assert!(!is_final_event(
            &serde_json::json!({"kind": "task_completed"})
        ));
    }
}
