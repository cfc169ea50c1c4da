//! A lean HTTP/1.1 client for the proxy's most common request: one without a body (GET,
//! HEAD, OPTIONS, DELETE) to a known upstream, on a pool of keep-alive connections.
//!
//! Written here rather than used from hyper because of where hyper's client spends its time:
//! each request travels through a channel to a task that owns the connection, and the answer
//! and its body come back through two more. For a small answer those hand-offs (and the
//! copies of the request into channel slots) cost more than the HTTP itself; they were the
//! largest share of the proxy's user-space time (`bench/proxy.py`, perf). Here the request's
//! own task writes the request and reads the answer on the connection it holds. Parsing is
//! `httparse`'s, as in hyper. Requests with a body, and upgrades, still go through hyper's
//! client (`pool.rs`), which streams a body both ways at once.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The longest response head read (status line and headers).
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 128;
/// The longest chunk-size line (with extensions) or trailer line.
const MAX_LINE: usize = 4096;
const READ_CHUNK: usize = 16 * 1024;
/// Idle connections kept per upstream address.
const MAX_IDLE_PER_UPSTREAM: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot reach the upstream: {0}")]
    Io(#[from] std::io::Error),
    #[error("the upstream closed the connection before its answer was complete")]
    Closed,
    #[error("the upstream's answer is not valid HTTP/1.1: {0}")]
    Malformed(&'static str),
}

/// Whether `request` takes this client: an idempotent method without a body, so that a
/// request lost on an idle connection the upstream had closed can be sent again.
pub fn fits<B: Body>(request: &Request<B>) -> bool {
    matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS | Method::DELETE)
        && request.body().is_end_stream()
}

/// One upstream connection and what has been read from it but not used yet.
struct Connection {
    stream: TcpStream,
    buffer: BytesMut,
}

impl Connection {
    async fn open(address: SocketAddr) -> std::io::Result<Connection> {
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        Ok(Connection { stream, buffer: BytesMut::with_capacity(READ_CHUNK) })
    }

    /// Reads what the socket has into the buffer; `Ok(0)` at its end. Through `poll_read`
    /// (not `try_read_buf`): a read that leaves room in the buffer tells tokio the socket is
    /// drained, so the next wait goes straight to the event loop instead of trying a read
    /// that fails with `EAGAIN` first; one system call fewer per request.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        if self.buffer.capacity() - self.buffer.len() < 1024 {
            self.buffer.reserve(READ_CHUNK);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.buffer)
    }

    /// Whether nothing has arrived since the last answer was read. Reads tokio's readiness
    /// (set by the event loop when the socket turned readable), not the socket: no system call.
    async fn quiet(&mut self) -> bool {
        self.buffer.is_empty()
            && std::future::poll_fn(|cx| Poll::Ready(self.stream.poll_read_ready(cx).is_pending())).await
    }

    async fn fill(&mut self) -> std::io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }
}

/// Idle keep-alive connections by upstream address (one pool per proxy worker). The keys are
/// the proxy's own backends, not input, so a fast unkeyed hash (foldhash) is safe and spares
/// SipHash's cost on every checkout and return.
#[derive(Clone, Default)]
pub struct Pool(Arc<Mutex<foldhash::HashMap<SocketAddr, Vec<Connection>>>>);

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("upstream::Pool")
    }
}

/// How one attempt on one connection ended, when it did not bring an answer.
enum Failure {
    /// Nothing came back: the connection was (most likely) closed while idle.
    Unanswered(UpstreamError),
    Failed(UpstreamError),
}

impl Pool {
    fn take(&self, address: SocketAddr) -> Option<Connection> {
        self.0.lock().ok()?.get_mut(&address)?.pop()
    }

    fn put(&self, address: SocketAddr, connection: Connection) {
        if let Ok(mut idle) = self.0.lock() {
            let connections = idle.entry(address).or_default();
            if connections.len() < MAX_IDLE_PER_UPSTREAM {
                connections.push(connection);
            }
        }
    }

    /// An idle connection found closed usually means the upstream closed them all (it
    /// restarted, or its keep-alive timeout passed): the others are not tried one by one.
    fn forget(&self, address: SocketAddr) {
        if let Ok(mut idle) = self.0.lock() {
            idle.remove(&address);
        }
    }

