//! Dependency audit end to end: lockfiles of every supported format, an OSV fixture of
//! real-looking RUSTSEC, GHSA and CVE records (ranges with introduced/fixed/last_affected/limit,
//! explicit version lists, withdrawn records, aliases), ignore entries, and SBOMs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use opsloop_scan::audit::{self, Database, Format, IgnoreConfig, Severity, inventory, parse_lockfile};
use opsloop_scan::sbom;
use opsloop_scan::version::Ecosystem;

const CARGO_LOCK: &str = r#"
version = 4

[[package]]
name = "app"
version = "0.1.0"
dependencies = ["smallvec", "time 0.1.45"]

[[package]]
name = "smallvec"
version = "1.6.0"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "fe0f37c9e8f3c5a4a66ad655a93c74daac4ad00c441533bf5c6e7990bb42604e"

[[package]]
name = "time"
version = "0.1.45"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "1b797afad3f312d1c66a56d11d0316f916356d11bd158fbc6ca6389ff6bf805a"
dependencies = ["libc"]

[[package]]
name = "libc"
version = "0.2.150"
source = "registry+https://github.com/rust-lang/crates.io-index"
"#;

const PACKAGE_LOCK_V3: &str = r#"{
  "name": "web", "lockfileVersion": 3,
  "packages": {
    "": {"name": "web", "dependencies": {"lodash": "^4.17.0"}, "devDependencies": {"left-pad": "1.3.0"}},
    "node_modules/lodash": {"version": "4.17.20", "integrity": "sha512-PlhdFcillOINfeV7Ni6oF1TAEayyZBoZ8bcshTHqOYJYlrqzRK5hagpagky5o4HfCzzd1TRkXPMFq6cKk9rGmA=="},
    "node_modules/left-pad": {"version": "1.3.0", "dev": true, "dependencies": {"lodash": "^4"}},
    "node_modules/left-pad/node_modules/lodash": {"version": "4.17.21"},
    "packages/local": {"link": true}
  }
}"#;

const PACKAGE_LOCK_V1: &str = r#"{
  "lockfileVersion": 1,
  "dependencies": {
    "minimist": {"version": "0.0.8", "requires": {}, "dependencies": {"inner": {"version": "2.0.0"}}}
  }
}"#;

const YARN_V1: &str = r#"# yarn lockfile v1

"@babel/core@^7.0.0", "@babel/core@^7.1.0":
  version "7.22.5"
  resolved "https://registry.yarnpkg.com/@babel/core/-/core-7.22.5.tgz"
  integrity sha512-PlhdFcillOINfeV7Ni6oF1TAEayyZBoZ8bcshTHqOYJYlrqzRK5hagpagky5o4HfCzzd1TRkXPMFq6cKk9rGmA==

minimist@^1.2.0:
  version "1.2.5"
"#;

const YARN_BERRY: &str = r#"__metadata:
  version: 6
  cacheKey: 8

"minimist@npm:^1.2.0":
  version: 1.2.6
  resolution: "minimist@npm:1.2.6"
  checksum: 9efc8dd8eb0a8c9bd1a7f9dd4fa1bb2e1f5c6a7b8c9d0e1f2a3b4c5d6e7f8091

"web@workspace:.":
  version: 0.0.0-use.local
  resolution: "web@workspace:."
"#;

const PNPM: &str = r#"lockfileVersion: '9.0'
importers:
  .:
    dependencies:
      lodash:
        specifier: ^4.17.0
        version: 4.17.15
packages:
  lodash@4.17.15:
    resolution: {integrity: sha512-PlhdFcillOINfeV7Ni6oF1TAEayyZBoZ8bcshTHqOYJYlrqzRK5hagpagky5o4HfCzzd1TRkXPMFq6cKk9rGmA==}
  '@types/node@20.1.0':
    resolution: {integrity: sha512-PlhdFcillOINfeV7Ni6oF1TAEayyZBoZ8bcshTHqOYJYlrqzRK5hagpagky5o4HfCzzd1TRkXPMFq6cKk9rGmA==}
  /react-dom/18.2.0_react@18.2.0:
    resolution: {integrity: sha512-PlhdFcillOINfeV7Ni6oF1TAEayyZBoZ8bcshTHqOYJYlrqzRK5hagpagky5o4HfCzzd1TRkXPMFq6cKk9rGmA==}
"#;

