//! The built-in reverse proxy: routes by host and path prefix to weighted backends (the
//! instances of a service version), over keep-alive connection pools, with streamed bodies,
//! X-Forwarded-* headers and upgrades (WebSocket). A route change is [`Proxy::switch`]: one pointer swap inside
//! the running process, never a restart or reload, so requests in flight finish on the old
//! backends while new ones go to the new. Every request is counted in the golden
//! [`Signals`](crate::signals::Signals) of its service and version.
//!
//! Written on hyper directly (not a crate like pingora) because the switch, the weights and
//! the signals must be ours, and hyper already sits under the server's HTTP stack.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::pool::{Pool, PooledBody};
use crate::signals::{BackendLoad, Signals, VersionSignals};
use crate::upstream::{self, UpstreamBody};

/// The upstream's streamed body (from the lean client or hyper's), or a short answer of the
/// proxy's own (no boxing per request).
pub type ProxyBody = Either<Counted<Either<UpstreamBody, PooledBody>>, Full<Bytes>>;

/// One instance that serves a route, with its share of the traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub address: SocketAddr,
    /// The release it runs (signals are kept per version).
    pub version: String,
    /// Relative share; 0 takes no new requests (draining).
    pub weight: u32,
}

/// Requests for `host` (any host when `None`) under `path_prefix` go to `service`'s backends.
/// A route without backends belongs to a service that does not run (stopped, or not deployed
/// yet): it answers 503 rather than let its requests fall through to a broader route (another
/// environment's service).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub host: Option<String>,
    pub path_prefix: String,
    pub service: String,
    pub backends: Vec<Backend>,
}

struct CompiledRoute {
    route: Route,
    /// Running sums of the backends' weights, for a weighted pick by binary search.
    cumulative: Vec<u64>,
    next: AtomicU64,
    signals: Vec<Arc<VersionSignals>>,
    /// Each backend's requests in flight.
    in_flight: Vec<Arc<BackendLoad>>,
}

/// The routes in matching order: host-specific before any-host, longer prefixes first.
pub struct RouteTable {
    routes: Vec<CompiledRoute>,
}

impl std::fmt::Debug for RouteTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.routes.iter().map(|r| &r.route)).finish()
    }
}

impl RouteTable {
    fn new(routes: Vec<Route>, signals: &Signals) -> Self {
        let mut routes: Vec<CompiledRoute> = routes
            .into_iter()
            .map(|mut route| {
                route.host = route.host.map(|h| h.to_ascii_lowercase());
                let mut total = 0;
                let cumulative = route
                    .backends
                    .iter()
                    .map(|b| {
                        total += u64::from(b.weight);
                        total
                    })
                    .collect();
                let in_flight = route.backends.iter().map(|b| signals.backend(b.address)).collect();
                let signals = route.backends.iter().map(|b| signals.of(&route.service, &b.version)).collect();
                CompiledRoute { route, cumulative, next: AtomicU64::new(0), signals, in_flight }
            })
            .collect();
        routes.sort_by(|a, b| {
            (b.route.host.is_some(), b.route.path_prefix.len())
                .cmp(&(a.route.host.is_some(), a.route.path_prefix.len()))
        });
        RouteTable { routes }
    }

    /// The position of the route `host` and `path` go to.
    fn position(&self, host: &str, path: &str) -> Option<usize> {
        self.routes.iter().position(|r| {
            r.route.host.as_deref().is_none_or(|h| h.eq_ignore_ascii_case(host))
                && path_under(path, &r.route.path_prefix)
        })
    }

    #[cfg(test)]
    fn find(&self, host: &str, path: &str) -> Option<&CompiledRoute> {
        self.position(host, path).map(|index| &self.routes[index])
    }

    pub fn routes(&self) -> Vec<Route> {
        self.routes.iter().map(|r| r.route.clone()).collect()
    }
}

/// `/api/users` is under `/api` and `/api/`, not under `/ap`.
fn path_under(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty() || path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
}

