//! Durable state on disk: atomic JSON documents with schema versions,
//! append-only JSONL logs, and cross-process locks.
//!
//! Guarantees, relied on by every other module:
//! - A document is replaced atomically: write a temp file in the same
//!   directory, fsync it, rename it over the target, fsync the directory.
//!   A reader (or a crash at any moment) sees the old or the new version.
//! - Every document carries `version`. Newer than the code knows: refused as
//!   `corrupt_state` and left untouched. Older: migrated in memory on read and
//!   written back in the current version by the next update.
//! - A read-modify-write of a shared document happens under an exclusive lock
//!   on a sibling `<file>.lock`, so concurrent processes never lose an update.
//! - Logs are appended one whole line per `write(2)` on an `O_APPEND` handle.
//!   Fsync policy: [`FsyncPolicy::EveryAppend`] syncs each append before it
//!   returns (durable events); [`FsyncPolicy::Grouped`] syncs only on an
//!   explicit [`JsonlWriter::sync`], as does [`JsonlWriter::append_batch`]
//!   whatever the policy (its caller commits groups).
//! - Readers skip and count a torn or unparsable line instead of failing, and
//!   a writer that finds a torn tail terminates it first, so the next record
//!   is never glued onto a fragment.
//! - Logs may be capped: past `max_bytes` the file is rotated to `<file>.1`
//!   (one generation kept), so a log uses at most twice its cap.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, IoContext, Result};

/// A versioned JSON document stored in one file.
pub trait Document: Serialize + DeserializeOwned {
    /// The schema version this code writes and understands.
    const VERSION: u32;
    /// Human name used in messages ("metrics document").
    const WHAT: &'static str;

    /// Bring an older document (as raw JSON) up to [`Self::VERSION`].
    /// The default accepts it as is: fields added since then must have serde
    /// defaults.
    fn migrate(value: Value, _from: u32) -> Result<Value> {
        Ok(value)
    }
}

/// Create a directory and its parents, private to the user (0700).
pub fn ensure_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .ctx("create directory", dir)
}

/// How far a document write goes before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Temp file, fsync, rename, fsync of the directory: survives power loss.
    /// The default for every state document.
    Durable,
    /// Temp file and rename, no fsync: a crash of any process still leaves
    /// the old or the new version, but a power loss may lose the update.
    /// Only for state that means nothing after a reboot: pool slots (their
    /// owners are dead by then) and worker heartbeats.
    Volatile,
}

/// Atomically replace `path` with `bytes` (temp file, fsync, rename, fsync dir).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, bytes, Durability::Durable)
}

/// Atomically replace `path` with `bytes` at the given durability.
pub fn write_atomic_with(path: &Path, bytes: &[u8], durability: Durability) -> Result<()> {
    let dir = parent_of(path)?;
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::invalid(format!("not a file path: {}", path.display())))?
        .to_string_lossy();
    let tmp = dir.join(format!(
        ".{file_name}.tmp.{}.{}",
        std::process::id(),
        crate::ids::random_hex(4)
    ));
    let result = (|| {
        let create = || {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
        };
        // The directory is made only when missing: a mkdir per write
        // costs more than the write.
        let mut f = match create() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                ensure_dir(dir)?;
                create()
            }
            other => other,
        }
        .ctx("create", &tmp)?;
        f.write_all(bytes).ctx("write", &tmp)?;
        if durability == Durability::Durable {
            f.sync_all().ctx("fsync", &tmp)?;
        }
        drop(f);
        replace(&tmp, path, durability).ctx("rename into place", path)?;
        match durability {
            Durability::Durable => sync_dir(dir),
            Durability::Volatile => Ok(()),
        }
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Move `tmp` over `path`, atomically for readers.
///
/// A [`Durability::Volatile`] write exchanges the two names and unlinks the
/// old version instead of renaming over it: on ext4 (`auto_da_alloc`) a
/// rename over an existing file starts writeback of the new one, which
/// costs more than the write itself when nothing is fsynced anyway
/// (192 vs 116 µs per heartbeat-sized replace, measured on this project's
/// CI disk). Where the exchange is not possible (no old version, a
/// filesystem without it) it is a plain rename.
fn replace(tmp: &Path, path: &Path, durability: Durability) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    if durability == Durability::Volatile {
        use nix::errno::Errno;
        use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
        match renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RenameFlags::RENAME_EXCHANGE) {
            Ok(()) => {
                // `tmp` now names the old version.
                let _ = std::fs::remove_file(tmp);
                return Ok(());
            }
            Err(Errno::ENOENT | Errno::EINVAL | Errno::ENOSYS | Errno::EXDEV) => {}
            Err(e) => return Err(e.into()),
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = durability;
    std::fs::rename(tmp, path)
}

