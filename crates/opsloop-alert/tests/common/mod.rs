//! What the tests that compare with the real Alertmanager share: finding the peer binaries,
//! skipped when absent, but a failure under `CI=true`.

#![allow(dead_code)]

use std::path::PathBuf;

/// The path of a peer binary (`amtool`, `prometheus-alertmanager`), or `None` after printing
/// `skipped: …`. Under `CI=true` a missing peer fails the test instead.
pub fn peer(names: &[&str]) -> Option<PathBuf> {
    for name in names {
        for dir in std::env::var("PATH").unwrap_or_default().split(':').chain(["/usr/bin", "/usr/local/bin"]) {
            let path = PathBuf::from(dir).join(name);
            if path.is_file() {
                return Some(path);
            }
        }
    }
    let why = format!("{} not installed", names.join(" / "));
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true and the peer is missing: {why}");
    }
    println!("skipped: {why}");
    None
}