const REQUIREMENTS: &str =
    "# pinned\nDjango==3.2.0 ; python_version >= '3.8'\nrequests[socks]==2.25.0\nflask>=2.0\n-r other.txt\n";

const POETRY: &str = r#"
[[package]]
name = "Jinja2"
version = "2.11.2"
description = ""
category = "main"

[package.dependencies]
MarkupSafe = ">=0.23"

[[package]]
name = "markupsafe"
version = "1.1.1"
"#;

const PIPFILE: &str = r#"{"_meta": {}, "default": {"urllib3": {"hashes": ["sha256:abc123"], "version": "==1.26.4"}}, "develop": {"pytest": {"version": "==6.2.0"}}}"#;

const UV: &str = r#"
version = 1

[[package]]
name = "proj"
version = "0.1.0"
source = { editable = "." }
dependencies = [{ name = "pyyaml" }]

[[package]]
name = "pyyaml"
version = "5.3"
source = { registry = "https://pypi.org/simple" }
sdist = { url = "https://x", hash = "sha256:e9df8c6c1f5ae6f80e1d6c4f76d2a8e2a2f5f0d0a1a6f2b7c8d9e0f1a2b3c4d5" }
"#;

const GO_MOD: &str = r#"module example.com/app

go 1.21

require github.com/gin-gonic/gin v1.9.0

require (
	golang.org/x/net v0.7.0 // indirect
	golang.org/x/text v0.3.7
)
"#;

const GEMFILE: &str = r#"GEM
  remote: https://rubygems.org/
  specs:
    nokogiri (1.13.6-x86_64-linux)
      racc (~> 1.4)
    racc (1.6.0)
    rack (2.2.3)

PLATFORMS
  x86_64-linux

DEPENDENCIES
  nokogiri
  rack!
"#;

const COMPOSER: &str = r#"{"packages": [{"name": "guzzlehttp/guzzle", "version": "v7.4.4"}], "packages-dev": [{"name": "phpunit/phpunit", "version": "9.5.0"}]}"#;

const GRADLE: &str = "# gradle\norg.apache.logging.log4j:log4j-core:2.14.1=compileClasspath,runtimeClasspath\nempty=annotationProcessor\n";

const NUGET: &str = r#"{"version": 1, "dependencies": {"net6.0": {"Newtonsoft.Json": {"type": "Direct", "requested": "[12.0.1, )", "resolved": "12.0.1"}, "System.Text.Json": {"type": "Transitive", "resolved": "6.0.0"}}}}"#;

const PUBSPEC: &str = r#"packages:
  http:
    dependency: "direct main"
    description:
      name: http
      url: "https://pub.dev"
    source: hosted
    version: "0.13.0"
  path:
    dependency: transitive
    source: hosted
    version: "1.8.0"
sdks:
  dart: ">=2.12.0 <3.0.0"
"#;

const MIX: &str = r#"%{
  "plug": {:hex, :plug, "1.11.0", "f17217525597628298998bc3baed9f8ea1fa3f1160aa9871aee6df47a6e4d38e", [:mix], [], "hexpm", "abc"},
  "phoenix": {:hex, :phoenix, "1.6.0", "aaaa", [:mix], [], "hexpm", "bbb"},
}
"#;

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "Cargo.lock", CARGO_LOCK);
    write(d, "web/package-lock.json", PACKAGE_LOCK_V3);
    write(d, "old/package-lock.json", PACKAGE_LOCK_V1);
    write(d, "y1/yarn.lock", YARN_V1);
    write(d, "y2/yarn.lock", YARN_BERRY);
    write(d, "p/pnpm-lock.yaml", PNPM);
    write(d, "py/requirements-dev.txt", REQUIREMENTS);
    write(d, "py/poetry.lock", POETRY);
    write(d, "py/Pipfile.lock", PIPFILE);
    write(d, "py/uv.lock", UV);
    write(d, "go/go.mod", GO_MOD);
    write(d, "rb/Gemfile.lock", GEMFILE);
    write(d, "php/composer.lock", COMPOSER);
    write(d, "jvm/gradle.lockfile", GRADLE);
    write(d, "net/packages.lock.json", NUGET);
    write(d, "dart/pubspec.lock", PUBSPEC);
    write(d, "ex/mix.lock", MIX);
    // Not descended into.
    write(d, "web/node_modules/x/package-lock.json", PACKAGE_LOCK_V1);
    dir
}