impl CompiledRoute {
    /// The next backend by weight (smooth over requests, no randomness, no lock).
    fn pick(&self) -> Option<usize> {
        let total = *self.cumulative.last()?;
        if total == 0 {
            return None;
        }
        let ticket = self.next.fetch_add(1, Ordering::Relaxed) % total;
        Some(self.cumulative.partition_point(|sum| *sum <= ticket))
    }
}

/// One request in flight to a backend, counted until its answer's body has been passed on
/// whole (or given up), so that an instance leaving a route is stopped only after it. Holds
/// the worker's route table, where the counter lives (no reference count shared between
/// cores is touched).
struct InFlight {
    table: Arc<RouteTable>,
    route: usize,
    backend: usize,
}

/// One request counted in flight, for its backend and its version, from its start until its
/// answer's body has passed whole (or it failed): dropping this is the one place both
/// counts go down, so draining and saturation never lose a stream.
impl InFlight {
    fn enter(table: Arc<RouteTable>, route: usize, backend: usize) -> InFlight {
        table.routes[route].in_flight[backend].enter();
        table.routes[route].signals[backend].started();
        InFlight { table, route, backend }
    }

    fn signals(&self) -> &VersionSignals {
        &self.table.routes[self.route].signals[self.backend]
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.table.routes[self.route].signals[self.backend].left();
        self.table.routes[self.route].in_flight[self.backend].leave();
    }
}

/// An upstream's answer body that keeps its request counted in flight until it ends.
pub struct Counted<B> {
    body: B,
    in_flight: Option<InFlight>,
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Counted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        let polled = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        if matches!(polled, std::task::Poll::Ready(None) | std::task::Poll::Ready(Some(Err(_)))) {
            self.in_flight = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// `Connection: upgrade` with an `Upgrade` header (a WebSocket handshake, typically).
fn wants_upgrade(headers: &http::HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// Passes an upgrade request on a connection of its own; when the upstream switches
/// protocols, joins the two upgraded connections byte for byte until either side closes.
async fn upgrade_through(address: SocketAddr, mut request: Request<Incoming>) -> Result<Response<ProxyBody>, String> {
    let client_side = hyper::upgrade::on(&mut request);
    let stream = tokio::net::TcpStream::connect(address).await.map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = connection.with_upgrades().await;
    });
    let mut response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        // Not switched: an ordinary answer, passed on as it is (its connection is its own).
        let (parts, body) = response.into_parts();
        let bytes = http_body_util::BodyExt::collect(body).await.map_err(|e| e.to_string())?.to_bytes();
        return Ok(Response::from_parts(parts, Either::Right(Full::new(bytes))));
    }
    let upstream_side = hyper::upgrade::on(&mut response);
    tokio::spawn(async move {
        let (Ok(client), Ok(upstream)) = (client_side.await, upstream_side.await) else { return };
        let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    });
    let (parts, _) = response.into_parts();
    Ok(Response::from_parts(parts, Either::Right(Full::new(Bytes::new()))))
}

/// Headers that describe one connection, not the message, and are not passed on (RFC 9110).
static HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Removes the hop-by-hop headers (but `Connection` when `keep_connection`). Most messages
/// carry few of them, so one pass over the names, comparing without hashing, comes first.
fn strip_hop_by_hop(headers: &mut http::HeaderMap, keep_connection: bool) {
    let hop_by_hop = |name: &HeaderName| HOP_BY_HOP.contains(name) && !(keep_connection && name == header::CONNECTION);
    if !headers.keys().any(hop_by_hop) {
        return;
    }
    for name in &HOP_BY_HOP {
        if hop_by_hop(name) {
            headers.remove(name);
        }
    }
}

/// What one serving loop keeps to itself: its upstream pool and its own copy of the route
/// table. The reference counts, round-robin tickets and locks it touches on every request
/// are then never shared with another thread's (a cache line bounced between cores costs
/// more than the work on it).
struct Worker {
    proxy: Arc<Proxy>,
    /// For requests with a body (hyper's client).
    pool: Pool,
    /// For the others.
    upstream: upstream::Pool,
    /// The route table as of `Proxy::generation`, compiled again when that moves.
    table: Mutex<(u64, Arc<RouteTable>)>,
}

