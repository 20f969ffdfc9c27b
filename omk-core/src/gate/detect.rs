//! Gate detection: when a project has no `.omk/gates.toml`, guess its gates
//! from the files at its root.
//!
//! Rules, in the order the gates are returned (Rust, Node, Python, Go, Make):
//! - `Cargo.toml` with a `[package]` or `[workspace]` table: `cargo fmt`,
//!   `clippy`, `cargo test` (`--workspace` added for a workspace).
//! - `package.json` scripts: `test` (unless it is npm's placeholder), `lint`
//!   and `typecheck`, run with pnpm when `pnpm-lock.yaml` exists, yarn when
//!   `yarn.lock` exists, npm otherwise.
//! - Python: `pytest` when pytest is configured (`pytest.ini`,
//!   `[tool.pytest.ini_options]` in `pyproject.toml`, `[pytest]` in `tox.ini`,
//!   `[tool:pytest]` in `setup.cfg`) or when `tests/` holds `test_*.py` files
//!   next to a `pyproject.toml` or `setup.py`; `ruff` for `[tool.ruff]` or a
//!   `ruff.toml`/`.ruff.toml`; `mypy` for `[tool.mypy]` or a
//!   `mypy.ini`/`.mypy.ini`.
//! - `go.mod` with a `module` line: `go vet`, `go test`.
//! - A makefile (`GNUmakefile`, `makefile` or `Makefile`, the one make
//!   itself would read) with a `test` target: `make test`, but only when no
//!   language rule found a test gate.
//!
//! Detection never fails: a file that cannot be read or parsed is ignored,
//! so its gates are simply not detected.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::Path;

use super::config::{validate_gate_name, GateCommand, GateSpec, DEFAULT_TIMEOUT_SECS};

/// Config files larger than this are not read (no real one comes close).
const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// How deep under `tests/` to look for `test_*.py` files.
const MAX_TESTS_DEPTH: usize = 3;

/// At most this many directory entries are looked at under `tests/`.
const MAX_TESTS_ENTRIES: usize = 10_000;

/// npm's placeholder test script, written by `npm init`.
const NPM_PLACEHOLDER_TEST: &str = "Error: no test specified";

/// Gates detected from the files of `project`, in a stable order; empty when nothing is recognised.
pub fn detect(project: &Path) -> Vec<GateSpec> {
    let mut gates = Vec::new();
    rust(project, &mut gates);
    node(project, &mut gates);
    python(project, &mut gates);
    go(project, &mut gates);
    let has_test_gate = gates.iter().any(|g| is_test_gate(&g.name));
    if !has_test_gate {
        make(project, &mut gates);
    }
    // Defensive: every rule above yields distinct valid names, but a gate set
    // with a duplicate or invalid name would be rejected downstream.
    let mut seen = HashSet::new();
    gates.retain(|g| validate_gate_name(&g.name).is_ok() && seen.insert(g.name.clone()));
    gates
}

/// Names of the language-specific test gates.
fn is_test_gate(name: &str) -> bool {
    matches!(
        name,
        "cargo test" | "npm test" | "pnpm test" | "yarn test" | "pytest" | "go test"
    )
}

fn gate(name: &str, argv: &[&str], file: &str) -> GateSpec {
    GateSpec {
        name: name.to_string(),
        command: GateCommand::Argv(argv.iter().map(|s| s.to_string()).collect()),
        timeout_secs: DEFAULT_TIMEOUT_SECS,
        required: true,
        env: BTreeMap::new(),
        cwd: None,
        origin: format!("detected from {file}"),
    }
}

/// The text of a regular file, or `None` when it is missing, too large,
/// unreadable or not UTF-8.
fn read_text(path: &Path) -> Option<String> {
    let meta = fs::metadata(path).ok()?;
    if !meta.is_file() || meta.len() > MAX_FILE_BYTES {
        return None;
    }
    fs::read_to_string(path).ok()
}

