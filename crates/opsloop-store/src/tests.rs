//! Store tests, each run on SQLite and on PostgreSQL (`OPSLOOP_TEST_POSTGRES_URL`).

use super::*;
use crate::test_support::TestDatabase;
use opsloop_core::{DeploymentStatus, Event, IncidentStatus, JobStatus, PipelineStatus, Role};

/// Declares a test that runs the same body against both backends.
macro_rules! store_test {
    ($name:ident, |$store:ident| $body:block) => {
        mod $name {
            use super::*;

            async fn run($store: Store) $body

            #[tokio::test]
            async fn sqlite() {
                let db = TestDatabase::sqlite().await;
                run(db.store.clone()).await;
            }

            #[tokio::test]
            async fn postgres() {
                let Some(db) = TestDatabase::postgres().await else { return };
                run(db.store.clone()).await;
                db.drop_database().await;
            }
        }
    };
}

const ACTOR: Actor<'static> = Actor { name: "tester", source_ip: "127.0.0.1" };

async fn user(store: &Store, name: &str) -> User {
    store
        .create_user(
            NewUser {
                username: name,
                display_name: "",
                password_hash: "$argon2id$x",
                is_admin: false,
                must_change_password: false,
            },
            ACTOR,
        )
        .await
        .unwrap()
}

fn new_project(name: &str) -> NewProject<'_> {
    NewProject {
        name,
        description: "",
        repo_url: "/srv/git/x.git",
        default_branch: "main",
        pipeline_file: ".gitlab-ci.yml",
    }
}

store_test!(migrations_are_current_and_idempotent, |store| {
    store.check_ready().await.unwrap();
    crate::migrate::apply(&store).await.unwrap();
    store.check_ready().await.unwrap();
});

store_test!(users_are_unique_and_found, |store| {
    let alice = user(&store, "alice").await;
    assert_eq!(store.user_by_username("alice").await.unwrap().map(|u| u.id), Some(alice.id));
    let again = store
        .create_user(
            NewUser {
                username: "alice",
                display_name: "",
                password_hash: "h",
                is_admin: true,
                must_change_password: false,
            },
            ACTOR,
        )
        .await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    assert_eq!(store.count_users().await.unwrap(), 1);
    store.create_session("kept", alice.id, "csrf", store.now_ms() + 60_000).await.unwrap();
    store.create_session("ended", alice.id, "csrf", store.now_ms() + 60_000).await.unwrap();
    store.set_password(&alice, "$argon2id$new", true, Some("kept"), ACTOR).await.unwrap();
    assert!(store.session_by_hash("kept").await.unwrap().is_some());
    assert!(store.session_by_hash("ended").await.unwrap().is_none(), "other sessions end with a password change");
    let changed = store.user_by_id(alice.id).await.unwrap().unwrap();
    assert_eq!(changed.password_hash, "$argon2id$new");
    assert!(changed.must_change_password);
});

store_test!(tokens_expire_and_revoke, |store| {
    let alice = user(&store, "alice").await;
    let now = store.now_ms();
    let token = store.create_token(&alice, "ci", "hash-1", Role::Developer, Some(now + 60_000), ACTOR).await.unwrap();
    let (found, owner) = store.token_by_hash("hash-1").await.unwrap().unwrap();
    assert_eq!((found.id, found.role, owner.id), (token.id, Role::Developer, alice.id));
    assert!(found.is_usable_at(now));
    assert!(!found.is_usable_at(now + 60_001));
    store.revoke_token(&alice, token.id, ACTOR).await.unwrap();
    store.revoke_token(&alice, token.id, ACTOR).await.unwrap();
    let (revoked, _) = store.token_by_hash("hash-1").await.unwrap().unwrap();
    assert!(!revoked.is_usable_at(now));
    assert!(store.token_by_hash("nope").await.unwrap().is_none());
    let bob = user(&store, "bob").await;
    assert!(matches!(store.revoke_token(&bob, token.id, ACTOR).await, Err(StoreError::NotFound { .. })));
    assert_eq!(store.list_tokens(alice.id).await.unwrap().len(), 1);
});

store_test!(sessions_expire, |store| {
    let alice = user(&store, "alice").await;
    let now = store.now_ms();
    store.create_session("live", alice.id, "csrf", now + 60_000).await.unwrap();
    store.create_session("dead", alice.id, "csrf", now - 1).await.unwrap();
    assert!(store.session_by_hash("live").await.unwrap().is_some());
    assert!(store.session_by_hash("dead").await.unwrap().is_none());
    assert_eq!(store.delete_expired_sessions().await.unwrap(), 1);
    store.delete_session("live").await.unwrap();
    assert!(store.session_by_hash("live").await.unwrap().is_none());
});

