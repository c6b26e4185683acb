//! The NDJSON sink: one JSON object per event per line (field names = the `events` columns),
//! appended to a file — written, flushed and fsync'd before the batch counts as acknowledged —
//! or written to stdout (`endpoint = "-"`, flushed). For debugging and log pipelines.
//!
//! A crash or a failed write can leave the file ending in part of a line. That tail belongs to a
//! batch that was never acknowledged (it is sent again), so before appending, the file is cut
//! back to its last complete line ([`cut_torn_tail`]): every line of the file is whole JSON.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;

use super::{FailureKind, Sink, SinkError};
use crate::error::{Result, SensorError};
use crate::store::EventRow;
use sensor_core::config::SINK_NDJSON;

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
                .read(true)
                .open(&path)
                .map_err(|e| SensorError::io(format!("opening export file {}", path.display()), e))?;
            let cut = cut_torn_tail(&file)
                .map_err(|e| SensorError::io(format!("repairing export file {}", path.display()), e))?;
            if cut > 0 {
                tracing::warn!(path = %path.display(), bytes = cut, "export: dropped a torn last line (its batch is sent again)");
            }
            Target::File { path, file }
        };
        Ok(NdjsonSink { target: Arc::new(Mutex::new(target)) })
    }
}

/// Truncates `file` after its last `\n` when it does not end in one; returns the bytes cut (0
/// for an empty file or one that ends in a complete line). Reads backwards in 64 KiB steps.
///
/// Errors: the I/O error of a seek, read or truncate.
pub fn cut_torn_tail(file: &File) -> std::io::Result<u64> {
    let len = file.metadata()?.len();
    let mut reader = file;
    let mut end = len;
    let mut chunk = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let buf = &mut chunk[..(end - start) as usize];
        reader.seek(SeekFrom::Start(start))?;
        reader.read_exact(buf)?;
        if let Some(i) = buf.iter().rposition(|b| *b == b'\n') {
            let keep = start + i as u64 + 1;
            if keep < len {
                file.set_len(keep)?;
            }
            return Ok(len - keep);
        }
        end = start;
    }
    // No complete line at all: everything is a torn fragment.
    if len > 0 {
        file.set_len(0)?;
    }
    Ok(len)
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
                        // A failed write may have left part of a line: cut it before the retry.
                        if let Err(e) = file.write_all(&bytes) {
                            let _ = cut_torn_tail(file);
                            return Err(io(e));
                        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_line_is_cut_before_appending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.ndjson");
        let long_tail = "x".repeat(200_000); // spans several 64 KiB reads
        for (before, after) in [
            ("{\"a\":1}\n{\"b\":2}\n{\"c\":", "{\"a\":1}\n{\"b\":2}\n"),
            ("{\"a\":1}\n", "{\"a\":1}\n"),
            ("", ""),
            ("no line at all", ""),
            (&format!("{{\"a\":1}}\n{long_tail}"), "{\"a\":1}\n"),
        ] {
            std::fs::write(&path, before).unwrap();
            NdjsonSink::open(path.to_str().unwrap()).unwrap();
            assert_eq!(std::fs::read_to_string(&path).unwrap(), after, "from {:?}", &before[..before.len().min(20)]);
        }
    }

    #[tokio::test]
    async fn appends_after_the_repair_are_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.ndjson");
        std::fs::write(&path, "{\"event_id\":\"old\"}\n{\"event_id\":\"to").unwrap();
        let mut sink = NdjsonSink::open(path.to_str().unwrap()).unwrap();
        let row = EventRow {
            event_id: "new".into(),
            timestamp: "2026-11-21T00:00:00.000000000Z".into(),
            sensor_id: "s".into(),
            kind: "connection".into(),
            result: Some("accepted".into()),
            direction: "inbound".into(),
            peer_ip: "203.0.113.9".into(),
            peer_port: 1,
            peer_id: None,
            protocol_version: None,
            user_agent: None,
            network: None,
            advertised_address: None,
            probe_target: None,
            classification: None,
            reason: "accepted".into(),
            probe_duration_ms: None,
            probe_attempts: None,
            probe_error: None,
        };
        sink.send(&[row]).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let ids: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("whole JSON")["event_id"].to_string())
            .collect();
        assert_eq!(ids, ["\"old\"", "\"new\""]);
    }
}