    /// Sends a request head (of a request that [`fits`]: CR LF ended, no body) to `address`,
    /// on an idle connection or a new one, and returns the answer's head with its body
    /// still to be read. `head_request`: the request's method is HEAD (no body comes back).
    pub async fn send(
        &self,
        address: SocketAddr,
        head: &[u8],
        head_request: bool,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        while let Some(mut connection) = self.take(address) {
            // Something arrived while it was idle: the upstream closed it, or answered
            // unasked (a 408 before closing). Such a connection is not used: that answer
            // would be taken for this request's.
            if !connection.quiet().await {
                continue;
            }
            match exchange(connection, head, head_request).await {
                Ok(answer) => return Ok(self.answer(address, answer)),
                Err(Failure::Failed(error)) => return Err(error),
                Err(Failure::Unanswered(_)) => {
                    self.forget(address);
                    break;
                }
            }
        }
        let connection = Connection::open(address).await?;
        match exchange(connection, head, head_request).await {
            Ok(answer) => Ok(self.answer(address, answer)),
            Err(Failure::Failed(error) | Failure::Unanswered(error)) => Err(error),
        }
    }

    fn answer(&self, address: SocketAddr, (head, connection): Answer) -> Response<UpstreamBody> {
        let back = head.keep_alive.then(|| (self.clone(), address));
        let mut body = UpstreamBody { connection: Some(connection), framing: head.framing, back, trailers: None };
        if body.is_end_stream() {
            body.finish();
        }
        head.response.map(|()| body)
    }
}

type Answer = (Head, Connection);

/// Writes the request on `connection` and reads the answer's head.
async fn exchange(mut connection: Connection, request: &[u8], head_request: bool) -> Result<Answer, Failure> {
    if let Err(error) = connection.stream.write_all(request).await {
        return Err(Failure::Unanswered(error.into()));
    }
    let mut answered = false;
    loop {
        match parse_head(&mut connection.buffer, head_request) {
            Ok(Some(head)) => {
                answered = true;
                let status = head.response.status();
                // Interim answers (100 Continue, 103 Early Hints) come before the real one.
                if status.is_informational() {
                    if status == StatusCode::SWITCHING_PROTOCOLS {
                        return Err(Failure::Failed(UpstreamError::Malformed("it switched protocols unasked")));
                    }
                    continue;
                }
                return Ok((head, connection));
            }
            Ok(None) => {}
            Err(error) => return Err(Failure::Failed(error)),
        }
        answered |= !connection.buffer.is_empty();
        match connection.fill().await {
            Ok(0) if answered => return Err(Failure::Failed(UpstreamError::Closed)),
            Ok(0) => return Err(Failure::Unanswered(UpstreamError::Closed)),
            Ok(_) => {}
            Err(error) if answered => return Err(Failure::Failed(error.into())),
            Err(error) => return Err(Failure::Unanswered(error.into())),
        }
    }
}

