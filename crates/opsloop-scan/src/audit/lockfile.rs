//! Lockfile parsers: each turns one lockfile into packages (ecosystem, name, version, whether
//! the project depends on it directly, hashes and dependency edges where the format has them).
//!
//! Supported: `Cargo.lock`, `package-lock.json` (v1–v3), `yarn.lock` (v1 and berry),
//! `pnpm-lock.yaml` (v5–v9), pinned `requirements*.txt`, `poetry.lock`, `Pipfile.lock`,
//! `uv.lock`, `go.mod`, `Gemfile.lock`, `composer.lock`, `gradle.lockfile`,
//! `packages.lock.json`, `pubspec.lock`, `mix.lock`. Formats that do not record which packages
//! are direct (`poetry.lock`, `composer.lock`, `gradle.lockfile`, `mix.lock`, yarn's) report
//! every package as indirect rather than guess.

use std::collections::HashSet;
use std::path::Path;

use opsloop_config::yaml::{self, Node};
use serde_json::Value as Json;

use super::{AuditError, DepRef, Hash, Package};
use crate::version::Ecosystem;

/// Which parser reads a file, by its name; None for files that are not lockfiles.
pub fn kind_of(file_name: &str) -> Option<Ecosystem> {
    Some(match file_name {
        "Cargo.lock" => Ecosystem::CratesIo,
        "package-lock.json" | "npm-shrinkwrap.json" | "yarn.lock" | "pnpm-lock.yaml" => Ecosystem::Npm,
        "poetry.lock" | "Pipfile.lock" | "uv.lock" => Ecosystem::PyPI,
        n if n.starts_with("requirements") && n.ends_with(".txt") => Ecosystem::PyPI,
        "go.mod" => Ecosystem::Go,
        "Gemfile.lock" | "gems.locked" => Ecosystem::RubyGems,
        "composer.lock" => Ecosystem::Packagist,
        "gradle.lockfile" => Ecosystem::Maven,
        "packages.lock.json" => Ecosystem::NuGet,
        "pubspec.lock" => Ecosystem::Pub,
        "mix.lock" => Ecosystem::Hex,
        _ => return None,
    })
}

fn bad(path: &str, message: impl std::fmt::Display) -> AuditError {
    AuditError::Lockfile { path: path.to_owned(), message: message.to_string() }
}

fn pkg(eco: Ecosystem, name: &str, version: &str, direct: bool, source: &str) -> Package {
    Package {
        ecosystem: eco,
        name: name.to_owned(),
        version: version.to_owned(),
        direct,
        source: source.to_owned(),
        hashes: Vec::new(),
        dependencies: Vec::new(),
    }
}

/// Parses `text` as the lockfile `path` names (its file name decides the format).
pub fn parse(path: &str, text: &str) -> Result<Vec<Package>, AuditError> {
    let name = Path::new(path).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut out = match name.as_str() {
        "Cargo.lock" => cargo(path, text)?,
        "package-lock.json" | "npm-shrinkwrap.json" => npm(path, text)?,
        "yarn.lock" => yarn(path, text),
        "pnpm-lock.yaml" => pnpm(path, text)?,
        "poetry.lock" => poetry(path, text)?,
        "Pipfile.lock" => pipfile(path, text)?,
        "uv.lock" => uv(path, text)?,
        "go.mod" => gomod(path, text),
        "Gemfile.lock" | "gems.locked" => gemfile(path, text),
        "composer.lock" => composer(path, text)?,
        "gradle.lockfile" => gradle(path, text),
        "packages.lock.json" => nuget(path, text)?,
        "pubspec.lock" => pubspec(path, text)?,
        "mix.lock" => mix(path, text),
        n if n.starts_with("requirements") && n.ends_with(".txt") => requirements(path, text),
        _ => return Err(bad(path, "not a supported lockfile")),
    };
    // One entry per (name, version): lockfiles list a package once per place it is installed.
    let mut seen = HashSet::new();
    out.retain(|p| seen.insert((p.name.clone(), p.version.clone())));
    Ok(out)
}

