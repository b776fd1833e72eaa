//! Build script: the git commit for `--version`, `gatehouse_build_info` and
//! `/admin/status`. `GATEHOUSE_COMMIT` in the environment wins (a build from a source
//! tarball); otherwise `git rev-parse`, and "unknown" without git.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=GATEHOUSE_COMMIT");
    let commit = std::env::var("GATEHOUSE_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=GATEHOUSE_COMMIT={commit}");
}

fn git_commit() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let commit = String::from_utf8(out.stdout).ok()?.trim().to_string();
    // Rebuild when HEAD moves: HEAD itself, the branch it names, and packed refs. Only
    // files that exist are named: cargo takes a missing one as changed, and rebuilt the
    // crate on every run in a clone without `packed-refs`.
    let git_dir = Command::new("git")
        .args(["rev-parse", "--git-dir"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())?;
    let git_dir = Path::new(&git_dir);
    let watch = |p: &Path| {
        if p.exists() {
            println!("cargo:rerun-if-changed={}", p.display());
        }
    };
    let head = git_dir.join("HEAD");
    watch(&head);
    if let Ok(h) = std::fs::read_to_string(&head) {
        if let Some(r) = h.trim().strip_prefix("ref: ") {
            // a packed branch becomes a loose file in its directory at the next commit
            let branch = git_dir.join(r);
            match branch.parent() {
                Some(dir) if !branch.exists() => watch(dir),
                _ => watch(&branch),
            }
        }
    }
    watch(&git_dir.join("packed-refs"));
    Some(commit)
}