fn read_toml(path: &Path) -> Option<toml::Table> {
    read_text(path)?.parse::<toml::Table>().ok()
}

fn is_file(path: &Path) -> bool {
    path.is_file()
}

/// Whether `table` has a table at the dotted `path` (`["tool", "ruff"]`).
fn has_table(table: &toml::Table, path: &[&str]) -> bool {
    let mut current = table;
    for key in path {
        match current.get(*key) {
            Some(toml::Value::Table(t)) => current = t,
            _ => return false,
        }
    }
    true
}

/// Whether an INI-style file has a `[section]` header line.
fn ini_has_section(text: &str, section: &str) -> bool {
    text.lines().any(|line| {
        line.trim()
            .strip_prefix('[')
            .and_then(|l| l.strip_suffix(']'))
            .is_some_and(|name| name.trim() == section)
    })
}

fn rust(project: &Path, gates: &mut Vec<GateSpec>) {
    let Some(manifest) = read_toml(&project.join("Cargo.toml")) else {
        return;
    };
    let package = has_table(&manifest, &["package"]);
    let workspace = has_table(&manifest, &["workspace"]);
    if !package && !workspace {
        return;
    }
    let file = "Cargo.toml";
    gates.push(gate(
        "cargo fmt",
        &["cargo", "fmt", "--all", "--", "--check"],
        file,
    ));
    if workspace {
        gates.push(gate(
            "clippy",
            &[
                "cargo",
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
            file,
        ));
        gates.push(gate("cargo test", &["cargo", "test", "--workspace"], file));
    } else {
        gates.push(gate(
            "clippy",
            &["cargo", "clippy", "--all-targets", "--", "-D", "warnings"],
            file,
        ));
        gates.push(gate("cargo test", &["cargo", "test"], file));
    }
}

fn node(project: &Path, gates: &mut Vec<GateSpec>) {
    let Some(text) = read_text(&project.join("package.json")) else {
        return;
    };
    let Ok(manifest) = serde_json::from_str::<serde_json::Value>(&text) else {
        return;
    };
    let Some(scripts) = manifest.get("scripts").and_then(|s| s.as_object()) else {
        return;
    };
    let script = |name: &str| {
        scripts
            .get(name)
            .and_then(|s| s.as_str())
            .filter(|s| !s.trim().is_empty())
    };
    let tool = if is_file(&project.join("pnpm-lock.yaml")) {
        "pnpm"
    } else if is_file(&project.join("yarn.lock")) {
        "yarn"
    } else {
        "npm"
    };
    let file = "package.json";
    if script("test").is_some_and(|s| !s.contains(NPM_PLACEHOLDER_TEST)) {
        gates.push(gate(&format!("{tool} test"), &[tool, "test"], file));
    }
    for name in ["lint", "typecheck"] {
        if script(name).is_none() {
            continue;
        }
        if tool == "yarn" {
            gates.push(gate(&format!("yarn {name}"), &["yarn", name], file));
        } else {
            gates.push(gate(
                &format!("{tool} run {name}"),
                &[tool, "run", name],
                file,
            ));
        }
    }
}

fn python(project: &Path, gates: &mut Vec<GateSpec>) {
    let pyproject_path = project.join("pyproject.toml");
    let pyproject = read_toml(&pyproject_path);
    let in_pyproject = |path: &[&str]| pyproject.as_ref().is_some_and(|t| has_table(t, path));
    let ini_section = |file: &str, section: &str| {
        read_text(&project.join(file)).is_some_and(|t| ini_has_section(&t, section))
    };

    // pytest reads its configuration from the first of these it finds.
    let pytest_origin = if is_file(&project.join("pytest.ini")) {
        Some("pytest.ini")
    } else if in_pyproject(&["tool", "pytest", "ini_options"]) {
        Some("pyproject.toml")
    } else if ini_section("tox.ini", "pytest") {
        Some("tox.ini")
    } else if ini_section("setup.cfg", "tool:pytest") {
        Some("setup.cfg")
    } else if (is_file(&pyproject_path) || is_file(&project.join("setup.py")))
        && has_python_tests(&project.join("tests"), 0, &mut 0)
    {
        Some("tests/")
    } else {
        None
    };
    if let Some(file) = pytest_origin {
        gates.push(gate("pytest", &["python3", "-m", "pytest", "-q"], file));
    }

    let ruff_origin = if in_pyproject(&["tool", "ruff"]) {
        Some("pyproject.toml")
    } else if is_file(&project.join("ruff.toml")) {
        Some("ruff.toml")
    } else if is_file(&project.join(".ruff.toml")) {
        Some(".ruff.toml")
    } else {
        None
    };
    if let Some(file) = ruff_origin {
        gates.push(gate("ruff", &["ruff", "check", "."], file));
    }

    let mypy_origin = if in_pyproject(&["tool", "mypy"]) {
        Some("pyproject.toml")
    } else if is_file(&project.join("mypy.ini")) {
        Some("mypy.ini")
    } else if is_file(&project.join(".mypy.ini")) {
        Some(".mypy.ini")
    } else {
        None
    };
    if let Some(file) = mypy_origin {
        gates.push(gate("mypy", &["mypy", "."], file));
    }
}

/// Whether `dir` (or a subdirectory, a few levels down) holds a `test_*.py`
/// file. Hidden directories and symlinked directories are skipped; `seen`
/// bounds the number of entries looked at.
fn has_python_tests(dir: &Path, depth: usize, seen: &mut usize) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    let mut subdirs = Vec::new();
    for entry in entries.flatten() {
        *seen += 1;
        if *seen > MAX_TESTS_ENTRIES {
            return false;
        }
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            if !name.starts_with('.') && name != "__pycache__" {
                subdirs.push(entry.path());
            }
        } else if name.starts_with("test_") && name.ends_with(".py") && entry.path().is_file() {
            return true;
        }
    }
    if depth + 1 >= MAX_TESTS_DEPTH {
        return false;
    }
    subdirs.sort();
    subdirs.iter().any(|d| has_python_tests(d, depth + 1, seen))
}