fn toml_doc(path: &str, text: &str) -> Result<toml::Table, AuditError> {
    text.parse::<toml::Table>().map_err(|e| bad(path, e))
}

fn json_doc(path: &str, text: &str) -> Result<Json, AuditError> {
    serde_json::from_str(text).map_err(|e| bad(path, e))
}

fn tstr<'a>(t: &'a toml::Value, key: &str) -> &'a str {
    t.get(key).and_then(toml::Value::as_str).unwrap_or_default()
}

fn cargo(path: &str, text: &str) -> Result<Vec<Package>, AuditError> {
    let doc = toml_doc(path, text)?;
    let empty = Vec::new();
    let packages = doc.get("package").and_then(toml::Value::as_array).unwrap_or(&empty);
    let dep_ref = |d: &str| {
        let mut it = d.split(' ');
        DepRef { name: it.next().unwrap_or_default().to_owned(), version: it.next().map(str::to_owned) }
    };
    let deps_of = |p: &toml::Value| -> Vec<DepRef> {
        p.get("dependencies")
            .and_then(toml::Value::as_array)
            .map(|a| a.iter().filter_map(|d| d.as_str()).map(dep_ref).collect())
            .unwrap_or_default()
    };
    // Packages without a source are the workspace's own crates: what they depend on is direct.
    let direct: HashSet<String> = packages
        .iter()
        .filter(|p| p.get("source").is_none())
        .flat_map(|p| deps_of(p).into_iter().map(|d| d.name))
        .collect();
    let mut out = Vec::new();
    for p in packages.iter().filter(|p| p.get("source").is_some()) {
        let name = tstr(p, "name");
        let mut package = pkg(Ecosystem::CratesIo, name, tstr(p, "version"), direct.contains(name), path);
        if let Some(sum) = p.get("checksum").and_then(toml::Value::as_str) {
            package.hashes.push(Hash::Sha256(sum.to_owned()));
        }
        package.dependencies = deps_of(p);
        out.push(package);
    }
    Ok(out)
}

/// `sha512-<base64>` (npm's SRI integrity) as a hex digest.
fn sri_hash(integrity: &str) -> Option<Hash> {
    use base64::Engine;
    let (alg, b64) = integrity.split_whitespace().next()?.split_once('-')?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let hex = hex::encode(bytes);
    match alg {
        "sha512" => Some(Hash::Sha512(hex)),
        "sha256" => Some(Hash::Sha256(hex)),
        "sha1" => Some(Hash::Sha1(hex)),
        _ => None,
    }
}

fn npm(path: &str, text: &str) -> Result<Vec<Package>, AuditError> {
    let doc = json_doc(path, text)?;
    let mut out = Vec::new();
    let names = |v: Option<&Json>| -> Vec<String> {
        v.and_then(Json::as_object).map(|m| m.keys().cloned().collect()).unwrap_or_default()
    };
    if let Some(packages) = doc.get("packages").and_then(Json::as_object) {
        let root = packages.get("");
        let direct: HashSet<String> = ["dependencies", "devDependencies", "optionalDependencies"]
            .iter()
            .flat_map(|k| names(root.and_then(|r| r.get(*k))))
            .collect();
        for (key, p) in packages {
            if key.is_empty() || p.get("link").and_then(Json::as_bool) == Some(true) {
                continue;
            }
            let Some(idx) = key.rfind("node_modules/") else {
                continue;
            };
            let name = p.get("name").and_then(Json::as_str).unwrap_or(&key[idx + "node_modules/".len()..]);
            let Some(version) = p.get("version").and_then(Json::as_str) else {
                continue;
            };
            let top = key == &format!("node_modules/{name}");
            let mut package = pkg(Ecosystem::Npm, name, version, top && direct.contains(name), path);
            package.hashes.extend(p.get("integrity").and_then(Json::as_str).and_then(sri_hash));
            package.dependencies =
                names(p.get("dependencies")).into_iter().map(|name| DepRef { name, version: None }).collect();
            out.push(package);
        }
        return Ok(out);
    }
    // v1: nested `dependencies`.
    fn walk(deps: &serde_json::Map<String, Json>, top: bool, path: &str, out: &mut Vec<Package>) {
        for (name, d) in deps {
            if let Some(version) = d.get("version").and_then(Json::as_str) {
                let mut package = pkg(Ecosystem::Npm, name, version, top, path);
                package.hashes.extend(d.get("integrity").and_then(Json::as_str).and_then(sri_hash));
                package.dependencies = d
                    .get("requires")
                    .and_then(Json::as_object)
                    .map(|m| m.keys().map(|n| DepRef { name: n.clone(), version: None }).collect())
                    .unwrap_or_default();
                out.push(package);
            }
            if let Some(nested) = d.get("dependencies").and_then(Json::as_object) {
                walk(nested, false, path, out);
            }
        }
    }
    if let Some(deps) = doc.get("dependencies").and_then(Json::as_object) {
        walk(deps, true, path, &mut out);
    }
    Ok(out)
}