fn find<'a>(pkgs: &'a [audit::Package], name: &str, version: &str) -> &'a audit::Package {
    pkgs.iter()
        .find(|p| p.name == name && p.version == version)
        .unwrap_or_else(|| panic!("{name} {version} not in inventory"))
}

#[test]
fn every_lockfile_format_is_read() {
    let dir = project();
    let pkgs = inventory(dir.path()).unwrap();
    let expect = [
        (Ecosystem::CratesIo, "smallvec", "1.6.0", true),
        (Ecosystem::CratesIo, "time", "0.1.45", true),
        (Ecosystem::CratesIo, "libc", "0.2.150", false),
        (Ecosystem::Npm, "lodash", "4.17.20", true),
        (Ecosystem::Npm, "lodash", "4.17.21", false),
        (Ecosystem::Npm, "left-pad", "1.3.0", true),
        (Ecosystem::Npm, "minimist", "0.0.8", true),
        (Ecosystem::Npm, "inner", "2.0.0", false),
        (Ecosystem::Npm, "@babel/core", "7.22.5", false),
        (Ecosystem::Npm, "minimist", "1.2.5", false),
        (Ecosystem::Npm, "minimist", "1.2.6", false),
        (Ecosystem::Npm, "lodash", "4.17.15", true),
        (Ecosystem::Npm, "@types/node", "20.1.0", false),
        (Ecosystem::Npm, "react-dom", "18.2.0", false),
        (Ecosystem::PyPI, "Django", "3.2.0", true),
        (Ecosystem::PyPI, "requests", "2.25.0", true),
        (Ecosystem::PyPI, "Jinja2", "2.11.2", false),
        (Ecosystem::PyPI, "urllib3", "1.26.4", true),
        (Ecosystem::PyPI, "pyyaml", "5.3", true),
        (Ecosystem::Go, "github.com/gin-gonic/gin", "1.9.0", true),
        (Ecosystem::Go, "golang.org/x/net", "0.7.0", false),
        (Ecosystem::RubyGems, "nokogiri", "1.13.6", true),
        (Ecosystem::RubyGems, "racc", "1.6.0", false),
        (Ecosystem::RubyGems, "rack", "2.2.3", true),
        (Ecosystem::Packagist, "guzzlehttp/guzzle", "7.4.4", false),
        (Ecosystem::Maven, "org.apache.logging.log4j:log4j-core", "2.14.1", false),
        (Ecosystem::NuGet, "Newtonsoft.Json", "12.0.1", true),
        (Ecosystem::NuGet, "System.Text.Json", "6.0.0", false),
        (Ecosystem::Pub, "http", "0.13.0", true),
        (Ecosystem::Pub, "path", "1.8.0", false),
        (Ecosystem::Hex, "plug", "1.11.0", false),
    ];
    for (eco, name, version, direct) in expect {
        let p = find(&pkgs, name, version);
        assert_eq!((p.ecosystem, p.direct), (eco, direct), "{name} {version}");
    }
    assert!(!pkgs.iter().any(|p| p.name == "app" || p.name == "web" || p.name == "proj"));
    assert!(!pkgs.iter().any(|p| p.name == "flask"), "unpinned requirement");
    assert_eq!(pkgs.iter().filter(|p| p.name == "minimist" && p.version == "0.0.8").count(), 1);
    let smallvec = find(&pkgs, "smallvec", "1.6.0");
    assert!(matches!(&smallvec.hashes[0], audit::Hash::Sha256(h) if h.starts_with("fe0f37")));
    assert!(matches!(&find(&pkgs, "lodash", "4.17.20").hashes[0], audit::Hash::Sha512(h) if h.len() == 128));
    assert_eq!(find(&pkgs, "time", "0.1.45").dependencies[0].name, "libc");
    assert!(parse_lockfile("Cargo.lock", "[[package").is_err());
    assert!(parse_lockfile("package-lock.json", "{").is_err());
}

