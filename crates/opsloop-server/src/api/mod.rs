//! The REST API under `/api/v1`: JSON in and out, errors as `{"error": {...}}`, keyset
//! pagination on lists, and an OpenAPI 3 document generated from these handlers.

pub mod admin;
pub mod agents;
pub mod deployments;
pub mod hooks;
pub mod incidents;
pub mod notifications;
pub mod oncall;
pub mod page_cache;
pub mod pipelines;
pub mod polling;
pub mod projects;
pub mod schedules;
pub mod terraform;
pub mod tokens;
pub mod triggers;
pub mod variables;

use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::http::Method;
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::auth::Access;
use crate::routes::{RouteTable, Surface};

/// Registers every API route with its access decision.
pub fn routes(table: RouteTable) -> RouteTable {
    use Access::*;
    let api = Surface::Api;
    table.add(api, Method::GET, "/api/v1/openapi.json", Public, openapi_json)
}

/// The accounts subsystem's routes (see `crate::subsystem`).
pub fn accounts_routes(table: RouteTable) -> RouteTable {
    use Access::*;
    use opsloop_core::Role::{Maintainer, Owner, Viewer};
    let api = Surface::Api;
    table
        .add(api, Method::GET, "/api/v1/me", Authenticated, tokens::me)
        .add(api, Method::GET, "/api/v1/projects", Authenticated, projects::list)
        .add(api, Method::POST, "/api/v1/projects", AuthenticatedWrite, projects::create)
        .add(api, Method::GET, "/api/v1/projects/{project}", Project(Viewer), projects::show)
        .add(api, Method::PATCH, "/api/v1/projects/{project}", Project(Maintainer), projects::update)
        .add(api, Method::DELETE, "/api/v1/projects/{project}", Project(Owner), projects::delete)
        .add(api, Method::GET, "/api/v1/projects/{project}/members", Project(Viewer), projects::members)
        .add(
            api,
            Method::PUT,
            "/api/v1/projects/{project}/members/{username}",
            Project(Maintainer),
            projects::set_member,
        )
        .add(
            api,
            Method::DELETE,
            "/api/v1/projects/{project}/members/{username}",
            Project(Maintainer),
            projects::remove_member,
        )
        .add(api, Method::GET, "/api/v1/tokens", Authenticated, tokens::list)
        .add(api, Method::POST, "/api/v1/tokens", AuthenticatedWrite, tokens::create)
        .add(api, Method::DELETE, "/api/v1/tokens/{id}", AuthenticatedWrite, tokens::revoke)
        .add(api, Method::GET, "/api/v1/admin/users", Admin, admin::list_users)
        .add(api, Method::POST, "/api/v1/admin/users", Admin, admin::create_user)
        .add(api, Method::GET, "/api/v1/admin/audit", Admin, admin::audit)
}

/// The deployments subsystem's routes (see `crate::subsystem`).
pub fn deployments_routes(table: RouteTable) -> RouteTable {
    use Access::*;
    use opsloop_core::Role::{Developer, Maintainer, Viewer};
    let api = Surface::Api;
    table
        .add(api, Method::POST, "/api/v1/projects/{project}/deployments", Project(Developer), deployments::create)
        .add(api, Method::GET, "/api/v1/projects/{project}/deployments", Project(Viewer), deployments::list)
        .add(
            api,
            Method::GET,
            "/api/v1/projects/{project}/deployments/{deployment}",
            Project(Viewer),
            deployments::show,
        )
        .add(
            api,
            Method::POST,
            "/api/v1/projects/{project}/deployments/{deployment}/approve",
            Project(Developer),
            deployments::approve,
        )
        .add(api, Method::POST, "/api/v1/projects/{project}/rollbacks", Project(Developer), deployments::rollback)
        .add(api, Method::GET, "/api/v1/projects/{project}/compare", Project(Viewer), deployments::compare)
        .add(api, Method::GET, "/api/v1/projects/{project}/environments", Project(Viewer), deployments::environments)
        .add(api, Method::GET, "/api/v1/projects/{project}/environments/plan", Project(Viewer), deployments::plan)
        .add(
            api,
            Method::POST,
            "/api/v1/projects/{project}/environments/{environment}/stop",
            Project(Developer),
            deployments::stop,
        )
        .add(
            api,
            Method::POST,
            "/api/v1/projects/{project}/environments/apply",
            Project(Maintainer),
            deployments::apply,
        )
}

