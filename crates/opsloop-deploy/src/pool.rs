//! Keep-alive HTTP/1.1 connections to upstreams, one pool per proxy worker. Written here
//! rather than using hyper-util's general client because the proxy's needs are narrow (plain
//! HTTP/1.1 to known addresses) and that client's checkout path was the largest cost per
//! request left in the proxy: here a checkout is one uncontended lock and a `Vec::pop`.
//!
//! A connection goes back to the pool when the response body has been read to its end (seen
//! when it is polled to the end or dropped after it); one dropped early (the client went
//! away) is closed. A request that could not be sent on an
//! idle connection the upstream had closed is sent again on a new one (hyper hands it back
//! unsent), so keep-alive races never reach the client.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// Idle connections kept per upstream address.
const MAX_IDLE_PER_UPSTREAM: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("cannot connect to the upstream: {0}")]
    Connect(#[from] std::io::Error),
    #[error("the upstream failed: {0}")]
    Http(#[from] hyper::Error),
}

#[derive(Clone, Default)]
pub struct Pool(Arc<Mutex<HashMap<SocketAddr, Vec<SendRequest<Incoming>>>>>);

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pool")
    }
}

impl Pool {
    fn take(&self, address: SocketAddr) -> Option<SendRequest<Incoming>> {
        let mut idle = self.0.lock().ok()?;
        let senders = idle.get_mut(&address)?;
        while let Some(sender) = senders.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    fn put(&self, address: SocketAddr, sender: SendRequest<Incoming>) {
        if sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.0.lock() {
            let senders = idle.entry(address).or_default();
            if senders.len() < MAX_IDLE_PER_UPSTREAM {
                senders.push(sender);
            }
        }
    }

    async fn connect(address: SocketAddr) -> Result<SendRequest<Incoming>, PoolError> {
        let stream = tokio::net::TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "an upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// Sends `request` to `address` on an idle connection or a new one.
    pub async fn send(
        &self,
        address: SocketAddr,
        request: Request<Incoming>,
    ) -> Result<Response<PooledBody>, PoolError> {
        let mut request = request;
        let mut sender = match self.take(address) {
            Some(sender) => sender,
            None => Self::connect(address).await?,
        };
        loop {
            // A connection whose last response was just read may need a moment to be ready.
            if sender.ready().await.is_err() {
                sender = Self::connect(address).await?;
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let (parts, incoming) = response.into_parts();
                    let ended = incoming.is_end_stream();
                    let mut body = PooledBody { body: Some(incoming), back: Some((self.clone(), address, sender)) };
                    // An empty body may never be polled: the connection is free already.
                    if ended {
                        body.release();
                    }
                    return Ok(Response::from_parts(parts, body));
                }
                Err(mut failed) => match failed.take_message() {
                    // Never sent (the upstream had closed this idle connection): a new one.
                    Some(unsent) => {
                        request = unsent;
                        sender = Self::connect(address).await?;
                    }
                    None => return Err(failed.into_error().into()),
                },
            }
        }
    }
}

/// An upstream response body; its connection goes back to the pool at its end.
pub struct PooledBody {
    body: Option<Incoming>,
    back: Option<(Pool, SocketAddr, SendRequest<Incoming>)>,
}

impl PooledBody {
    fn release(&mut self) {
        if let Some((pool, address, sender)) = self.back.take() {
            pool.put(address, sender);
        }
    }
}

impl Drop for PooledBody {
    /// hyper's server stops polling a body once it says it has ended, so the end is noticed
    /// here too; a body dropped before its end closes its connection (the sender goes).
    fn drop(&mut self) {
        if self.body.as_ref().is_none_or(Body::is_end_stream) {
            self.release();
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let Some(body) = this.body.as_mut() else { return Poll::Ready(None) };
        let polled = Pin::new(body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            this.release();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body.as_ref().map(Body::size_hint).unwrap_or_default()
    }
}
