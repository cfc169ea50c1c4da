//! The engine: Alertmanager's dispatcher, aggregation groups and notification pipeline
//! (inhibition, time intervals, silences, deduplication against the notification log),
//! driven by the caller's clock so tests move time instead of sleeping.
//!
//! `put` stores alerts and files them into aggregation groups per (route, group labels);
//! `tick(now)` flushes every group whose timer is due — the first time `group_wait` after
//! the group was created, then every `group_interval` — and returns the notifications to
//! send; `next_deadline` says when to call `tick` next. Groups wait in a deadline-ordered
//! set, so a tick touches only the groups that are due, never all of them.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::alerts::{Alert, AlertError, PostableAlert, add, alert_order};
use crate::config::{Config, Integration};
use crate::inhibit::Inhibitor;
use crate::labels::{Fingerprint, LabelSet};
use crate::nflog::{Nflog, NflogEntry, NflogKey};
use crate::route::{RouteIndex, RouteTree};
use crate::silence::{PostableSilence, Silence, SilenceError, SilenceState, Silences};
use crate::timeinterval::NamedTimeInterval;

/// How often empty groups and old state are cleaned up, as Alertmanager's maintenance does.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

/// One alert in a notification, as Alertmanager sends it: a firing alert's `endsAt` is unset.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifiedAlert {
    pub status: AlertStatus,
    pub labels: LabelSet,
    pub annotations: LabelSet,
    pub starts_at: Timestamp,
    pub ends_at: Option<Timestamp>,
    pub generator_url: String,
    pub fingerprint: Fingerprint,
}

/// What one receiver integration is to be sent.
#[derive(Debug, Clone)]
pub struct Notification {
    pub receiver: String,
    pub integration: Integration,
    pub group_key: String,
    pub group_labels: LabelSet,
    /// In Alertmanager's order; resolved ones only when the integration sends them.
    pub alerts: Vec<NotifiedAlert>,
    /// Nothing changed since the last notification: `repeat_interval` passed.
    pub is_repeat: bool,
    pub at: Timestamp,
}

impl Notification {
    pub fn status(&self) -> AlertStatus {
        if self.alerts.iter().any(|a| a.status == AlertStatus::Firing) {
            AlertStatus::Firing
        } else {
            AlertStatus::Resolved
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Active,
    Suppressed,
}

/// An alert with its status, as `GET /api/v2/alerts` lists it.
#[derive(Debug, Clone)]
pub struct AlertView {
    pub alert: Arc<Alert>,
    pub state: AlertState,
    pub silenced_by: Vec<String>,
    pub inhibited_by: Vec<String>,
    pub receivers: Vec<String>,
}

/// A group, as `GET /api/v2/alerts/groups` lists it.
#[derive(Debug, Clone)]
pub struct GroupView {
    pub labels: LabelSet,
    pub receiver: String,
    pub group_key: String,
    pub alerts: Vec<AlertView>,
}

/// The notification state a host persists: the notification log and the silences.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub nflog: Vec<(NflogKey, NflogEntry)>,
    pub silences: Vec<Silence>,
}

#[derive(Debug, thiserror::Error)]
#[error("{} invalid alert(s): {}", .0.len(), .0.iter().map(|(i, e)| format!("#{i}: {e}")).collect::<Vec<_>>().join("; "))]
pub struct PutError(pub Vec<(usize, AlertError)>);

type GroupId = u64;

#[derive(Debug)]
struct Group {
    route: RouteIndex,
    labels: LabelSet,
    key: String,
    alerts: HashMap<Fingerprint, Arc<Alert>>,
    next_flush: Timestamp,
    has_flushed: bool,
}

pub struct Engine {
    config: Arc<Config>,
    tree: RouteTree,
    intervals: HashMap<String, NamedTimeInterval>,
    alerts: HashMap<Fingerprint, Arc<Alert>>,
    groups: HashMap<GroupId, Group>,
    group_ids: HashMap<(RouteIndex, Fingerprint), GroupId>,
    schedule: BTreeSet<(Timestamp, GroupId)>,
    next_group: GroupId,
    silences: Silences,
    inhibitor: Inhibitor,
    nflog: Nflog,
    last_maintenance: Option<Timestamp>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("alerts", &self.alerts.len()).field("groups", &self.groups.len()).finish()
    }
}

