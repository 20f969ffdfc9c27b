//! Helpers shared by omk-core's integration tests.

use std::path::PathBuf;

/// The bundled scripted Wire agent, built next to this test binary
/// (target/<profile>/omk-scripted-agent); built on demand when missing.
pub fn scripted_agent() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("omk-scripted-agent");
    if !bin.exists() {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "-p", "omk-scripted-agent"])
            .status()
            .unwrap();
        assert!(status.success(), "cannot build the scripted agent");
    }
    bin
}