fn go(project: &Path, gates: &mut Vec<GateSpec>) {
    let Some(text) = read_text(&project.join("go.mod")) else {
        return;
    };
    let has_module = text.lines().any(|line| {
        line.trim_start()
            .strip_prefix("module")
            .is_some_and(|rest| rest.starts_with([' ', '\t']) && !rest.trim().is_empty())
    });
    if !has_module {
        return;
    }
    gates.push(gate("go vet", &["go", "vet", "./..."], "go.mod"));
    gates.push(gate("go test", &["go", "test", "./..."], "go.mod"));
}

fn make(project: &Path, gates: &mut Vec<GateSpec>) {
    // The makefile make itself reads: the first of these that exists.
    let Some(file) = ["GNUmakefile", "makefile", "Makefile"]
        .into_iter()
        .find(|f| is_file(&project.join(f)))
    else {
        return;
    };
    let Some(text) = read_text(&project.join(file)) else {
        return;
    };
    if text.lines().any(is_test_target) {
        gates.push(gate("make test", &["make", "test"], file));
    }
}

/// Whether a makefile line starts a rule for `test` (`test:`, `test :`,
/// `test::`), as opposed to an assignment such as `test := x`.
fn is_test_target(line: &str) -> bool {
    let Some(rest) = line.strip_prefix("test") else {
        return false;
    };
    let Some(rest) = rest.trim_start_matches([' ', '\t']).strip_prefix(':') else {
        return false;
    };
    // `test:=`, `test::=`, `test:::=` are assignments.
    !rest.trim_start_matches(':').starts_with('=')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/projects");

    /// (name, command line, origin) of each detected gate, after checking the
    /// fields every detected gate shares.
    fn summary(project: &Path) -> Vec<(String, Vec<String>, String)> {
        let gates = detect(project);
        let mut names = HashSet::new();
        for g in &gates {
            assert!(validate_gate_name(&g.name).is_ok(), "{}", g.name);
            assert!(names.insert(g.name.clone()), "duplicate {}", g.name);
            assert!(g.required);
            assert_eq!(g.timeout_secs, DEFAULT_TIMEOUT_SECS);
            assert!(g.env.is_empty());
            assert_eq!(g.cwd, None);
        }
        gates
            .into_iter()
            .map(|g| {
                let GateCommand::Argv(argv) = g.command else {
                    panic!("gate {} is not an argv command", g.name);
                };
                (g.name, argv, g.origin)
            })
            .collect()
    }

    fn fixture(name: &str) -> Vec<(String, Vec<String>, String)> {
        let dir = PathBuf::from(FIXTURES).join(name);
        assert!(dir.is_dir(), "missing fixture {}", dir.display());
        summary(&dir)
    }

    fn expect(rows: &[(&str, &str, &str)]) -> Vec<(String, Vec<String>, String)> {
        rows.iter()
            .map(|(name, cmd, file)| {
                (
                    name.to_string(),
                    cmd.split(' ').map(str::to_string).collect(),
                    format!("detected from {file}"),
                )
            })
            .collect()
    }

    fn names(project: &Path) -> Vec<String> {
        detect(project).into_iter().map(|g| g.name).collect()
    }

    fn write(dir: &Path, file: &str, text: &str) {
        let path = dir.join(file);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    #[test]
    fn rust_crate() {
        assert_eq!(
            fixture("rust-crate"),
            expect(&[
                ("cargo fmt", "cargo fmt --all -- --check", "Cargo.toml"),
                (
                    "clippy",
                    "cargo clippy --all-targets -- -D warnings",
                    "Cargo.toml"
                ),
                ("cargo test", "cargo test", "Cargo.toml"),
            ])
        );
    }

    #[test]
    fn rust_workspace() {
        assert_eq!(
            fixture("rust-workspace"),
            expect(&[
                ("cargo fmt", "cargo fmt --all -- --check", "Cargo.toml"),
                (
                    "clippy",
                    "cargo clippy --workspace --all-targets -- -D warnings",
                    "Cargo.toml"
                ),
                ("cargo test", "cargo test --workspace", "Cargo.toml"),
            ])
        );
    }

    #[test]
    fn node_npm() {
        assert_eq!(
            fixture("node-npm"),
            expect(&[
                ("npm test", "npm test", "package.json"),
                ("npm run lint", "npm run lint", "package.json"),
            ])
        );
    }

    #[test]
    fn node_placeholder_test_script_is_not_a_gate() {
        assert_eq!(fixture("node-placeholder"), expect(&[]));
    }

    #[test]
    fn node_pnpm() {
        assert_eq!(
            fixture("node-pnpm"),
            expect(&[
                ("pnpm test", "pnpm test", "package.json"),
                ("pnpm run typecheck", "pnpm run typecheck", "package.json"),
            ])
        );
    }

    #[test]
    fn node_yarn() {
        assert_eq!(
            fixture("node-yarn"),
            expect(&[
                ("yarn test", "yarn test", "package.json"),
                ("yarn lint", "yarn lint", "package.json"),
            ])
        );
    }

    #[test]
    fn python_pyproject() {
        assert_eq!(
            fixture("python-pyproject"),
            expect(&[
                ("pytest", "python3 -m pytest -q", "pyproject.toml"),
                ("ruff", "ruff check .", "pyproject.toml"),
            ])
        );
    }

    #[test]
    fn python_tests_dir() {
        assert_eq!(
            fixture("python-tests-dir"),
            expect(&[("pytest", "python3 -m pytest -q", "tests/")])
        );
    }

    #[test]
    fn go_module() {
        assert_eq!(
            fixture("go-module"),
            expect(&[
                ("go vet", "go vet ./...", "go.mod"),
                ("go test", "go test ./...", "go.mod"),
            ])
        );
    }

    #[test]
    fn make_only() {
        assert_eq!(
            fixture("make-only"),
            expect(&[("make test", "make test", "Makefile")])
        );
    }

    #[test]
    fn polyglot_orders_ecosystems_and_drops_make_test() {
        assert_eq!(
            fixture("polyglot"),
            expect(&[
                ("cargo fmt", "cargo fmt --all -- --check", "Cargo.toml"),
                (
                    "clippy",
                    "cargo clippy --all-targets -- -D warnings",
                    "Cargo.toml"
                ),
                ("cargo test", "cargo test", "Cargo.toml"),
                ("npm test", "npm test", "package.json"),
                ("npm run lint", "npm run lint", "package.json"),
            ])
        );
    }

    #[test]
    fn broken_files_detect_nothing() {
        assert_eq!(fixture("broken"), expect(&[]));
    }

    #[test]
    fn empty_project_detects_nothing() {
        assert_eq!(fixture("empty"), expect(&[]));
    }

    #[test]
    fn missing_project_detects_nothing() {
        assert!(detect(Path::new("/nonexistent/omk/detect/project")).is_empty());
        // A file, not a directory.
        let file = PathBuf::from(FIXTURES).join("empty/README.md");
        assert!(detect(&file).is_empty());
    }

    #[test]
    fn detection_is_stable() {
        let dir = PathBuf::from(FIXTURES).join("polyglot");
        assert_eq!(detect(&dir), detect(&dir));
    }

    #[test]
    fn make_test_target_forms() {
        for line in ["test:", "test :", "test::", "test: build lint", "test\t: a"] {
            assert!(is_test_target(line), "{line:?}");
        }
        for line in [
            ".PHONY: test",
            "test := 1",
            "test:=1",
            "test ::= 1",
            "test:::= 1",
            "tests:",
            "\ttest:",
            " test:",
            "# test:",
            "unit-test:",
            "test",
        ] {
            assert!(!is_test_target(line), "{line:?}");
        }
    }

    #[test]
    fn makefile_without_test_target_or_only_phony() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "Makefile", ".PHONY: test\nbuild:\n\ttrue\n");
        assert!(names(tmp.path()).is_empty());
    }

    #[test]
    fn makefile_precedence_follows_make() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "Makefile", "test:\n\ttrue\n");
        write(tmp.path(), "GNUmakefile", "build:\n\ttrue\n");
        // make would read GNUmakefile, which has no test target.
        assert!(names(tmp.path()).is_empty());
        write(tmp.path(), "GNUmakefile", "test:\n\ttrue\n");
        let gates = detect(tmp.path());
        assert_eq!(gates.len(), 1);
        assert_eq!(gates[0].origin, "detected from GNUmakefile");
    }

    #[test]
    fn make_test_kept_next_to_gates_that_are_not_tests() {
        let tmp = tempfile::tempdir().unwrap();
        write(
            tmp.path(),
            "package.json",
            r#"{"scripts": {"lint": "eslint ."}}"#,
        );
        write(tmp.path(), "Makefile", "test:\n\tnode --test\n");
        assert_eq!(names(tmp.path()), ["npm run lint", "make test"]);
    }

    #[test]
    fn a_broken_file_does_not_hide_other_ecosystems() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "Cargo.toml", "[package\n");
        write(tmp.path(), "package.json", "{");
        write(tmp.path(), "go.mod", "module example.com/x\n");
        assert_eq!(names(tmp.path()), ["go vet", "go test"]);
    }

    #[test]
    fn cargo_toml_without_package_or_workspace_is_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "Cargo.toml", "[dependencies]\nserde = \"1\"\n");
        assert!(names(tmp.path()).is_empty());
        write(tmp.path(), "Cargo.toml", "package = \"not a table\"\n");
        assert!(names(tmp.path()).is_empty());
    }

    #[test]
    fn root_package_in_workspace_uses_workspace_flags() {
        let tmp = tempfile::tempdir().unwrap();
        write(
            tmp.path(),
            "Cargo.toml",
            "[package]\nname = \"x\"\nversion = \"0.1.0\"\n\n[workspace]\nmembers = [\"y\"]\n",
        );
        let test = detect(tmp.path()).pop().unwrap();
        assert_eq!(test.command.command_line(), "cargo test --workspace");
    }

    #[test]
    fn package_json_edge_cases() {
        let tmp = tempfile::tempdir().unwrap();
        for text in [
            r#"{"name": "x"}"#,
            r#"{"scripts": ["test"]}"#,
            r#"{"scripts": {"test": 1, "lint": null}}"#,
            r#"{"scripts": {"test": "  "}}"#,
            r#"[]"#,
        ] {
            write(tmp.path(), "package.json", text);
            assert!(names(tmp.path()).is_empty(), "{text}");
        }
        write(
            tmp.path(),
            "package.json",
            r#"{"scripts": {"typecheck": "tsc"}}"#,
        );
        assert_eq!(names(tmp.path()), ["npm run typecheck"]);
        write(tmp.path(), "yarn.lock", "");
        assert_eq!(names(tmp.path()), ["yarn typecheck"]);
        // pnpm wins when both lockfiles exist.
        write(tmp.path(), "pnpm-lock.yaml", "");
        assert_eq!(names(tmp.path()), ["pnpm run typecheck"]);
    }

    #[test]
    fn python_config_files() {
        let tmp = tempfile::tempdir().unwrap();
        write(
            tmp.path(),
            "setup.cfg",
            "[metadata]\nname = x\n\n[tool:pytest]\naddopts = -q\n",
        );
        write(tmp.path(), "mypy.ini", "[mypy]\nstrict = True\n");
        write(tmp.path(), "ruff.toml", "line-length = 100\n");
        assert_eq!(
            summary(tmp.path()),
            expect(&[
                ("pytest", "python3 -m pytest -q", "setup.cfg"),
                ("ruff", "ruff check .", "ruff.toml"),
                ("mypy", "mypy .", "mypy.ini"),
            ])
        );
        // pytest.ini wins over other configuration, as in pytest.
        write(tmp.path(), "pytest.ini", "[pytest]\n");
        write(tmp.path(), "pyproject.toml", "[tool.mypy]\nstrict = true\n");
        assert_eq!(
            summary(tmp.path()),
            expect(&[
                ("pytest", "python3 -m pytest -q", "pytest.ini"),
                ("ruff", "ruff check .", "ruff.toml"),
                ("mypy", "mypy .", "pyproject.toml"),
            ])
        );
    }

    #[test]
    fn python_tests_dir_needs_a_project_file_and_test_files() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "tests/test_a.py", "def test_a(): pass\n");
        // No pyproject.toml or setup.py next to it.
        assert!(names(tmp.path()).is_empty());
        // A malformed pyproject.toml still marks a Python project.
        write(tmp.path(), "pyproject.toml", "[project\n");
        assert_eq!(names(tmp.path()), ["pytest"]);

        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "setup.py", "");
        write(tmp.path(), "tests/helpers.py", "");
        write(tmp.path(), "tests/.hidden/test_a.py", "");
        assert!(names(tmp.path()).is_empty());
        write(tmp.path(), "tests/unit/test_b.py", "");
        assert_eq!(names(tmp.path()), ["pytest"]);
    }

    #[test]
    fn go_mod_needs_a_module_line() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "go.mod", "go 1.22\n");
        assert!(names(tmp.path()).is_empty());
        write(tmp.path(), "go.mod", "// c\nmodule\texample.com/x\n");
        assert_eq!(names(tmp.path()), ["go vet", "go test"]);
    }

    #[test]
    fn non_utf8_and_directory_named_like_config_are_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("package.json"), b"\xff\xfe{}").unwrap();
        fs::create_dir(tmp.path().join("Cargo.toml")).unwrap();
        fs::create_dir(tmp.path().join("pytest.ini")).unwrap();
        assert!(names(tmp.path()).is_empty());
    }
}
