//! Version ordering per ecosystem, as OSV ranges need it: semver (crates.io, npm, Go, Hex),
//! PEP 440 (PyPI), RubyGems, Maven, Debian, Alpine, NuGet, Packagist, Pub, CRAN, Red Hat
//! (rpmvercmp) and Hackage.
//!
//! Comparison never fails: every ecosystem's tools order malformed versions somehow (pip's legacy
//! versions, dpkg's lenient parser), and an audit must not stop at the first odd version in a
//! lockfile. Numeric components are compared as digit strings, so versions with components
//! beyond `u64` (date stamps, the conformance data's 30-digit numbers) still order correctly.

mod maven;
mod os;
mod other;
mod pypi;
mod semver;

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A package ecosystem, named as OSV names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Ecosystem {
    #[serde(rename = "crates.io")]
    CratesIo,
    #[serde(rename = "npm")]
    Npm,
    Go,
    Hex,
    PyPI,
    RubyGems,
    Maven,
    Debian,
    Ubuntu,
    Alpine,
    NuGet,
    Packagist,
    Pub,
    #[serde(rename = "CRAN")]
    Cran,
    #[serde(rename = "Red Hat")]
    RedHat,
    Hackage,
}

/// How an ecosystem orders versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Semver,
    Pep440,
    RubyGems,
    Maven,
    Debian,
    Alpine,
    NuGet,
    Packagist,
    Pub,
    Cran,
    Rpm,
    Hackage,
}

impl Ecosystem {
    pub const ALL: [Ecosystem; 16] = [
        Ecosystem::CratesIo,
        Ecosystem::Npm,
        Ecosystem::Go,
        Ecosystem::Hex,
        Ecosystem::PyPI,
        Ecosystem::RubyGems,
        Ecosystem::Maven,
        Ecosystem::Debian,
        Ecosystem::Ubuntu,
        Ecosystem::Alpine,
        Ecosystem::NuGet,
        Ecosystem::Packagist,
        Ecosystem::Pub,
        Ecosystem::Cran,
        Ecosystem::RedHat,
        Ecosystem::Hackage,
    ];

    /// OSV's name for it (`crates.io`, `PyPI`, `Red Hat`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Ecosystem::CratesIo => "crates.io",
            Ecosystem::Npm => "npm",
            Ecosystem::Go => "Go",
            Ecosystem::Hex => "Hex",
            Ecosystem::PyPI => "PyPI",
            Ecosystem::RubyGems => "RubyGems",
            Ecosystem::Maven => "Maven",
            Ecosystem::Debian => "Debian",
            Ecosystem::Ubuntu => "Ubuntu",
            Ecosystem::Alpine => "Alpine",
            Ecosystem::NuGet => "NuGet",
            Ecosystem::Packagist => "Packagist",
            Ecosystem::Pub => "Pub",
            Ecosystem::Cran => "CRAN",
            Ecosystem::RedHat => "Red Hat",
            Ecosystem::Hackage => "Hackage",
        }
    }

    /// Parses an OSV ecosystem name; a release suffix (`Debian:12`, `Alpine:v3.19`) is dropped.
    /// Distributions that use rpm's ordering (Rocky Linux, AlmaLinux, openSUSE, SUSE) map to
    /// [`Ecosystem::RedHat`].
    pub fn parse(name: &str) -> Option<Ecosystem> {
        let base = name.split(':').next().unwrap_or(name).trim();
        Some(match base {
            "crates.io" => Ecosystem::CratesIo,
            "npm" => Ecosystem::Npm,
            "Go" => Ecosystem::Go,
            "Hex" => Ecosystem::Hex,
            "PyPI" => Ecosystem::PyPI,
            "RubyGems" => Ecosystem::RubyGems,
            "Maven" => Ecosystem::Maven,
            "Debian" => Ecosystem::Debian,
            "Ubuntu" => Ecosystem::Ubuntu,
            "Alpine" => Ecosystem::Alpine,
            "NuGet" => Ecosystem::NuGet,
            "Packagist" => Ecosystem::Packagist,
            "Pub" => Ecosystem::Pub,
            "CRAN" => Ecosystem::Cran,
            "Red Hat" | "Rocky Linux" | "AlmaLinux" | "openSUSE" | "SUSE" => Ecosystem::RedHat,
            "Hackage" => Ecosystem::Hackage,
            _ => return None,
        })
    }

    pub fn scheme(self) -> Scheme {
        match self {
            Ecosystem::CratesIo | Ecosystem::Npm | Ecosystem::Go | Ecosystem::Hex => Scheme::Semver,
            Ecosystem::PyPI => Scheme::Pep440,
            Ecosystem::RubyGems => Scheme::RubyGems,
            Ecosystem::Maven => Scheme::Maven,
            Ecosystem::Debian | Ecosystem::Ubuntu => Scheme::Debian,
            Ecosystem::Alpine => Scheme::Alpine,
            Ecosystem::NuGet => Scheme::NuGet,
            Ecosystem::Packagist => Scheme::Packagist,
            Ecosystem::Pub => Scheme::Pub,
            Ecosystem::Cran => Scheme::Cran,
            Ecosystem::RedHat => Scheme::Rpm,
            Ecosystem::Hackage => Scheme::Hackage,
        }
    }

    /// The package URL type (`pkg:cargo/…`).
    pub fn purl_type(self) -> &'static str {
        match self {
            Ecosystem::CratesIo => "cargo",
            Ecosystem::Npm => "npm",
            Ecosystem::Go => "golang",
            Ecosystem::Hex => "hex",
            Ecosystem::PyPI => "pypi",
            Ecosystem::RubyGems => "gem",
            Ecosystem::Maven => "maven",
            Ecosystem::Debian | Ecosystem::Ubuntu => "deb",
            Ecosystem::Alpine => "apk",
            Ecosystem::NuGet => "nuget",
            Ecosystem::Packagist => "composer",
            Ecosystem::Pub => "pub",
            Ecosystem::Cran => "cran",
            Ecosystem::RedHat => "rpm",
            Ecosystem::Hackage => "hackage",
        }
    }

    /// Compares two versions of this ecosystem.
    pub fn compare(self, a: &str, b: &str) -> Ordering {
        self.scheme().compare(a, b)
    }
}

impl fmt::Display for Ecosystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Scheme {
    pub fn compare(self, a: &str, b: &str) -> Ordering {
        match self {
            Scheme::Semver => semver::compare_semver(a, b),
            Scheme::Pep440 => pypi::compare(a, b),
            Scheme::RubyGems => other::compare_rubygems(a, b),
            Scheme::Maven => maven::compare(a, b),
            Scheme::Debian => os::compare_debian(a, b),
            Scheme::Alpine => os::compare_alpine(a, b),
            Scheme::NuGet => semver::compare_nuget(a, b),
            Scheme::Packagist => other::compare_packagist(a, b),
            Scheme::Pub => semver::compare_pub(a, b),
            Scheme::Cran => other::compare_cran(a, b),
            Scheme::Rpm => os::compare_rpm(a, b),
            Scheme::Hackage => other::compare_hackage(a, b),
        }
    }
}

/// Compares two strings of ASCII digits as numbers of any length.
pub(crate) fn cmp_digits(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

pub(crate) fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}
