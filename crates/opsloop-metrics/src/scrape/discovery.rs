//! Where targets come from: `static_configs`, `file_sd_configs` (files polled for changes at
//! their `refresh_interval`), `http_sd_configs`, and `dns_sd_configs` of type A/AAAA.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::SystemTime;

use opsloop_config::yaml::{self, Node, Value};

use crate::config::{DnsSdConfig, FileSdConfig, HttpSdConfig, TargetGroup};

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("{source_name}: {message}")]
    Invalid { source_name: String, message: String },
    #[error("{source_name}: {error}")]
    Io {
        source_name: String,
        #[source]
        error: std::io::Error,
    },
    #[error("{source_name}: {error}")]
    Http {
        source_name: String,
        #[source]
        error: reqwest::Error,
    },
}

/// Target groups as file and HTTP discovery write them: a list of `{targets, labels}`, in
/// JSON or YAML (JSON being YAML, one parser reads both).
pub fn parse_groups(text: &str, source_name: &str) -> Result<Vec<TargetGroup>, DiscoveryError> {
    let invalid = |message: String| DiscoveryError::Invalid { source_name: source_name.to_owned(), message };
    let root = yaml::parse(text).map_err(|e| invalid(format!("{}:{}: {}", e.span.line, e.span.column, e.message)))?;
    let items: &[Node] = match &root.value {
        Value::Sequence(items) => items,
        // An empty file is an empty list.
        Value::Mapping(m) if m.is_empty() => &[],
        Value::Null => &[],
        _ => return Err(invalid("expected a list of target groups".into())),
    };
    let mut groups = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Some(entries) = item.as_mapping() else {
            return Err(invalid(format!("group {i} is not a mapping")));
        };
        let mut group = TargetGroup { source: format!("{source_name}:{i}"), ..TargetGroup::default() };
        for (key, value) in entries {
            match key.name.as_str() {
                "targets" => match &value.value {
                    Value::Sequence(ts) => {
                        for t in ts {
                            let text = t
                                .scalar_text()
                                .ok_or_else(|| invalid(format!("group {i}: a target must be a string")))?;
                            group.targets.push(text);
                        }
                    }
                    Value::Null => {}
                    _ => return Err(invalid(format!("group {i}: targets must be a list"))),
                },
                "labels" => match &value.value {
                    Value::Mapping(ls) => {
                        for (n, v) in ls {
                            if !crate::relabel::is_valid_label_name(&n.name) {
                                return Err(invalid(format!("group {i}: {:?} is not a valid label name", n.name)));
                            }
                            let v = v
                                .scalar_text()
                                .ok_or_else(|| invalid(format!("group {i}: label {} must be a string", n.name)))?;
                            group.labels.insert(n.name.clone(), v);
                        }
                    }
                    Value::Null => {}
                    _ => return Err(invalid(format!("group {i}: labels must be a mapping"))),
                },
                other => return Err(invalid(format!("group {i}: unknown key {other:?}"))),
            }
        }
        groups.push(group);
    }
    Ok(groups)
}

/// The files of one `file_sd_config` as last read, re-read only when their modification time
/// changes; a file that stops parsing keeps its last good groups (as Prometheus does).
#[derive(Debug, Default)]
pub struct FileSd {
    files: BTreeMap<PathBuf, (Option<SystemTime>, Vec<TargetGroup>)>,
}

impl FileSd {
    /// Polls the patterns; returns the groups of every matching file and the problems met.
    pub fn refresh(&mut self, config: &FileSdConfig) -> (Vec<TargetGroup>, Vec<DiscoveryError>) {
        let mut errors = Vec::new();
        let mut present = BTreeMap::new();
        for pattern in &config.files {
            let Ok(paths) = glob::glob(pattern) else {
                errors
                    .push(DiscoveryError::Invalid { source_name: pattern.clone(), message: "invalid pattern".into() });
                continue;
            };
            for path in paths.flatten() {
                let mtime = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
                let entry = match self.files.remove(&path) {
                    Some((seen, groups)) if seen == mtime && mtime.is_some() => (seen, groups),
                    previous => {
                        let name = path.display().to_string();
                        let read = std::fs::read_to_string(&path)
                            .map_err(|error| DiscoveryError::Io { source_name: name.clone(), error })
                            .and_then(|text| parse_groups(&text, &name));
                        match read {
                            Ok(mut groups) => {
                                for g in &mut groups {
                                    g.labels.insert("__meta_filepath".into(), name.clone());
                                }
                                (mtime, groups)
                            }
                            Err(e) => {
                                errors.push(e);
                                // Retried at the next poll: the time is forgotten.
                                (None, previous.map(|(_, g)| g).unwrap_or_default())
                            }
                        }
                    }
                };
                present.insert(path, entry);
            }
        }
        self.files = present;
        (self.files.values().flat_map(|(_, g)| g.iter().cloned()).collect(), errors)
    }
}

/// One poll of an HTTP discovery endpoint (the same group list as files, in JSON).
pub async fn http_sd(client: &reqwest::Client, config: &HttpSdConfig) -> Result<Vec<TargetGroup>, DiscoveryError> {
    let source_name = config.url.clone();
    let http = |error| DiscoveryError::Http { source_name: source_name.clone(), error };
    let response = client.get(&config.url).send().await.and_then(|r| r.error_for_status()).map_err(http)?;
    let text = response.text().await.map_err(http)?;
    let mut groups = parse_groups(&text, &config.url)?;
    for g in &mut groups {
        g.labels.insert("__meta_url".into(), config.url.clone());
    }
    Ok(groups)
}

/// A and AAAA lookups; SRV, MX and NS need a DNS client opsloop does not carry.
pub async fn dns_sd(config: &DnsSdConfig) -> (Vec<TargetGroup>, Vec<DiscoveryError>) {
    let mut groups = Vec::new();
    let mut errors = Vec::new();
    for name in &config.names {
        if config.record_type != "A" && config.record_type != "AAAA" {
            errors.push(DiscoveryError::Invalid {
                source_name: name.clone(),
                message: format!("DNS record type {} is not supported", config.record_type),
            });
            continue;
        }
        match tokio::net::lookup_host((name.as_str(), config.port)).await {
            Ok(addrs) => {
                let want_v6 = config.record_type == "AAAA";
                let targets: Vec<String> = addrs.filter(|a| a.is_ipv6() == want_v6).map(|a| a.to_string()).collect();
                let mut labels = BTreeMap::new();
                labels.insert("__meta_dns_name".into(), name.clone());
                groups.push(TargetGroup { targets, labels, source: name.clone() });
            }
            Err(error) => errors.push(DiscoveryError::Io { source_name: name.clone(), error }),
        }
    }
    (groups, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_from_json_and_yaml() {
        let json = r#"[{"targets": ["a:1", "b:2"], "labels": {"env": "prod"}}, {"targets": []}]"#;
        let g = parse_groups(json, "t.json").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].targets, vec!["a:1".to_owned(), "b:2".to_owned()]);
        assert_eq!(g[0].labels["env"], "prod");
        let yml = "- targets: [c:3]\n  labels:\n    team: x\n";
        assert_eq!(parse_groups(yml, "t.yml").map(|g| g[0].targets.clone()).ok(), Some(vec!["c:3".to_owned()]));
        assert!(parse_groups("", "e.yml").is_ok_and(|g| g.is_empty()));
        assert!(parse_groups("{targets: 1}", "bad.yml").is_err());
        assert!(parse_groups("- {targets: [a], labels: {bad-name: x}}", "bad.yml").is_err());
    }
}
