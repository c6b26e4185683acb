//! The disk-full policy on a real full disk: an 8 MiB tmpfs mounted by the test (root), so
//! SQLite meets `ENOSPC` from the kernel rather than its own page cap. The store must keep
//! serving: the newest events are dropped and counted, the stored ones stay intact, and storing
//! resumes once room is made. (Reclaiming exported rows needs room for the WAL to record the
//! delete, which a truly full disk does not have: that step is shown with `storage.max_db_mb`,
//! in the store's unit tests.) Every wait is bounded.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sensor::metrics::{Metrics, ReasonLabels};
use sensor::store::{Store, StoreOptions};
use sensor_core::event::{Direction, Event, EventKind};

const WAIT: Duration = Duration::from_secs(60);

/// A tmpfs of `size` mounted on a fresh temporary directory; unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "p2p-sensor-full"])
            .arg(dir.path())
            .output()
            .expect("mount");
        assert!(out.status.success(), "mount tmpfs: {}", String::from_utf8_lossy(&out.stderr));
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

fn event(n: usize) -> Event {
    let ip: IpAddr = "203.0.113.9".parse().unwrap();
    let mut e = Event::now("full-sensor", EventKind::Accepted, Direction::Inbound, ip, (n % 60_000) as u16 + 1);
    e.peer.peer_id = Some(format!("{n:032x}"));
    e.peer.user_agent = Some(format!("/kaspad:2.1.0/{}", "x".repeat(300)));
    e
}

fn dropped(m: &Metrics) -> u64 {
    m.storage_dropped_events.get_or_create(&ReasonLabels { reason: "disk_full" }).get()
}

/// Records events one by one (each waits for its ack, so the queue never overflows) until
/// `stop` says so; returns how many were committed and how many were not.
fn record_until(store: &Store, from: usize, mut stop: impl FnMut(usize, usize) -> bool) -> (usize, usize) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let (mut stored, mut lost) = (0, 0);
    let deadline = Instant::now() + WAIT;
    let mut n = from;
    while !stop(stored, lost) {
        assert!(Instant::now() < deadline, "bounded: stored {stored}, lost {lost}");
        let ack = store.record(event(n)).expect("the queue is never full: one event at a time");
        n += 1;
        match runtime.block_on(ack.committed()) {
            Ok(()) => stored += 1,
            Err(_) => lost += 1,
        }
    }
    (stored, lost)
}

fn count(db: &PathBuf, sql: &str) -> i64 {
    rusqlite::Connection::open(db).unwrap().query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
#[ignore = "needs root: mounts a tmpfs to fill a real disk"]
fn a_real_full_disk_drops_the_newest_counted_and_storing_resumes_when_room_is_made() {
    let fs = Tmpfs::mount("8m");
    // Another tenant of the volume: deleting it later is "room made elsewhere".
    let ballast = fs.path().join("ballast");
    std::fs::write(&ballast, vec![0u8; 2 << 20]).unwrap();
    let db = fs.path().join("sensor.sqlite");
    let (metrics, _) = Metrics::new();
    let options = StoreOptions {
        batch_size: 1,
        flush_interval: Duration::from_millis(1),
        full_grace: Duration::from_millis(20),
        reclaim_exported_for: Some("http"),
        ..StoreOptions::default()
    };
    let store = Store::open(&db, options, metrics.clone()).unwrap();

    // Fill the disk: the drops come from the kernel's ENOSPC.
    let (stored, lost) = record_until(&store, 0, |_, lost| lost >= 5);
    assert!(stored > 500, "a 6 MiB remainder holds thousands of events ({stored})");
    assert_eq!(dropped(&metrics) as usize, lost, "every dropped event is counted (stored {stored})");
    let full_errors = metrics.storage_errors.get_or_create(&sensor::metrics::KindLabels { kind: "full" }).get();
    assert!(full_errors >= 1, "SQLite saw the disk full");
    assert_eq!(count(&db, "SELECT count(*) FROM events") as usize, stored, "the stored events are intact");
    let check: String =
        rusqlite::Connection::open(&db).unwrap().query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");

    // Room is made elsewhere on the volume: storing resumes, nothing more is dropped.
    std::fs::remove_file(&ballast).unwrap();
    let before = dropped(&metrics);
    let (stored_after, lost_after) = record_until(&store, 1_000_000, |stored, lost| stored >= 200 || lost >= 200);
    assert_eq!((stored_after, lost_after), (200, 0), "storing resumed");
    assert_eq!(dropped(&metrics), before);
    assert_eq!(count(&db, "SELECT count(*) FROM events") as usize, stored + 200);
    store.close().unwrap();
}
