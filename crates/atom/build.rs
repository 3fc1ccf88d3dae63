//! Records the git commit the binary was built from, for `GET /status`, and lists the
//! provider templates (`providers/*.toml` at the repository root) that the catalog compiles in.
//!
//! Not an `ATOM_*` name: cargo also hands this variable to the binary it runs (`cargo run`,
//! `cargo test`), and every `ATOM_*` variable is configuration, where an unknown key stops
//! start-up.
use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
}

/// Writes `$OUT_DIR/providers.rs`: a slice of `(file name, include_str!(path))`, sorted, so
/// adding a template is adding a file.
fn list_providers() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../providers");
    // A directory makes cargo rerun when any file in it changes, is added or removed.
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "toml"));
    files.sort();
    let mut out = String::from("&[\n");
    for path in files {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        out.push_str(&format!("    ({name:?}, include_str!({:?})),\n", path.display().to_string()));
    }
    out.push(']');
    let target = Path::new(&std::env::var("OUT_DIR").unwrap_or_default()).join("providers.rs");
    if let Err(e) = std::fs::write(&target, out) {
        panic!("cannot write {}: {e}", target.display());
    }
}

fn main() {
    list_providers();
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=BUILD_GIT_COMMIT={commit}");
    // Run again when HEAD moves: HEAD itself (another branch), the branch's ref (a commit) and
    // the packed refs. Their places are asked of git because in a worktree `.git` is a file
    // and they live elsewhere; only existing paths are named, since cargo reruns a build
    // script (and rebuilds the crate) every time for a path that does not exist.
    println!("cargo:rerun-if-changed=build.rs");
    let existing = |path: &str| git(&["rev-parse", "--git-path", path]).filter(|p| Path::new(p).exists());
    for path in ["HEAD", "packed-refs"] {
        if let Some(place) = existing(path) {
            println!("cargo:rerun-if-changed={place}");
        }
    }
    // The branch's own ref; while it is packed, the folder its next commit will write into.
    let branch = git(&["rev-parse", "--symbolic-full-name", "HEAD"]).filter(|r| r.starts_with("refs/"));
    if let Some(place) = branch.and_then(|r| existing(&r).or_else(|| existing("refs/heads"))) {
        println!("cargo:rerun-if-changed={place}");
    }
}
