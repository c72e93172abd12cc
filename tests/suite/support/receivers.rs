//! Real receivers for notification tests: an HTTP server standing in for Slack and
//! generic webhooks (it records every request and answers what it is told), and an
//! SMTP server over TCP (mailin-embedded) that keeps the mails it accepts.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// What the HTTP receiver answers next; 200 `ok` once the plan is used up and no
/// `always` is set.
#[derive(Clone, Copy)]
pub enum Reply {
    /// This status, with a short body.
    Status(u16),
    /// 429 with `Retry-After` in seconds.
    RetryAfter(u64),
    /// This status with this JSON body (the chat services that refuse inside a 200).
    Json(u16, &'static str),
}

impl Reply {
    fn status(self) -> u16 {
        match self {
            Reply::Status(code) => code,
            Reply::RetryAfter(_) => 429,
            Reply::Json(code, _) => code,
        }
    }
}

/// One request the HTTP receiver got.
pub struct Hit {
    /// When it arrived.
    pub at: Instant,
    /// Its path.
    pub path: String,
    /// Its query string, as sent (empty when none).
    pub query: String,
    /// The status answered.
    pub status: u16,
    /// Its JSON body (`Null` when not JSON).
    pub body: Value,
    /// Its headers.
    pub headers: HeaderMap,
}

#[derive(Clone, Default)]
struct Recorded {
    hits: Arc<Mutex<Vec<Hit>>>,
    plan: Arc<Mutex<VecDeque<Reply>>>,
    always: Arc<Mutex<Option<Reply>>>,
    /// While true, requests are recorded on arrival and answered only once it is false.
    held: Arc<tokio::sync::watch::Sender<bool>>,
}

/// An HTTP server on an ephemeral port, on its own thread and runtime.
pub struct Receiver {
    addr: SocketAddr,
    state: Recorded,
}

impl Receiver {
    /// Start a receiver that answers 200 until told otherwise.
    pub fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Recorded::default();
        let app = Router::new().fallback(receive).with_state(state.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        Receiver { addr, state }
    }

    /// The receiver's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The receiver's URL with `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answer the next requests with `replies`, in order.
    pub fn then(&self, replies: &[Reply]) {
        self.state.plan.lock().unwrap().extend(replies);
    }

    /// Answer with `reply` whenever the plan is used up (`None`: 200).
    pub fn always(&self, reply: Option<Reply>) {
        *self.state.always.lock().unwrap() = reply;
    }

    /// Hold every request (`true`: recorded as it arrives, answered once released with
    /// `false`), to stop a sender between its request and the answer.
    pub fn hold(&self, held: bool) {
        self.state.held.send_replace(held);
    }

    /// The value of header `name` in each request, in arrival order.
    pub fn header(&self, name: &str) -> Vec<Option<String>> {
        let hits = self.state.hits.lock().unwrap();
        hits.iter()
            .map(|h| {
                let value = h.headers.get(name)?;
                Some(value.to_str().unwrap().to_string())
            })
            .collect()
    }

    /// Requests received.
    pub fn count(&self) -> usize {
        self.state.hits.lock().unwrap().len()
    }

    /// Every body, in arrival order.
    pub fn bodies(&self) -> Vec<Value> {
        let hits = self.state.hits.lock().unwrap();
        hits.iter().map(|h| h.body.clone()).collect()
    }

    /// Bodies answered 200, in arrival order.
    pub fn accepted(&self) -> Vec<Value> {
        let hits = self.state.hits.lock().unwrap();
        hits.iter()
            .filter(|h| h.status == 200)
            .map(|h| h.body.clone())
            .collect()
    }

    /// Every path, in arrival order.
    pub fn paths(&self) -> Vec<String> {
        let hits = self.state.hits.lock().unwrap();
        hits.iter().map(|h| h.path.clone()).collect()
    }

    /// Every query string, in arrival order.
    pub fn queries(&self) -> Vec<String> {
        let hits = self.state.hits.lock().unwrap();
        hits.iter().map(|h| h.query.clone()).collect()
    }

    /// Time between consecutive requests.
    pub fn gaps(&self) -> Vec<Duration> {
        let hits = self.state.hits.lock().unwrap();
        hits.windows(2).map(|w| w[1].at - w[0].at).collect()
    }
}

async fn receive(State(s): State<Recorded>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let planned = s.plan.lock().unwrap().pop_front();
    let reply = planned.or(*s.always.lock().unwrap());
    s.hits.lock().unwrap().push(Hit {
        at: Instant::now(),
        path: uri.path().to_string(),
        query: uri.query().unwrap_or("").to_string(),
        status: reply.map_or(200, Reply::status),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        headers,
    });
    // Dropped senders only when the receiver is gone: nothing to wait for then.
    let _ = s.held.subscribe().wait_for(|held| !held).await;
    match reply {
        None => (StatusCode::OK, "ok").into_response(),
        Some(Reply::Status(code)) => {
            let status = StatusCode::from_u16(code).unwrap();
            (status, format!("failure {code}")).into_response()
        }
        Some(Reply::Json(code, body)) => (
            StatusCode::from_u16(code).unwrap(),
            [("content-type", "application/json")],
            body,
        )
            .into_response(),
        Some(Reply::RetryAfter(secs)) => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", secs.to_string())],
            "rate_limited",
        )
            .into_response(),
    }
}

/// Mails as the SMTP server received them.
#[derive(Clone, Default)]
pub struct Mailbag {
    /// Each accepted mail's DATA, in arrival order.
    pub mails: Arc<Mutex<Vec<Vec<u8>>>>,
    current: Vec<u8>,
}

impl mailin_embedded::Handler for Mailbag {
    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.current.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> mailin_embedded::Response {
        let mail = std::mem::take(&mut self.current);
        self.mails.lock().unwrap().push(mail);
        mailin_embedded::response::OK
    }
}

/// Start an SMTP server (no TLS) on an ephemeral port; its mailbag and port.
pub fn smtp_server() -> (Mailbag, u16) {
    let bag = Mailbag::default();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut server = mailin_embedded::Server::new(bag.clone());
    server.with_name("mx.test").with_tcp_listener(listener);
    std::thread::spawn(move || server.serve().map_err(|e| e.to_string()));
    (bag, port)
}
