//! Throttling of credential guesses, per client address: a wrong console token (a login form
//! or an `Authorization: Bearer` header) counts against the address it came from; after a few,
//! that address waits before its next attempt is even checked, twice as long after each further
//! wrong one. Other addresses are never affected, so one client guessing cannot lock the
//! operator out, and an address that gives the right token starts afresh. Requests carrying no
//! credential (a session cookie, or nothing) are not attempts and pass untouched.
//!
//! Behind a reverse proxy every client has the proxy's address, so they share one allowance.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use parking_lot::Mutex;

/// Wrong tokens an address may give before it has to wait.
pub(crate) const FREE_ATTEMPTS: u32 = 5;
const FIRST_WAIT: Duration = Duration::from_secs(1);
const MAX_WAIT: Duration = Duration::from_secs(300);
/// An address's count is forgotten this long after its last wrong token.
const FORGET_AFTER: Duration = Duration::from_secs(900);
/// Addresses tracked at most; the stalest go first, so a flood of addresses cannot grow memory.
const MAX_CLIENTS: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Client {
    wrong: u32,
    last: Instant,
    /// No attempt from this address is checked before then.
    blocked_until: Option<Instant>,
}

#[derive(Default)]
pub(crate) struct Throttle {
    clients: Mutex<HashMap<IpAddr, Client>>,
}

impl Throttle {
    /// How long `ip` must still wait, if it must.
    fn wait(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let clients = self.clients.lock();
        clients.get(&ip)?.blocked_until.and_then(|until| until.checked_duration_since(now)).filter(|d| !d.is_zero())
    }

    fn wrong(&self, ip: IpAddr, now: Instant) -> u32 {
        let mut clients = self.clients.lock();
        clients.retain(|_, c| now.duration_since(c.last) < FORGET_AFTER);
        if clients.len() >= MAX_CLIENTS
            && !clients.contains_key(&ip)
            && let Some(stalest) = clients.iter().min_by_key(|(_, c)| c.last).map(|(k, _)| *k)
        {
            clients.remove(&stalest);
        }
        let c = clients.entry(ip).or_insert(Client { wrong: 0, last: now, blocked_until: None });
        c.wrong += 1;
        c.last = now;
        if c.wrong >= FREE_ATTEMPTS {
            let doublings = (c.wrong - FREE_ATTEMPTS).min(16);
            let wait = FIRST_WAIT.saturating_mul(1 << doublings).min(MAX_WAIT);
            c.blocked_until = Some(now + wait);
        }
        c.wrong
    }

    fn right(&self, ip: IpAddr) {
        self.clients.lock().remove(&ip);
    }
}

/// Whether the request presents a credential to check: a Bearer header or a login form.
fn is_attempt(request: &Request) -> bool {
    request.headers().contains_key(header::AUTHORIZATION)
        || (request.method() == Method::POST && request.uri().path() == "/console/login")
}

/// The middleware: refuses an attempt from an address that must wait (429 with Retry-After,
/// without checking the token, so a waiting guesser learns nothing), and counts the outcome
/// of every attempt it lets through.
pub(crate) async fn layer(State(throttle): State<Arc<Throttle>>, request: Request, next: Next) -> Response {
    if !is_attempt(&request) {
        return next.run(request).await;
    }
    // Without the peer's address (a server not set up to give it) every client shares one
    // allowance: stricter, never looser.
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |ConnectInfo(addr)| addr.ip());
    let login = request.method() == Method::POST;
    if let Some(wait) = throttle.wait(ip, Instant::now()) {
        let secs = wait.as_secs().max(1);
        tracing::warn!(client = %ip, wait_seconds = secs, "Console: an attempt was refused: too many wrong tokens from this address");
        let message = format!("Too many wrong tokens from this address: try again in {secs} s.");
        let mut r = if login {
            (StatusCode::TOO_MANY_REQUESTS, Html(super::auth::login_html(Some(&message)))).into_response()
        } else {
            (StatusCode::TOO_MANY_REQUESTS, message).into_response()
        };
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    let response = next.run(request).await;
    match response.status() {
        StatusCode::UNAUTHORIZED => {
            let wrong = throttle.wrong(ip, Instant::now());
            tracing::warn!(client = %ip, wrong, "Console: a wrong token was refused");
        }
        s if s.is_success() || s.is_redirection() => throttle.right(ip),
        _ => {}
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_waits_after_a_few_wrong_tokens_and_others_never_do() {
        let t = Throttle::default();
        let guesser = IpAddr::from([10, 0, 0, 1]);
        let operator = IpAddr::from([10, 0, 0, 2]);
        let now = Instant::now();
        for _ in 1..FREE_ATTEMPTS {
            t.wrong(guesser, now);
            assert!(t.wait(guesser, now).is_none());
        }
        t.wrong(guesser, now);
        assert_eq!(t.wait(guesser, now), Some(FIRST_WAIT));
        t.wrong(guesser, now);
        assert_eq!(t.wait(guesser, now), Some(FIRST_WAIT * 2), "each further wrong token doubles the wait");
        assert!(t.wait(operator, now).is_none(), "another address is not affected");
        assert!(t.wait(guesser, now + FIRST_WAIT * 2).is_none(), "the wait ends");
        t.right(guesser);
        assert!(t.wait(guesser, now).is_none(), "the right token starts afresh");
        for _ in 0..40 {
            t.wrong(guesser, now);
        }
        assert_eq!(t.wait(guesser, now), Some(MAX_WAIT));
    }
}