store_test!(projects_crud_members_and_pages, |store| {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    for name in ["gamma", "alpha", "beta"] {
        store.create_project(new_project(name), alice.id, ACTOR).await.unwrap();
    }
    let dup = store.create_project(new_project("alpha"), alice.id, ACTOR).await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");

    let first = store.list_projects(None, &PageRequest::first(2)).await.unwrap();
    let names: Vec<_> = first.items.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["alpha", "beta"]);
    let second = store.list_projects(None, &PageRequest { after: first.next_cursor.clone(), limit: 2 }).await.unwrap();
    assert_eq!(second.items.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["gamma"]);
    assert!(second.next_cursor.is_none());
    assert!(store.list_projects(Some(bob.id), &PageRequest::first(10)).await.unwrap().items.is_empty());

    let alpha = store.project_by_name("alpha").await.unwrap().unwrap();
    assert_eq!(store.member_role(alpha.id, alice.id).await.unwrap(), Some(Role::Owner));
    store.set_member(&alpha, &bob, Role::Viewer, ACTOR).await.unwrap();
    store.set_member(&alpha, &bob, Role::Developer, ACTOR).await.unwrap();
    assert_eq!(store.member_role(alpha.id, bob.id).await.unwrap(), Some(Role::Developer));
    assert!(store.set_member(&alpha, &bob, Role::Admin, ACTOR).await.is_err());
    assert_eq!(store.list_members(alpha.id).await.unwrap().len(), 2);
    assert_eq!(store.list_projects(Some(bob.id), &PageRequest::first(10)).await.unwrap().items.len(), 1);

    let update = ProjectUpdate { default_branch: Some("trunk".into()), ..ProjectUpdate::default() };
    let updated = store.update_project("alpha", &update, ACTOR).await.unwrap();
    assert_eq!((updated.default_branch.as_str(), updated.repo_url.as_str()), ("trunk", "/srv/git/x.git"));
    assert!(matches!(store.update_project("zeta", &update, ACTOR).await, Err(StoreError::NotFound { .. })));

    store.remove_member(&alpha, &bob, ACTOR).await.unwrap();
    assert!(store.member_role(alpha.id, bob.id).await.unwrap().is_none());
    store.delete_project("alpha", ACTOR).await.unwrap();
    assert!(store.project_by_name("alpha").await.unwrap().is_none());
    assert!(matches!(store.delete_project("alpha", ACTOR).await, Err(StoreError::NotFound { .. })));
});

store_test!(names_that_look_like_sql_are_just_data, |store| {
    let alice = user(&store, "alice").await;
    let hostile = "x'); DROP TABLE projects; --";
    let project = NewProject { description: hostile, ..new_project("safe") };
    store.create_project(project, alice.id, ACTOR).await.unwrap();
    assert!(store.user_by_username(hostile).await.unwrap().is_none());
    assert_eq!(store.project_by_name("safe").await.unwrap().unwrap().description, hostile);
});

store_test!(audit_log_records_changes_and_refuses_edits, |store| {
    let alice = user(&store, "alice").await;
    store.create_project(new_project("web"), alice.id, ACTOR).await.unwrap();
    store
        .append_audit(NewAuditEntry { actor: ACTOR, action: "session.login", target: "alice", detail: "" })
        .await
        .unwrap();
    let page = store.list_audit(&PageRequest::first(2)).await.unwrap();
    let actions: Vec<_> = page.items.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["session.login", "project.create"]);
    assert_eq!(page.items[1].source_ip, "127.0.0.1");
    let rest = store.list_audit(&PageRequest { after: page.next_cursor.clone(), limit: 10 }).await.unwrap();
    assert_eq!(rest.items.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(), ["user.create"]);

    let tampered =
        with_pool!(store, |pool| sqlx::query("UPDATE audit_log SET actor = 'mallory'").execute(pool).await.map(|_| ()));
    assert!(tampered.is_err(), "audit log accepted an update");
    let erased = with_pool!(store, |pool| sqlx::query("DELETE FROM audit_log").execute(pool).await.map(|_| ()));
    assert!(erased.is_err(), "audit log accepted a delete");
});

store_test!(a_failed_change_leaves_no_audit_record, |store| {
    let alice = user(&store, "alice").await;
    let before = store.list_audit(&PageRequest::first(100)).await.unwrap().items.len();
    assert!(store.delete_project("missing", ACTOR).await.is_err());
    assert!(
        store
            .create_user(
                NewUser {
                    username: "alice",
                    display_name: "",
                    password_hash: "h",
                    is_admin: false,
                    must_change_password: false
                },
                ACTOR
            )
            .await
            .is_err()
    );
    let _ = alice;
    assert_eq!(store.list_audit(&PageRequest::first(100)).await.unwrap().items.len(), before);
});