fn osv_fixture(dir: &Path) {
    let records = [
        (
            "RUSTSEC-2021-0003.json",
            r#"{
  "id": "RUSTSEC-2021-0003", "modified": "2021-01-08T12:00:00Z", "aliases": ["CVE-2021-25900", "GHSA-43w2-9j62-hq99"],
  "summary": "Buffer overflow in SmallVec::insert_many",
  "affected": [{"package": {"ecosystem": "crates.io", "name": "smallvec", "purl": "pkg:cargo/smallvec"},
    "ranges": [{"type": "SEMVER", "events": [{"introduced": "0.6.3"}, {"fixed": "0.6.14"}, {"introduced": "1.0.0"}, {"fixed": "1.6.1"}]}]}],
  "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}]
}"#,
        ),
        (
            "GHSA-43w2-9j62-hq99.json",
            r#"{
  "id": "GHSA-43w2-9j62-hq99", "modified": "2021-08-19T00:00:00Z", "aliases": ["CVE-2021-25900"],
  "summary": "Buffer overflow in smallvec",
  "affected": [{"package": {"ecosystem": "crates.io", "name": "smallvec"},
    "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "1.0.0"}, {"fixed": "1.6.1"}]}]}],
  "database_specific": {"severity": "CRITICAL"}
}"#,
        ),
        (
            "RUSTSEC-2020-0071.json",
            r#"{
  "id": "RUSTSEC-2020-0071", "modified": "2021-01-01T00:00:00Z", "aliases": ["CVE-2020-26235"],
  "summary": "Potential segfault in the time crate",
  "affected": [{"package": {"ecosystem": "crates.io", "name": "time"},
    "ranges": [{"type": "SEMVER", "events": [{"introduced": "0.0.0-0"}, {"fixed": "0.2.23"}]}]}],
  "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:N/I:N/A:H"}]
}"#,
        ),
        (
            "GHSA-35jh-r3h4-6jhm.json",
            r#"{
  "id": "GHSA-35jh-r3h4-6jhm", "modified": "2021-05-01T00:00:00Z", "aliases": ["CVE-2021-23337"],
  "summary": "Command Injection in lodash",
  "affected": [{"package": {"ecosystem": "npm", "name": "lodash"},
    "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "4.17.21"}]}]}],
  "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:H/UI:N/S:U/C:H/I:H/A:H"}],
  "database_specific": {"severity": "HIGH"}
}"#,
        ),
        (
            "CVE-2021-23337.json",
            r#"{
  "id": "CVE-2021-23337", "modified": "2021-05-01T00:00:00Z",
  "affected": [{"package": {"ecosystem": "npm", "name": "lodash"}, "versions": ["4.17.15", "4.17.20"]}]
}"#,
        ),
        (
            "GHSA-withdrawn.json",
            r#"{
  "id": "GHSA-xxxx-withdrawn", "modified": "2021-05-01T00:00:00Z", "withdrawn": "2021-06-01T00:00:00Z",
  "affected": [{"package": {"ecosystem": "npm", "name": "lodash"}, "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}]}]
}"#,
        ),
        (
            "PYSEC-2021-9.json",
            r#"{
  "id": "PYSEC-2021-9", "modified": "2021-05-01T00:00:00Z",
  "affected": [{"package": {"ecosystem": "PyPI", "name": "django"},
    "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "3.2"}, {"last_affected": "3.2.0"}]}]}],
  "database_specific": {"severity": "MODERATE"}
}"#,
        ),
        (
            "GHSA-jinja.json",
            r#"{
  "id": "GHSA-g3rq-g295-4j3m", "modified": "2021-05-01T00:00:00Z",
  "affected": [{"package": {"ecosystem": "PyPI", "name": "jinja2"},
    "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.11.3"}]}]}],
  "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:L"}]
}"#,
        ),
        (
            "GHSA-limit.json",
            r#"{
  "id": "GHSA-gin-limit", "modified": "2021-05-01T00:00:00Z",
  "affected": [{"package": {"ecosystem": "Go", "name": "github.com/gin-gonic/gin"},
    "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"limit": "1.9.0"}]}]}]
}"#,
        ),
        (
            "GHSA-log4shell.json",
            r#"{
  "id": "GHSA-jfh8-c2jp-5v3q", "modified": "2021-12-10T00:00:00Z", "aliases": ["CVE-2021-44228"],
  "summary": "Remote code injection in Log4j",
  "affected": [{"package": {"ecosystem": "Maven", "name": "org.apache.logging.log4j:log4j-core"},
    "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "2.13.0"}, {"fixed": "2.15.0"}, {"introduced": "2.0-beta9"}, {"fixed": "2.3.1"}]}]}],
  "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H"}]
}"#,
        ),
        (
            "DEBIAN-ignored.json",
            r#"{
  "id": "GHSA-rack-ignored", "modified": "2021-05-01T00:00:00Z",
  "affected": [{"package": {"ecosystem": "RubyGems", "name": "rack"},
    "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.2.4"}]}]}]
}"#,
        ),
    ];
    for (name, text) in records {
        write(dir, &format!("osv/{name}"), text);
    }
}

