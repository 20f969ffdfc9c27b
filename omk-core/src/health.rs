//! Health checks behind `omk doctor` and `/api/health`: the agent executable,
//! free disk under the state root, a writable state root, and the config.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::config::Config;
use crate::error::Error;
use crate::paths::StatePaths;
use crate::store::{self, Document};

/// How long a successful agent version probe is trusted while the executable
/// is unchanged (same path, size and mtime).
const PROBE_TTL: Duration = Duration::from_secs(24 * 3600);

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Ok,
    /// Worth knowing, not an issue.
    Warn,
    /// An issue: doctor reports unhealthy.
    Error,
}

/// One named check with a human detail line and machine-readable facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub status: CheckStatus,
    pub detail: String,
    #[serde(flatten)]
    pub facts: Map<String, Value>,
}

impl Check {
    fn new(name: &str, status: CheckStatus, detail: impl Into<String>, facts: Value) -> Check {
        Check {
            name: name.into(),
            status,
            detail: detail.into(),
            facts: match facts {
                Value::Object(m) => m,
                _ => Map::new(),
            },
        }
    }
}

/// Run every check, in a stable order.
pub fn run_checks(paths: &StatePaths, config: Result<&Config, &Error>) -> Vec<Check> {
    let mut checks = vec![check_config(config)];
    let defaults = Config::defaults_with_env();
    let cfg = config.unwrap_or(&defaults);
    checks.push(check_agent(paths, cfg));
    checks.push(check_state_dir(paths.root()));
    checks.push(check_disk(paths.root(), cfg.health.min_free_disk_mb));
    checks
}

/// `doctor`: `{"status": "healthy"|"unhealthy", "healthy", "version", "checks": [...]}`.
pub fn doctor_report(checks: &[Check]) -> Value {
    let healthy = checks.iter().all(|c| c.status != CheckStatus::Error);
    json!({
        "status": if healthy { "healthy" } else { "unhealthy" },
        "healthy": healthy,
        "version": crate::VERSION,
        "checks": checks,
    })
}

/// `/api/health`: `{"status": "ok"|"degraded", "version", "checks": {name: {...}}}`.
pub fn health_report(checks: &[Check]) -> Value {
    let healthy = checks.iter().all(|c| c.status != CheckStatus::Error);
    let by_name: Map<String, Value> = checks
        .iter()
        .map(|c| {
            let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
            if let Value::Object(m) = &mut v {
                m.remove("name");
            }
            (c.name.clone(), v)
        })
        .collect();
    json!({
        "status": if healthy { "ok" } else { "degraded" },
        "version": crate::VERSION,
        "checks": by_name,
    })
}

fn check_config(config: Result<&Config, &Error>) -> Check {
    match config {
        Ok(c) if c.sources.is_empty() => Check::new(
            "config",
            CheckStatus::Ok,
            "no config file; using defaults",
            json!({ "files": [] }),
        ),
        Ok(c) => Check::new(
            "config",
            CheckStatus::Ok,
            format!("{} file(s) parsed", c.sources.len()),
            json!({ "files": c.sources }),
        ),
        Err(e) => Check::new("config", CheckStatus::Error, e.to_string(), json!({})),
    }
}

fn check_state_dir(root: &Path) -> Check {
    let probe = || -> crate::Result<()> {
        store::ensure_dir(root)?;
        let p = root.join(format!(".doctor-probe.{}", std::process::id()));
        let r =
            std::fs::write(&p, b"ok").map_err(|e| Error::io(format!("write {}", p.display()), e));
        let _ = std::fs::remove_file(&p);
        r
    };
    match probe() {
        Ok(()) => Check::new(
            "state_dir",
            CheckStatus::Ok,
            format!("{} is writable", root.display()),
            json!({ "path": root }),
        ),
        Err(e) => Check::new(
            "state_dir",
            CheckStatus::Error,
            format!("{e}; set OMK_STATE_DIR to a writable directory"),
            json!({ "path": root }),
        ),
    }
}

