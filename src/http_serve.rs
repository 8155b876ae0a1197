//! Serving an axum `Router` over HTTP/1.1 with the limits a public listener needs and
//! `axum::serve` does not set: a cap on concurrent connections shared fairly between sources
//! (at most so many per source, and at the cap the heaviest source's idle connections give way
//! to newcomers: see [`crate::listeners::slots`]), a deadline for reading each request's headers
//! (it also runs while a keep-alive connection waits for its next request, so idle and
//! slow-loris connections are closed), and graceful shutdown that lets requests in flight
//! finish.
//!
//! A connection's source is its TCP peer, never `X-Forwarded-For`: a header cannot choose whose
//! share a connection uses. Trusted proxies carry every client behind them, so they have no
//! per-source cap (they still count toward the total, and their idle keep-alive connections
//! still give way at the cap); slow clients behind a proxy are the proxy's to bound.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt;

use crate::listeners::slots::{Caps, Slots};
use crate::listeners::stopped;

/// Limits for one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once. At the cap a newcomer takes the slot of an idle connection
    /// of a heavier source, or is closed at once.
    pub max_connections: usize,
    /// Connections one source (address, or IPv6 /64) holds at once, trusted proxies excepted.
    pub max_per_source: usize,
    /// Time a client has to send a request's headers (and that a keep-alive connection may idle).
    pub header_timeout: Duration,
}

/// Why a request body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    TooLarge,
    Unreadable,
    TimedOut,
}

/// Reads a whole request body, at most `limit` bytes within `deadline`. Handlers read the body
/// before answering even a refusal: an unread body makes the server drop a keep-alive
/// connection, which clients that reuse connections see as a failure of their next request.
pub async fn read_body(
    body: axum::body::Body,
    limit: usize,
    deadline: Duration,
) -> Result<axum::body::Bytes, BodyError> {
    match tokio::time::timeout(deadline, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(e)) => {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(err) = source {
                if err.is::<http_body_util::LengthLimitError>() {
                    return Err(BodyError::TooLarge);
                }
                source = err.source();
            }
            Err(BodyError::Unreadable)
        }
        Err(_) => Err(BodyError::TimedOut),
    }
}

/// The client's address: the socket peer, unless the peer is one of `trusted` proxies — then
/// the right-most `X-Forwarded-For` address that is not itself a trusted proxy. Without
/// trusted proxies the header is never read, so it cannot be used to pose as another address.
pub fn client_addr(peer: SocketAddr, headers: &axum::http::HeaderMap, trusted: &[ipnet::IpNet]) -> SocketAddr {
    let is_trusted = |ip: &std::net::IpAddr| trusted.iter().any(|n| n.contains(&ip.to_canonical()));
    if trusted.is_empty() || !is_trusted(&peer.ip()) {
        return peer;
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
        .collect::<Vec<_>>();
    match forwarded.iter().rev().find(|ip| !is_trusted(ip)) {
        Some(ip) => SocketAddr::new(*ip, 0),
        None => peer,
    }
}

/// The local address a request's connection was accepted on (a request extension): the
/// address the client reached, even when the listener is bound to all interfaces.
#[derive(Debug, Clone, Copy)]
pub struct LocalAddr(pub SocketAddr);

/// Serves `router` until `stop` turns true, then waits (up to `grace`) for open requests.
/// Handlers see the client's address (see [`client_addr`]) as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    trusted: Arc<Vec<ipnet::IpNet>>,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let caps = Caps { total: limits.max_connections, per_source: limits.max_per_source };
    let slots = Slots::new(caps, trusted.to_vec());
    let mut conns = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        while conns.try_join_next().is_some() {}
        let Some(slot) = slots.admit(peer.ip()) else {
            continue; // over the caps: dropping the stream closes it
        };
        let local = stream.local_addr().ok();
        let (router, mut stop, trusted) = (router.clone(), stop.clone(), trusted.clone());
        conns.spawn(async move {
            let _ = stream.set_nodelay(true);
            let activity = slot.activity();
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                // Busy from the complete request head until the answer's body is dropped (sent
                // or abandoned): a busy connection is never given to another source.
                let busy = activity.busy();
                let client = client_addr(peer, req.headers(), &trusted);
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(client));
                if let Some(l) = local {
                    req.extensions_mut().insert(LocalAddr(l));
                }
                let answer = router.clone().oneshot(req.map(Body::new));
                async move {
                    let resp = answer.await?;
                    Ok::<_, std::convert::Infallible>(resp.map(move |body| {
                        Body::new(body.map_frame(move |frame| {
                            let _still_busy = &busy;
                            frame
                        }))
                    }))
                }
            });
            let mut builder = Builder::new(TokioExecutor::new()).http1_only();
            builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let mut closing = false;
            loop {
                tokio::select! {
                    biased;
                    _ = conn.as_mut() => break,
                    _ = slot.evicted(), if !closing => {
                        if !slot.is_busy() {
                            break; // idle or still sending its request: close now
                        }
                        conn.as_mut().graceful_shutdown(); // after the answer in progress
                        closing = true;
                    }
                    _ = stopped(&mut stop), if !closing => {
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> axum::http::HeaderMap {
        let mut h = axum::http::HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let h = headers(&["203.0.113.9, 10.0.0.5"]);
        assert_eq!(client_addr(peer, &h, &[]), peer, "no trusted proxies: the header is ignored");
        let other: Vec<ipnet::IpNet> = vec!["192.0.2.0/24".parse().unwrap()];
        assert_eq!(client_addr(peer, &h, &other), peer, "peer is not a trusted proxy");
        let trusted: Vec<ipnet::IpNet> = vec!["127.0.0.1/32".parse().unwrap()];
        assert_eq!(client_addr(peer, &h, &trusted).ip().to_string(), "10.0.0.5", "right-most untrusted");
        let chain: Vec<ipnet::IpNet> = vec!["127.0.0.1/32".parse().unwrap(), "10.0.0.0/8".parse().unwrap()];
        assert_eq!(client_addr(peer, &h, &chain).ip().to_string(), "203.0.113.9", "skips trusted hops");
        assert_eq!(client_addr(peer, &headers(&["garbage"]), &trusted), peer);
        assert_eq!(
            client_addr(peer, &headers(&["198.51.100.1", "198.51.100.2"]), &trusted).ip().to_string(),
            "198.51.100.2"
        );
    }
}