#[test]
fn audit_matches_ranges_aliases_and_ignores() {
    let dir = project();
    osv_fixture(dir.path());
    let db = Database::load(&dir.path().join("osv")).unwrap();
    assert_eq!(db.len(), 11);
    let pkgs = inventory(dir.path()).unwrap();
    let ignore = IgnoreConfig::parse(
        "osv-scanner.toml",
        "[[IgnoredVulns]]\nid = \"GHSA-rack-ignored\"\nignoreUntil = 2999-01-01\nreason = \"not reachable\"\n\n[[IgnoredVulns]]\nid = \"CVE-2020-26235\"\nignoreUntil = 2020-01-01T00:00:00Z\n",
    )
    .unwrap();
    let now = jiff::Timestamp::now();
    let report = audit::audit(&pkgs, &db, &ignore, now);
    let got: Vec<_> =
        report.vulnerabilities.iter().map(|v| (v.package.as_str(), v.version.as_str(), v.id.as_str())).collect();
    let want = [
        ("org.apache.logging.log4j:log4j-core", "2.14.1", "GHSA-jfh8-c2jp-5v3q"),
        ("smallvec", "1.6.0", "GHSA-43w2-9j62-hq99"),
        ("lodash", "4.17.15", "GHSA-35jh-r3h4-6jhm"),
        ("lodash", "4.17.20", "GHSA-35jh-r3h4-6jhm"),
        ("Django", "3.2.0", "PYSEC-2021-9"),
        ("Jinja2", "2.11.2", "GHSA-g3rq-g295-4j3m"),
        ("time", "0.1.45", "RUSTSEC-2020-0071"),
    ];
    assert_eq!(got, want, "{report:#?}");
    // GHSA + RUSTSEC + CVE for smallvec are one finding; severity from CVSS (9.8).
    let sv = &report.vulnerabilities[1];
    assert_eq!(sv.aliases, ["CVE-2021-25900", "RUSTSEC-2021-0003"]);
    assert_eq!((sv.severity, sv.score), (Severity::Critical, Some(9.8)));
    assert_eq!(sv.fixed.as_deref(), Some("1.6.1"));
    let log4j = &report.vulnerabilities[0];
    assert_eq!((log4j.severity, log4j.score, log4j.fixed.as_deref()), (Severity::Critical, Some(10.0), Some("2.15.0")));
    // The CVE record (explicit versions) merged into the GHSA; CVSS 7.2 is High.
    let lodash = &report.vulnerabilities[3];
    assert_eq!((lodash.severity, lodash.fixed.as_deref()), (Severity::High, Some("4.17.21")));
    assert_eq!(lodash.aliases, ["CVE-2021-23337"]);
    // database_specific.severity as a fallback.
    assert_eq!((report.vulnerabilities[4].severity, report.vulnerabilities[4].score), (Severity::Medium, None));
    assert_eq!(report.ignored, 1);
    assert!(report.fails(Severity::High));
    assert!(report.fails(Severity::Low));

    // Range edges: 1.6.1 fixed, 0.6.2 before introduced, 0.6.13 inside the first range;
    // last_affected is inclusive; limit is exclusive.
    let r = db.lookup(Ecosystem::CratesIo, "smallvec");
    let sv = r.iter().find(|r| r.id == "RUSTSEC-2021-0003").unwrap();
    assert!(sv.affects(Ecosystem::CratesIo, "smallvec", "1.6.1").is_none());
    assert!(sv.affects(Ecosystem::CratesIo, "smallvec", "0.6.2").is_none());
    assert_eq!(sv.affects(Ecosystem::CratesIo, "smallvec", "0.6.13").unwrap().fixed.as_deref(), Some("0.6.14"));
    assert!(sv.affects(Ecosystem::CratesIo, "smallvec", "1.0.0").is_some());
    let dj = &db.lookup(Ecosystem::PyPI, "Django")[0];
    assert!(dj.affects(Ecosystem::PyPI, "DJANGO", "3.2").is_some());
    assert!(dj.affects(Ecosystem::PyPI, "django", "3.2.1").is_none());
    let gin = &db.lookup(Ecosystem::Go, "github.com/gin-gonic/gin")[0];
    assert!(gin.affects(Ecosystem::Go, "github.com/gin-gonic/gin", "1.8.9").is_some());
    assert!(gin.affects(Ecosystem::Go, "github.com/gin-gonic/gin", "1.9.0").is_none());
    let log = &db.lookup(Ecosystem::Maven, "org.apache.logging.log4j:log4j-core")[0];
    assert!(log.affects(Ecosystem::Maven, "org.apache.logging.log4j:log4j-core", "2.0").is_some());
    assert!(log.affects(Ecosystem::Maven, "org.apache.logging.log4j:log4j-core", "2.3.1").is_none());
    assert!(log.affects(Ecosystem::Maven, "org.apache.logging.log4j:log4j-core", "2.12.0").is_none());

    let json: serde_json::Value = serde_json::from_str(&audit::render(Format::Json, &report)).unwrap();
    assert_eq!(json["vulnerabilities"][1]["id"], "GHSA-43w2-9j62-hq99");
    let sarif: serde_json::Value = serde_json::from_str(&audit::render(Format::Sarif, &report)).unwrap();
    assert_eq!(sarif["runs"][0]["results"].as_array().unwrap().len(), 7);
    let table = audit::render(Format::Table, &report);
    assert!(table.contains("7 vulnerabilities in"), "{table}");
}