/// The ci subsystem's routes (see `crate::subsystem`).
pub fn ci_routes(table: RouteTable) -> RouteTable {
    use Access::*;
    use opsloop_core::Role::{Developer, Maintainer, Viewer};
    let api = Surface::Api;
    table
        .add(api, Method::POST, "/api/v1/projects/{project}/pipelines", Project(Developer), pipelines::run)
        .add(api, Method::GET, "/api/v1/projects/{project}/pipelines", Project(Viewer), pipelines::list)
        .add(api, Method::GET, "/api/v1/projects/{project}/pipelines/{pipeline}", Project(Viewer), pipelines::show)
        .add(
            api,
            Method::POST,
            "/api/v1/projects/{project}/pipelines/{pipeline}/cancel",
            Project(Developer),
            pipelines::cancel,
        )
        .add(api, Method::GET, "/api/v1/jobs/{job}/log", Job(Viewer), pipelines::log)
        .add(api, Method::POST, "/api/v1/jobs/{job}/retry", Job(Developer), pipelines::retry_job)
        .add(api, Method::POST, "/api/v1/jobs/{job}/play", Job(Developer), pipelines::play_job)
        .add(api, Method::POST, "/api/v1/jobs/{job}/cancel", Job(Developer), pipelines::cancel_job)
        .add(api, Method::GET, "/api/v1/jobs/{job}/artifacts", Job(Viewer), pipelines::artifacts)
        .add(api, Method::GET, "/api/v1/jobs/{job}/artifacts/files", Job(Viewer), pipelines::artifact_files)
        .add(api, Method::GET, "/api/v1/jobs/{job}/artifacts/raw/{*path}", Job(Viewer), pipelines::artifact_file)
        .add(api, Method::POST, "/api/v1/projects/{project}/hooks/{forge}", Webhook, hooks::receive)
        .add(api, Method::GET, "/api/v1/projects/{project}/webhook", Project(Maintainer), hooks::settings)
        .add(api, Method::GET, "/api/v1/projects/{project}/triggers", Project(Maintainer), triggers::list)
        .add(api, Method::POST, "/api/v1/projects/{project}/triggers", Project(Maintainer), triggers::create)
        .add(
            api,
            Method::DELETE,
            "/api/v1/projects/{project}/triggers/{trigger}",
            Project(Maintainer),
            triggers::delete,
        )
        .add(api, Method::POST, "/api/v1/projects/{project}/trigger/pipeline", Webhook, triggers::trigger_pipeline)
        .add(api, Method::GET, "/api/v1/projects/{project}/polling", Project(Viewer), polling::show)
        .add(api, Method::GET, "/api/v1/projects/{project}/ci-settings", Project(Viewer), polling::ci_settings)
        .add(api, Method::PUT, "/api/v1/projects/{project}/ci-settings", Project(Maintainer), polling::set_ci_settings)
        .add(api, Method::PUT, "/api/v1/projects/{project}/polling", Project(Maintainer), polling::set)
        .add(api, Method::GET, "/api/v1/projects/{project}/schedules", Project(Viewer), schedules::list)
        .add(api, Method::POST, "/api/v1/projects/{project}/schedules", Project(Maintainer), schedules::create)
        .add(
            api,
            Method::PATCH,
            "/api/v1/projects/{project}/schedules/{schedule}",
            Project(Maintainer),
            schedules::update,
        )
        .add(
            api,
            Method::DELETE,
            "/api/v1/projects/{project}/schedules/{schedule}",
            Project(Maintainer),
            schedules::delete,
        )
        .add(api, Method::GET, "/api/v1/projects/{project}/variables", Project(Maintainer), variables::list)
        .add(api, Method::PUT, "/api/v1/projects/{project}/variables/{key}", Project(Maintainer), variables::set)
        .add(api, Method::DELETE, "/api/v1/projects/{project}/variables/{key}", Project(Maintainer), variables::delete)
        .add(api, Method::GET, "/api/v1/admin/variables", Admin, variables::list_instance)
        .add(api, Method::PUT, "/api/v1/admin/variables/{key}", Admin, variables::set_instance)
        .add(api, Method::DELETE, "/api/v1/admin/variables/{key}", Admin, variables::delete_instance)
}

