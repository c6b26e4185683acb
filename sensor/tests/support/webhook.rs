//! An in-test webhook for the HTTP export sink (axum on 127.0.0.1, HTTP/1.1): each `POST` body
//! is gunzipped when `Content-Encoding: gzip` and parsed as `{"sensor_id", "batch": [event…]}`.
//! It answers 503 to the next [`Webhook::fail_next`] requests, waits [`Webhook::set_delay`]
//! before acknowledging the others, and records every acknowledged delivery — its `event_id`s in
//! order and the generation (the test's phase, [`Webhook::set_generation`]) at its arrival —
//! duplicates included: deduplication by `event_id` is the reader's job, as for a real receiver.
//! [`Webhook::hold_next`] makes the next delivery a crash window: recorded (the receiver stored
//! it), announced to the test, and answered only [`HOLD`] later — after the test killed the sender.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::{Router, body::Bytes, extract::State, http::HeaderMap, http::StatusCode, routing::post};

/// One acknowledged batch.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub generation: u32,
    pub ids: Vec<String>,
}

/// How long a held delivery waits before its 200.
pub const HOLD: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
struct Inner {
    /// Told the size of the next recorded delivery, which is then answered after [`HOLD`].
    hold: Option<tokio::sync::oneshot::Sender<usize>>,
    fail_next: usize,
    delay: Duration,
    generation: u32,
    requests: usize,
    deliveries: Vec<Delivery>,
    /// Bodies that did not parse.
    bad: Vec<String>,
}

/// See the module docs. Clones share the state.
#[derive(Debug, Clone, Default)]
pub struct Webhook {
    inner: Arc<Mutex<Inner>>,
}

impl Webhook {
    /// Serves `POST /hook` on 127.0.0.1 (ephemeral port) until the test's runtime ends.
    pub async fn serve(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/hook", post(receive)).with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    /// Answer 503 to the next `n` requests.
    pub fn fail_next(&self, n: usize) {
        self.lock().fail_next = n;
    }

    /// Wait this long before acknowledging a batch.
    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }

    /// Tag later arrivals with `generation`.
    pub fn set_generation(&self, generation: u32) {
        self.lock().generation = generation;
    }

    /// Holds the next delivery (module docs); the receiver gets its number of events once it is
    /// recorded.
    pub fn hold_next(&self) -> tokio::sync::oneshot::Receiver<usize> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.lock().hold = Some(tx);
        rx
    }

    /// Every acknowledged delivery so far, in acknowledgement order.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.lock().deliveries.clone()
    }

    /// Requests received (failed ones included).
    pub fn requests(&self) -> usize {
        self.lock().requests
    }

    /// Bodies that did not parse.
    pub fn bad(&self) -> Vec<String> {
        self.lock().bad.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn receive(State(hook): State<Webhook>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let (generation, delay) = {
        let mut s = hook.lock();
        s.requests += 1;
        if s.fail_next > 0 {
            s.fail_next -= 1;
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        (s.generation, s.delay)
    };
    tokio::time::sleep(delay).await;
    let gzip = headers.get("content-encoding").is_some_and(|v| v.as_bytes() == b"gzip");
    match parse(&body, gzip) {
        Ok(ids) => {
            let held = {
                let mut s = hook.lock();
                let n = ids.len();
                s.deliveries.push(Delivery { generation, ids });
                s.hold.take().map(|tx| tx.send(n))
            };
            if held.is_some() {
                tokio::time::sleep(HOLD).await;
            }
            StatusCode::OK
        }
        Err(e) => {
            hook.lock().bad.push(e);
            StatusCode::BAD_REQUEST
        }
    }
}

/// The batch's `event_id`s.
fn parse(body: &[u8], gzip: bool) -> Result<Vec<String>, String> {
    let mut json = Vec::new();
    if gzip {
        use std::io::Read;
        flate2::read::GzDecoder::new(body).read_to_end(&mut json).map_err(|e| format!("gunzip: {e}"))?;
    } else {
        json.extend_from_slice(body);
    }
    let value: serde_json::Value = serde_json::from_slice(&json).map_err(|e| format!("json: {e}"))?;
    let batch = value["batch"].as_array().ok_or("no batch array")?;
    batch
        .iter()
        .map(|e| e["event_id"].as_str().map(str::to_owned).ok_or_else(|| "an event without event_id".into()))
        .collect()
}