/// `name@range` (possibly `@scope/name@range`, possibly `name@npm:range`) to the name.
fn npm_spec_name(spec: &str) -> &str {
    let spec = spec.trim().trim_matches('"');
    match spec[1.min(spec.len())..].find('@') {
        Some(i) => &spec[..i + 1],
        None => spec,
    }
}

fn yarn(path: &str, text: &str) -> Vec<Package> {
    let mut out = Vec::new();
    let mut name: Option<String> = None;
    let mut skip = false;
    for line in text.lines() {
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if !line.starts_with(' ') {
            let header = line.trim_end_matches(':');
            let first = header.split(',').next().unwrap_or_default();
            let n = npm_spec_name(first);
            skip = n == "__metadata" || header.contains("@workspace:") || header.contains("@link:");
            name = Some(n.to_owned());
            continue;
        }
        let t = line.trim();
        let version = t.strip_prefix("version ").or_else(|| t.strip_prefix("version: "));
        if let (Some(v), Some(n), false) = (version, &name, skip) {
            let v = v.trim().trim_matches('"');
            if v != "0.0.0-use.local" {
                out.push(pkg(Ecosystem::Npm, n, v, false, path));
            }
        }
        let integrity = t.strip_prefix("integrity ").or_else(|| t.strip_prefix("checksum: "));
        if let (Some(i), Some(last)) = (integrity, out.last_mut())
            && last.hashes.is_empty()
        {
            let i = i.trim().trim_matches('"');
            if let Some(h) = sri_hash(i) {
                last.hashes.push(h);
            }
        }
    }
    out
}

fn ystr(n: &Node) -> Option<String> {
    n.scalar_text()
}

fn pnpm_key(key: &str) -> Option<(String, String)> {
    let key = key.trim_start_matches('/');
    // Peer suffixes: `(react@18.2.0)` from v6 on, `_react@18.2.0` in v5.
    let key = key.split('(').next().unwrap_or(key);
    if let Some(i) = key[1.min(key.len())..].rfind('@') {
        let (name, version) = key.split_at(i + 1);
        let version = &version[1..];
        if !name.contains('/') || name.starts_with('@') && name.matches('/').count() == 1 {
            return Some((name.to_owned(), version.to_owned()));
        }
    }
    // v5: `name/1.2.3` or `@scope/name/1.2.3_peer`.
    let (name, version) = key.rsplit_once('/')?;
    let version = version.split('_').next().unwrap_or(version);
    Some((name.to_owned(), version.to_owned()))
}