store_test!(deployments_are_claimed_once_and_finish_with_the_serving_release, |store| {
    let owner = user(&store, "dana").await;
    let project = store.create_project(new_project("shop"), owner.id, ACTOR).await.unwrap();
    let v1 = store.create_release(project.id, "web", "v1", "aaa", "{}").await.unwrap();
    let v2 = store.create_release(project.id, "web", "v2", "bbb", "{}").await.unwrap();
    let new = |release_id| crate::NewDeployment {
        status: DeploymentStatus::Queued,
        environment: "production",
        service: "web",
        release_id,
        strategy: "blue-green",
        triggered_by: "dana",
        pipeline_id: None,
    };
    let first = store.create_deployment(&project, new(v1.id), Actor::SYSTEM).await.unwrap();
    assert_eq!((first.status.as_str(), first.previous_release_id), ("queued", None));
    assert!(store.claim_deployment(first.id).await.unwrap());
    assert!(!store.claim_deployment(first.id).await.unwrap(), "claimed twice");
    store.finish_deployment(&first, DeploymentStatus::Success, None, "[]", Some(Some(v1.id))).await.unwrap();
    let serving = store.serving_releases(Some(project.id)).await.unwrap();
    assert_eq!(serving.len(), 1);
    assert_eq!((serving[0].release_id, serving[0].deployment_id), (v1.id, first.id));

    let second = store.create_deployment(&project, new(v2.id), Actor::SYSTEM).await.unwrap();
    assert_eq!(second.previous_release_id, Some(v1.id));
    assert!(store.claim_deployment(second.id).await.unwrap());
    // Rolled back: v1 still serves, and since when is unchanged.
    store
        .finish_deployment(&second, DeploymentStatus::RolledBack, Some("error rate"), "[]", Some(Some(v1.id)))
        .await
        .unwrap();
    let after = store.serving_releases(None).await.unwrap();
    assert_eq!(after, serving);
    let listed = store.list_deployments(project.id, Some("web"), Some("production"), 10).await.unwrap();
    assert_eq!(listed.iter().map(|d| d.status.as_str()).collect::<Vec<_>>(), ["rolled_back", "success"]);
    assert_eq!(listed[0].version, "v2");
    assert_eq!(listed[0].reason.as_deref(), Some("error rate"));

    // A process that stops mid-deployment: the running one fails on the next start.
    let third = store.create_deployment(&project, new(v2.id), Actor::SYSTEM).await.unwrap();
    let queued = store.create_deployment(&project, new(v2.id), Actor::SYSTEM).await.unwrap();
    assert!(store.claim_deployment(third.id).await.unwrap());
    let failed = store.fail_interrupted_deployments("interrupted").await.unwrap();
    assert_eq!(failed.iter().map(|d| d.id).collect::<Vec<_>>(), [third.id]);
    assert_eq!(store.deployment(third.id).await.unwrap().unwrap().status, DeploymentStatus::Failed);
    assert_eq!(store.queued_deployments().await.unwrap().iter().map(|d| d.id).collect::<Vec<_>>(), [queued.id]);
});

#[test]
fn redact_url_hides_passwords() {
    assert_eq!(redact_url("postgres://ops:s3cret@db:5432/ops"), "postgres://ops:REDACTED@db:5432/ops");
    assert_eq!(redact_url("postgres://db/ops"), "postgres://db/ops");
    assert!(!redact_url("::not a url s3cret").contains("s3cret"));
}

store_test!(a_project_always_keeps_an_owner_even_under_concurrent_changes, |store| {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let project = store.create_project(new_project("web"), alice.id, ACTOR).await.unwrap();
    assert!(matches!(store.remove_member(&project, &alice, ACTOR).await, Err(StoreError::LastOwner)));
    assert!(matches!(store.set_member(&project, &alice, Role::Viewer, ACTOR).await, Err(StoreError::LastOwner)));
    store.set_member(&project, &bob, Role::Owner, ACTOR).await.unwrap();
    // Both owners demoted at once: one change wins, the other is refused.
    let (first, second) = tokio::join!(
        store.set_member(&project, &alice, Role::Viewer, ACTOR),
        store.set_member(&project, &bob, Role::Viewer, ACTOR)
    );
    let owners = store.list_members(project.id).await.unwrap().iter().filter(|m| m.role == Role::Owner).count();
    assert_eq!(owners, 1, "{first:?} {second:?}");
    assert!(first.is_ok() != second.is_ok(), "{first:?} {second:?}");
});

store_test!(pipelines_jobs_and_logs_survive_and_interrupted_ones_fail, |store| {
    let alice = user(&store, "alice").await;
    let project = store.create_project(new_project("web"), alice.id, ACTOR).await.unwrap();
    let pipeline = store.create_pipeline(project.id, "main", "api", ACTOR).await.unwrap();
    assert_eq!((pipeline.status.as_str(), pipeline.created_by.as_str()), ("created", "tester"));
    let jobs = store
        .start_pipeline(pipeline.id, "abc123", &[("build".into(), "build".into()), ("test".into(), "test".into())])
        .await
        .unwrap();
    assert_eq!(jobs.iter().map(|j| j.name.as_str()).collect::<Vec<_>>(), ["build", "test"]);
    store.job_started(jobs[0].id).await.unwrap();
    store.append_job_log(jobs[0].id, 0, "$ make\n").await.unwrap();
    store.append_job_log(jobs[0].id, 1, "built ünïcode ✓\n").await.unwrap();
    store.job_finished(jobs[0].id, JobStatus::Success, Some(0)).await.unwrap();
    assert_eq!(store.job_log(jobs[0].id).await.unwrap(), "$ make\nbuilt ünïcode ✓\n");
    let (job, project_id) = store.job_by_id(jobs[0].id).await.unwrap().unwrap();
    assert_eq!((job.status.as_str(), job.exit_code, project_id), ("success", Some(0), project.id));
    store.job_started(jobs[1].id).await.unwrap();

    // The server dies here; at the next start the interrupted work is failed, not rerun.
    assert_eq!(store.fail_interrupted().await.unwrap(), 1);
    let after = store.pipeline_by_id(pipeline.id).await.unwrap().unwrap();
    assert_eq!(after.status, PipelineStatus::Failed);
    assert!(after.error.contains("runner_system_failure"));
    let statuses: Vec<JobStatus> = store.jobs_of(pipeline.id).await.unwrap().into_iter().map(|j| j.status).collect();
    assert_eq!(statuses, [JobStatus::Success, JobStatus::Failed]);
    let second = store.create_pipeline(project.id, "main", "web", ACTOR).await.unwrap();
    let page = store.list_pipelines(project.id, &PageRequest::first(1)).await.unwrap();
    assert_eq!(page.items[0].id, second.id, "newest first");
    let rest = store.list_pipelines(project.id, &PageRequest { after: page.next_cursor, limit: 5 }).await.unwrap();
    assert_eq!(rest.items.iter().map(|p| p.id).collect::<Vec<_>>(), [pipeline.id]);
});

