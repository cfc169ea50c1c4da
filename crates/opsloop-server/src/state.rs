//! State shared by every request.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::Method;
use opsloop_core::Clock;
use opsloop_store::Store;

use crate::api::page_cache::PageCache;
use crate::auth::rate_limit::LoginLimiter;
use crate::auth::token_cache::TokenCache;
use crate::config::ServerConfig;
use crate::metrics::Metrics;
use crate::routes::RouteSpec;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub store: Store,
    pub config: ServerConfig,
    pub clock: Arc<dyn Clock>,
    pub metrics: Metrics,
    pub login_limiter: LoginLimiter,
    pub token_cache: TokenCache,
    pub page_cache: PageCache,
    /// Limits concurrent password verifications (argon2 is deliberately expensive).
    pub password_checks: tokio::sync::Semaphore,
    /// Pipelines running at once on this server.
    pub pipeline_slots: tokio::sync::Semaphore,
    /// Every route's access decision, keyed by method and matched path.
    pub routes: HashMap<(Method, &'static str), RouteSpec>,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(store: Store, config: ServerConfig, specs: &[RouteSpec]) -> Self {
        let clock = store.clock();
        let login_limiter = LoginLimiter::new(config.login_attempts_per_window, config.login_window_seconds);
        let routes = specs.iter().map(|spec| ((spec.method.clone(), spec.path), spec.clone())).collect();
        let metrics = Metrics::new(store.clone());
        AppState(Arc::new(Inner {
            store,
            config,
            clock,
            metrics,
            login_limiter,
            token_cache: TokenCache::default(),
            page_cache: PageCache::default(),
            password_checks: tokio::sync::Semaphore::new(4),
            pipeline_slots: tokio::sync::Semaphore::new(4),
            routes,
        }))
    }
}