impl Worker {
    fn new(proxy: Arc<Proxy>, pool: Pool) -> Arc<Worker> {
        let table = Mutex::new((u64::MAX, Arc::new(RouteTable { routes: Vec::new() })));
        Arc::new(Worker { proxy, pool, upstream: upstream::Pool::default(), table })
    }

    /// The current route table. A switch stores the new table, then moves the generation;
    /// a worker that sees the new generation therefore reads that table or a newer one.
    fn table(&self) -> Arc<RouteTable> {
        let generation = self.proxy.generation.load(Ordering::Acquire);
        let mut cached = self.table.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if cached.0 != generation {
            let routes = self.proxy.table.load().routes();
            *cached = (generation, Arc::new(RouteTable::new(routes, &self.proxy.signals)));
        }
        cached.1.clone()
    }
}

/// Makes `request` what the upstream gets (hyper's client path): origin-form target,
/// hop-by-hop headers gone (but an upgrade's `Connection`), X-Forwarded-* set.
/// [`forwarded_head`] does the same for the lean client; a test holds the two together.
fn forward_headers(
    request: &mut Request<Incoming>,
    host: Option<HeaderValue>,
    upgrade: bool,
    peer: SocketAddr,
    peer_ip: Option<&HeaderValue>,
) {
    let path = request.uri().path_and_query().cloned().unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    *request.uri_mut() = Uri::from(path);
    *request.version_mut() = http::Version::HTTP_11;
    let headers = request.headers_mut();
    strip_hop_by_hop(headers, upgrade);
    let earlier: Vec<&str> = headers.get_all(&X_FORWARDED_FOR).iter().filter_map(|v| v.to_str().ok()).collect();
    let forwarded_for = if earlier.is_empty() {
        peer_ip.cloned()
    } else {
        HeaderValue::from_str(&format!("{}, {}", earlier.join(", "), peer.ip())).ok()
    };
    if let Some(value) = forwarded_for {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    if let Some(value) = host {
        headers.insert(X_FORWARDED_HOST.clone(), value.clone());
        if !headers.contains_key(header::HOST) {
            headers.insert(header::HOST, value);
        }
    }
}

/// The request head for the lean client, written straight into bytes: the same result as
/// [`forward_headers`] without the hash lookups of editing a header map (a tenth of the
/// proxy's user-space time went to those).
fn forwarded_head(
    request: &Request<Incoming>,
    host: Option<&HeaderValue>,
    peer: SocketAddr,
    peer_ip: Option<&HeaderValue>,
) -> BytesMut {
    let mut out = BytesMut::with_capacity(512);
    out.put_slice(request.method().as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(request.uri().path_and_query().map_or("/", |p| p.as_str()).as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    let line = |out: &mut BytesMut, name: &[u8], value: &[u8]| {
        out.put_slice(name);
        out.put_slice(b": ");
        out.put_slice(value);
        out.put_slice(b"\r\n");
    };
    let mut has_host = false;
    let mut earlier_for = Vec::new();
    for (name, value) in request.headers() {
        if HOP_BY_HOP.contains(name) || name == X_FORWARDED_PROTO || name == X_FORWARDED_HOST {
            continue;
        }
        if name == X_FORWARDED_FOR {
            earlier_for.extend(value.to_str().ok());
            continue;
        }
        has_host |= name == header::HOST;
        line(&mut out, name.as_str().as_bytes(), value.as_bytes());
    }
    if earlier_for.is_empty() {
        if let Some(ip) = peer_ip {
            line(&mut out, X_FORWARDED_FOR.as_str().as_bytes(), ip.as_bytes());
        }
    } else {
        let value = format!("{}, {}", earlier_for.join(", "), peer.ip());
        line(&mut out, X_FORWARDED_FOR.as_str().as_bytes(), value.as_bytes());
    }
    line(&mut out, X_FORWARDED_PROTO.as_str().as_bytes(), b"http");
    if let Some(host) = host {
        line(&mut out, X_FORWARDED_HOST.as_str().as_bytes(), host.as_bytes());
        if !has_host {
            line(&mut out, b"host", host.as_bytes());
        }
    }
    out.put_slice(b"\r\n");
    out
}

pub struct Proxy {
    /// Read on every request without a lock; replaced whole by `switch`.
    table: arc_swap::ArcSwap<RouteTable>,
    /// Moves after every change of `table`; workers compare it to their copy's.
    generation: AtomicU64,
    client: Pool,
    signals: Signals,
    timeout: Duration,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").field("routes", &self.routes()).finish()
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from_static(text.as_bytes()))));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

impl Proxy {
    /// A proxy with no routes (every request is a 404 until the first switch).
    pub fn new(signals: Signals, timeout: Duration) -> Arc<Self> {
        let client = Pool::default();
        let table = arc_swap::ArcSwap::from_pointee(RouteTable::new(Vec::new(), &signals));
        Arc::new(Proxy { table, generation: AtomicU64::new(0), client, signals, timeout })
    }

    /// Replaces every route at once. Requests already routed finish where they went.
    pub fn switch(&self, routes: Vec<Route>) {
        self.table.store(Arc::new(RouteTable::new(routes, &self.signals)));
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Replaces the route for `route`'s host and path prefix (or adds it), leaving the others;
    /// also one atomic swap. Two callers updating different routes at once both land.
    pub fn set_route(&self, route: Route) {
        self.table.rcu(|current| {
            let mut routes = current.routes();
            match routes.iter_mut().find(|r| r.host == route.host && r.path_prefix == route.path_prefix) {
                Some(existing) => *existing = route.clone(),
                None => routes.push(route.clone()),
            }
            RouteTable::new(routes, &self.signals)
        });
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Removes the route for `host` and `path_prefix` (if there is one); one atomic swap.
    pub fn remove_route(&self, host: Option<&str>, path_prefix: &str) {
        self.table.rcu(|current| {
            let mut routes = current.routes();
            routes.retain(|r| !(r.host.as_deref() == host && r.path_prefix == path_prefix));
            RouteTable::new(routes, &self.signals)
        });
        self.generation.fetch_add(1, Ordering::Release);
    }

    pub fn routes(&self) -> Vec<Route> {
        self.table.load().routes()
    }

    pub fn signals(&self) -> &Signals {
        &self.signals
    }

    /// Passes one request to its route's next backend, with `worker`'s pool and table.
    async fn handle(
        &self,
        worker: &Worker,
        mut request: Request<Incoming>,
        peer: SocketAddr,
        peer_ip: Option<&HeaderValue>,
    ) -> Response<ProxyBody> {
        // HTTP/2 carries the host in the URI, HTTP/1 in the header.
        let host_header = match request.uri().authority() {
            Some(authority) => HeaderValue::from_str(authority.as_str()).ok(),
            None => request.headers().get(header::HOST).cloned(),
        };
        let host_text = host_header.as_ref().and_then(|h| h.to_str().ok()).unwrap_or("");
        let host = host_text
            .rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host_text, |(name, _)| name);
        let table = worker.table();
        let Some(route_index) = table.position(host, request.uri().path()) else {
            return plain(StatusCode::NOT_FOUND, "no route for this host and path\n");
        };
        let route = &table.routes[route_index];
        let Some(index) = route.pick() else {
            if route.route.backends.is_empty() {
                return plain(StatusCode::SERVICE_UNAVAILABLE, "this service is not running in this environment\n");
            }
            return plain(StatusCode::SERVICE_UNAVAILABLE, "no backend takes traffic on this route\n");
        };
        let backend_address = route.route.backends[index].address;
        // The worker's table goes with the request to its end, with the counters in it.
        let in_flight = InFlight::enter(table, route_index, index);
        let signals = in_flight.signals();

        let began = Instant::now();
        let deadline = tokio::time::Instant::from_std(began + self.timeout);
        let upgrade = wants_upgrade(request.headers());
        let answer = if !upgrade && upstream::fits(&request) {
            let head = forwarded_head(&request, host_header.as_ref(), peer, peer_ip);
            let head_request = request.method() == http::Method::HEAD;
            drop(request);
            let sent = worker.upstream.send(backend_address, &head, head_request);
            tokio::time::timeout_at(deadline, sent)
                .await
                .map(|answer| answer.map(|response| response.map(Either::Left)).map_err(|error| error.to_string()))
        } else {
            forward_headers(&mut request, host_header, upgrade, peer, peer_ip);
            if upgrade {
                // Boxed, like hyper's path below: the common (lean) request's future stays
                // small, and hyper moves it whole into its dispatcher.
                let answer =
                    tokio::time::timeout_at(deadline, Box::pin(upgrade_through(backend_address, request))).await;
                let error =
                    !matches!(&answer, Ok(Ok(response)) if response.status() == StatusCode::SWITCHING_PROTOCOLS);
                signals.answered(began.elapsed(), error);
                return match answer {
                    Ok(Ok(response)) => response,
                    Ok(Err(message)) => {
                        tracing::debug!(%message, backend = %backend_address, "upgrade failed");
                        plain(StatusCode::BAD_GATEWAY, "the upstream did not take the upgrade\n")
                    }
                    Err(_) => plain(StatusCode::GATEWAY_TIMEOUT, "the upstream took too long\n"),
                };
            }
            let sent = Box::pin(worker.pool.send(backend_address, request));
            tokio::time::timeout_at(deadline, sent).await.map(|answer| {
                answer
                    .map(|mut response| {
                        strip_hop_by_hop(response.headers_mut(), false);
                        response.map(Either::Right)
                    })
                    .map_err(|error| error.to_string())
            })
        };
        match answer {
            Ok(Ok(mut response)) => {
                signals.answered(began.elapsed(), response.status().is_server_error());
                let headers = response.headers_mut();
                // The server's own Date is off (its clock read per response showed in
                // profiles); a message must still carry one (RFC 9110 6.6.1).
                if !headers.contains_key(header::DATE)
                    && let Ok(now) = HeaderValue::from_str(&httpdate::fmt_http_date(std::time::SystemTime::now()))
                {
                    headers.insert(header::DATE, now);
                }
                response.map(|body| Either::Left(Counted { body, in_flight: Some(in_flight) }))
            }
            Ok(Err(error)) => {
                signals.answered(began.elapsed(), true);
                tracing::debug!(%error, backend = %backend_address, "upstream failed");
                plain(StatusCode::BAD_GATEWAY, "the upstream did not answer\n")
            }
            Err(_) => {
                signals.answered(began.elapsed(), true);
                plain(StatusCode::GATEWAY_TIMEOUT, "the upstream took too long\n")
            }
        }
    }

    /// Serves on `address` with `workers` threads, each with its own event loop, listening
    /// socket (`SO_REUSEPORT`, so the kernel spreads connections) and upstream pool, as nginx
    /// runs its workers: no work stealing and no cross-thread wake-ups on the request path.
    /// `on_bound` learns the address once every worker's socket is bound. Returns when
    /// `shutdown` flips, after open connections have finished their requests.
    pub fn serve_workers(
        self: Arc<Self>,
        address: SocketAddr,
        workers: usize,
        shutdown: tokio::sync::watch::Receiver<bool>,
        on_bound: impl FnOnce(SocketAddr),
    ) -> std::io::Result<()> {
        let first = reuseport_listener(address)?;
        let bound = first.local_addr()?;
        let mut listeners = vec![first];
        for _ in 1..workers.max(1) {
            listeners.push(reuseport_listener(bound)?);
        }
        on_bound(bound);
        let (mut inboxes, mut receivers) = (Vec::new(), Vec::new());
        for _ in &listeners {
            let (inbox, receiver) = tokio::sync::mpsc::unbounded_channel();
            inboxes.push(inbox);
            receivers.push(receiver);
        }
        let open = listeners.iter().map(|_| Arc::new(OpenConnections::default())).collect();
        let balance = Arc::new(Balance { open, inboxes });
        let mut threads = Vec::new();
        for (index, (listener, inbox)) in listeners.into_iter().zip(receivers).enumerate() {
            let (proxy, mut shutdown, balance) = (self.clone(), shutdown.clone(), balance.clone());
            threads.push(std::thread::spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
                    let worker = Worker::new(proxy, Pool::default());
                    let seat = Seat { index, balance, inbox };
                    let stopped = async move {
                        while !*shutdown.borrow() {
                            if shutdown.changed().await.is_err() {
                                break;
                            }
                        }
                    };
                    worker.serve(listener, stopped, Some(seat)).await;
                });
            }));
        }
        for thread in threads {
            let _ = thread.join();
        }
        Ok(())
    }

    /// Serves HTTP/1.1 and HTTP/2 on `listener` until `shutdown` resolves, then lets open
    /// connections finish their requests.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let pool = self.client.clone();
        Worker::new(self, pool).serve(listener, shutdown, None).await;
    }
}