store_test!(a_due_poll_is_claimed_once_and_refs_are_replaced, |store| {
    let alice = user(&store, "alice").await;
    let project = store.create_project(new_project("web"), alice.id, ACTOR).await.unwrap();
    assert!(store.claim_due_polls(1_000_000).await.unwrap().is_empty(), "polling is off by default");
    store.set_poll_interval(&project, 60, ACTOR).await.unwrap();
    let (first, second) = tokio::join!(store.claim_due_polls(1_000_000), store.claim_due_polls(1_000_000));
    let claimed: Vec<_> = first.unwrap().into_iter().chain(second.unwrap()).collect();
    assert_eq!(claimed.len(), 1, "two servers, one poll");
    assert_eq!((claimed[0].0.id, claimed[0].1), (project.id, 0), "never polled before");
    assert!(store.claim_due_polls(1_059_999).await.unwrap().is_empty(), "not due yet");
    assert_eq!(store.claim_due_polls(1_060_000).await.unwrap()[0].1, 1_000_000);

    store
        .set_polled_refs(project.id, &[("refs/heads/main".into(), "a".into()), ("refs/tags/v1".into(), "b".into())])
        .await
        .unwrap();
    store.set_polled_refs(project.id, &[("refs/heads/main".into(), "c".into())]).await.unwrap();
    let refs = store.polled_refs(project.id).await.unwrap();
    assert_eq!(refs.len(), 1, "a deleted tag is forgotten");
    assert_eq!(refs["refs/heads/main"], "c");
});

store_test!(a_queued_pipeline_outlives_a_restart_with_its_request, |store| {
    let alice = user(&store, "alice").await;
    let project = store.create_project(new_project("web"), alice.id, ACTOR).await.unwrap();
    let request = crate::PipelineRequest { sha: "abc123".into(), variables: "sealed".into() };
    let queued = store.create_requested_pipeline(project.id, "main", "push", &request, ACTOR).await.unwrap();
    let running = store.create_pipeline(project.id, "main", "api", ACTOR).await.unwrap();
    store.start_pipeline(running.id, "def456", &[("build".into(), "build".into())]).await.unwrap();

    assert_eq!(store.fail_interrupted().await.unwrap(), 1, "only the running one fails");
    let resumable = store.queued_pipelines().await.unwrap();
    assert_eq!(resumable.len(), 1);
    assert_eq!((resumable[0].0.id, &resumable[0].1), (queued.id, &request));
    assert_eq!(store.pipeline_by_id(running.id).await.unwrap().unwrap().status, PipelineStatus::Failed);

    // Handed to two runs at once, it is claimed by one.
    let (first, second) = tokio::join!(store.claim_pipeline(queued.id), store.claim_pipeline(queued.id));
    assert!(first.unwrap() != second.unwrap(), "exactly one claim wins");
    assert!(store.queued_pipelines().await.unwrap().is_empty(), "a claimed pipeline is no longer queued");
});

