//! An upstream whose answers the test writes: each request's head and body are kept, and a
//! function of them gives the response, whole or streamed through a channel the test holds.
//! For the MCP tests, which need the upstream to answer JSON-RPC (as JSON or as events).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use tokio::net::TcpListener;

pub type Answer = Response<BoxBody<Bytes, std::io::Error>>;

/// What the upstream received for one request.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
}

pub struct Scripted {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Received>>>,
}

impl Scripted {
    /// Answer every request with `answer(head, body)`.
    pub async fn start<F>(answer: F) -> Scripted
    where
        F: Fn(&http::request::Parts, &Bytes) -> Answer + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let kept = received.clone();
        let answer = Arc::new(answer);
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let kept = kept.clone();
                let answer = answer.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let kept = kept.clone();
                            let answer = answer.clone();
                            async move {
                                let (parts, body) = req.into_parts();
                                let body = body
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                kept.lock().unwrap().push(Received {
                                    headers: parts.headers.clone(),
                                    body: body.clone(),
                                });
                                Ok::<_, std::convert::Infallible>(answer(&parts, &body))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Scripted { addr, received }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// A whole answer with this content type.
pub fn answer(content_type: &str, body: impl Into<Bytes>) -> Answer {
    Response::builder()
        .header(http::header::CONTENT_TYPE, content_type)
        .body(Full::new(body.into()).map_err(|e| match e {}).boxed())
        .unwrap()
}

/// A JSON answer.
pub fn json(value: &serde_json::Value) -> Answer {
    answer("application/json", value.to_string())
}

/// An event stream the test writes as it goes, and its answer.
pub fn stream() -> (
    http_body_util::channel::Sender<Bytes, std::io::Error>,
    Answer,
) {
    let (tx, body) = http_body_util::channel::Channel::<Bytes, std::io::Error>::new(4);
    let answer = Response::builder()
        .header(http::header::CONTENT_TYPE, "text/event-stream")
        .header(http::header::CACHE_CONTROL, "no-cache")
        .body(body.boxed())
        .unwrap();
    (tx, answer)
}

/// One event carrying `message` as its data.
pub fn event(message: &serde_json::Value) -> Bytes {
    Bytes::from(format!("event: message\ndata: {message}\n\n"))
}

/// A `tools/list` result listing `names`.
pub fn tools_result(id: u64, names: &[&str]) -> serde_json::Value {
    let tools: Vec<_> = names
        .iter()
        .map(|n| {
            serde_json::json!({"name": n, "description": format!("the {n} tool"),
            "inputSchema": {"type": "object"}})
        })
        .collect();
    serde_json::json!({"jsonrpc": "2.0", "id": id,
        "result": {"tools": tools, "resultType": "complete", "ttlMs": 60000, "cacheScope": "public"}})
}

/// The data of every event in an event stream's text, parsed.
pub fn event_messages(text: &str) -> Vec<serde_json::Value> {
    text.split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            (!data.is_empty()).then(|| serde_json::from_str(&data.join("\n")).unwrap())
        })
        .collect()
}
