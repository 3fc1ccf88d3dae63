//! Records the git commit the binary was built from, for `GET /status`.
//!
//! Not an `ATOM_*` name: cargo also hands this variable to the binary it runs (`cargo run`,
//! `cargo test`), and every `ATOM_*` variable is configuration, where an unknown key stops
//! start-up.
use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=BUILD_GIT_COMMIT={commit}");
    println!("cargo:rerun-if-changed=../../.git/HEAD");
    println!("cargo:rerun-if-changed=../../.git/refs/heads");
}