/// Fsync a directory so a rename or create inside it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx("fsync directory", dir)
}

/// Serialize `doc` with its current version and write it atomically and durably.
pub fn write_doc<T: Document>(path: &Path, doc: &T) -> Result<()> {
    write_doc_with(path, doc, Durability::Durable)
}

/// Serialize a document with its current version (pretty JSON, newline).
pub fn encode_doc<T: Document>(doc: &T) -> Result<Vec<u8>> {
    let invalid = |e: serde_json::Error| Error::invalid(format!("cannot encode {}: {e}", T::WHAT));
    // Most documents carry their version as their first field, already
    // current: their bytes are final without a detour through a `Value`.
    let mut bytes = serde_json::to_vec_pretty(doc).map_err(invalid)?;
    if bytes.starts_with(format!("{{\n  \"version\": {},\n", T::VERSION).as_bytes()) {
        bytes.push(b'\n');
        return Ok(bytes);
    }
    let mut value = serde_json::to_value(doc).map_err(invalid)?;
    if let Value::Object(map) = &mut value {
        map.insert("version".into(), Value::from(T::VERSION));
    }
    bytes = serde_json::to_vec_pretty(&value).map_err(invalid)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// [`write_doc`] at a chosen durability.
pub fn write_doc_with<T: Document>(path: &Path, doc: &T, durability: Durability) -> Result<()> {
    write_atomic_with(path, &encode_doc(doc)?, durability)
}

/// Read a document; `Ok(None)` when the file does not exist.
///
/// Unparsable content or a newer `version` is `corrupt_state`; the file is
/// never modified by a read.
pub fn read_doc<T: Document>(path: &Path) -> Result<Option<T>> {
    match read_bytes(path)? {
        Some(bytes) => decode_doc(path, &bytes).map(Some),
        None => Ok(None),
    }
}

/// A file's bytes; `Ok(None)` when it does not exist.
fn read_bytes(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
    }
}

/// The `version` of a document that starts with it, as omk writes them
/// (`{"version": N, ...`), read without parsing the rest; `None` for any
/// other layout (which then takes the checked path).
fn leading_version(bytes: &[u8]) -> Option<u64> {
    let ws = |b: &[u8]| -> usize { b.iter().take_while(|c| c.is_ascii_whitespace()).count() };
    let mut rest = bytes;
    rest = &rest[ws(rest)..];
    rest = rest.strip_prefix(b"{")?;
    rest = &rest[ws(rest)..];
    rest = rest.strip_prefix(b"\"version\"")?;
    rest = &rest[ws(rest)..];
    rest = rest.strip_prefix(b":")?;
    rest = &rest[ws(rest)..];
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 || digits > 9 {
        return None;
    }
    let after = &rest[digits..];
    let after = &after[ws(after)..];
    if !matches!(after.first(), Some(b',' | b'}')) {
        return None;
    }
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

/// Decode a document's bytes, checking and migrating its version.
pub fn decode_doc<T: Document>(path: &Path, bytes: &[u8]) -> Result<T> {
    // Fast path, for a document in the current version: decode straight
    // into `T` (no intermediate `Value`: listing 10,000 teams spends most of
    // its time there otherwise). Anything else takes the checked path below.
    if leading_version(bytes) == Some(u64::from(T::VERSION)) {
        return serde_json::from_slice(bytes)
            .map_err(|e| Error::corrupt(path, format!("not a valid {} ({e})", T::WHAT)));
    }
    let mut value: Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::corrupt(path, format!("not valid JSON ({e})")))?;
    let Value::Object(map) = &mut value else {
        return Err(Error::corrupt(
            path,
            format!("{} is not a JSON object", T::WHAT),
        ));
    };
    let found = match map.get("version") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| Error::corrupt(path, format!("\"version\" is not a number: {v}")))?,
    };
    if found > T::VERSION {
        return Err(Error::corrupt(
            path,
            format!(
                "{} version {found} was written by a newer omk (this one reads up to {}); upgrade omk",
                T::WHAT,
                T::VERSION
            ),
        ));
    }
    if found < T::VERSION {
        value = T::migrate(value, found)?;
        if let Value::Object(map) = &mut value {
            map.insert("version".into(), Value::from(T::VERSION));
        }
    }
    serde_json::from_value(value)
        .map_err(|e| Error::corrupt(path, format!("not a valid {} ({e})", T::WHAT)))
}

