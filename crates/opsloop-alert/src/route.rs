//! The route tree of Alertmanager's dispatcher (`dispatch/route.go` of 0.25): options
//! inherited from parents, matching depth-first where a matching child stops its later
//! siblings unless it has `continue`, and a node none of whose children match matching
//! itself; each route's key (the matchers of its path) and id, as Alertmanager spells them,
//! which make up group keys and so the notification log.
//!
//! Stored as a flat arena indexed by [`RouteIndex`], so groups refer to their route by index
//! and a configuration reload can rebuild the tree without dangling references.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{DEFAULT_GROUP_INTERVAL, DEFAULT_GROUP_WAIT, DEFAULT_REPEAT_INTERVAL, RouteConfig};
use crate::labels::LabelSet;
use crate::matcher::Matchers;

/// A route's position in its tree's arena (0 is the root).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteIndex(pub usize);

/// What a route decides for the alerts it takes, after inheritance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteOpts {
    pub receiver: String,
    /// Sorted label names.
    pub group_by: Vec<Arc<str>>,
    pub group_by_all: bool,
    pub group_wait: Duration,
    pub group_interval: Duration,
    pub repeat_interval: Duration,
    /// Not inherited, as in Alertmanager: each route names its own.
    pub mute_time_intervals: Vec<String>,
    pub active_time_intervals: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub index: RouteIndex,
    pub parent: Option<RouteIndex>,
    pub children: Vec<RouteIndex>,
    pub matchers: Matchers,
    pub continue_matching: bool,
    pub opts: RouteOpts,
    /// `Route.Key()`: the matchers of every route from the root, `/`-separated.
    pub key: String,
    /// `Route.ID()`: the key with each route's position among its siblings.
    pub id: String,
}

impl Route {
    /// The labels an alert is grouped by on this route.
    pub fn group_labels(&self, labels: &LabelSet) -> LabelSet {
        if self.opts.group_by_all {
            return labels.clone();
        }
        labels.filter(|name| self.opts.group_by.binary_search_by(|g| (**g).cmp(name)).is_ok())
    }
}

#[derive(Debug, Clone)]
pub struct RouteTree {
    routes: Vec<Route>,
}

impl RouteTree {
    pub fn new(root: &RouteConfig) -> RouteTree {
        let mut tree = RouteTree { routes: Vec::new() };
        tree.add(root, None, 0);
        tree
    }

    fn add(&mut self, config: &RouteConfig, parent: Option<RouteIndex>, position: usize) -> RouteIndex {
        let mut opts = match parent {
            Some(p) => self.routes[p.0].opts.clone(),
            None => RouteOpts {
                receiver: String::new(),
                group_by: Vec::new(),
                group_by_all: false,
                group_wait: DEFAULT_GROUP_WAIT,
                group_interval: DEFAULT_GROUP_INTERVAL,
                repeat_interval: DEFAULT_REPEAT_INTERVAL,
                mute_time_intervals: Vec::new(),
                active_time_intervals: Vec::new(),
            },
        };
        if let Some(receiver) = &config.receiver {
            opts.receiver = receiver.clone();
        }
        match &config.group_by {
            Some(names) => {
                let mut names: Vec<Arc<str>> = names.iter().map(|n| Arc::from(n.as_str())).collect();
                names.sort();
                opts.group_by = names;
                opts.group_by_all = false;
            }
            None if config.group_by_all => opts.group_by_all = true,
            None => {}
        }
        if let Some(d) = config.group_wait {
            opts.group_wait = d;
        }
        if let Some(d) = config.group_interval {
            opts.group_interval = d;
        }
        if let Some(d) = config.repeat_interval {
            opts.repeat_interval = d;
        }
        opts.mute_time_intervals = config.mute_time_intervals.clone();
        opts.active_time_intervals = config.active_time_intervals.clone();
        let matchers = config.matchers.clone();
        let (key, id) = match parent {
            Some(p) => {
                let parent = &self.routes[p.0];
                (format!("{}/{matchers}", parent.key), format!("{}/{matchers}/{position}", parent.id))
            }
            None => (matchers.to_string(), matchers.to_string()),
        };
        let index = RouteIndex(self.routes.len());
        self.routes.push(Route {
            index,
            parent,
            children: Vec::new(),
            matchers,
            continue_matching: config.continue_matching,
            opts,
            key,
            id,
        });
        for (i, child) in config.routes.iter().enumerate() {
            let c = self.add(child, Some(index), i);
            self.routes[index.0].children.push(c);
        }
        index
    }

    pub fn root(&self) -> &Route {
        &self.routes[0]
    }

    pub fn get(&self, index: RouteIndex) -> Option<&Route> {
        self.routes.get(index.0)
    }

    /// Every route, depth-first in configuration order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// `Route.Match`: the routes an alert with `labels` is dispatched to, in order.
    pub fn match_labels(&self, labels: &LabelSet) -> Vec<&Route> {
        let mut out = Vec::new();
        self.match_into(RouteIndex(0), labels, &mut out);
        out
    }

    /// Appends the matches under `at`; returns whether there were any.
    fn match_into<'t>(&'t self, at: RouteIndex, labels: &LabelSet, out: &mut Vec<&'t Route>) -> bool {
        let route = &self.routes[at.0];
        if !route.matchers.matches(labels) {
            return false;
        }
        let before = out.len();
        for child in &route.children {
            let matched = self.match_into(*child, labels, out);
            if matched && !self.routes[child.0].continue_matching {
                break;
            }
        }
        if out.len() == before {
            out.push(route);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load;

    fn tree(yaml: &str) -> RouteTree {
        RouteTree::new(&load(yaml, "t.yml").unwrap_or_else(|e| panic!("{e}")).route)
    }

    #[test]
    fn keys_ids_and_inheritance() {
        let t = tree(
            "route:\n  receiver: r\n  group_by: [a]\n  group_wait: 1s\n  routes:\n    - matchers: ['x=\"1\"']\n      routes:\n        - matchers: ['y=~\"2\"']\n          receiver: s\n          group_by: ['...']\nreceivers:\n  - name: r\n  - name: s\n",
        );
        let leaf = &t.routes()[2];
        assert_eq!(leaf.key, r#"{}/{x="1"}/{y=~"2"}"#);
        assert_eq!(leaf.id, r#"{}/{x="1"}/0/{y=~"2"}/0"#);
        assert_eq!(leaf.opts.group_wait, Duration::from_secs(1));
        assert!(leaf.opts.group_by_all);
        assert_eq!(t.routes()[1].opts.group_by, vec![Arc::<str>::from("a")]);
        let labels = LabelSet::from_pairs([("x", "1"), ("y", "2")]);
        assert_eq!(t.match_labels(&labels).iter().map(|r| r.opts.receiver.as_str()).collect::<Vec<_>>(), ["s"]);
        let labels = LabelSet::from_pairs([("x", "1")]);
        assert_eq!(t.match_labels(&labels)[0].index, RouteIndex(1), "a node with no matching child matches");
    }
}
