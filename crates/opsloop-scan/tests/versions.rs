//! Version ordering against osv-scalibr's conformance data (`../shared/peers/osv-versions`):
//! every pair of every file, for every ecosystem we support.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cmp::Ordering;
use std::path::PathBuf;

use opsloop_scan::version::{Ecosystem, Scheme};

fn data_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/peers/osv-versions"))
}

fn scheme_of(file: &str) -> Option<Scheme> {
    let name = file.split("-versions").next()?;
    Some(match name {
        "alpine" => Scheme::Alpine,
        "cran" => Scheme::Cran,
        "debian" => Scheme::Debian,
        "hackage" => Scheme::Hackage,
        "maven" => Scheme::Maven,
        "nuget" => Scheme::NuGet,
        "packagist" => Scheme::Packagist,
        "pub" => Scheme::Pub,
        "pypi" => Scheme::Pep440,
        "redhat" => Scheme::Rpm,
        "rubygems" => Scheme::RubyGems,
        "semver" => Scheme::Semver,
        _ => return None,
    })
}

#[test]
fn osv_scalibr_version_pairs() {
    let dir = data_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        opsloop_core::skip::skipped(&format!("{} is absent", dir.display()));
        return;
    };
    let mut files: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("-versions") && n.ends_with(".txt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *-versions*.txt in {}", dir.display());
    let mut failures = Vec::new();
    let mut unsupported = Vec::new();
    for file in &files {
        let Some(scheme) = scheme_of(file) else {
            unsupported.push(file.clone());
            continue;
        };
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let (mut pass, mut total) = (0, 0);
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with("//") || line.starts_with('#') {
                continue;
            }
            let mut parts = line.splitn(3, ' ');
            let (Some(a), Some(op), Some(b)) = (parts.next(), parts.next(), parts.next()) else {
                panic!("{file}: malformed line {line:?}");
            };
            let want = match op {
                "<" => Ordering::Less,
                ">" => Ordering::Greater,
                "=" => Ordering::Equal,
                other => panic!("{file}: operator {other:?}"),
            };
            total += 1;
            // Both directions: an ordering must be antisymmetric.
            let got = scheme.compare(a, b);
            let back = scheme.compare(b, a);
            if got == want && back == want.reverse() {
                pass += 1;
            } else if failures.len() < 60 {
                failures.push(format!("{file}: {a} {op} {b}: got {got:?} / reverse {back:?}"));
            }
        }
        println!("{file}: {pass}/{total} pairs hold ({scheme:?})");
    }
    for file in &unsupported {
        println!("{file}: ecosystem not supported");
    }
    assert!(unsupported.is_empty(), "unsupported: {unsupported:?}");
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn ecosystems_parse_and_order() {
    assert_eq!(Ecosystem::parse("Debian:12"), Some(Ecosystem::Debian));
    assert_eq!(Ecosystem::parse("Rocky Linux:9"), Some(Ecosystem::RedHat));
    assert_eq!(Ecosystem::parse("Nope"), None);
    for e in Ecosystem::ALL {
        assert_eq!(Ecosystem::parse(e.as_str()), Some(e));
    }
    assert_eq!(Ecosystem::Go.compare("v1.2.3", "1.10.0"), Ordering::Less);
    assert_eq!(Ecosystem::CratesIo.compare("0.0.0", "0.0.0"), Ordering::Equal);
    assert_eq!(Ecosystem::Debian.compare("1.0~rc1", "1.0"), Ordering::Less);
}