impl Worker {
    /// Serves on `listener` until `shutdown` resolves; with a `seat`, one of
    /// [`Proxy::serve_workers`]' workers, taking its share of the connections.
    async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
        mut seat: Option<Seat>,
    ) {
        let open = seat.as_ref().map_or_else(Arc::default, |seat| seat.balance.open[seat.index].clone());
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder.http1().auto_date_header(false);
        builder.http2().auto_date_header(false);
        tokio::pin!(shutdown);
        loop {
            let handed_over = async {
                match seat.as_mut() {
                    Some(seat) => seat.inbox.recv().await,
                    None => std::future::pending().await,
                }
            };
            let (stream, peer, id) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => match &seat {
                        Some(seat) => match seat.balance.place(seat.index, stream, peer) {
                            Some(stream) => (stream, peer, open.opened()),
                            None => continue,
                        },
                        None => (stream, peer, open.opened()),
                    },
                    Err(error) => {
                        tracing::warn!(%error, "the proxy could not accept a connection");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
                Some(handoff) = handed_over => match tokio::net::TcpStream::from_std(handoff.stream) {
                    Ok(stream) => (stream, handoff.peer, handoff.id),
                    Err(_) => {
                        open.closed(handoff.id);
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            // One reference-counted value per connection: a request clones one pointer.
            let connection = Arc::new((self.clone(), peer, HeaderValue::from_str(&peer.ip().to_string()).ok()));
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let connection = connection.clone();
                async move {
                    let (worker, peer, peer_ip) = &*connection;
                    Ok::<_, std::convert::Infallible>(
                        worker.proxy.handle(worker, request, *peer, peer_ip.as_ref()).await,
                    )
                }
            });
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
            // Counted when accepted (before the task runs), so a stop that comes first still
            // waits for it.
            let open = open.clone();
            tokio::spawn(async move {
                let mut connection = std::pin::pin!(connection);
                let (mut registered, mut finishing) = (false, false);
                let ended = std::future::poll_fn(|cx| {
                    // A task's waker stays the same while it lives: registered once.
                    if !registered {
                        open.register(id, cx.waker());
                        registered = true;
                    }
                    if !finishing && open.stopping.load(Ordering::Acquire) {
                        connection.as_mut().graceful_shutdown();
                        finishing = true;
                    }
                    connection.as_mut().poll(cx)
                })
                .await;
                open.closed(id);
                if let Err(error) = ended {
                    tracing::debug!(%error, "a proxy connection ended with an error");
                }
            });
        }
        // Connections handed over but not taken yet are closed (no request was read).
        if let Some(seat) = seat.as_mut() {
            seat.inbox.close();
            while let Ok(handoff) = seat.inbox.try_recv() {
                open.closed(handoff.id);
            }
        }
        open.stop().await;
    }
}