fn pnpm(path: &str, text: &str) -> Result<Vec<Package>, AuditError> {
    let doc = yaml::parse(text).map_err(|e| bad(path, e.message))?;
    let mut direct = HashSet::new();
    let mut add_direct = |importer: &Node| {
        for section in ["dependencies", "devDependencies", "optionalDependencies"] {
            if let Some(m) = importer.get(section).and_then(Node::as_mapping) {
                for (k, _) in m {
                    direct.insert(k.name.clone());
                }
            }
        }
    };
    add_direct(&doc);
    if let Some(importers) = doc.get("importers").and_then(Node::as_mapping) {
        for (_, imp) in importers {
            add_direct(imp);
        }
    }
    let mut out = Vec::new();
    if let Some(packages) = doc.get("packages").and_then(Node::as_mapping) {
        for (key, p) in packages {
            let Some((name, mut version)) = pnpm_key(&key.name) else {
                continue;
            };
            if let Some(v) = p.get("version").and_then(ystr) {
                version = v;
            }
            let mut package = pkg(Ecosystem::Npm, &name, &version, direct.contains(&name), path);
            if let Some(i) = p.get("resolution").and_then(|r| r.get("integrity")).and_then(ystr) {
                package.hashes.extend(sri_hash(&i));
            }
            if let Some(deps) = p.get("dependencies").and_then(Node::as_mapping) {
                package.dependencies = deps
                    .iter()
                    .map(|(k, v)| DepRef {
                        name: k.name.clone(),
                        version: ystr(v).map(|s| s.split('(').next().unwrap_or("").to_owned()),
                    })
                    .collect();
            }
            out.push(package);
        }
    }
    Ok(out)
}

fn requirements(path: &str, text: &str) -> Vec<Package> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split(" #").next().unwrap_or(line).trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('-') {
            continue;
        }
        let spec = line.split(';').next().unwrap_or(line).trim();
        let Some((name, version)) = spec.split_once("==") else {
            continue;
        };
        let version = version.trim_start_matches('=').trim();
        if version.contains(['*', ',', ' ']) {
            continue;
        }
        let name = name.split('[').next().unwrap_or(name).trim();
        out.push(pkg(Ecosystem::PyPI, name, version, true, path));
    }
    out
}

fn toml_packages(doc: &toml::Table) -> &[toml::Value] {
    doc.get("package").and_then(toml::Value::as_array).map(Vec::as_slice).unwrap_or_default()
}

fn poetry(path: &str, text: &str) -> Result<Vec<Package>, AuditError> {
    let doc = toml_doc(path, text)?;
    Ok(toml_packages(&doc)
        .iter()
        .map(|p| {
            let mut package = pkg(Ecosystem::PyPI, tstr(p, "name"), tstr(p, "version"), false, path);
            package.dependencies = p
                .get("dependencies")
                .and_then(toml::Value::as_table)
                .map(|t| t.keys().map(|k| DepRef { name: k.clone(), version: None }).collect())
                .unwrap_or_default();
            package
        })
        .collect())
}

fn pipfile(path: &str, text: &str) -> Result<Vec<Package>, AuditError> {
    let doc = json_doc(path, text)?;
    let mut out = Vec::new();
    for section in ["default", "develop"] {
        let Some(m) = doc.get(section).and_then(Json::as_object) else {
            continue;
        };
        for (name, p) in m {
            let Some(v) = p.get("version").and_then(Json::as_str) else {
                continue;
            };
            let mut package = pkg(Ecosystem::PyPI, name, v.trim_start_matches('='), true, path);
            if let Some(h) = p
                .get("hashes")
                .and_then(Json::as_array)
                .and_then(|a| a.first())
                .and_then(Json::as_str)
                .and_then(|h| h.strip_prefix("sha256:"))
            {
                package.hashes.push(Hash::Sha256(h.to_owned()));
            }
            out.push(package);
        }
    }
    Ok(out)
}