store_test!(agent_jobs_are_claimed_once_by_fitting_agents, |store| {
    let owner = user(&store, "agent-owner").await;
    let project = store.create_project(new_project("agents"), owner.id, ACTOR).await.unwrap();
    let pipeline = store.create_pipeline(project.id, "main", "api", ACTOR).await.unwrap();
    let names: Vec<(String, String)> = (0..40).map(|i| (format!("job{i}"), "test".to_owned())).collect();
    let jobs = store.start_pipeline(pipeline.id, "abc", &names).await.unwrap();
    let linux = vec!["linux".to_owned()];
    for (i, job) in jobs.iter().enumerate() {
        let tags = if i % 4 == 0 { vec!["gpu".to_owned()] } else { linux.clone() };
        store.queue_agent_job(job.id, pipeline.id, &tags, &format!("spec{i}")).await.unwrap();
    }
    let mut agents = Vec::new();
    for name in ["a1", "a2", "a3", "a4"] {
        let agent = store.create_agent(name, &format!("digest-{name}"), ACTOR).await.unwrap();
        store.register_agent(agent.id, &linux, 2, "test", "host").await.unwrap();
        agents.push(agent.id);
    }
    // Four agents claim at once until the queue has nothing left that fits them.
    let mut tasks = Vec::new();
    for agent in agents.clone() {
        let (store, tags) = (store.clone(), linux.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while let Some(claimed) = store.claim_agent_job(agent, &tags).await.unwrap() {
                mine.push(claimed.job_id);
            }
            mine
        }));
    }
    let mut claimed = Vec::new();
    for task in tasks {
        claimed.extend(task.await.unwrap());
    }
    claimed.sort_unstable();
    let before = claimed.len();
    claimed.dedup();
    assert_eq!(before, claimed.len(), "a job was claimed twice");
    assert_eq!(claimed.len(), 30, "every linux job is claimed, no gpu job");
    let listed = store.list_agents().await.unwrap();
    assert_eq!(listed.iter().map(|a| a.running_jobs).sum::<i64>(), 30);
    assert_eq!(listed[0].tags, linux);

    // Heartbeats, cancel, finish, loss.
    let (job, other) = (claimed[0], claimed[1]);
    let owner_of = |id: i64| {
        let store = store.clone();
        async move {
            for agent in store.list_agents().await.unwrap() {
                if store.agent_job_heartbeat(id, agent.id).await.unwrap().is_some() {
                    return agent.id;
                }
            }
            panic!("no agent holds job {id}");
        }
    };
    let job_agent = owner_of(job).await;
    assert!(store.agent_job_heartbeat(job, job_agent + 1000).await.unwrap().is_none());
    assert!(!store.cancel_agent_job(job).await.unwrap());
    assert_eq!(store.agent_job_heartbeat(job, job_agent).await.unwrap(), Some(true));
    assert!(store.finish_agent_job(job, job_agent).await.unwrap());
    assert!(!store.finish_agent_job(job, job_agent).await.unwrap());
    assert!(store.agent_job_heartbeat(job, job_agent).await.unwrap().is_none());
    let lost = store.take_lost_agent_jobs(store.now_ms() + 1).await.unwrap();
    assert_eq!(lost.len(), 29);
    assert!(lost.iter().any(|(id, _)| *id == other));
    assert_eq!(store.agent_job_state(other).await.unwrap().as_deref(), Some("lost"));

    // A requeued job can be claimed again; a queued one is canceled off the queue.
    store.queue_agent_job(other, pipeline.id, &linux, "again").await.unwrap();
    let again = store.claim_agent_job(agents[0], &linux).await.unwrap().unwrap();
    assert_eq!((again.job_id, again.attempt, again.spec.as_str()), (other, 2, "again"));
    let gpu = jobs[0].id;
    assert!(store.cancel_agent_job(gpu).await.unwrap());
    let next_gpu = store.claim_agent_job(agents[0], &["gpu".to_owned()]).await.unwrap().unwrap();
    assert_eq!(next_gpu.job_id, jobs[4].id);

    // A long queue of jobs nobody can take does not hide the one behind it.
    let names: Vec<(String, String)> = (0..1200).map(|i| (format!("blocked{i}"), "test".to_owned())).collect();
    let pipeline = store.create_pipeline(project.id, "main", "api", ACTOR).await.unwrap();
    let blocked = store.start_pipeline(pipeline.id, "abc", &names).await.unwrap();
    for job in &blocked[..1199] {
        store.queue_agent_job(job.id, pipeline.id, &["arm64".to_owned()], "spec").await.unwrap();
    }
    let last = blocked[1199].id;
    store.queue_agent_job(last, pipeline.id, &linux, "spec").await.unwrap();
    let found = store.claim_agent_job(agents[1], &linux).await.unwrap().unwrap();
    assert_eq!(found.job_id, last);

    // A revoked agent's token no longer finds it.
    assert!(store.agent_by_token("digest-a1").await.unwrap().is_some());
    assert!(store.revoke_agent(agents[0], ACTOR).await.unwrap());
    assert!(store.agent_by_token("digest-a1").await.unwrap().is_none());
    assert!(!store.revoke_agent(agents[0], ACTOR).await.unwrap());
});

store_test!(artifacts_are_found_until_they_expire, |store| {
    let owner = user(&store, "artifact-owner").await;
    let project = store.create_project(new_project("artifacts"), owner.id, ACTOR).await.unwrap();
    let pipeline = store.create_pipeline(project.id, "main", "api", ACTOR).await.unwrap();
    let jobs = store
        .start_pipeline(pipeline.id, "abc", &[("build".into(), "build".into()), ("docs".into(), "build".into())])
        .await
        .unwrap();
    let now = store.now_ms();
    store.record_artifacts(jobs[0].id, "a/1.zip", 10, 2, Some(now + 1000)).await.unwrap();
    store.record_artifacts(jobs[1].id, "a/2.zip", 20, 1, None).await.unwrap();
    store.record_artifacts(jobs[1].id, "a/2b.zip", 30, 3, None).await.unwrap();
    assert_eq!(store.job_artifacts(jobs[1].id).await.unwrap().unwrap().object_key, "a/2b.zip");
    assert_eq!(store.pipeline_artifacts(pipeline.id).await.unwrap().len(), 2);
    assert!(store.take_expired_artifacts(now).await.unwrap().is_empty());
    assert_eq!(store.take_expired_artifacts(now + 1000).await.unwrap(), ["a/1.zip"]);
    assert!(store.job_artifacts(jobs[0].id).await.unwrap().is_none());
    assert_eq!(store.pipeline_artifacts(pipeline.id).await.unwrap().len(), 1);
});

