//! The escalation state machine of one incident, driven by injected time so it is
//! deterministic: [`Escalation::start`] when the incident triggers, [`Escalation::tick`]
//! whenever the host wakes (at [`Escalation::next_deadline`] at the latest), and
//! [`Escalation::ack`] / [`Escalation::resolve`] from people.
//!
//! Timing follows the policy (see [`crate::oncall::config`]): level `n` is paged its `after`
//! past level `n - 1`'s page (level 1: past the start of the round); after the last level the
//! policy starts over `repeat_after` later, `repeat` more times. Paging a user queues one
//! notification per contact method of each of the user's notification rules, each due its
//! rule's `after` past the page. Every due time is computed from the previous due time, never
//! from when `tick` happened to run, so a late tick does not shift what follows.
//!
//! The whole state is serde data (the policy is a snapshot taken at the trigger, so a config
//! reload does not rewrite a running escalation's timing; users and schedules are looked up
//! when a level is paged). A host persists it after acting on what `tick` returned; a restart
//! then continues on time: nothing already returned is returned again, and a level that fell
//! due while the host was down is paged at the first tick.

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::config::{ContactMethod, EscalationPolicy, OncallConfig, Target, UserName};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EscalationState {
    /// Paging goes on (or has run out of levels and repeats, still unacknowledged).
    Triggered,
    /// Someone has it: nobody else is paged.
    Acknowledged,
    /// Over.
    Resolved,
}

/// Send this notification now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageAction {
    pub incident: String,
    pub user: UserName,
    pub contact: ContactMethod,
    /// 1-based level of the policy that paged the user.
    pub level: u32,
    /// 1-based round of the policy: 1 the first pass, 2 its first repeat, …
    pub attempt: u32,
    /// When it was due (earlier than the tick's `now` when the host was late).
    pub due: Timestamp,
}

/// The next level to page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct NextLevel {
    /// 0-based round and level index.
    round: u32,
    level: usize,
    due: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escalation {
    pub incident: String,
    pub policy: EscalationPolicy,
    pub state: EscalationState,
    pub triggered_at: Timestamp,
    /// When and by whom (when known) it was acknowledged.
    pub acknowledged: Option<(Timestamp, Option<UserName>)>,
    pub resolved_at: Option<Timestamp>,
    /// Everything returned by `tick` so far, for the incident's timeline.
    pub sent: Vec<PageAction>,
    next: Option<NextLevel>,
    /// Notifications queued by a page, not yet due; sorted by due time.
    pending: Vec<PageAction>,
}

/// Users a level's targets name at `at`: schedules answer who is on call, users themselves;
/// each user once, in target order. A schedule nobody is on call for adds nobody; a target the
/// configuration no longer has (reloaded since the trigger) is skipped.
pub fn resolve_targets(config: &OncallConfig, targets: &[Target], at: Timestamp) -> Vec<UserName> {
    let mut users: Vec<UserName> = Vec::new();
    for target in targets {
        let user = match target {
            Target::Schedule(name) => config.schedule(name).and_then(|s| s.on_call_at(at)),
            Target::User(name) => Some(name.clone()),
        };
        if let Some(user) = user
            && !users.contains(&user)
        {
            users.push(user);
        }
    }
    users
}

impl Escalation {
    /// An incident triggered `now` under `policy`; the first level is due its `after` from now.
    pub fn start(incident: impl Into<String>, policy: &EscalationPolicy, now: Timestamp) -> Escalation {
        let next = policy.levels.first().map(|level| NextLevel { round: 0, level: 0, due: add(now, level.after) });
        Escalation {
            incident: incident.into(),
            policy: policy.clone(),
            state: EscalationState::Triggered,
            triggered_at: now,
            acknowledged: None,
            resolved_at: None,
            sent: Vec::new(),
            next,
            pending: Vec::new(),
        }
    }

    /// Everything due at or before `now`, in due order: levels that fell due are paged (their
    /// schedules asked who is on call now), and notifications that fell due are returned.
    /// Nothing once acknowledged or resolved. A late tick catching up on several levels sends
    /// one contact method at most once.
    pub fn tick(&mut self, config: &OncallConfig, now: Timestamp) -> Vec<PageAction> {
        if self.state != EscalationState::Triggered {
            return Vec::new();
        }
        while let Some(next) = self.next
            && next.due <= now
        {
            self.page_level(config, next, now);
            self.next = self.after(next);
        }
        let due = self.pending.partition_point(|p| p.due <= now);
        let mut out: Vec<PageAction> = Vec::new();
        for action in self.pending.drain(..due) {
            // A catch-up after downtime would otherwise send the same person the same message
            // once per missed level or round, all at the same moment.
            if !out.iter().any(|o| o.user == action.user && o.contact == action.contact) {
                out.push(action);
            }
        }
        self.sent.extend(out.iter().cloned());
        out
    }