fn uv(path: &str, text: &str) -> Result<Vec<Package>, AuditError> {
    let doc = toml_doc(path, text)?;
    let packages = toml_packages(&doc);
    let is_root = |p: &toml::Value| {
        p.get("source")
            .and_then(toml::Value::as_table)
            .is_some_and(|s| s.contains_key("editable") || s.contains_key("virtual"))
    };
    let deps_of = |p: &toml::Value| -> Vec<DepRef> {
        p.get("dependencies")
            .and_then(toml::Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|d| DepRef {
                        name: tstr(d, "name").to_owned(),
                        version: d.get("version").and_then(toml::Value::as_str).map(str::to_owned),
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let direct: HashSet<String> =
        packages.iter().filter(|p| is_root(p)).flat_map(|p| deps_of(p).into_iter().map(|d| d.name)).collect();
    Ok(packages
        .iter()
        .filter(|p| !is_root(p))
        .map(|p| {
            let name = tstr(p, "name");
            let mut package = pkg(Ecosystem::PyPI, name, tstr(p, "version"), direct.contains(name), path);
            if let Some(h) = p
                .get("sdist")
                .and_then(|s| s.get("hash"))
                .and_then(toml::Value::as_str)
                .and_then(|h| h.strip_prefix("sha256:"))
            {
                package.hashes.push(Hash::Sha256(h.to_owned()));
            }
            package.dependencies = deps_of(p);
            package
        })
        .collect())
}

fn gomod(path: &str, text: &str) -> Vec<Package> {
    let mut out = Vec::new();
    let mut in_require = false;
    for raw in text.lines() {
        let (line, comment) = match raw.split_once("//") {
            Some((l, c)) => (l.trim(), c.trim()),
            None => (raw.trim(), ""),
        };
        let spec = if in_require {
            if line == ")" {
                in_require = false;
                continue;
            }
            line
        } else if let Some(rest) = line.strip_prefix("require") {
            let rest = rest.trim();
            if rest == "(" {
                in_require = true;
                continue;
            }
            rest
        } else {
            continue;
        };
        let mut parts = spec.split_whitespace();
        if let (Some(module), Some(version)) = (parts.next(), parts.next()) {
            out.push(pkg(Ecosystem::Go, module, version.trim_start_matches('v'), comment != "indirect", path));
        }
    }
    out
}

fn gemfile(path: &str, text: &str) -> Vec<Package> {
    let mut out: Vec<Package> = Vec::new();
    let mut section = "";
    let mut direct = HashSet::new();
    for line in text.lines() {
        if !line.starts_with(' ') {
            section = line.trim();
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let t = line.trim();
        if section == "DEPENDENCIES" {
            let name = t.split([' ', '!']).next().unwrap_or(t);
            direct.insert(name.to_owned());
            continue;
        }
        if !matches!(section, "GEM" | "GIT" | "PATH") {
            continue;
        }
        let Some((name, rest)) = t.split_once(" (") else {
            continue;
        };
        let version = rest.trim_end_matches(')');
        if indent == 4 {
            // A platform suffix (`1.13.6-x86_64-linux`) is not part of the version.
            let version = match version.split_once('-') {
                Some((v, plat)) if plat.starts_with(|c: char| c.is_ascii_alphabetic()) => v,
                _ => version,
            };
            out.push(pkg(Ecosystem::RubyGems, name, version, false, path));
        } else if indent == 6
            && let Some(last) = out.last_mut()
        {
            last.dependencies.push(DepRef { name: name.to_owned(), version: None });
        }
    }
    for p in &mut out {
        p.direct = direct.contains(&p.name);
    }
    out
}

fn composer(path: &str, text: &str) -> Result<Vec<Package>, AuditError> {
    let doc = json_doc(path, text)?;
    let mut out = Vec::new();
    for section in ["packages", "packages-dev"] {
        for p in doc.get(section).and_then(Json::as_array).map(Vec::as_slice).unwrap_or_default() {
            let (Some(name), Some(version)) =
                (p.get("name").and_then(Json::as_str), p.get("version").and_then(Json::as_str))
            else {
                continue;
            };
            let version = version.strip_prefix('v').unwrap_or(version);
            out.push(pkg(Ecosystem::Packagist, name, version, false, path));
        }
    }
    Ok(out)
}

fn gradle(path: &str, text: &str) -> Vec<Package> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("empty="))
        .filter_map(|l| {
            let coords = l.split('=').next()?;
            let mut parts = coords.split(':');
            let (g, a, v) = (parts.next()?, parts.next()?, parts.next()?);
            Some(pkg(Ecosystem::Maven, &format!("{g}:{a}"), v, false, path))
        })
        .collect()
}

fn nuget(path: &str, text: &str) -> Result<Vec<Package>, AuditError> {
    let doc = json_doc(path, text)?;
    let mut out = Vec::new();
    if let Some(frameworks) = doc.get("dependencies").and_then(Json::as_object) {
        for deps in frameworks.values().filter_map(Json::as_object) {
            for (name, d) in deps {
                let Some(v) = d.get("resolved").and_then(Json::as_str) else {
                    continue;
                };
                if d.get("type").and_then(Json::as_str) == Some("Project") {
                    continue;
                }
                let direct = d.get("type").and_then(Json::as_str) == Some("Direct");
                let mut package = pkg(Ecosystem::NuGet, name, v, direct, path);
                package.dependencies = d
                    .get("dependencies")
                    .and_then(Json::as_object)
                    .map(|m| m.keys().map(|n| DepRef { name: n.clone(), version: None }).collect())
                    .unwrap_or_default();
                out.push(package);
            }
        }
    }
    Ok(out)
}

fn pubspec(path: &str, text: &str) -> Result<Vec<Package>, AuditError> {
    let doc = yaml::parse(text).map_err(|e| bad(path, e.message))?;
    let mut out = Vec::new();
    if let Some(packages) = doc.get("packages").and_then(Node::as_mapping) {
        for (k, p) in packages {
            let Some(version) = p.get("version").and_then(ystr) else {
                continue;
            };
            let direct = p.get("dependency").and_then(ystr).is_some_and(|d| d.starts_with("direct"));
            if p.get("source").and_then(ystr).as_deref() == Some("sdk") {
                continue;
            }
            out.push(pkg(Ecosystem::Pub, &k.name, &version, direct, path));
        }
    }
    Ok(out)
}

fn mix(path: &str, text: &str) -> Vec<Package> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((_, rest)) = line.split_once("{:hex, :") else {
            continue;
        };
        let mut fields = rest.splitn(4, ',');
        let (Some(name), Some(version)) = (fields.next(), fields.next()) else {
            continue;
        };
        let mut package = pkg(Ecosystem::Hex, name.trim(), version.trim().trim_matches('"'), false, path);
        if let Some(h) = fields.next().map(|h| h.trim().trim_matches('"'))
            && h.len() == 64
        {
            package.hashes.push(Hash::Sha256(h.to_owned()));
        }
        out.push(package);
    }
    out
}