/// A whole response head at the start of `buffer`, taken out of it, with how its body is
/// delimited and whether the connection stays open; `None` while partial. Header values are
/// slices of the read buffer, not copies. Hop-by-hop headers (which describe this connection,
/// RFC 9110 section 7.6.1) are read for the framing and left out of the answer.
fn parse_head(buffer: &mut BytesMut, head_request: bool) -> Result<Option<Head>, UpstreamError> {
    let mut slots = [std::mem::MaybeUninit::uninit(); MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let length =
        match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut parsed, buffer, &mut slots) {
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) if buffer.len() > MAX_HEAD => {
                return Err(UpstreamError::Malformed("the response head is too long"));
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(UpstreamError::Malformed("too many headers")),
            Err(_) => return Err(UpstreamError::Malformed("the response head does not parse")),
        };
    let status = parsed
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or(UpstreamError::Malformed("no valid status code"))?;
    let version = if parsed.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };

    let mut framing = Framing::UntilClose;
    let (mut close, mut keep_alive_asked, mut chunked, mut transfer_encoded) = (false, false, false, false);
    let mut content_length: Option<u64> = None;
    // Where each kept name and value sit in the head, to slice them once it is frozen.
    let start = buffer.as_ptr() as usize;
    let place = |bytes: &[u8]| (bytes.as_ptr() as usize - start, bytes.len());
    let mut kept = Vec::with_capacity(parsed.headers.len());
    for header in parsed.headers.iter() {
        let name = header.name;
        let tokens = || std::str::from_utf8(header.value).unwrap_or("").split(',').map(str::trim);
        if name.eq_ignore_ascii_case("connection") {
            for token in tokens() {
                close |= token.eq_ignore_ascii_case("close");
                keep_alive_asked |= token.eq_ignore_ascii_case("keep-alive");
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoded = true;
            // Only the last coding decides (`gzip, chunked` is chunked).
            if let Some(last) = tokens().rfind(|t| !t.is_empty()) {
                chunked = last.eq_ignore_ascii_case("chunked");
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            for part in tokens() {
                let parsed = (!part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| part.parse::<u64>().ok())
                    .flatten()
                    .ok_or(UpstreamError::Malformed("Content-Length is not a number"))?;
                if content_length.is_some_and(|earlier| earlier != parsed) {
                    return Err(UpstreamError::Malformed("Content-Length values disagree"));
                }
                content_length = Some(parsed);
            }
            kept.push((place(name.as_bytes()), place(header.value)));
        } else if !HOP_BY_HOP_NAMES.iter().any(|hop| name.eq_ignore_ascii_case(hop)) {
            kept.push((place(name.as_bytes()), place(header.value)));
        }
    }
    let mut keep_alive = if version == Version::HTTP_10 { keep_alive_asked } else { !close };
    // RFC 9112 section 6.3, in its order.
    if head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        framing = Framing::Done;
    } else if transfer_encoded {
        // With both, Transfer-Encoding wins and the connection is not to be trusted after.
        keep_alive &= content_length.is_none() && chunked;
        if chunked {
            framing = Framing::Chunked(Chunk::Size);
        }
    } else {
        match content_length {
            Some(0) => framing = Framing::Done,
            Some(length) => framing = Framing::Length(length),
            None => keep_alive = false,
        }
    }

    let head = buffer.split_to(length).freeze();
    let mut headers = HeaderMap::with_capacity(kept.len());
    for ((name_at, name_len), (value_at, value_len)) in kept {
        let name = HeaderName::from_bytes(&head[name_at..name_at + name_len])
            .map_err(|_| UpstreamError::Malformed("a header name is invalid"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(value_at..value_at + value_len))
            .map_err(|_| UpstreamError::Malformed("a header value is invalid"))?;
        headers.append(name, value);
    }
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = headers;
    Ok(Some(Head { response, framing, keep_alive }))
}

/// Headers that describe one connection and end at it (RFC 9110 section 7.6.1).
const HOP_BY_HOP_NAMES: [&str; 7] =
    ["connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding"];

struct Head {
    response: Response<()>,
    framing: Framing,
    keep_alive: bool,
}

enum Framing {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
    Done,
}

/// Where a chunked body's decoder stands.
#[derive(Clone, Copy)]
enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
}

/// An upstream answer's body, read as the client reads it. At its end the connection goes
/// back to its pool (when the upstream keeps it open); dropped before, it is closed.
pub struct UpstreamBody {
    connection: Option<Connection>,
    framing: Framing,
    back: Option<(Pool, SocketAddr)>,
    /// Trailer fields of a chunked body, passed on as its last frame.
    trailers: Option<HeaderMap>,
}

impl UpstreamBody {
    fn finish(&mut self) {
        self.framing = Framing::Done;
        if let (Some(connection), Some((pool, address))) = (self.connection.take(), self.back.take()) {
            // Bytes beyond the answer mean the upstream does not speak HTTP as expected.
            if connection.buffer.is_empty() {
                pool.put(address, connection);
            }
        }
    }
}

/// Takes one line (without its CR LF) from the front of `buffer`; `None` while incomplete.
fn take_line(buffer: &mut BytesMut) -> Result<Option<Bytes>, UpstreamError> {
    match buffer.iter().position(|b| *b == b'\n') {
        Some(end) => {
            let mut line = buffer.split_to(end + 1).freeze();
            line.truncate(end);
            if line.last() == Some(&b'\r') {
                line.truncate(end - 1);
            }
            Ok(Some(line))
        }
        None if buffer.len() > MAX_LINE => Err(UpstreamError::Malformed("a chunk line is too long")),
        None => Ok(None),
    }
}

/// One `name: value` trailer line into `trailers` (at most [`MAX_HEADERS`] of them).
fn add_trailer(trailers: &mut HeaderMap, line: &Bytes) -> Result<(), UpstreamError> {
    const INVALID: UpstreamError = UpstreamError::Malformed("a trailer field is invalid");
    if trailers.len() >= MAX_HEADERS {
        return Err(UpstreamError::Malformed("too many trailer fields"));
    }
    let colon = line.iter().position(|b| *b == b':').ok_or(INVALID)?;
    let name = HeaderName::from_bytes(&line[..colon]).map_err(|_| INVALID)?;
    let value = HeaderValue::from_maybe_shared(line.slice_ref(line[colon + 1..].trim_ascii())).map_err(|_| INVALID)?;
    trailers.append(name, value);
    Ok(())
}