/// The alerting subsystem's routes (see `crate::subsystem`).
pub fn alerting_routes(table: RouteTable) -> RouteTable {
    use Access::*;
    let api = Surface::Api;
    table
        .add(api, Method::GET, "/api/v1/incidents", Authenticated, incidents::list)
        .add(api, Method::GET, "/api/v1/incidents/{id}", Authenticated, incidents::show)
        .add(api, Method::POST, "/api/v1/incidents/{id}/acknowledge", AuthenticatedWrite, incidents::acknowledge)
        .add(api, Method::POST, "/api/v1/incidents/{id}/resolve", AuthenticatedWrite, incidents::resolve)
        .add(api, Method::POST, "/api/v1/incidents/{id}/notes", AuthenticatedWrite, incidents::add_note)
        .add(api, Method::GET, "/api/v1/oncall", Authenticated, oncall::list)
        .add(api, Method::GET, "/api/v1/oncall/{name}", Authenticated, oncall::who)
        .add(api, Method::GET, "/api/v1/oncall/{name}/shifts", Authenticated, oncall::shifts)
        .add(api, Method::GET, "/api/v1/oncall/{name}/calendar.ics", Authenticated, oncall::calendar)
}

/// The infrastructure subsystem's routes (see `crate::subsystem`): Terraform's `http` state
/// backend. GitLab's roles: developers read states, maintainers lock and write them.
pub fn infra_routes(table: RouteTable) -> RouteTable {
    use Access::*;
    use opsloop_core::Role::{Developer, Maintainer};
    let api = Surface::Api;
    let state = "/api/v1/projects/{project}/terraform/state/{name}";
    let lock = "/api/v1/projects/{project}/terraform/state/{name}/lock";
    table
        .add(api, Method::GET, "/api/v1/projects/{project}/terraform/states", Project(Developer), terraform::list)
        .add(api, Method::GET, state, Project(Developer), terraform::show)
        // States are larger than API bodies; the handlers count against their own limits.
        .add(api, Method::POST, state, Project(Maintainer), terraform::update.layer(DefaultBodyLimit::disable()))
        .add(api, Method::DELETE, state, Project(Maintainer), terraform::delete)
        .add(api, Method::POST, lock, Project(Maintainer), terraform::lock)
        .add(api, Method::DELETE, lock, Project(Maintainer), terraform::unlock)
        .add(
            api,
            Method::GET,
            "/api/v1/projects/{project}/terraform/state/{name}/versions",
            Project(Developer),
            terraform::versions,
        )
        .add(
            api,
            Method::GET,
            "/api/v1/projects/{project}/terraform/state/{name}/versions/{serial}",
            Project(Developer),
            terraform::version,
        )
}

/// The notifications subsystem's routes (see `crate::subsystem`).
pub fn notifications_routes(table: RouteTable) -> RouteTable {
    use Access::*;
    use opsloop_core::Role::Maintainer;
    let api = Surface::Api;
    table
        .add(api, Method::GET, "/api/v1/projects/{project}/notifications", Project(Maintainer), notifications::list)
        .add(api, Method::POST, "/api/v1/projects/{project}/notifications", Project(Maintainer), notifications::create)
        .add(
            api,
            Method::DELETE,
            "/api/v1/projects/{project}/notifications/{hook}",
            Project(Maintainer),
            notifications::delete,
        )
        .add(
            api,
            Method::GET,
            "/api/v1/projects/{project}/notifications/{hook}/deliveries",
            Project(Maintainer),
            notifications::deliveries,
        )
}