store_test!(deliveries_are_queued_per_hook_claimed_once_and_retried, |store| {
    let owner = user(&store, "hook-owner").await;
    let project = store.create_project(new_project("hooked"), owner.id, ACTOR).await.unwrap();
    let both = ["pipeline".to_owned(), "job".to_owned()];
    let all = store.create_notification_hook(&project, "http://a.example/hook", "s1", &both, ACTOR).await.unwrap();
    let jobs_only = store
        .create_notification_hook(&project, "http://b.example/hook", "s2", &["job".to_owned()], ACTOR)
        .await
        .unwrap();
    assert_eq!(store.notification_hooks(project.id).await.unwrap().len(), 2);
    assert_eq!(store.queue_deliveries(project.id, "pipeline", "{\"p\":1}").await.unwrap(), 1);
    assert_eq!(store.queue_deliveries(project.id, "job", "{\"j\":1}").await.unwrap(), 2);

    let now = store.now_ms();
    let first = store.claim_due_deliveries(now, 30_000, 10).await.unwrap();
    assert_eq!(first.len(), 3);
    assert!(store.claim_due_deliveries(now, 30_000, 10).await.unwrap().is_empty(), "claimed once");
    let failing = first.iter().find(|d| d.hook_id == jobs_only.id).unwrap();
    store.record_delivery_attempt(failing.id, false, Some(500), "HTTP 500", Some(now + 1000)).await.unwrap();
    for delivered in first.iter().filter(|d| d.id != failing.id) {
        store.record_delivery_attempt(delivered.id, true, Some(200), "", None).await.unwrap();
    }
    let retry = store.claim_due_deliveries(now + 1000, 30_000, 10).await.unwrap();
    assert_eq!(retry.iter().map(|d| d.id).collect::<Vec<_>>(), [failing.id]);
    assert_eq!(retry[0].attempts, 1);
    store.record_delivery_attempt(failing.id, false, None, "connection refused", None).await.unwrap();
    let log = store.deliveries(jobs_only.id, 10).await.unwrap();
    assert_eq!((log[0].state.as_str(), log[0].attempts), ("failed", 2));
    assert_eq!(store.deliveries(all.id, 10).await.unwrap().iter().filter(|d| d.state == "delivered").count(), 2);

    assert!(store.delete_notification_hook(&project, jobs_only.id, ACTOR).await.unwrap());
    assert!(store.deliveries(jobs_only.id, 10).await.unwrap().is_empty());
});

store_test!(events_are_read_from_where_a_subscriber_joined, |store| {
    let owner = user(&store, "eve").await;
    let project = store.create_project(new_project("evented"), owner.id, ACTOR).await.unwrap();
    let first = store.create_pipeline(project.id, "main", "push", ACTOR).await.unwrap();
    store.finish_pipeline(first.id, PipelineStatus::Failed, "no runner").await.unwrap();
    // Joins now: the first pipeline's end is history.
    let cursor = store.event_cursor("test").await.unwrap();
    assert_eq!(store.events_after(cursor, 10).await.unwrap(), Vec::new());
    let second = store.create_pipeline(project.id, "main", "push", ACTOR).await.unwrap();
    let jobs = store.start_pipeline(second.id, "abc", &[("build".to_owned(), "test".to_owned())]).await.unwrap();
    store.job_finished(jobs[0].id, JobStatus::Success, Some(0)).await.unwrap();
    store.finish_pipeline(second.id, PipelineStatus::Success, "").await.unwrap();
    let events = store.events_after(cursor, 10).await.unwrap();
    let seen: Vec<Event> = events.iter().map(|e| e.event.clone()).collect();
    let (project_id, pipeline_id) = (project.id, second.id);
    assert_eq!(
        seen,
        [
            Event::PipelineStarted { project_id, pipeline_id },
            Event::JobFinished { project_id, pipeline_id, job_id: jobs[0].id, status: JobStatus::Success },
            Event::PipelineFinished { project_id, pipeline_id, status: PipelineStatus::Success },
        ]
    );
    store.advance_event_cursor("test", events[1].id).await.unwrap();
    assert_eq!(store.event_cursor("test").await.unwrap(), events[1].id);
    // A cursor never moves back (a slow duplicate delivery cannot rewind it).
    store.advance_event_cursor("test", events[0].id).await.unwrap();
    assert_eq!(store.event_cursor("test").await.unwrap(), events[1].id);
    // Only what every subscriber handled may go.
    assert_eq!(store.prune_events(store.now_ms() + 1).await.unwrap(), 3);
    assert_eq!(store.events_after(0, 10).await.unwrap().len(), 1);
});