/// Keeps the workers' connection counts within one of each other, as Envoy's "exact balance"
/// does. `SO_REUSEPORT` spreads connections by a hash of their addresses, so a few dozen
/// long-lived keep-alive connections often land a third more on one worker than another,
/// and that worker's clients wait longer (it showed in p99). A worker that accepts a
/// connection while it holds more than the least loaded worker plus one hands it over.
struct Balance {
    open: Vec<Arc<OpenConnections>>,
    inboxes: Vec<tokio::sync::mpsc::UnboundedSender<Handoff>>,
}

/// An accepted connection on its way to another worker (counted there already).
struct Handoff {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    id: u64,
}

/// One worker's place in the [`Balance`].
struct Seat {
    index: usize,
    balance: Arc<Balance>,
    inbox: tokio::sync::mpsc::UnboundedReceiver<Handoff>,
}

impl Balance {
    /// The connection back when worker `me` keeps it; `None` when it went to another.
    fn place(&self, me: usize, stream: tokio::net::TcpStream, peer: SocketAddr) -> Option<tokio::net::TcpStream> {
        let counts = self.open.iter().map(|open| open.count.load(Ordering::SeqCst));
        let Some((least, fewest)) = counts.enumerate().min_by_key(|(_, count)| *count) else { return Some(stream) };
        if least == me || self.open[me].count.load(Ordering::SeqCst) <= fewest + 1 {
            return Some(stream);
        }
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(%error, "a connection could not be handed to another proxy worker");
                return None;
            }
        };
        let id = self.open[least].opened();
        match self.inboxes[least].send(Handoff { stream, peer, id }) {
            Ok(()) => None,
            // That worker is stopping: this one keeps the connection.
            Err(returned) => {
                self.open[least].closed(id);
                tokio::net::TcpStream::from_std(returned.0.stream).ok()
            }
        }
    }
}