    /// The next instant `tick` has something to do; `None` when nothing more will happen.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        if self.state != EscalationState::Triggered {
            return None;
        }
        let pending = self.pending.first().map(|p| p.due);
        match (self.next.map(|n| n.due), pending) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether every level and repeat has been paged and every notification sent, with nobody
    /// acknowledging: the host may want to say so loudly.
    pub fn is_exhausted(&self) -> bool {
        self.state == EscalationState::Triggered && self.next.is_none() && self.pending.is_empty()
    }

    /// Someone has it: escalation stops. `false` when it was not triggered (already
    /// acknowledged or resolved), which changes nothing.
    pub fn ack(&mut self, now: Timestamp, by: Option<UserName>) -> bool {
        if self.state != EscalationState::Triggered {
            return false;
        }
        self.state = EscalationState::Acknowledged;
        self.acknowledged = Some((now, by));
        self.stop();
        true
    }

    /// The incident is over: everything stops. `false` when it already was.
    pub fn resolve(&mut self, now: Timestamp) -> bool {
        if self.state == EscalationState::Resolved {
            return false;
        }
        self.state = EscalationState::Resolved;
        self.resolved_at = Some(now);
        self.stop();
        true
    }

    fn stop(&mut self) {
        self.next = None;
        self.pending.clear();
    }

    /// The level after `current`: the next in the round, else the first of the next round.
    fn after(&self, current: NextLevel) -> Option<NextLevel> {
        let levels = &self.policy.levels;
        if let Some(level) = levels.get(current.level + 1) {
            return Some(NextLevel { level: current.level + 1, due: add(current.due, level.after), ..current });
        }
        if current.round < self.policy.repeat {
            let first = levels.first()?;
            let due = add(add(current.due, self.policy.repeat_after), first.after);
            return Some(NextLevel { round: current.round + 1, level: 0, due });
        }
        None
    }

    fn page_level(&mut self, config: &OncallConfig, next: NextLevel, now: Timestamp) {
        let Some(level) = self.policy.levels.get(next.level) else { return };
        for name in resolve_targets(config, &level.targets, now) {
            let Some(user) = config.user(name.as_str()) else { continue };
            for rule in &user.notification_rules {
                for contact in user.contacts.iter().filter(|c| c.kind == rule.contact) {
                    self.pending.push(PageAction {
                        incident: self.incident.clone(),
                        user: name.clone(),
                        contact: contact.clone(),
                        level: u32::try_from(next.level + 1).unwrap_or(u32::MAX),
                        attempt: next.round + 1,
                        due: add(next.due, rule.after),
                    });
                }
            }
        }
        // Stable: equal due times keep the order of levels, users and rules.
        self.pending.sort_by_key(|p| p.due);
    }
}

/// `at + d`, saturating: a policy's delays are bounded by the config, and the far future is
/// as good as never.
fn add(at: Timestamp, d: SignedDuration) -> Timestamp {
    at.checked_add(d).unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oncall::config::load;

    const CONFIG: &str = r#"
users:
  - {name: alice, email: alice@example.com, contact: [{webhook: "https://hooks.example.com/a"}],
     notification_rules: [{contact: email, after: 0m}, {contact: webhook, after: 5m}]}
  - {name: bob, email: bob@example.com}
schedules:
  - name: primary
    timezone: UTC
    layers: [{rotation: 1w, handoff: 2026-01-05T00:00, users: [alice]}]
escalation_policies:
  - name: p
    repeat: 1
    repeat_after: 20m
    levels:
      - {targets: [schedule:primary], after: 0m}
      - {targets: [user:bob], after: 10m}
"#;

    fn at(minutes: i64) -> Timestamp {
        "2026-01-06T12:00Z".parse::<Timestamp>().unwrap() + SignedDuration::from_mins(minutes)
    }

    fn short(actions: &[PageAction]) -> Vec<String> {
        actions.iter().map(|a| format!("{}:{}:L{}A{}", a.user, a.contact.kind.as_str(), a.level, a.attempt)).collect()
    }

    #[test]
    fn levels_rules_and_repeat_on_time() {
        let config = load(CONFIG, "x.yml").unwrap();
        let mut e = Escalation::start("inc-1", config.policy("p").unwrap(), at(0));
        assert_eq!(short(&e.tick(&config, at(0))), ["alice:email:L1A1"]);
        assert_eq!(e.next_deadline(), Some(at(5)));
        assert!(e.tick(&config, at(4)).is_empty());
        assert_eq!(short(&e.tick(&config, at(5))), ["alice:webhook:L1A1"]);
        assert_eq!(short(&e.tick(&config, at(10))), ["bob:email:L2A1"]);
        // Round 2 starts 20m after level 2, at 30m.
        assert_eq!(e.next_deadline(), Some(at(30)));
        assert_eq!(short(&e.tick(&config, at(30))), ["alice:email:L1A2"]);
        assert_eq!(short(&e.tick(&config, at(40))), ["alice:webhook:L1A2", "bob:email:L2A2"]);
        assert!(e.is_exhausted());
        assert_eq!(e.next_deadline(), None);
        assert!(e.tick(&config, at(1000)).is_empty());
        assert_eq!(e.sent.len(), 6);
    }

    #[test]
    fn ack_stops_and_resolve_ends() {
        let config = load(CONFIG, "x.yml").unwrap();
        let mut e = Escalation::start("inc-1", config.policy("p").unwrap(), at(0));
        e.tick(&config, at(0));
        assert!(e.ack(at(2), Some(UserName::new("alice"))));
        assert!(!e.ack(at(3), None), "twice changes nothing");
        assert_eq!(e.next_deadline(), None);
        assert!(e.tick(&config, at(60)).is_empty(), "the webhook at 5m and bob at 10m are not sent");
        assert!(e.resolve(at(70)));
        assert_eq!(e.state, EscalationState::Resolved);
        assert!(!e.ack(at(71), None));
    }

    #[test]
    fn a_late_tick_catches_up_without_duplicates() {
        let config = load(CONFIG, "x.yml").unwrap();
        let mut e = Escalation::start("inc-1", config.policy("p").unwrap(), at(0));
        let all = e.tick(&config, at(100));
        assert_eq!(short(&all), ["alice:email:L1A1", "alice:webhook:L1A1", "bob:email:L2A1"]);
        assert_eq!(all[2].due, at(10), "due times stay those of the policy");
        assert!(e.is_exhausted());
    }
}