/// Read-modify-write `path` under its exclusive lock. A missing document
/// starts from `init()`. The closure's error aborts without writing, and
/// so does a closure that leaves the document as it was.
pub fn update_doc<T, R>(
    path: &Path,
    init: impl FnOnce() -> T,
    f: impl FnOnce(&mut T) -> Result<R>,
) -> Result<R>
where
    T: Document,
{
    update_doc_with(path, Durability::Durable, init, f)
}

/// [`update_doc`] at a chosen durability.
pub fn update_doc_with<T, R>(
    path: &Path,
    durability: Durability,
    init: impl FnOnce() -> T,
    f: impl FnOnce(&mut T) -> Result<R>,
) -> Result<R>
where
    T: Document,
{
    let _lock = FileLock::exclusive(&lock_path_for(path))?;
    let before = read_bytes(path)?;
    let mut doc = match &before {
        Some(bytes) => decode_doc::<T>(path, bytes)?,
        None => init(),
    };
    let out = f(&mut doc)?;
    let after = encode_doc(&doc)?;
    // An update that changes nothing writes nothing: followers of the
    // file's change notifications (queued pool workers, the dashboard)
    // would otherwise wake each other up with every look.
    if before.as_deref() != Some(after.as_slice()) {
        write_atomic_with(path, &after, durability)?;
    }
    Ok(out)
}

