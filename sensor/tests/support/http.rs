//! A minimal HTTP/1.0 GET over `std::net::TcpStream` and an OpenMetrics text reader, so the
//! end-to-end test needs no HTTP client crate.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// `GET path` → (status, body). HTTP/1.0 with `Connection: close`: the body runs to EOF
/// (chunked bodies are decoded anyway, in case the server uses them).
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, String), String> {
    let mut s =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("GET http://{addr}{path}: connect: {e}"))?;
    s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\nAccept: */*\r\n\r\n")
        .map_err(|e| format!("GET http://{addr}{path}: write: {e}"))?;
    let mut raw = Vec::new();
    // Bounded: a response over 16 MiB is an error, and the read timeout bounds the time.
    s.take(16 << 20).read_to_end(&mut raw).map_err(|e| format!("GET http://{addr}{path}: read: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) =
        text.split_once("\r\n\r\n").ok_or_else(|| format!("GET http://{addr}{path}: no header end in {text:?}"))?;
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("GET http://{addr}{path}: bad status line in {head:?}"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked { dechunk(body)? } else { body.to_string() };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> Result<String, String> {
    let mut out = String::new();
    for _ in 0..100_000 {
        let (size_line, rest) = body.split_once("\r\n").ok_or("chunked body: missing size line")?;
        let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|e| format!("chunked body: bad size {size_line:?}: {e}"))?;
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..size).ok_or("chunked body: truncated chunk")?;
        out.push_str(chunk);
        body = rest[size..].strip_prefix("\r\n").ok_or("chunked body: missing chunk end")?;
    }
    Err("chunked body: too many chunks".into())
}

/// The value of the sample `name{labels…}` in OpenMetrics/Prometheus text, where every pair in
/// `labels` must match (other labels are ignored). `None` when no sample matches.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = match line.find('}') {
            Some(end) => (&line[..=end], line[end + 1..].trim()),
            None => match line.split_once(' ') {
                Some((s, v)) => (s, v.trim()),
                None => continue,
            },
        };
        let (sample, label_text) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        if sample != name {
            continue;
        }
        let parsed = parse_labels(label_text);
        if labels.iter().all(|(k, v)| parsed.iter().any(|(pk, pv)| pk == k && pv == v)) {
            // The value may be followed by a timestamp or an exemplar.
            return value.split_whitespace().next().and_then(|v| v.parse().ok());
        }
    }
    None
}

fn parse_labels(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    for _ in 0..64 {
        let Some((key, after)) = rest.split_once("=\"") else {
            break;
        };
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(if n == 'n' { '\n' } else { n });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.push((key.trim().trim_start_matches(',').trim().to_string(), value));
        rest = after[end..].trim_start_matches(',');
    }
    out
}

#[cfg(test)]
mod tests {
    // A harness-less bench that includes this module builds with cfg(test) but drops #[test]s.
    #[allow(unused_imports)]
    use super::*;

    #[test]
    fn reads_openmetrics_samples() {
        let text = "# HELP sensor_connections_active x\n# TYPE sensor_connections_active gauge\n\
                    sensor_connections_active 2\n\
                    sensor_inbound_rejections_total{reason=\"wrong_network\"} 3\n\
                    sensor_inbound_rejections_total{reason=\"ip_limit\"} 0\n\
                    sensor_verdicts_total{classification=\"public\",reason=\"handshake_verified\"} 1\n# EOF\n";
        assert_eq!(metric(text, "sensor_connections_active", &[]), Some(2.0));
        assert_eq!(metric(text, "sensor_inbound_rejections_total", &[("reason", "wrong_network")]), Some(3.0));
        assert_eq!(metric(text, "sensor_inbound_rejections_total", &[("reason", "ip_limit")]), Some(0.0));
        assert_eq!(metric(text, "sensor_verdicts_total", &[("reason", "handshake_verified")]), Some(1.0));
        assert_eq!(metric(text, "sensor_verdicts_total", &[("reason", "timeout")]), None);
        assert_eq!(metric(text, "sensor_connections", &[]), None);
    }

    #[test]
    fn decodes_chunked_bodies() {
        assert_eq!(dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n").unwrap(), "hello world");
    }
}