store_test!(incidents_open_join_and_change_status_once, |store| {
    let cursor = store.event_cursor("test").await.unwrap();
    let new = NewIncident {
        project_id: None,
        dedup_key: "{}:{alertname=\"Down\"}",
        title: "Down",
        severity: "critical",
        escalation_policy: "default",
        alerts: "[1]",
    };
    let (first, created) = store.open_or_join_incident(&new).await.unwrap();
    assert!(created);
    assert_eq!(first.status, IncidentStatus::Triggered);
    // The same key while open joins it.
    let (joined, created) = store.open_or_join_incident(&NewIncident { alerts: "[1,2]", ..new.clone() }).await.unwrap();
    assert!(!created);
    assert_eq!((joined.id, joined.alerts.as_str()), (first.id, "[1,2]"));
    store.set_incident_escalation(first.id, "{\"level\":0}", Some(5)).await.unwrap();
    assert_eq!(store.incidents_due(10, 10).await.unwrap().len(), 1);
    assert!(store.set_incident_status(first.id, IncidentStatus::Acknowledged, "alice", "").await.unwrap());
    // Acknowledging twice changes nothing; an acknowledged incident no longer escalates.
    assert!(!store.set_incident_status(first.id, IncidentStatus::Acknowledged, "bob", "").await.unwrap());
    assert!(store.incidents_due(10, 10).await.unwrap().is_empty());
    let acked = store.incident(first.id).await.unwrap().unwrap();
    assert_eq!(acked.assignee.as_deref(), Some("alice"));
    assert!(store.set_incident_status(first.id, IncidentStatus::Resolved, "alice", "fixed").await.unwrap());
    // Resolved: the same key opens a new one.
    let (second, created) = store.open_or_join_incident(&new).await.unwrap();
    assert!(created && second.id != first.id);
    let kinds: Vec<String> = store.incident_timeline(first.id).await.unwrap().into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds, ["triggered", "alerts", "acknowledged", "resolved"]);
    let open = store.incidents(&IncidentFilter { open: true, ..Default::default() }).await.unwrap();
    assert_eq!(open.iter().map(|i| i.id).collect::<Vec<_>>(), [second.id]);
    let resolved = IncidentFilter { status: Some(IncidentStatus::Resolved), project: Some(None), ..Default::default() };
    assert_eq!(store.incidents(&resolved).await.unwrap().len(), 1);
    let events: Vec<Event> = store.events_after(cursor, 10).await.unwrap().into_iter().map(|e| e.event).collect();
    let statuses: Vec<IncidentStatus> = events
        .iter()
        .filter_map(|e| match e {
            Event::IncidentChanged { status, .. } => Some(*status),
            _ => None,
        })
        .collect();
    use IncidentStatus::*;
    assert_eq!(statuses, [Triggered, Acknowledged, Resolved, Triggered]);
});

store_test!(leases_state_and_nonces, |store| {
    assert!(store.take_lease("alerting", "a", 10_000).await.unwrap());
    assert!(!store.take_lease("alerting", "b", 10_000).await.unwrap());
    assert!(store.take_lease("alerting", "a", 10_000).await.unwrap());
    // An expired lease goes to whoever asks.
    assert!(store.take_lease("alerting", "a", -20_000).await.unwrap());
    assert!(store.take_lease("alerting", "b", 10_000).await.unwrap());
    assert_eq!(store.subsystem_state("alerting").await.unwrap(), None);
    store.save_subsystem_state("alerting", "{\"v\":1}").await.unwrap();
    store.save_subsystem_state("alerting", "{\"v\":2}").await.unwrap();
    assert_eq!(store.subsystem_state("alerting").await.unwrap().as_deref(), Some("{\"v\":2}"));
    assert!(store.use_nonce("n1").await.unwrap());
    assert!(!store.use_nonce("n1").await.unwrap());
});

fn tf_version<'a>(serial: i64, lineage: &'a str, digest: &'a str) -> NewTerraformVersion<'a> {
    NewTerraformVersion {
        serial,
        lineage,
        ciphertext: digest,
        digest,
        size: 10,
        created_by: "alice",
        pipeline_id: None,
        job_id: None,
    }
}

fn tf_lock(id: &str) -> NewTerraformLock<'_> {
    NewTerraformLock {
        lock_id: id,
        who: "alice@laptop",
        operation: "OperationTypeApply",
        info: "{}",
        locked_by: "alice",
    }
}