/// The agents subsystem's routes (see `crate::subsystem`).
pub fn agents_routes(table: RouteTable) -> RouteTable {
    use Access::*;
    let api = Surface::Api;
    table
        .add(api, Method::GET, "/api/v1/admin/agents", Admin, agents::list)
        .add(api, Method::POST, "/api/v1/admin/agents", Admin, agents::create)
        .add(api, Method::DELETE, "/api/v1/admin/agents/{id}", Admin, agents::revoke)
        .add(api, Method::POST, "/api/v1/agent/register", Agent, agents::register)
        .add(api, Method::POST, "/api/v1/agent/jobs/request", Agent, agents::request_job)
        .add(api, Method::GET, "/api/v1/agent/jobs/{job}/source", Agent, agents::source)
        .add(api, Method::GET, "/api/v1/agent/jobs/{job}/upstream/{position}", Agent, agents::upstream)
        .add(api, Method::POST, "/api/v1/agent/jobs/{job}/events", Agent, agents::events)
        .add(
            api,
            Method::PUT,
            "/api/v1/agent/jobs/{job}/artifacts",
            Agent,
            // Archives are far larger than API bodies; the handler counts against its own limit.
            agents::upload_artifacts.layer(DefaultBodyLimit::disable()),
        )
        .add(api, Method::POST, "/api/v1/agent/jobs/{job}/finish", Agent, agents::finish)
        .add(api, Method::GET, "/api/v1/agent/jobs/{job}/caches/{key}", Agent, agents::fetch_cache)
        .add(
            api,
            Method::PUT,
            "/api/v1/agent/jobs/{job}/caches/{key}",
            Agent,
            agents::store_cache.layer(DefaultBodyLimit::disable()),
        )
}

#[derive(OpenApi)]
#[openapi(
    info(title = "opsloop API", description = "The REST API of opsloop. Authenticate with `Authorization: Bearer <token>`; create tokens with `opsloop admin token create` or in the web UI under Settings."),
    paths(
        tokens::me,
        projects::list, projects::create, projects::show, projects::update, projects::delete,
        projects::members, projects::set_member, projects::remove_member,
        pipelines::run, pipelines::list, pipelines::show, pipelines::cancel, pipelines::log,
        pipelines::artifacts, pipelines::artifact_files, pipelines::artifact_file,
        pipelines::retry_job, pipelines::play_job, pipelines::cancel_job,
        hooks::receive, hooks::settings,
        variables::list, variables::set, variables::delete,
        variables::list_instance, variables::set_instance, variables::delete_instance,
        polling::show, polling::set, polling::ci_settings, polling::set_ci_settings,
        triggers::list, triggers::create, triggers::delete, triggers::trigger_pipeline,
        notifications::list, notifications::create, notifications::delete, notifications::deliveries,
        incidents::list, incidents::show, incidents::acknowledge, incidents::resolve, incidents::add_note,
        oncall::list, oncall::who, oncall::shifts, oncall::calendar,
        crate::checks::api::list, crate::checks::api::run,
        deployments::create, deployments::list, deployments::show, deployments::rollback, deployments::environments,
        deployments::plan, deployments::apply, deployments::approve, deployments::stop, deployments::compare,
        schedules::list, schedules::create, schedules::update, schedules::delete,
        terraform::list, terraform::show, terraform::update, terraform::delete, terraform::lock, terraform::unlock,
        terraform::versions, terraform::version,
        tokens::list, tokens::create, tokens::revoke,
        admin::list_users, admin::create_user, admin::audit,
        agents::list, agents::create, agents::revoke,
        agents::register, agents::request_job, agents::source, agents::upstream, agents::events,
        agents::upload_artifacts, agents::finish, agents::fetch_cache, agents::store_cache,
    ),
    components(schemas(crate::error::ErrorBody, crate::error::ErrorDetail)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document, built once: it only depends on the code.
pub fn openapi() -> &'static utoipa::openapi::OpenApi {
    static DOC: std::sync::OnceLock<utoipa::openapi::OpenApi> = std::sync::OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = ApiDoc::openapi();
        doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
        doc
    })
}

async fn openapi_json() -> axum::Json<&'static utoipa::openapi::OpenApi> {
    axum::Json(openapi())
}

/// `?limit=&after=` on every list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1 to 500 (default 50).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub after: Option<String>,
}

impl PageQuery {
    pub fn request(&self) -> opsloop_store::PageRequest {
        opsloop_store::PageRequest { after: self.after.clone(), limit: self.limit.unwrap_or(50) }
    }
}

/// One page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T: ToSchema> {
    pub items: Vec<T>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

impl<T: ToSchema> Page<T> {
    pub fn map<S>(page: opsloop_store::Page<S>, convert: impl Fn(S) -> T) -> Self {
        Page { items: page.items.into_iter().map(convert).collect(), next_cursor: page.next_cursor }
    }
}
