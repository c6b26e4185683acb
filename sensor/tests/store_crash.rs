//! Crash safety of the event store: an event whose `Ack` resolved survives a SIGKILL.
//!
//! The parent test re-executes this test binary, running only [`crash_child`] with
//! `STORE_CRASH_CHILD=<db path>`. The child records events continuously (a window of acks in
//! flight) and prints `ACKED <event id>` only after that event's ack resolved. The parent reads a
//! number of acked ids, SIGKILLs the child mid-stream, reopens the database and checks that every
//! acked id is stored and that the database passes `PRAGMA integrity_check`.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sensor::metrics::Metrics;
use sensor::store::{Reader, Store, StoreOptions};
use sensor_core::event::{Direction, Event, EventKind};

const CHILD_ENV: &str = "STORE_CRASH_CHILD";
/// Acked ids the parent collects before killing the child.
const ACKED_BEFORE_KILL: usize = 300;
/// Upper bound on everything (child run time, parent waits).
const TIME_LIMIT: Duration = Duration::from_secs(60);
/// Events the child keeps in flight (recorded, not yet acked).
const WINDOW: usize = 32;
/// The child stops by itself after this many events even if nobody kills it.
const CHILD_MAX_EVENTS: usize = 200_000;

fn event(n: usize) -> Event {
    let ip: IpAddr = "203.0.113.9".parse().unwrap();
    let mut e = Event::now("crash-sensor", EventKind::Accepted, Direction::Inbound, ip, (n % 60_000) as u16 + 1);
    e.peer.peer_id = Some(format!("{:032x}", n % 50));
    e.peer.user_agent = Some("/kaspad:2.1.0/kaspad:2.1.0/".into());
    e.peer.protocol_version = Some(11);
    e
}

/// The child process body; a no-op unless `STORE_CRASH_CHILD` is set.
#[test]
fn crash_child() {
    let Ok(db) = std::env::var(CHILD_ENV) else { return };
    let (metrics, _) = Metrics::new();
    let options = StoreOptions { batch_size: 16, flush_interval: Duration::from_millis(2), ..StoreOptions::default() };
    let store = Store::open(Path::new(&db), options, metrics).expect("child: open store");
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let deadline = Instant::now() + TIME_LIMIT;
    let mut out = std::io::stdout().lock();
    let mut in_flight = VecDeque::new();
    rt.block_on(async {
        for n in 0..CHILD_MAX_EVENTS {
            if Instant::now() > deadline {
                break;
            }
            in_flight.push_back(store.record(event(n)).expect("child: record"));
            if in_flight.len() < WINDOW {
                continue;
            }
            let ack = in_flight.pop_front().unwrap();
            let id = ack.event_id();
            tokio::time::timeout(TIME_LIMIT, ack.committed())
                .await
                .expect("child: ack timed out")
                .expect("child: ack failed");
            writeln!(out, "ACKED {id}").unwrap();
            out.flush().unwrap();
        }
    });
}

#[test]
fn acked_events_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data/crash.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &db)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");

    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let lines = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(id) = line.strip_prefix("ACKED ") {
                let _ = tx.send(id.to_owned());
            }
        }
    });

    let deadline = Instant::now() + TIME_LIMIT;
    let mut acked = Vec::new();
    while acked.len() < ACKED_BEFORE_KILL {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(id) => acked.push(id),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("child produced only {} acked ids ({e})", acked.len());
            }
        }
    }
    child.kill().expect("SIGKILL the child"); // Child::kill sends SIGKILL on Unix
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "child was killed, not exited: {status:?}");
    // Everything the child printed before dying was acked too.
    lines.join().unwrap();
    acked.extend(rx.try_iter());

    let reader = Reader::open(&db).expect("reopen after crash");
    let missing: Vec<&String> = acked.iter().filter(|id| reader.event(id).expect("query").is_none()).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acked events lost: {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
    let counts = reader.event_counts().unwrap();
    assert!(counts.total >= acked.len() as u64);
    let total_connections: u64 = reader.peers(1000).unwrap().iter().map(|p| p.connections).sum();
    assert_eq!(total_connections, counts.accepted, "peers table consistent with events");
    drop(reader);

    let conn = rusqlite::Connection::open(&db).unwrap();
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
}