/// Every lockfile under `root` (not descending into `node_modules`, `vendor`, `target` or
/// `.git`), parsed; packages sorted by ecosystem, name and version.
pub fn inventory(root: &Path) -> Result<Vec<Package>, AuditError> {
    let mut out = Vec::new();
    let files: Vec<_> = if root.is_file() {
        vec![root.to_path_buf()]
    } else {
        walkdir::WalkDir::new(root)
            .into_iter()
            .filter_entry(|e| {
                !(e.file_type().is_dir()
                    && matches!(e.file_name().to_str(), Some("node_modules" | "vendor" | "target" | ".git")))
            })
            .flatten()
            .filter(|e| e.file_type().is_file())
            .filter(|e| kind_of(&e.file_name().to_string_lossy()).is_some())
            .map(walkdir::DirEntry::into_path)
            .collect()
    };
    for file in files {
        let rel = file
            .strip_prefix(root)
            .ok()
            .filter(|r| !r.as_os_str().is_empty())
            .unwrap_or(&file)
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(&file).map_err(|source| AuditError::Io { path: file.clone(), source })?;
        out.extend(parse(&rel, &text)?);
    }
    out.sort_by(|a, b| {
        (a.ecosystem, &a.name, &a.version, &a.source).cmp(&(b.ecosystem, &b.name, &b.version, &b.source))
    });
    Ok(out)
}