/// The size at the start of a chunk-size line (hex digits; extensions after `;` ignored).
fn chunk_size(line: &[u8]) -> Result<u64, UpstreamError> {
    let digits: &[u8] = line.split(|b| *b == b';').next().unwrap_or_default();
    let digits = digits.trim_ascii();
    if digits.is_empty() || digits.len() > 15 {
        return Err(UpstreamError::Malformed("a chunk size is invalid"));
    }
    digits.iter().try_fold(0u64, |size, digit| {
        let value = (*digit as char).to_digit(16).ok_or(UpstreamError::Malformed("a chunk size is invalid"))?;
        Ok(size * 16 + u64::from(value))
    })
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        let this = self.get_mut();
        loop {
            let Some(connection) = this.connection.as_mut() else { return Poll::Ready(None) };
            let buffer = &mut connection.buffer;
            // What the buffer already holds is used before the socket is read again.
            let step = match &mut this.framing {
                Framing::Done => return Poll::Ready(None),
                Framing::Length(remaining) | Framing::Chunked(Chunk::Data(remaining)) if !buffer.is_empty() => {
                    let take = usize::try_from(*remaining).unwrap_or(usize::MAX).min(buffer.len());
                    let data = buffer.split_to(take).freeze();
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        match &mut this.framing {
                            Framing::Chunked(state) => *state = Chunk::DataEnd,
                            _ => this.finish(),
                        }
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::UntilClose if !buffer.is_empty() => {
                    return Poll::Ready(Some(Ok(Frame::data(buffer.split().freeze()))));
                }
                Framing::Chunked(state @ (Chunk::Size | Chunk::DataEnd | Chunk::Trailers)) => match take_line(buffer) {
                    Err(error) => return Poll::Ready(Some(Err(error))),
                    Ok(None) => None,
                    Ok(Some(line)) => {
                        match *state {
                            Chunk::Size => match chunk_size(&line) {
                                Ok(0) => *state = Chunk::Trailers,
                                Ok(size) => *state = Chunk::Data(size),
                                Err(error) => return Poll::Ready(Some(Err(error))),
                            },
                            Chunk::DataEnd if line.is_empty() => *state = Chunk::Size,
                            Chunk::DataEnd => {
                                return Poll::Ready(Some(Err(UpstreamError::Malformed(
                                    "a chunk does not end in CRLF",
                                ))));
                            }
                            _ if line.is_empty() => {
                                let trailers = this.trailers.take();
                                this.finish();
                                if let Some(trailers) = trailers {
                                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                                }
                            }
                            _ => {
                                if let Err(error) = add_trailer(this.trailers.get_or_insert_with(HeaderMap::new), &line)
                                {
                                    return Poll::Ready(Some(Err(error)));
                                }
                            }
                        }
                        Some(())
                    }
                },
                Framing::Length(_) | Framing::Chunked(Chunk::Data(_)) | Framing::UntilClose => None,
            };
            if step.is_some() {
                continue;
            }
            let until_close = matches!(this.framing, Framing::UntilClose);
            let Some(connection) = this.connection.as_mut() else { return Poll::Ready(None) };
            match ready!(connection.poll_fill(cx)) {
                Ok(0) if until_close => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(0) => return Poll::Ready(Some(Err(UpstreamError::Closed))),
                Ok(_) => {}
                Err(error) => return Poll::Ready(Some(Err(error.into()))),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.framing, &self.connection) {
            (Framing::Done, _) => SizeHint::with_exact(0),
            (Framing::Length(remaining), Some(_)) => SizeHint::with_exact(*remaining),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    use super::*;

    /// An upstream that answers each request head it reads with the next of `answers`, a few
    /// bytes per write (so heads and chunks arrive split), and closes a connection after the
    /// answers marked so. Counts the connections it accepted.
    async fn scripted(answers: Vec<(&'static str, bool)>) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            let mut answers = answers.into_iter();
            'connections: while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                loop {
                    let mut request = Vec::new();
                    while !request.ends_with(b"\r\n\r\n") {
                        let mut byte = [0u8; 1];
                        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                            continue 'connections;
                        }
                        request.push(byte[0]);
                    }
                    let Some((answer, close)) = answers.next() else { return };
                    for piece in answer.as_bytes().chunks(7) {
                        if stream.write_all(piece).await.is_err() {
                            continue 'connections;
                        }
                        tokio::task::yield_now().await;
                    }
                    if close {
                        continue 'connections;
                    }
                }
            }
        });
        (address, accepted)
    }

    /// Sends a bodiless `method` request for `/x` on `pool`.
    async fn get(pool: &Pool, address: SocketAddr, method: Method) -> Result<Response<UpstreamBody>, UpstreamError> {
        let head = format!("{method} /x HTTP/1.1\r\nhost: app\r\n\r\n");
        pool.send(address, head.as_bytes(), method == Method::HEAD).await
    }

    async fn body_of(response: Response<UpstreamBody>) -> Result<Bytes, UpstreamError> {
        Ok(response.into_body().collect().await?.to_bytes())
    }

    #[tokio::test]
    async fn lengths_chunks_and_reuse() {
        let (address, accepted) = scripted(vec![
            ("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nX-A: 1\r\n\r\nhello", false),
            (
                "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n\
                 5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
                false,
            ),
            ("HTTP/1.1 204 No Content\r\n\r\n", false),
            ("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", false),
            ("HTTP/1.0 200 OK\r\n\r\nuntil the end", true),
        ])
        .await;
        let pool = Pool::default();
        let first = get(&pool, address, Method::GET).await.unwrap();
        assert_eq!(first.headers()["x-a"], "1");
        assert!(!first.headers().contains_key("connection") && !first.headers().contains_key("keep-alive"));
        assert_eq!(body_of(first).await.unwrap(), "hello");
        let chunked = get(&pool, address, Method::GET).await.unwrap();
        assert_eq!(chunked.status(), StatusCode::CREATED);
        let whole = chunked.into_body().collect().await.unwrap();
        assert_eq!(whole.trailers().map(|t| t["x-trailer"].clone()), Some(HeaderValue::from_static("t")));
        assert_eq!(whole.to_bytes(), "hello world");
        let empty = get(&pool, address, Method::DELETE).await.unwrap();
        assert!(empty.body().is_end_stream());
        assert_eq!(body_of(empty).await.unwrap(), "");
        // A HEAD answer says how long the body would be, and has none.
        let head = get(&pool, address, Method::HEAD).await.unwrap();
        assert_eq!(body_of(head).await.unwrap(), "");
        let until_close = get(&pool, address, Method::GET).await.unwrap();
        assert_eq!(until_close.version(), Version::HTTP_10);
        assert_eq!(body_of(until_close).await.unwrap(), "until the end");
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "every answer but the last kept the connection");
    }

    #[tokio::test]
    async fn an_idle_connection_the_upstream_closed_is_replaced_unseen() {
        let (address, accepted) = scripted(vec![
            ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nv1", true),
            ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nv2", false),
        ])
        .await;
        let pool = Pool::default();
        assert_eq!(body_of(get(&pool, address, Method::GET).await.unwrap()).await.unwrap(), "v1");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(body_of(get(&pool, address, Method::GET).await.unwrap()).await.unwrap(), "v2");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_answer_nobody_asked_for_is_not_taken_for_the_next_request() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            async fn read_head(stream: &mut TcpStream) {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let mut byte = [0u8; 1];
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
            }
            // The first connection answers, then times out on its own with a 408 and closes.
            let (mut first, _) = listener.accept().await.unwrap();
            read_head(&mut first).await;
            first.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nv1").await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            let _ = first.write_all(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n").await;
            let (mut second, _) = listener.accept().await.unwrap();
            read_head(&mut second).await;
            second.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nv2").await.unwrap();
            drop(first);
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        });
        let pool = Pool::default();
        assert_eq!(body_of(get(&pool, address, Method::GET).await.unwrap()).await.unwrap(), "v1");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let next = get(&pool, address, Method::GET).await.unwrap();
        assert_eq!(next.status(), StatusCode::OK);
        assert_eq!(body_of(next).await.unwrap(), "v2");
    }

    #[tokio::test]
    async fn broken_answers_are_errors() {
        let (address, _) = scripted(vec![
            ("HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello", true),
            ("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", true),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", true),
            ("nonsense\r\n\r\n", true),
        ])
        .await;
        let pool = Pool::default();
        assert!(matches!(get(&pool, address, Method::GET).await, Err(UpstreamError::Malformed(_))));
        let short = get(&pool, address, Method::GET).await.unwrap();
        assert!(matches!(body_of(short).await, Err(UpstreamError::Closed)));
        let bad_chunk = get(&pool, address, Method::GET).await.unwrap();
        assert!(matches!(body_of(bad_chunk).await, Err(UpstreamError::Malformed(_))));
        assert!(matches!(get(&pool, address, Method::GET).await, Err(UpstreamError::Malformed(_))));
    }

    #[test]
    fn which_requests_take_the_lean_client() {
        assert!(fits(&Request::get("/").body(http_body_util::Empty::<Bytes>::new()).unwrap()));
        assert!(!fits(&Request::post("/").body(http_body_util::Empty::<Bytes>::new()).unwrap()));
        assert!(!fits(&Request::get("/").body(http_body_util::Full::new(Bytes::from("x"))).unwrap()));
    }
}
