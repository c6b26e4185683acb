//! The NDJSON sink: one JSON object per event per line (field names = the `events` columns),
//! appended to a file — written, flushed and fsync'd before the batch counts as acknowledged —
//! or written to stdout (`endpoint = "-"`, flushed). For debugging and log pipelines.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;

use super::{FailureKind, Sink, SinkError};
use crate::config::SINK_NDJSON;
use crate::error::{Result, SensorError};
use crate::store::EventRow;

enum Target {
    Stdout,
    File { path: PathBuf, file: File },
}

/// See the module docs.
pub struct NdjsonSink {
    target: Arc<Mutex<Target>>,
}

impl NdjsonSink {
    /// `-` = stdout; anything else is a file, created if needed (with its parent directories)
    /// and appended to.
    ///
    /// Errors: [`SensorError::Io`] when the file cannot be opened.
    pub fn open(endpoint: &str) -> Result<NdjsonSink> {
        let target = if endpoint == "-" {
            Target::Stdout
        } else {
            let path = PathBuf::from(endpoint);
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .map_err(|e| SensorError::io(format!("creating export directory {}", parent.display()), e))?;
            }
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| SensorError::io(format!("opening export file {}", path.display()), e))?;
            Target::File { path, file }
        };
        Ok(NdjsonSink { target: Arc::new(Mutex::new(target)) })
    }
}

/// The batch as NDJSON text: one object per line, each line ending in `\n`.
pub fn encode_lines(batch: &[EventRow]) -> std::result::Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(batch.len() * 400);
    for event in batch {
        serde_json::to_writer(&mut out, event)?;
        out.push(b'\n');
    }
    Ok(out)
}

impl Sink for NdjsonSink {
    fn name(&self) -> &'static str {
        SINK_NDJSON
    }

    fn send<'a>(&'a mut self, batch: &'a [EventRow]) -> BoxFuture<'a, std::result::Result<(), SinkError>> {
        Box::pin(async move {
            let bytes = encode_lines(batch).map_err(|e| SinkError::new(FailureKind::Other, e.to_string()))?;
            let target = self.target.clone();
            tokio::task::spawn_blocking(move || {
                let mut target = target.lock().unwrap_or_else(|e| e.into_inner());
                let io = |e: std::io::Error| SinkError::new(FailureKind::Io, e.to_string());
                match &mut *target {
                    Target::Stdout => {
                        let mut out = std::io::stdout().lock();
                        out.write_all(&bytes).map_err(io)?;
                        out.flush().map_err(io)
                    }
                    Target::File { path, file } => {
                        let io =
                            |e: std::io::Error| SinkError::new(FailureKind::Io, format!("{}: {e}", path.display()));
                        // A short write leaves a partial line; the retry appends the batch again and
                        // readers dedup by event_id (a torn line is not valid JSON: skip it).
                        file.write_all(&bytes).map_err(io)?;
                        file.flush().map_err(io)?;
                        file.sync_data().map_err(io)
                    }
                }
            })
            .await
            .map_err(|e| SinkError::new(FailureKind::Other, format!("ndjson writer task: {e}")))?
        })
    }
}