#[test]
fn zip_database_and_bad_inputs() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    osv_fixture(dir.path());
    let zip_path = dir.path().join("all.zip");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
    for e in std::fs::read_dir(dir.path().join("osv")).unwrap() {
        let e = e.unwrap();
        zip.start_file(e.file_name().to_string_lossy(), zip::write::SimpleFileOptions::default()).unwrap();
        zip.write_all(&std::fs::read(e.path()).unwrap()).unwrap();
    }
    zip.finish().unwrap();
    let db = Database::load(&zip_path).unwrap();
    assert_eq!(db.len(), 11);
    write(dir.path(), "bad/x.json", "{\"id\": 3}");
    assert!(Database::load(&dir.path().join("bad")).is_err());
    assert!(IgnoreConfig::parse("x", "[[IgnoredVulns]]\nreason = \"no id\"\n").is_err());
    assert!("severe".parse::<Severity>().is_err());
    assert_eq!("moderate".parse::<Severity>().unwrap(), Severity::Medium);
}

#[test]
fn sboms() {
    let dir = project();
    let pkgs = inventory(dir.path()).unwrap();
    let cdx: serde_json::Value =
        serde_json::from_str(&sbom::render(sbom::Format::CycloneDx, "demo", &pkgs, "2024-01-01T00:00:00Z")).unwrap();
    assert_eq!(cdx["specVersion"], "1.6");
    assert_eq!(cdx["components"].as_array().unwrap().len(), pkgs.len());
    let sv = cdx["components"].as_array().unwrap().iter().find(|c| c["name"] == "smallvec").unwrap();
    assert_eq!(sv["purl"], "pkg:cargo/smallvec@1.6.0");
    assert_eq!(sv["hashes"][0]["alg"], "SHA-256");
    let time_dep =
        cdx["dependencies"].as_array().unwrap().iter().find(|d| d["ref"] == "pkg:cargo/time@0.1.45").unwrap();
    assert_eq!(time_dep["dependsOn"][0], "pkg:cargo/libc@0.2.150");
    let purls: Vec<_> = pkgs.iter().map(|p| p.purl()).collect();
    for want in [
        "pkg:npm/%40babel/core@7.22.5",
        "pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1",
        "pkg:golang/github.com/gin-gonic/gin@v1.9.0",
        "pkg:pypi/jinja2@2.11.2",
    ] {
        assert!(purls.iter().any(|p| p == want), "{want} not in {purls:?}");
    }
    let spdx: serde_json::Value =
        serde_json::from_str(&sbom::render(sbom::Format::Spdx, "demo", &pkgs, "2024-01-01T00:00:00Z")).unwrap();
    assert_eq!(spdx["spdxVersion"], "SPDX-2.3");
    assert_eq!(spdx["packages"].as_array().unwrap().len(), pkgs.len() + 1);
    assert!(spdx["relationships"].as_array().unwrap().iter().any(|r| r["relationshipType"] == "DESCRIBES"));
    // Reproducible.
    let again = sbom::render(sbom::Format::Spdx, "demo", &pkgs, "2024-01-01T00:00:00Z");
    assert_eq!(serde_json::to_value(&spdx).unwrap(), serde_json::from_str::<serde_json::Value>(&again).unwrap());
    assert!("xml".parse::<sbom::Format>().is_err());
}
