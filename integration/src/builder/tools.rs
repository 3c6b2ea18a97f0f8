//! Small things several builder tests need: whether a peer is installed,
//! and running a bundle with the OCI runtime.

use std::path::Path;
use std::process::{Command, Stdio};

/// Whether `tool` is on PATH (`command -v`).
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `RUNTIME run --bundle BUNDLE ID`, then `delete --force ID` whatever
/// happened (nothing of the container stays); asserts the run succeeded
/// and returns its stdout, trimmed.
pub fn run_bundle(runtime: &Path, bundle: &Path, id: &str) -> String {
    let out = Command::new(runtime)
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(id)
        .output()
        .unwrap();
    let _ = Command::new(runtime)
        .args(["delete", "--force", id])
        .output();
    assert!(
        out.status.success(),
        "{} run {id}: {}",
        runtime.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Skips the test (`harness::skip`: a failure under CI=true) and returns
/// from it when one of the tools is not on PATH.
#[macro_export]
macro_rules! require {
    ($($tool:expr),+ $(,)?) => {
        $(
            if !$crate::builder::have($tool) {
                $crate::harness::skip(&format!(
                    "{} is not installed (scripts/deps.sh installs it)",
                    $tool
                ));
                return;
            }
        )+
    };
}
