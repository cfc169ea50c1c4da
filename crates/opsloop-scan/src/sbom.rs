//! SBOMs from an inventory: CycloneDX 1.6 JSON and SPDX 2.3 JSON, with package URLs, the hashes
//! lockfiles record, and dependency relationships where the lockfile has edges.
//!
//! Documents are reproducible: the serial number and SPDX namespace derive from the inventory's
//! content, and the creation time is the caller's, so that the same lockfiles give the same SBOM
//! (diffable, cacheable) unless the time is meant to differ.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::audit::{Hash, Package};

/// SBOM formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    CycloneDx,
    Spdx,
}

#[derive(Debug, thiserror::Error)]
#[error("unknown SBOM format {0:?} (cyclonedx, spdx)")]
pub struct UnknownFormat(pub String);

impl std::str::FromStr for Format {
    type Err = UnknownFormat;
    fn from_str(s: &str) -> Result<Format, UnknownFormat> {
        match s {
            "cyclonedx" => Ok(Format::CycloneDx),
            "spdx" => Ok(Format::Spdx),
            other => Err(UnknownFormat(other.to_owned())),
        }
    }
}

fn digest(packages: &[Package]) -> String {
    let mut h = Sha256::new();
    for p in packages {
        h.update(p.purl().as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

fn uuid_like(hex: &str) -> String {
    format!("{}-{}-4{}-8{}-{}", &hex[0..8], &hex[8..12], &hex[13..16], &hex[17..20], &hex[20..32])
}

/// Resolves each package's dependency edges to indices of `packages`: the same lockfile first,
/// the same version when the edge names one.
fn edges(packages: &[Package]) -> Vec<Vec<usize>> {
    let mut by_name: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
    for (i, p) in packages.iter().enumerate() {
        by_name.entry((p.source.as_str(), p.name.as_str())).or_default().push(i);
    }
    packages
        .iter()
        .map(|p| {
            let mut out: Vec<usize> = p
                .dependencies
                .iter()
                .filter_map(|d| {
                    let candidates = by_name.get(&(p.source.as_str(), d.name.as_str()))?;
                    candidates
                        .iter()
                        .copied()
                        .find(|&i| d.version.as_deref().is_none_or(|v| packages[i].version == v))
                        .or_else(|| candidates.first().copied())
                })
                .collect();
            out.sort_unstable();
            out.dedup();
            out
        })
        .collect()
}

/// Renders an SBOM for the project `name`, created at `created` (RFC 3339).
pub fn render(format: Format, name: &str, packages: &[Package], created: &str) -> String {
    let doc = match format {
        Format::CycloneDx => cyclonedx(name, packages, created),
        Format::Spdx => spdx(name, packages, created),
    };
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

fn cyclonedx_hash(h: &Hash) -> Value {
    let (alg, content) = match h {
        Hash::Sha1(c) => ("SHA-1", c),
        Hash::Sha256(c) => ("SHA-256", c),
        Hash::Sha512(c) => ("SHA-512", c),
    };
    json!({"alg": alg, "content": content})
}

pub fn cyclonedx(name: &str, packages: &[Package], created: &str) -> Value {
    let refs: Vec<String> = packages.iter().map(Package::purl).collect();
    let components: Vec<Value> = packages
        .iter()
        .zip(&refs)
        .map(|(p, r)| {
            let mut c = json!({
                "type": "library",
                "bom-ref": r,
                "name": p.name,
                "version": p.version,
                "purl": r,
                "properties": [
                    {"name": "opsloop:ecosystem", "value": p.ecosystem.as_str()},
                    {"name": "opsloop:lockfile", "value": p.source},
                    {"name": "opsloop:direct", "value": p.direct.to_string()},
                ],
            });
            if !p.hashes.is_empty() {
                c["hashes"] = Value::Array(p.hashes.iter().map(cyclonedx_hash).collect());
            }
            c
        })
        .collect();
    let edges = edges(packages);
    let root = "root-component";
    let mut dependencies = vec![json!({
        "ref": root,
        "dependsOn": packages.iter().zip(&refs).filter(|(p, _)| p.direct).map(|(_, r)| r.clone()).collect::<Vec<_>>(),
    })];
    let mut seen = std::collections::BTreeSet::new();
    for (i, r) in refs.iter().enumerate() {
        if seen.insert(r.clone()) {
            dependencies.push(json!({
                "ref": r,
                "dependsOn": edges[i].iter().map(|&j| refs[j].clone()).collect::<Vec<_>>(),
            }));
        }
    }
    json!({
        "$schema": "http://cyclonedx.org/schema/bom-1.6.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": format!("urn:uuid:{}", uuid_like(&digest(packages))),
        "version": 1,
        "metadata": {
            "timestamp": created,
            "tools": {"components": [{"type": "application", "name": "opsloop", "version": env!("CARGO_PKG_VERSION")}]},
            "component": {"type": "application", "bom-ref": root, "name": name},
        },
        "components": components,
        "dependencies": dependencies,
    })
}

fn spdx_id(i: usize) -> String {
    format!("SPDXRef-Package-{i}")
}

pub fn spdx(name: &str, packages: &[Package], created: &str) -> Value {
    let root = "SPDXRef-Package-root";
    let mut list = vec![json!({
        "name": name,
        "SPDXID": root,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": "APPLICATION",
    })];
    for (i, p) in packages.iter().enumerate() {
        let checksums: Vec<Value> = p
            .hashes
            .iter()
            .map(|h| {
                let (alg, v) = match h {
                    Hash::Sha1(c) => ("SHA1", c),
                    Hash::Sha256(c) => ("SHA256", c),
                    Hash::Sha512(c) => ("SHA512", c),
                };
                json!({"algorithm": alg, "checksumValue": v})
            })
            .collect();
        let mut entry = json!({
            "name": p.name,
            "SPDXID": spdx_id(i),
            "versionInfo": p.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "primaryPackagePurpose": "LIBRARY",
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": p.purl(),
            }],
        });
        if !checksums.is_empty() {
            entry["checksums"] = Value::Array(checksums);
        }
        list.push(entry);
    }
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": root,
    })];
    for (i, p) in packages.iter().enumerate() {
        if p.direct {
            relationships.push(json!({
                "spdxElementId": root,
                "relationshipType": "DEPENDS_ON",
                "relatedSpdxElement": spdx_id(i),
            }));
        }
    }
    for (i, deps) in edges(packages).iter().enumerate() {
        for &j in deps {
            relationships.push(json!({
                "spdxElementId": spdx_id(i),
                "relationshipType": "DEPENDS_ON",
                "relatedSpdxElement": spdx_id(j),
            }));
        }
    }
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": name,
        "documentNamespace": format!("https://example.invalid/opsloop/spdx/{name}-{}", uuid_like(&digest(packages))),
        "creationInfo": {
            "created": created,
            "creators": [format!("Tool: opsloop-{}", env!("CARGO_PKG_VERSION"))],
        },
        "packages": list,
        "relationships": relationships,
    })
}