store_test!(terraform_states_keep_serial_lineage_and_lock_rules, |store| {
    let alice = user(&store, "alice").await;
    let project = store.create_project(new_project("infra"), alice.id, ACTOR).await.unwrap();
    let id = project.id;
    assert!(store.terraform_latest(id, "prod").await.unwrap().is_none());
    assert!(store.terraform_versions(id, "prod").await.unwrap().is_none());

    // The first version may have any serial; then only higher serials of the same lineage.
    assert_eq!(
        store.put_terraform_state(id, "prod", None, &tf_version(1, "L", "d1")).await.unwrap(),
        StateWrite::Written
    );
    assert_eq!(
        store.put_terraform_state(id, "prod", None, &tf_version(1, "L", "d1")).await.unwrap(),
        StateWrite::Unchanged
    );
    assert_eq!(
        store.put_terraform_state(id, "prod", None, &tf_version(1, "L", "other")).await.unwrap(),
        StateWrite::StaleSerial { latest: 1 }
    );
    assert_eq!(
        store.put_terraform_state(id, "prod", None, &tf_version(3, "L", "d3")).await.unwrap(),
        StateWrite::Written
    );
    assert_eq!(
        store.put_terraform_state(id, "prod", None, &tf_version(2, "L", "d2")).await.unwrap(),
        StateWrite::StaleSerial { latest: 3 }
    );
    assert_eq!(
        store.put_terraform_state(id, "prod", None, &tf_version(4, "M", "d4")).await.unwrap(),
        StateWrite::OtherLineage { latest: "L".into() }
    );
    let (latest, body) = store.terraform_latest(id, "prod").await.unwrap().unwrap();
    assert_eq!((latest.serial, body.as_str()), (3, "d3"));
    let serials: Vec<i64> =
        store.terraform_versions(id, "prod").await.unwrap().unwrap().iter().map(|v| v.serial).collect();
    assert_eq!(serials, [3, 1]);
    assert_eq!(store.terraform_version(id, "prod", 1).await.unwrap().unwrap().1, "d1");
    assert!(store.terraform_version(id, "prod", 2).await.unwrap().is_none());

    // Locked: only the holder writes; unlock by id; a force unlock is audited.
    assert_eq!(store.lock_terraform_state(id, "prod", &tf_lock("one")).await.unwrap(), LockOutcome::Acquired);
    assert_eq!(store.lock_terraform_state(id, "prod", &tf_lock("one")).await.unwrap(), LockOutcome::Acquired);
    let LockOutcome::Held(held) = store.lock_terraform_state(id, "prod", &tf_lock("two")).await.unwrap() else {
        panic!("a second lock was granted");
    };
    assert_eq!(held.lock_id, "one");
    assert!(matches!(
        store.put_terraform_state(id, "prod", None, &tf_version(4, "L", "d4")).await.unwrap(),
        StateWrite::Locked(_)
    ));
    assert!(matches!(
        store.put_terraform_state(id, "prod", Some("two"), &tf_version(4, "L", "d4")).await.unwrap(),
        StateWrite::Locked(_)
    ));
    assert_eq!(
        store.put_terraform_state(id, "prod", Some("one"), &tf_version(4, "L", "d4")).await.unwrap(),
        StateWrite::Written
    );
    assert!(matches!(store.unlock_terraform_state(id, "prod", "two").await.unwrap(), UnlockOutcome::Held(_)));
    let refused = store.delete_terraform_state(&project, "prod", ACTOR).await.unwrap();
    assert_eq!(refused.map(|lock| lock.lock_id).as_deref(), Some("one"), "a locked state is not deleted");
    assert_eq!(store.unlock_terraform_state(id, "prod", "one").await.unwrap(), UnlockOutcome::Released);
    assert_eq!(store.unlock_terraform_state(id, "prod", "one").await.unwrap(), UnlockOutcome::NotLocked);
    store.lock_terraform_state(id, "prod", &tf_lock("three")).await.unwrap();
    let listed = store.terraform_states(id).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].latest.as_ref().map(|v| v.serial), Some(4));
    assert_eq!(listed[0].lock.as_ref().map(|l| l.lock_id.as_str()), Some("three"));
    let broken = store.force_unlock_terraform_state(&project, "prod", ACTOR).await.unwrap();
    assert_eq!(broken.map(|l| l.lock_id), Some("three".to_owned()));
    assert!(store.terraform_lock(id, "prod").await.unwrap().is_none());
    let audit = store.list_audit(&PageRequest::first(5)).await.unwrap();
    assert_eq!(audit.items[0].action, "terraform.force_unlock");
    assert!(audit.items[0].detail.contains("lock=three"), "{}", audit.items[0].detail);

    assert_eq!(store.delete_terraform_state(&project, "prod", ACTOR).await.unwrap(), None);
    assert!(store.terraform_latest(id, "prod").await.unwrap().is_none());
    assert!(matches!(store.delete_terraform_state(&project, "prod", ACTOR).await, Err(StoreError::NotFound { .. })));
});

store_test!(concurrent_terraform_locks_have_exactly_one_winner, |store| {
    let alice = user(&store, "alice").await;
    let project = store.create_project(new_project("infra"), alice.id, ACTOR).await.unwrap();
    let mut tasks = Vec::new();
    for n in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("lock-{n}");
            store.lock_terraform_state(project.id, "shared", &tf_lock(&id)).await.map(|outcome| (id, outcome))
        }));
    }
    let mut winners = Vec::new();
    let mut holders = Vec::new();
    for task in tasks {
        match task.await.unwrap().unwrap() {
            (id, LockOutcome::Acquired) => winners.push(id),
            (_, LockOutcome::Held(lock)) => holders.push(lock.lock_id),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert!(holders.iter().all(|holder| *holder == winners[0]), "{holders:?} vs {winners:?}");
    let held = store.terraform_lock(project.id, "shared").await.unwrap().unwrap();
    assert_eq!(held.lock_id, winners[0]);
});
