//! A tiny HTTP server on loopback that answers as a test tells it, for the client's tests of a
//! service that misbehaves, and that records what it was sent.

use std::sync::{Arc, Mutex};

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Hit {
    pub method: String,
    pub path: String,
    pub bearer: bool,
}

/// An answer: status, headers, body.
pub type Answer = (u16, Vec<(&'static str, String)>, String);

type Answers = dyn Fn(&str, &str, &str) -> Answer + Send + Sync;

pub struct FakeServer {
    pub base: String,
    hits: Arc<Mutex<Vec<Hit>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeServer {
    /// Serves `answer(method, path, base)` for every request.
    pub async fn start(
        answer: impl Fn(&str, &str, &str) -> Answer + Send + Sync + 'static,
    ) -> Self {
        let answer: Arc<Answers> = Arc::new(answer);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let hits = Arc::new(Mutex::new(Vec::new()));
        let (seen, at) = (hits.clone(), base.clone());
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let (seen, at, answer) = (seen.clone(), at.clone(), answer.clone());
            async move {
                let method = req.method().to_string();
                let path = req.uri().path().to_owned();
                let bearer = req.headers().contains_key("authorization");
                let _ = axum::body::to_bytes(req.into_body(), usize::MAX).await;
                seen.lock().unwrap().push(Hit {
                    method: method.clone(),
                    path: path.clone(),
                    bearer,
                });
                let (status, headers, body) = answer(&method, &path, &at);
                let mut res = axum::response::Response::new(axum::body::Body::from(body));
                *res.status_mut() = axum::http::StatusCode::from_u16(status).unwrap();
                for (k, v) in headers {
                    res.headers_mut().insert(k, v.parse().unwrap());
                }
                res
            }
        });
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { base, hits, task }
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    pub fn count(&self, method: &str) -> usize {
        self.hits().iter().filter(|h| h.method == method).count()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Bridge's error shape.
pub fn bridge_error(status: u16, message: &str) -> Answer {
    (
        status,
        vec![("content-type", "application/json".to_owned())],
        serde_json::json!({"statusCode": status, "message": message, "entity": {}}).to_string(),
    )
}

/// A tus creation's answer: 201 with the upload's URL.
pub fn created(location: String) -> Answer {
    (
        201,
        vec![
            ("location", location),
            ("tus-resumable", "1.0.0".to_owned()),
        ],
        String::new(),
    )
}