impl Engine {
    /// An engine for a loaded configuration.
    pub fn new(config: Config) -> Engine {
        let tree = RouteTree::new(&config.route);
        let intervals = config.time_intervals.iter().map(|t| (t.name.clone(), t.clone())).collect();
        let inhibitor = Inhibitor::new(&config.inhibit_rules);
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x5eed);
        Engine {
            config: Arc::new(config),
            tree,
            intervals,
            alerts: HashMap::new(),
            groups: HashMap::new(),
            group_ids: HashMap::new(),
            schedule: BTreeSet::new(),
            next_group: 0,
            silences: Silences::new(seed),
            inhibitor,
            nflog: Nflog::default(),
            last_maintenance: None,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn routes(&self) -> &RouteTree {
        &self.tree
    }

    /// Stores alerts (`POST /api/v2/alerts`): invalid ones are reported, the valid ones kept.
    pub fn put(&mut self, alerts: Vec<PostableAlert>, now: Timestamp) -> Result<(), PutError> {
        let mut errors = Vec::new();
        let resolve_timeout = self.config.global.resolve_timeout;
        for (i, p) in alerts.into_iter().enumerate() {
            match Alert::from_postable(p, now, resolve_timeout) {
                Ok(alert) => self.store(alert, now),
                Err(e) => errors.push((i, e)),
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(PutError(errors)) }
    }

    fn store(&mut self, mut alert: Alert, now: Timestamp) {
        if let Some(old) = self.alerts.get(&alert.fingerprint) {
            // Merge only when the activity ranges overlap, as the provider does; otherwise the
            // new alert replaces the old one (a new incident of the same labels).
            let overlap = (alert.ends_at > old.starts_at && alert.ends_at < old.ends_at)
                || (alert.starts_at > old.starts_at && alert.starts_at < old.ends_at);
            if overlap {
                alert = old.merge(&alert);
            }
        }
        let alert = Arc::new(alert);
        self.alerts.insert(alert.fingerprint, alert.clone());
        self.inhibitor.observe(&alert);
        let routes: Vec<(RouteIndex, LabelSet, Duration)> = self
            .tree
            .match_labels(&alert.labels)
            .into_iter()
            .map(|r| (r.index, r.group_labels(&alert.labels), r.opts.group_wait))
            .collect();
        for (route, labels, group_wait) in routes {
            let gfp = labels.fingerprint();
            let id = match self.group_ids.get(&(route, gfp)) {
                Some(id) => *id,
                None => {
                    let id = self.next_group;
                    self.next_group += 1;
                    let key = match self.tree.get(route) {
                        Some(r) => format!("{}:{labels}", r.key),
                        None => labels.to_string(),
                    };
                    let next_flush = add(now, group_wait);
                    self.groups.insert(
                        id,
                        Group { route, labels, key, alerts: HashMap::new(), next_flush, has_flushed: false },
                    );
                    self.group_ids.insert((route, gfp), id);
                    self.schedule.insert((next_flush, id));
                    id
                }
            };
            let Some(group) = self.groups.get_mut(&id) else { continue };
            group.alerts.insert(alert.fingerprint, alert.clone());
            // An alert that started more than group_wait ago need not wait: flush now.
            if !group.has_flushed && add(alert.starts_at, group_wait) < now && group.next_flush > now {
                self.schedule.remove(&(group.next_flush, id));
                group.next_flush = now;
                self.schedule.insert((now, id));
            }
        }
    }

    /// When `tick` next has something to do.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        let flush = self.schedule.first().map(|(t, _)| *t);
        let maintenance = self.last_maintenance.map(|t| add(t, MAINTENANCE_INTERVAL));
        match (flush, maintenance) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Flushes the groups due at `now`; returns the notifications to send.
    pub fn tick(&mut self, now: Timestamp) -> Vec<Notification> {
        let mut out = Vec::new();
        while let Some(&(due, id)) = self.schedule.first() {
            if due > now {
                break;
            }
            self.schedule.remove(&(due, id));
            let Some(group) = self.groups.get_mut(&id) else { continue };
            let interval = self.tree.get(group.route).map_or(Duration::from_secs(300), |r| r.opts.group_interval);
            group.next_flush = add(now, interval);
            group.has_flushed = true;
            self.schedule.insert((group.next_flush, id));
            self.flush(id, now, &mut out);
        }
        if self.last_maintenance.is_none_or(|t| add(t, MAINTENANCE_INTERVAL) <= now) {
            self.maintenance(now);
        }
        out
    }

    fn maintenance(&mut self, now: Timestamp) {
        self.last_maintenance = Some(now);
        let empty: Vec<GroupId> = self.groups.iter().filter(|(_, g)| g.alerts.is_empty()).map(|(id, _)| *id).collect();
        for id in empty {
            if let Some(g) = self.groups.remove(&id) {
                self.schedule.remove(&(g.next_flush, id));
                self.group_ids.remove(&(g.route, g.labels.fingerprint()));
            }
        }
        // The provider forgets resolved alerts no group still holds; a resolved source stops
        // inhibiting, and silences and log entries past retention go.
        let retention = jiff::SignedDuration::from_hours(120);
        let horizon = now.checked_sub(retention).unwrap_or(Timestamp::MIN);
        self.alerts.retain(|_, a| !a.resolved_at(now) || Arc::strong_count(a) > 1);
        self.inhibitor.gc(now);
        self.silences.gc(horizon);
        self.nflog.gc(now);
    }

    fn muted(&self, labels: &LabelSet, now: Timestamp) -> bool {
        self.inhibitor.inhibited_by(labels, now).is_some() || self.silences.mutes(labels, now)
    }

    fn in_intervals(&self, names: &[String], now: Timestamp) -> bool {
        names.iter().any(|n| self.intervals.get(n).is_some_and(|t| t.contains(now)))
    }

    fn flush(&mut self, id: GroupId, now: Timestamp, out: &mut Vec<Notification>) {
        let Some(group) = self.groups.get(&id) else { return };
        if group.alerts.is_empty() {
            return;
        }
        let Some(route) = self.tree.get(group.route) else { return };
        let mut alerts: Vec<Arc<Alert>> = group.alerts.values().cloned().collect();
        alerts.sort_by(|a, b| alert_order(&a.labels, &b.labels));
        let resolved_snapshot: Vec<Arc<Alert>> = alerts.iter().filter(|a| a.resolved_at(now)).cloned().collect();

        // The pipeline: inhibition, active and mute time intervals, silences.
        let active_names = &route.opts.active_time_intervals;
        let time_muted = (!active_names.is_empty() && !self.in_intervals(active_names, now))
            || self.in_intervals(&route.opts.mute_time_intervals, now);
        let kept: Vec<&Arc<Alert>> =
            if time_muted { Vec::new() } else { alerts.iter().filter(|a| !self.muted(&a.labels, now)).collect() };

        if !kept.is_empty() {
            let receiver_name = route.opts.receiver.clone();
            let group_key = group.key.clone();
            let group_labels = group.labels.clone();
            let repeat = route.opts.repeat_interval;
            let notified: Vec<NotifiedAlert> = kept
                .iter()
                .map(|a| {
                    let resolved = a.resolved_at(now);
                    NotifiedAlert {
                        status: if resolved { AlertStatus::Resolved } else { AlertStatus::Firing },
                        labels: a.labels.clone(),
                        annotations: a.annotations.clone(),
                        starts_at: a.starts_at,
                        ends_at: resolved.then_some(a.ends_at),
                        generator_url: a.generator_url.clone(),
                        fingerprint: a.fingerprint,
                    }
                })
                .collect();
            let firing: Vec<u64> =
                notified.iter().filter(|a| a.status == AlertStatus::Firing).map(|a| a.fingerprint.0).collect();
            let resolved: Vec<u64> =
                notified.iter().filter(|a| a.status == AlertStatus::Resolved).map(|a| a.fingerprint.0).collect();
            let integrations: Vec<Integration> = self
                .config
                .receivers
                .iter()
                .find(|r| r.name == receiver_name)
                .map(|r| r.integrations.clone())
                .unwrap_or_default();
            for integration in integrations {
                let key = NflogKey {
                    group_key: group_key.clone(),
                    receiver: receiver_name.clone(),
                    integration: integration.kind.name().to_owned(),
                    index: integration.index,
                };
                let entry = self.nflog.get(&key);
                let Some(is_repeat) = needs_update(entry, &firing, &resolved, integration.send_resolved, repeat, now)
                else {
                    continue;
                };
                // Without send_resolved only firing alerts go out; all-resolved sends nothing
                // but is still logged, so the next flush knows the receiver was told.
                let sent: Vec<NotifiedAlert> = if integration.send_resolved {
                    notified.clone()
                } else {
                    notified.iter().filter(|a| a.status == AlertStatus::Firing).cloned().collect()
                };
                if !sent.is_empty() {
                    out.push(Notification {
                        receiver: receiver_name.clone(),
                        integration,
                        group_key: group_key.clone(),
                        group_labels: group_labels.clone(),
                        alerts: sent,
                        is_repeat,
                        at: now,
                    });
                }
                self.nflog.log(key, firing.clone(), resolved.clone(), now);
            }
        }
        // Resolved alerts were told (or muted): drop them unless they fired again meanwhile.
        if let Some(group) = self.groups.get_mut(&id) {
            for a in resolved_snapshot {
                if group.alerts.get(&a.fingerprint).is_some_and(|cur| Arc::ptr_eq(cur, &a)) {
                    group.alerts.remove(&a.fingerprint);
                }
            }
        }
    }

    /// Every stored alert with its status, silences and inhibitions computed at `now`.
    pub fn alerts(&self, now: Timestamp) -> Vec<AlertView> {
        self.alerts.values().map(|a| self.view(a, now)).collect()
    }

    fn view(&self, a: &Arc<Alert>, now: Timestamp) -> AlertView {
        let silenced_by = self.silences.silenced_by(&a.labels, now);
        let inhibited_by: Vec<String> =
            self.inhibitor.inhibited_by(&a.labels, now).map(|f| f.to_string()).into_iter().collect();
        let state =
            if silenced_by.is_empty() && inhibited_by.is_empty() { AlertState::Active } else { AlertState::Suppressed };
        let receivers = self.tree.match_labels(&a.labels).iter().map(|r| r.opts.receiver.clone()).collect();
        AlertView { alert: a.clone(), state, silenced_by, inhibited_by, receivers }
    }

    /// The aggregation groups with their unresolved alerts, as `/api/v2/alerts/groups`.
    pub fn groups(&self, now: Timestamp) -> Vec<GroupView> {
        let mut out: Vec<GroupView> = Vec::with_capacity(self.groups.len());
        for g in self.groups.values() {
            let Some(route) = self.tree.get(g.route) else { continue };
            let mut alerts: Vec<AlertView> =
                g.alerts.values().filter(|a| !a.resolved_at(now)).map(|a| self.view(a, now)).collect();
            if alerts.is_empty() {
                continue;
            }
            alerts.sort_by(|a, b| alert_order(&a.alert.labels, &b.alert.labels));
            out.push(GroupView {
                labels: g.labels.clone(),
                receiver: route.opts.receiver.clone(),
                group_key: g.key.clone(),
                alerts,
            });
        }
        out.sort_by(|a, b| a.group_key.cmp(&b.group_key).then_with(|| a.receiver.cmp(&b.receiver)));
        out
    }

    pub fn set_silence(&mut self, s: PostableSilence, now: Timestamp) -> Result<String, SilenceError> {
        self.silences.set(s, now)
    }

    pub fn expire_silence(&mut self, id: &str, now: Timestamp) -> Result<(), SilenceError> {
        self.silences.expire(id, now)
    }

    pub fn silences(&self, now: Timestamp) -> Vec<(Silence, SilenceState)> {
        self.silences.list(now)
    }

    pub fn silence(&self, id: &str) -> Option<&Silence> {
        self.silences.get(id)
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot { nflog: self.nflog.snapshot(), silences: self.silences.snapshot() }
    }

    pub fn restore(&mut self, snapshot: Snapshot) {
        self.nflog.restore(snapshot.nflog);
        self.silences.restore(snapshot.silences);
    }
}

/// DedupStage's `needsUpdate`: `None` when nothing is to be sent, else whether it is a
/// repeat of the last notification.
fn needs_update(
    entry: Option<&NflogEntry>,
    firing: &[u64],
    resolved: &[u64],
    send_resolved: bool,
    repeat: Duration,
    now: Timestamp,
) -> Option<bool> {
    let Some(entry) = entry else { return (!firing.is_empty()).then_some(false) };
    let subset = |set: &[u64], of: &[u64]| set.iter().all(|x| of.contains(x));
    if !subset(firing, &entry.firing) {
        return Some(false);
    }
    if firing.is_empty() {
        return (!entry.firing.is_empty()).then_some(false);
    }
    if send_resolved && !subset(resolved, &entry.resolved) {
        return Some(false);
    }
    (add(entry.timestamp, repeat) < now).then_some(true)
}
