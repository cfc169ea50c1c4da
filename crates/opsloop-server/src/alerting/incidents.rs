//! Incidents as a service: who may see and act on which incident, and the state changes
//! (acknowledge, resolve, notes) with their timeline entries. Visibility: an instance admin
//! sees every incident; a project's incident is seen by its members (any role) and acted on by
//! developers and above; an incident of the instance (alerts naming no project) is seen and
//! acted on by every signed-in user with a writing credential, since the person on call need
//! not be a member of anything.

use opsloop_core::{IncidentStatus, Role};
use opsloop_store::{Incident, IncidentEvent, IncidentFilter, Store, StoreError};

use crate::auth::{Principal, membership};

#[derive(Debug, thiserror::Error)]
pub enum AlertingError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{what} not found")]
    NotFound { what: &'static str },
    /// Not found, with the message saying what was meant.
    #[error("{0}")]
    NotFoundNamed(String),
    /// The incident is not in a state the change applies to (acknowledging a resolved one).
    #[error("{0}")]
    WrongStatus(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An incident with the project it belongs to, by name.
#[derive(Debug, Clone)]
pub struct VisibleIncident {
    pub incident: Incident,
    pub project: Option<String>,
}

/// What a principal may do with one incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Right {
    Read,
    Act,
}

async fn allowed(store: &Store, principal: &Principal, incident: &Incident, right: Right) -> Result<bool, StoreError> {
    if principal.is_admin() {
        return Ok(true);
    }
    let Some(project_id) = incident.project_id else {
        return Ok(match right {
            Right::Read => true,
            Right::Act => principal.cap >= Role::Developer,
        });
    };
    let Some(project) = store.project_by_id(project_id).await? else { return Ok(false) };
    let role = principal.project_role(membership(store, principal, &project).await?);
    Ok(match right {
        Right::Read => role.is_some(),
        Right::Act => role.is_some_and(|r| r >= Role::Developer),
    })
}

async fn project_name(store: &Store, incident: &Incident) -> Result<Option<String>, StoreError> {
    Ok(match incident.project_id {
        Some(id) => store.project_by_id(id).await?.map(|p| p.name),
        None => None,
    })
}

/// The incidents `principal` may see, newest first.
pub async fn list(
    store: &Store,
    principal: &Principal,
    status: Option<IncidentStatus>,
    open: bool,
    limit: i64,
) -> Result<Vec<VisibleIncident>, AlertingError> {
    if !(1..=500).contains(&limit) {
        return Err(AlertingError::Invalid("limit must be between 1 and 500".to_owned()));
    }
    // Filtering after the query keeps the SQL simple; a non-admin sees fewer, never others'.
    let filter = IncidentFilter { status, open, project: None, limit: if principal.is_admin() { limit } else { 500 } };
    let mut visible = Vec::new();
    for incident in store.incidents(&filter).await? {
        if visible.len() as i64 >= limit {
            break;
        }
        if allowed(store, principal, &incident, Right::Read).await? {
            let project = project_name(store, &incident).await?;
            visible.push(VisibleIncident { incident, project });
        }
    }
    Ok(visible)
}

/// One incident with its timeline; not found when the principal may not see it (its
/// existence is not leaked).
pub async fn show(
    store: &Store,
    principal: &Principal,
    id: i64,
) -> Result<(VisibleIncident, Vec<IncidentEvent>), AlertingError> {
    let incident = readable(store, principal, id).await?;
    let timeline = store.incident_timeline(id).await?;
    let project = project_name(store, &incident).await?;
    Ok((VisibleIncident { incident, project }, timeline))
}

async fn readable(store: &Store, principal: &Principal, id: i64) -> Result<Incident, AlertingError> {
    let incident = store.incident(id).await?.ok_or(AlertingError::NotFound { what: "incident" })?;
    if !allowed(store, principal, &incident, Right::Read).await? {
        return Err(AlertingError::NotFound { what: "incident" });
    }
    Ok(incident)
}

async fn actionable(store: &Store, principal: &Principal, id: i64) -> Result<Incident, AlertingError> {
    let incident = readable(store, principal, id).await?;
    if !allowed(store, principal, &incident, Right::Act).await? {
        return Err(AlertingError::Forbidden("acting on this incident needs the developer role or above".to_owned()));
    }
    Ok(incident)
}

/// Whether `principal` may act on (acknowledge, resolve, annotate) an incident it can see, so
/// that a page offers only the buttons that would work.
pub async fn can_act(store: &Store, principal: &Principal, incident: &Incident) -> Result<bool, AlertingError> {
    Ok(allowed(store, principal, incident, Right::Act).await?)
}

/// Moves an incident to `status` (acknowledged or resolved) as `actor`; an already
/// acknowledged incident acknowledged again, or a resolved one changed, is a conflict.
pub async fn set_status(
    store: &Store,
    principal: &Principal,
    id: i64,
    status: IncidentStatus,
    note: &str,
) -> Result<Incident, AlertingError> {
    let incident = actionable(store, principal, id).await?;
    change_status(store, &incident, status, &principal.user.username, note).await
}

/// The state change itself, for callers that already decided who may make it (a signed
/// one-time link, the engine resolving an incident whose alerts all resolved).
pub async fn change_status(
    store: &Store,
    incident: &Incident,
    status: IncidentStatus,
    actor: &str,
    note: &str,
) -> Result<Incident, AlertingError> {
    if status == IncidentStatus::Triggered {
        return Err(AlertingError::Invalid("an incident is triggered only by alerts".to_owned()));
    }
    if note.len() > 10_000 {
        return Err(AlertingError::Invalid("a note has at most 10000 bytes".to_owned()));
    }
    if !store.set_incident_status(incident.id, status, actor, note).await? {
        return Err(AlertingError::WrongStatus(format!(
            "incident {} is {}; it cannot become {status}",
            incident.id, incident.status
        )));
    }
    store.incident(incident.id).await?.ok_or(AlertingError::NotFound { what: "incident" })
}

/// How far back a deployment counts as a suspect for an incident.
const SUSPECT_WINDOW_MS: i64 = 60 * 60 * 1000;

/// What changed around an incident: the deployments of its project in the hour before it
/// opened (narrowed to the `service` and `environment` its alerts share, when they name them),
/// newest first — the first is the usual suspect, one rollback away.
pub async fn suspects(store: &Store, incident: &Incident) -> Result<Vec<opsloop_store::Deployment>, AlertingError> {
    let Some(project_id) = incident.project_id else { return Ok(Vec::new()) };
    let alerts: Vec<serde_json::Value> = serde_json::from_str(&incident.alerts).unwrap_or_default();
    let shared = |name: &str| -> Option<String> {
        let mut values = alerts.iter().map(|a| a["labels"][name].as_str());
        let first = values.next()??;
        values.all(|v| v == Some(first)).then(|| first.to_owned())
    };
    let (service, environment) = (shared("service"), shared("environment"));
    let deployments = store.list_deployments(project_id, service.as_deref(), environment.as_deref(), 50).await?;
    let since = incident.created_at - SUSPECT_WINDOW_MS;
    Ok(deployments.into_iter().filter(|d| (since..=incident.created_at).contains(&d.created_at)).collect())
}

/// Adds a note to an incident's timeline.
pub async fn add_note(store: &Store, principal: &Principal, id: i64, text: &str) -> Result<(), AlertingError> {
    let text = text.trim();
    if text.is_empty() || text.len() > 10_000 {
        return Err(AlertingError::Invalid("a note has 1 to 10000 bytes".to_owned()));
    }
    actionable(store, principal, id).await?;
    store.add_incident_event(id, "note", &principal.user.username, text).await?;
    Ok(())
}