/// The open connections of one serving loop, and the flag that tells them to finish their
/// requests and close. Written here instead of using hyper-util's graceful shutdown, which
/// polls a channel receiver on every wake-up of every connection (3% of the proxy's user
/// time in profiles); here a connection reads one flag.
#[derive(Default)]
struct OpenConnections {
    stopping: std::sync::atomic::AtomicBool,
    /// The tasks to wake when stopping, by connection.
    wakers: Mutex<foldhash::HashMap<u64, std::task::Waker>>,
    next_id: AtomicU64,
    count: std::sync::atomic::AtomicUsize,
    all_closed: tokio::sync::Notify,
}

impl OpenConnections {
    fn opened(&self) -> u64 {
        self.count.fetch_add(1, Ordering::SeqCst);
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn register(&self, id: u64, waker: &std::task::Waker) {
        self.wakers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id, waker.clone());
    }

    fn closed(&self, id: u64) {
        self.wakers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&id);
        if self.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.all_closed.notify_waiters();
        }
    }

    /// Tells every connection to finish, then waits until all have closed. A connection
    /// registering after the wake-ups below reads the flag after registering (the lock
    /// orders the two), so none is missed.
    async fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let wakers: Vec<_> =
            self.wakers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).values().cloned().collect();
        for waker in wakers {
            waker.wake();
        }
        loop {
            let notified = self.all_closed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// A listening socket that other workers can bind too (`SO_REUSEPORT`).
fn reuseport_listener(address: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = if address.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    #[cfg(unix)]
    socket.set_reuseport(true)?;
    socket.set_nodelay(true)?;
    socket.bind(address)?;
    let listener = socket.listen(4096)?;
    listener.into_std()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(port: u16, version: &str, weight: u32) -> Backend {
        Backend { address: SocketAddr::from(([127, 0, 0, 1], port)), version: version.to_owned(), weight }
    }

    #[test]
    fn routes_match_host_then_the_longest_prefix() {
        let signals = Signals::default();
        let table = RouteTable::new(
            vec![
                Route {
                    host: None,
                    path_prefix: "/".into(),
                    service: "site".into(),
                    backends: vec![backend(1, "a", 1)],
                },
                Route {
                    host: None,
                    path_prefix: "/api".into(),
                    service: "api".into(),
                    backends: vec![backend(2, "a", 1)],
                },
                Route {
                    host: Some("Admin.Example.com".into()),
                    path_prefix: "/".into(),
                    service: "admin".into(),
                    backends: vec![backend(3, "a", 1)],
                },
            ],
            &signals,
        );
        let service = |host: &str, path: &str| table.find(host, path).map(|r| r.route.service.clone());
        assert_eq!(service("shop.example.com", "/api/users").as_deref(), Some("api"));
        assert_eq!(service("shop.example.com", "/apiary").as_deref(), Some("site"));
        assert_eq!(service("shop.example.com", "/api").as_deref(), Some("api"));
        assert_eq!(service("admin.example.com", "/api/users").as_deref(), Some("admin"));
    }

    #[test]
    fn one_route_changes_and_the_others_stay() {
        let proxy = Proxy::new(Signals::default(), Duration::from_secs(1));
        let route = |prefix: &str, port: u16| Route {
            host: None,
            path_prefix: prefix.into(),
            service: prefix.into(),
            backends: vec![backend(port, "v1", 1)],
        };
        proxy.set_route(route("/a", 1));
        proxy.set_route(route("/b", 2));
        proxy.set_route(route("/a", 3));
        let mut ports: Vec<(String, u16)> =
            proxy.routes().into_iter().map(|r| (r.path_prefix, r.backends[0].address.port())).collect();
        ports.sort();
        assert_eq!(ports, [("/a".to_owned(), 3), ("/b".to_owned(), 2)]);
    }

    #[tokio::test]
    async fn a_worker_ahead_by_more_than_one_connection_hands_the_next_over() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let connect = || async {
            let _client = tokio::net::TcpStream::connect(address).await.unwrap();
            let (stream, peer) = listener.accept().await.unwrap();
            (stream, peer, _client)
        };
        let (first, mut first_inbox) = tokio::sync::mpsc::unbounded_channel();
        let (second, mut second_inbox) = tokio::sync::mpsc::unbounded_channel();
        let balance = Balance { open: vec![Arc::default(), Arc::default()], inboxes: vec![first, second] };
        for _ in 0..2 {
            balance.open[0].opened();
        }
        // Two against none: worker 0 hands its next connection to worker 1, counted there.
        let (stream, peer, _client) = connect().await;
        assert!(balance.place(0, stream, peer).is_none());
        let handoff = second_inbox.try_recv().unwrap();
        assert_eq!((handoff.peer, balance.open[1].count.load(Ordering::SeqCst)), (peer, 1));
        // Two against one: close enough, worker 0 keeps it; and the least loaded always keeps.
        let (stream, peer, _client) = connect().await;
        assert!(balance.place(0, stream, peer).is_some());
        let (stream, peer, _client) = connect().await;
        assert!(balance.place(1, stream, peer).is_some());
        assert!(first_inbox.try_recv().is_err());
        // A stopping worker takes none: the connection stays, and its count is undone.
        for _ in 0..3 {
            balance.open[0].opened();
        }
        second_inbox.close();
        let (stream, peer, _client) = connect().await;
        assert!(balance.place(0, stream, peer).is_some());
        assert_eq!(balance.open[1].count.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn weights_split_traffic_exactly_and_zero_weight_takes_none() {
        let signals = Signals::default();
        let table = RouteTable::new(
            vec![Route {
                host: None,
                path_prefix: "/".into(),
                service: "web".into(),
                backends: vec![backend(1, "blue", 9), backend(2, "green", 1), backend(3, "old", 0)],
            }],
            &signals,
        );
        let route = table.find("x", "/").unwrap();
        let mut counts = [0; 3];
        for _ in 0..1000 {
            counts[route.pick().unwrap()] += 1;
        }
        assert_eq!(counts, [900, 100, 0]);
    }
}