/// The sibling lock file guarding a document: `<file>.lock`.
pub fn lock_path_for(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

/// An exclusive cross-process lock on a lock file, released on drop (or when
/// the holding process dies, since it is an `flock`).
#[derive(Debug)]
pub struct FileLock {
    file: File,
}

impl FileLock {
    /// Block until the lock is ours.
    pub fn exclusive(lock_path: &Path) -> Result<FileLock> {
        let file = open_lock_file(lock_path)?;
        file.lock().ctx("lock", lock_path)?;
        Ok(FileLock { file })
    }

    /// Take the lock if free; `Ok(None)` when another holder has it.
    pub fn try_exclusive(lock_path: &Path) -> Result<Option<FileLock>> {
        let file = open_lock_file(lock_path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(FileLock { file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(Error::io(format!("lock {}", lock_path.display()), e))
            }
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

fn open_lock_file(lock_path: &Path) -> Result<File> {
    ensure_dir(parent_of(lock_path)?)?;
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(lock_path)
        .ctx("open lock file", lock_path)
}

fn parent_of(path: &Path) -> Result<&Path> {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(|| Error::invalid(format!("{} has no parent directory", path.display())))
}

/// When a log append reaches stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fsync after every append: an acknowledged record survives power loss.
    EveryAppend,
    /// fsync once per batch or explicit `sync()`: for high-volume streams
    /// (transcripts) where losing the last moments on power loss is acceptable.
    Grouped,
}

/// An append-only JSONL log opened for writing.
#[derive(Debug)]
pub struct JsonlWriter {
    path: PathBuf,
    file: File,
    policy: FsyncPolicy,
    len: u64,
    max_bytes: Option<u64>,
}

impl JsonlWriter {
    /// Open (creating) a log for appending. A torn last line left by a crashed
    /// writer is terminated so the next record starts on a line of its own.
    pub fn open(path: &Path, policy: FsyncPolicy) -> Result<JsonlWriter> {
        ensure_dir(parent_of(path)?)?;
        let mut file = open_append(path)?;
        let mut len = file.metadata().ctx("stat", path)?.len();
        if len > 0 && !ends_with_newline(path, len)? {
            file.write_all(b"\n").ctx("repair torn line in", path)?;
            len += 1;
        }
        Ok(JsonlWriter {
            path: path.to_path_buf(),
            file,
            policy,
            len,
            max_bytes: None,
        })
    }

    /// Rotate to `<file>.1` once the log would grow past `max_bytes`.
    pub fn with_cap(mut self, max_bytes: u64) -> JsonlWriter {
        self.max_bytes = Some(max_bytes.max(1));
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes in the current (unrotated) file.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when nothing has been written to the current file.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Append one record (one `write(2)` of one full line).
    pub fn append<T: Serialize + ?Sized>(&mut self, record: &T) -> Result<()> {
        let mut line = encode_line(&self.path, record)?;
        line.push(b'\n');
        self.write_lines(&line)?;
        if self.policy == FsyncPolicy::EveryAppend {
            self.sync()?;
        }
        Ok(())
    }

    /// Append many records with one write, not synced whatever the policy:
    /// the caller decides when to [`JsonlWriter::sync`] (group commit).
    pub fn append_batch<T: Serialize>(&mut self, records: &[T]) -> Result<()> {
        let mut buf = Vec::with_capacity(records.len() * 128);
        for r in records {
            buf.extend_from_slice(&encode_line(&self.path, r)?);
            buf.push(b'\n');
        }
        self.write_lines(&buf)
    }

    /// Flush appended records to stable storage.
    pub fn sync(&mut self) -> Result<()> {
        self.file.sync_data().ctx("fsync", &self.path)
    }

    fn write_lines(&mut self, buf: &[u8]) -> Result<()> {
        if let Some(cap) = self.max_bytes {
            if self.len > 0 && self.len + buf.len() as u64 > cap {
                self.rotate()?;
            }
        }
        self.file.write_all(buf).ctx("append to", &self.path)?;
        self.len += buf.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> Result<()> {
        self.file.sync_data().ctx("fsync", &self.path)?;
        std::fs::rename(&self.path, rotated_path(&self.path)).ctx("rotate", &self.path)?;
        self.file = open_append(&self.path)?;
        self.len = 0;
        sync_dir(parent_of(&self.path)?)
    }
}

/// Where a capped log's previous generation lives: `<file>.1`.
pub fn rotated_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".1");
    PathBuf::from(s)
}

fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .read(true)
        .mode(0o600)
        .open(path)
        .ctx("open log", path)
}

fn ends_with_newline(path: &Path, len: u64) -> Result<bool> {
    let mut f = File::open(path).ctx("open log", path)?;
    f.seek(SeekFrom::Start(len - 1)).ctx("seek in", path)?;
    let mut last = [0u8; 1];
    f.read_exact(&mut last).ctx("read", path)?;
    Ok(last[0] == b'\n')
}

fn encode_line<T: Serialize + ?Sized>(path: &Path, record: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(record).map_err(|e| {
        Error::invalid(format!(
            "cannot encode a record for {}: {e}",
            path.display()
        ))
    })
}

/// What a log reader found: the records it could parse and how many lines it
/// skipped.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRead<T> {
    pub records: Vec<T>,
    /// Lines that were torn, not JSON, or not the expected shape.
    pub parse_failures: usize,
}

impl<T> Default for LogRead<T> {
    fn default() -> Self {
        LogRead {
            records: Vec::new(),
            parse_failures: 0,
        }
    }
}

/// Read a JSONL log (a missing file reads as empty). Blank lines are ignored;
/// lines that do not parse are skipped and counted.
pub fn read_jsonl<T: DeserializeOwned>(path: &Path) -> Result<LogRead<T>> {
    let mut out = LogRead::default();
    read_jsonl_into(path, &mut out)?;
    Ok(out)
}

/// Read a capped log including its rotated generation, oldest first.
pub fn read_jsonl_with_rotated<T: DeserializeOwned>(path: &Path) -> Result<LogRead<T>> {
    let mut out = LogRead::default();
    read_jsonl_into(&rotated_path(path), &mut out)?;
    read_jsonl_into(path, &mut out)?;
    Ok(out)
}

fn read_jsonl_into<T: DeserializeOwned>(path: &Path, out: &mut LogRead<T>) -> Result<()> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
    };
    for line in bytes.split(|b| *b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<T>(line) {
            Ok(r) => out.records.push(r),
            Err(_) => out.parse_failures += 1,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[test]
    fn leading_version_reads_only_a_version_written_first() {
        assert_eq!(
            leading_version(b"{\n  \"version\": 3,\n  \"n\": 1\n}"),
            Some(3)
        );
        assert_eq!(leading_version(b" {\"version\":12}"), Some(12));
        for other in [
            &b"{\"n\": 1, \"version\": 3}"[..],
            b"{\"version\": \"3\"}",
            b"{\"version\": 3.5}",
            b"{\"version\": -3}",
            b"{\"version\": 99999999999999999999}",
            b"[\"version\", 3]",
            b"",
        ] {
            assert_eq!(
                leading_version(other),
                None,
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq, Default)]
    struct Doc {
        #[serde(default)]
        version: u32,
        n: u64,
        #[serde(default)]
        label: String,
    }
    impl Document for Doc {
        const VERSION: u32 = 2;
        const WHAT: &'static str = "test document";
        fn migrate(mut value: Value, from: u32) -> Result<Value> {
            if from < 2 {
                value["label"] = Value::from("migrated");
            }
            Ok(value)
        }
    }

    #[test]
    fn encoding_is_the_same_whether_or_not_the_version_is_current() {
        let doc = |version| Doc {
            version,
            n: 7,
            label: "x".into(),
        };
        // Current: encoded directly; stale: through a Value, version set.
        let direct = encode_doc(&doc(2)).unwrap();
        assert_eq!(direct, encode_doc(&doc(0)).unwrap());
        let mut value = serde_json::to_value(doc(2)).unwrap();
        value["version"] = Value::from(2);
        let mut expected = serde_json::to_vec_pretty(&value).unwrap();
        expected.push(b'\n');
        assert_eq!(direct, expected);
    }

    #[test]
    fn round_trip_sets_version() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b/doc.json");
        write_doc(
            &p,
            &Doc {
                version: 0,
                n: 7,
                label: "x".into(),
            },
        )
        .unwrap();
        let back: Doc = read_doc(&p).unwrap().unwrap();
        assert_eq!(
            back,
            Doc {
                version: 2,
                n: 7,
                label: "x".into()
            }
        );
        assert!(read_doc::<Doc>(&dir.path().join("missing.json"))
            .unwrap()
            .is_none());
    }

    #[test]
    fn future_version_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("doc.json");
        let original = br#"{"version": 3, "n": 1}"#;
        std::fs::write(&p, original).unwrap();
        let err = read_doc::<Doc>(&p).unwrap_err();
        assert_eq!(err.code(), crate::ErrorCode::CorruptState);
        assert!(err.to_string().contains("newer omk"), "{err}");
        let err = update_doc::<Doc, ()>(&p, Doc::default, |d| {
            d.n += 1;
            Ok(())
        })
        .unwrap_err();
        assert_eq!(err.code(), crate::ErrorCode::CorruptState);
        assert_eq!(std::fs::read(&p).unwrap(), original);
    }

    #[test]
    fn garbage_is_corrupt_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("doc.json");
        std::fs::write(&p, b"{not json").unwrap();
        assert_eq!(
            read_doc::<Doc>(&p).unwrap_err().code(),
            crate::ErrorCode::CorruptState
        );
        assert!(update_doc::<Doc, ()>(&p, Doc::default, |_| Ok(())).is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"{not json");
    }

    #[test]
    fn older_version_is_migrated_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("doc.json");
        std::fs::write(&p, br#"{"n": 4}"#).unwrap();
        let d: Doc = read_doc(&p).unwrap().unwrap();
        assert_eq!((d.version, d.n, d.label.as_str()), (2, 4, "migrated"));
    }

    #[test]
    fn torn_last_line_is_counted_and_repaired_on_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log.jsonl");
        let mut w = JsonlWriter::open(&p, FsyncPolicy::EveryAppend).unwrap();
        w.append(&serde_json::json!({"i": 1})).unwrap();
        w.append(&serde_json::json!({"i": 2})).unwrap();
        drop(w);
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(br#"{"i": 3, "tor"#).unwrap();
        drop(f);
        let read: LogRead<Value> = read_jsonl(&p).unwrap();
        assert_eq!(read.records.len(), 2);
        assert_eq!(read.parse_failures, 1);
        let mut w = JsonlWriter::open(&p, FsyncPolicy::Grouped).unwrap();
        w.append_batch(&[serde_json::json!({"i": 4})]).unwrap();
        let read: LogRead<Value> = read_jsonl(&p).unwrap();
        assert_eq!(read.records.last().unwrap()["i"], 4);
        assert_eq!((read.records.len(), read.parse_failures), (3, 1));
    }

    #[test]
    fn capped_log_rotates_one_generation() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log.jsonl");
        let mut w = JsonlWriter::open(&p, FsyncPolicy::Grouped)
            .unwrap()
            .with_cap(100);
        for i in 0..50 {
            w.append(&serde_json::json!({ "i": i })).unwrap();
        }
        assert!(std::fs::metadata(&p).unwrap().len() <= 100);
        assert!(std::fs::metadata(rotated_path(&p)).unwrap().len() <= 100);
        let read: LogRead<Value> = read_jsonl_with_rotated(&p).unwrap();
        assert_eq!(read.records.last().unwrap()["i"], 49);
        let is: Vec<u64> = read
            .records
            .iter()
            .map(|r| r["i"].as_u64().unwrap())
            .collect();
        assert!(is.windows(2).all(|w| w[1] == w[0] + 1), "in order: {is:?}");
    }

    #[test]
    fn try_lock_sees_a_held_lock() {
        let dir = tempfile::tempdir().unwrap();
        let lp = dir.path().join("x.lock");
        let held = FileLock::exclusive(&lp).unwrap();
        assert!(FileLock::try_exclusive(&lp).unwrap().is_none());
        drop(held);
        assert!(FileLock::try_exclusive(&lp).unwrap().is_some());
    }
}