/// Free bytes available to this user on the file system holding `path`
/// (or its nearest existing ancestor).
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let existing = path
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or_else(|| Path::new("/"));
    let st = nix::sys::statvfs::statvfs(existing).map_err(std::io::Error::from)?;
    #[allow(clippy::unnecessary_cast)] // field widths differ between targets
    Ok(st.blocks_available() as u64 * st.fragment_size() as u64)
}

fn check_disk(root: &Path, min_free_mb: u64) -> Check {
    match free_bytes(root) {
        Ok(free) => {
            let free_mb = free / (1024 * 1024);
            let facts = json!({ "path": root, "free_mb": free_mb, "min_free_mb": min_free_mb });
            if free_mb >= min_free_mb {
                Check::new(
                    "disk",
                    CheckStatus::Ok,
                    format!("{free_mb} MiB free"),
                    facts,
                )
            } else {
                Check::new(
                    "disk",
                    CheckStatus::Error,
                    format!(
                        "only {free_mb} MiB free under {} (minimum {min_free_mb} MiB, [health] min_free_disk_mb); free some space",
                        root.display()
                    ),
                    facts,
                )
            }
        }
        Err(e) => Check::new(
            "disk",
            CheckStatus::Error,
            format!("cannot measure free space under {}: {e}", root.display()),
            json!({ "path": root }),
        ),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct AgentProbe {
    version: u32,
    path: PathBuf,
    size: u64,
    mtime_ns: i128,
    probed_at: DateTime<Utc>,
    output: String,
}

impl Document for AgentProbe {
    const VERSION: u32 = 1;
    const WHAT: &'static str = "agent probe cache";
}

fn check_agent(paths: &StatePaths, cfg: &Config) -> Check {
    // The default profile's executable (`[team] agent`, with the `[agent]`
    // and OMK_KIMI_BIN overrides); a profile name that does not exist
    // leaves the built-in `kimi` command.
    let bin = crate::agents::get(cfg, crate::agents::default_name(cfg))
        .map(|p| p.command[0].clone())
        .unwrap_or_else(|_| "kimi".into());
    let bin = &bin;
    let Some(path) = crate::agents::resolve_bin(bin) else {
        return Check::new(
            "kimi",
            CheckStatus::Error,
            format!("agent executable {bin:?} not found; install kimi-cli or set OMK_KIMI_BIN"),
            json!({ "bin": bin }),
        );
    };
    let timeout = Duration::from_secs(cfg.agent.version_timeout_secs.max(1));
    match probe_version(paths, &path, timeout) {
        Ok((output, cached)) => Check::new(
            "kimi",
            CheckStatus::Ok,
            output.clone(),
            json!({ "path": path, "version": output, "cached": cached }),
        ),
        Err(why) => Check::new(
            "kimi",
            CheckStatus::Error,
            format!("{} --version: {why}", path.display()),
            json!({ "path": path }),
        ),
    }
}

/// One check per profile `doctor` looks at ([`crate::agents::checked`]),
/// named `agent:NAME`: the executable found; for Wire its `--version`; for
/// ACP an `initialize` handshake (in a scratch directory, within the
/// profile's start timeout) reporting `agentInfo` and `protocolVersion`.
pub fn check_profiles(
    paths: &StatePaths,
    cfg: &Config,
    rt: &tokio::runtime::Runtime,
) -> Vec<Check> {
    crate::agents::checked(cfg)
        .iter()
        .map(|p| check_profile(paths, cfg, p, rt))
        .collect()
}

fn check_profile(
    paths: &StatePaths,
    cfg: &Config,
    profile: &crate::agents::Profile,
    rt: &tokio::runtime::Runtime,
) -> Check {
    let name = format!("agent:{}", profile.name);
    let protocol = profile.protocol.as_str();
    let resolved = match profile.resolve(cfg) {
        Ok(r) => r,
        Err(e) => {
            return Check::new(
                &name,
                CheckStatus::Error,
                e.to_string(),
                json!({ "protocol": protocol, "command": profile.command, "installed": false }),
            )
        }
    };
    let path = resolved.program.clone();
    match resolved.protocol {
        crate::config::AgentProtocol::Wire => {
            let timeout = Duration::from_secs(cfg.agent.version_timeout_secs.max(1));
            match probe_version(paths, &path, timeout) {
                Ok((v, cached)) => Check::new(
                    &name,
                    CheckStatus::Ok,
                    v.clone(),
                    json!({ "protocol": protocol, "path": path, "installed": true,
                            "version": v, "cached": cached }),
                ),
                Err(why) => Check::new(
                    &name,
                    CheckStatus::Error,
                    format!("{} --version: {why}", path.display()),
                    json!({ "protocol": protocol, "path": path, "installed": true }),
                ),
            }
        }
        crate::config::AgentProtocol::Acp => {
            let scratch = match tempfile_dir(paths) {
                Ok(d) => d,
                Err(e) => return Check::new(&name, CheckStatus::Error, e, json!({ "path": path })),
            };
            let spec = crate::agent::AgentSpec {
                program: path.clone(),
                extra_args: resolved.args.clone(),
                work_dir: scratch.clone(),
                env: resolved.env.clone(),
                protocol: resolved.protocol,
                policy: crate::agent::ApprovalPolicy {
                    kind: crate::agent::PolicyKind::RejectAll,
                    ..Default::default()
                },
                start_timeout: resolved.start_timeout().min(Duration::from_secs(30)),
                questions: false,
                mcp_servers: Vec::new(),
            };
            let shaken = rt.block_on(crate::agent::acp::AcpAgent::handshake(&spec));
            let _ = std::fs::remove_dir_all(&scratch);
            match shaken {
                Ok(info) => Check::new(
                    &name,
                    CheckStatus::Ok,
                    format!(
                        "{} {} (ACP protocol {})",
                        info.name.as_deref().unwrap_or("ACP agent"),
                        info.version.as_deref().unwrap_or("(no version)"),
                        info.protocol_version
                    ),
                    json!({ "protocol": protocol, "path": path, "installed": true,
                            "agent_info": { "name": info.name, "version": info.version },
                            "protocol_version": info.protocol_version,
                            "load_session": info.load_session }),
                ),
                Err(e) => Check::new(
                    &name,
                    CheckStatus::Error,
                    format!("ACP initialize with {}: {e}", path.display()),
                    json!({ "protocol": protocol, "path": path, "installed": true }),
                ),
            }
        }
    }
}

/// A fresh scratch directory under the state root's cache.
fn tempfile_dir(paths: &StatePaths) -> Result<PathBuf, String> {
    let dir = paths.cache_dir().join(format!(
        "probe-{}-{}",
        std::process::id(),
        crate::ids::random_hex(4)
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// `<bin> --version`, cached per executable identity so health polls do not
/// spawn a process each time. Returns (first output line, from cache).
fn probe_version(
    paths: &StatePaths,
    path: &Path,
    timeout: Duration,
) -> Result<(String, bool), String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    let (size, mtime_ns) = (
        meta.size(),
        i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
    );
    // One cache file per executable path.
    let key = path
        .display()
        .to_string()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    let cache_file = paths
        .cache_dir()
        .join(format!("agent-version-{key:016x}.json"));
    if let Ok(Some(c)) = store::read_doc::<AgentProbe>(&cache_file) {
        let fresh = (Utc::now() - c.probed_at)
            .to_std()
            .is_ok_and(|age| age < PROBE_TTL);
        if c.path == path && c.size == size && c.mtime_ns == mtime_ns && fresh {
            return Ok((c.output, true));
        }
    }
    let output = run_with_timeout(path, &["--version"], timeout)?;
    let probe = AgentProbe {
        version: AgentProbe::VERSION,
        path: path.to_path_buf(),
        size,
        mtime_ns,
        probed_at: Utc::now(),
        output: output.clone(),
    };
    // A cache that cannot be written only costs a probe next time.
    let _ = store::write_doc(&cache_file, &probe);
    Ok((output, false))
}

/// Run a short command in its own process group; kill the group if it
/// outlives `timeout`. Returns the first non-empty output line.
fn run_with_timeout(path: &Path, args: &[&str], timeout: Duration) -> Result<String, String> {
    let mut child = Command::new(path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start: {e}"))?;
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let mut stderr = child.stderr.take().ok_or("no stderr")?;
    let reader = std::thread::spawn(move || {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let _ = stdout.read_to_end(&mut out);
        let _ = stderr.read_to_end(&mut err);
        (out, err)
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() >= deadline => {
                crate::process::kill_group(child.id());
                let _ = child.wait();
                return Err(format!("no answer within {}s", timeout.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(e.to_string()),
        }
    };
    // Grandchildren may still hold the pipes; do not wait on them forever.
    crate::process::kill_group(child.id());
    let (out, err) = reader.join().unwrap_or_default();
    let first_line = |b: &[u8]| {
        String::from_utf8_lossy(b)
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(|l| crate::redact::redact_str(l).into_owned())
    };
    if !status.success() {
        let why = first_line(&err)
            .or_else(|| first_line(&out))
            .unwrap_or_default();
        return Err(format!("exited with {status} {why}").trim().to_string());
    }
    first_line(&out)
        .or_else(|| first_line(&err))
        .ok_or_else(|| "printed nothing".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn cfg_with_bin(bin: &Path, timeout: u64) -> Config {
        let mut c = Config::default();
        c.agent.bin = Some(bin.display().to_string());
        c.agent.version_timeout_secs = timeout;
        c
    }

    #[test]
    fn agent_version_is_probed_then_cached() {
        let d = tempfile::tempdir().unwrap();
        let paths = StatePaths::new(d.path().join("state"));
        let bin = script(d.path(), "kimi", "echo 'kimi, version 1.51.0'");
        let c = check_agent(&paths, &cfg_with_bin(&bin, 5));
        assert_eq!(c.status, CheckStatus::Ok, "{c:?}");
        assert_eq!(c.facts["cached"], false);
        let c = check_agent(&paths, &cfg_with_bin(&bin, 5));
        assert_eq!(
            (c.facts["cached"].as_bool(), c.detail.as_str()),
            (Some(true), "kimi, version 1.51.0")
        );
    }

    #[test]
    fn hanging_agent_times_out_and_is_killed() {
        let d = tempfile::tempdir().unwrap();
        let paths = StatePaths::new(d.path().join("state"));
        let bin = script(d.path(), "slow", "sleep 30");
        let t = Instant::now();
        let c = check_agent(&paths, &cfg_with_bin(&bin, 1));
        assert_eq!(c.status, CheckStatus::Error);
        assert!(c.detail.contains("no answer"), "{}", c.detail);
        assert!(t.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn missing_agent_says_what_to_do() {
        let d = tempfile::tempdir().unwrap();
        let paths = StatePaths::new(d.path().join("state"));
        let c = check_agent(&paths, &cfg_with_bin(&d.path().join("nope"), 1));
        assert_eq!(c.status, CheckStatus::Error);
        assert!(c.detail.contains("OMK_KIMI_BIN"));
    }

    #[test]
    fn disk_threshold_is_applied() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(check_disk(d.path(), 0).status, CheckStatus::Ok);
        assert_eq!(
            check_disk(d.path(), u64::MAX / 2).status,
            CheckStatus::Error
        );
        assert!(free_bytes(&d.path().join("not/yet/there")).unwrap() > 0);
    }

    #[test]
    fn reports_have_api_shapes() {
        let checks = vec![
            Check::new("kimi", CheckStatus::Ok, "v", json!({})),
            Check::new("disk", CheckStatus::Error, "low", json!({"free_mb": 1})),
        ];
        let h = health_report(&checks);
        assert_eq!(h["status"], "degraded");
        assert_eq!(h["checks"]["kimi"]["status"], "ok");
        assert_eq!(h["checks"]["disk"]["free_mb"], 1);
        let d = doctor_report(&checks);
        assert_eq!(
            (d["status"].as_str(), d["healthy"].as_bool()),
            (Some("unhealthy"), Some(false))
        );
    }
}
