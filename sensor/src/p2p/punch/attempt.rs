//! The pure model of one hole-punch attempt, as the dialing side sees it: what the swarm
//! reported ([`AttemptTracker`]'s methods, one per observation) → a verdict ([`Finished`]) →
//! the stored and printed record ([`PunchAttempt`]). No I/O and no clock: every observation
//! carries its `Instant`.
//!
//! What the dialer can see (rust-libp2p 0.57, docs/natlab.md): the relayed connection to the target
//! (or the error of the circuit dial), its own direct dials (one per DCUtR round: the listener
//! sends CONNECT, we dial), direct connections to the target (ours, or the listener's dial that
//! arrives inbound), ping results per connection, and DCUtR stream errors. The *failure* event of
//! DCUtR is emitted only by the reservation holder, so without a verdict the attempt ends at its
//! deadline.
//!
//! Verdicts, first one wins:
//! - `success`: a direct (non-relayed) connection to the target answered a ping. Only the first
//!   confirmed one counts (QUIC may open two).
//! - `no_relay_connection`: the circuit dial failed (relay unreachable, the target holds no
//!   reservation, …), or no relayed connection came up before the deadline.
//! - `failed`: the relayed connection came up but DCUtR reported an error, our direct dials failed
//!   [`MAX_DCUTR_ROUNDS`] times (the listener stops retrying after that many), the only direct
//!   connection did not answer its ping, or the relayed connection closed with no direct one.
//! - `timeout`: the relayed connection came up, but no verdict before the deadline.
//! - `cancelled`: the process was told to stop (SIGTERM/SIGINT) during the attempt.

use std::time::{Duration, Instant};

use libp2p::{Multiaddr, swarm::ConnectionId};
use sensor_core::punch::{Finished, Outcome, Transport};

/// Rounds after which libp2p-dcutr's listener side gives up (its private
/// `MAX_NUMBER_OF_UPGRADE_ATTEMPTS`): after this many failed dials of ours no new round comes.
pub const MAX_DCUTR_ROUNDS: u32 = 3;

#[derive(Debug, Clone)]
struct Direct {
    connection: ConnectionId,
    at: Instant,
    transport: Transport,
    address: Multiaddr,
}

/// Follows one attempt: feed it what the swarm reports about the target; each method returns
/// `Some` once the attempt has a verdict (later calls keep returning the same verdict).
#[derive(Debug)]
pub struct AttemptTracker {
    started: Instant,
    /// The relay address's transport, used when no direct connection decides it.
    relay_transport: Transport,
    circuit_dial: Option<ConnectionId>,
    relayed: Option<(ConnectionId, Instant)>,
    relayed_rtt: Option<Duration>,
    /// Direct connections waiting for their confirming ping.
    direct: Vec<Direct>,
    dials: u32,
    dial_failures: u32,
    relayed_closed: bool,
    last_error: Option<String>,
    done: Option<Finished>,
}

impl AttemptTracker {
    /// A new attempt started at `started`, going through a relay reached over `relay_transport`.
    pub fn new(started: Instant, relay_transport: Transport) -> AttemptTracker {
        AttemptTracker {
            started,
            relay_transport,
            circuit_dial: None,
            relayed: None,
            relayed_rtt: None,
            direct: Vec::new(),
            dials: 0,
            dial_failures: 0,
            relayed_closed: false,
            last_error: None,
            done: None,
        }
    }

    /// The verdict, once there is one.
    pub fn verdict(&self) -> Option<&Finished> {
        self.done.as_ref()
    }

    /// Whether the relayed connection to the target is (or was) up.
    pub fn relayed(&self) -> bool {
        self.relayed.is_some()
    }

    /// The dial through the circuit was started as `connection`.
    pub fn circuit_dial_started(&mut self, connection: ConnectionId) {
        self.circuit_dial = Some(connection);
    }

    /// The circuit dial could not even be started (the swarm refused it).
    pub fn circuit_dial_refused(&mut self, now: Instant, error: String) -> Option<&Finished> {
        self.last_error = Some(error);
        self.finish(now, Outcome::NoRelayConnection)
    }

    /// The swarm started a dial to the target (`SwarmEvent::Dialing`).
    pub fn dialing(&mut self, connection: ConnectionId) {
        if self.done.is_none() && self.relayed.is_some() && Some(connection) != self.circuit_dial {
            self.dials += 1;
        }
    }

    /// A connection to the target was established.
    pub fn connection_established(
        &mut self,
        now: Instant,
        connection: ConnectionId,
        relayed: bool,
        remote: &Multiaddr,
    ) -> Option<&Finished> {
        if self.done.is_some() {
            return self.done.as_ref();
        }
        if relayed {
            if self.relayed.is_none() {
                self.relayed = Some((connection, now));
            }
        } else if self.relayed.is_some() {
            let transport = Transport::of(remote).unwrap_or(self.relay_transport);
            self.direct.push(Direct { connection, at: now, transport, address: remote.clone() });
        }
        None
    }

    /// A dial to the target failed (`connection` = the dial's id, when known).
    pub fn dial_failed(&mut self, now: Instant, connection: Option<ConnectionId>, error: String) -> Option<&Finished> {
        if self.done.is_some() {
            return self.done.as_ref();
        }
        if self.relayed.is_none() && (connection.is_none() || connection == self.circuit_dial) {
            self.last_error = Some(error);
            return self.finish(now, Outcome::NoRelayConnection);
        }
        // A direct dial counts only once the relayed connection is up (DCUtR runs over it).
        self.relayed?;
        self.dial_failures += 1;
        self.last_error = Some(error);
        if self.dial_failures >= MAX_DCUTR_ROUNDS && self.direct.is_empty() {
            self.last_error = Some(format!(
                "{} direct dials failed; last: {}",
                self.dial_failures,
                self.last_error.take().unwrap_or_default()
            ));
            return self.finish(now, Outcome::Failed);
        }
        None
    }

    /// A ping on `connection` answered (`Ok(rtt)`) or failed.
    pub fn ping(
        &mut self,
        now: Instant,
        connection: ConnectionId,
        result: Result<Duration, String>,
    ) -> Option<&Finished> {
        if self.done.is_some() {
            return self.done.as_ref();
        }
        if self.relayed.is_some_and(|(c, _)| c == connection) {
            if let Ok(rtt) = result
                && self.relayed_rtt.is_none()
            {
                self.relayed_rtt = Some(rtt);
            }
            return None;
        }
        let index = self.direct.iter().position(|d| d.connection == connection)?;
        match result {
            Ok(rtt) => {
                let direct = self.direct.swap_remove(index);
                let mut finished = self.finished(now, Outcome::Success);
                finished.transport = direct.transport;
                finished.direct_rtt = Some(rtt);
                finished.time_to_direct = self.relayed.map(|(_, at)| direct.at.saturating_duration_since(at));
                finished.direct_address = Some(direct.address);
                finished.error = None;
                self.done = Some(finished);
                self.done.as_ref()
            }
            Err(e) => {
                self.direct.swap_remove(index);
                self.last_error = Some(format!("the direct connection did not answer a ping: {e}"));
                if self.direct.is_empty() { self.finish(now, Outcome::Failed) } else { None }
            }
        }
    }

    /// DCUtR on our side reported the end of an upgrade: `Ok` names the direct connection (it is
    /// confirmed by its ping like any other), `Err` carries the error text.
    pub fn dcutr_result(&mut self, now: Instant, result: Result<ConnectionId, String>) -> Option<&Finished> {
        if self.done.is_some() {
            return self.done.as_ref();
        }
        match result {
            Ok(_) => None,
            Err(e) => {
                self.last_error = Some(e);
                if self.direct.is_empty() { self.finish(now, Outcome::Failed) } else { None }
            }
        }
    }

    /// A connection to the target closed.
    pub fn connection_closed(&mut self, now: Instant, connection: ConnectionId) -> Option<&Finished> {
        if self.done.is_some() {
            return self.done.as_ref();
        }
        self.direct.retain(|d| d.connection != connection);
        if self.relayed.is_some_and(|(c, _)| c == connection) {
            self.relayed_closed = true;
        }
        if self.relayed_closed && self.direct.is_empty() {
            if self.last_error.is_none() {
                self.last_error = Some("the relayed connection closed before a direct connection came up".into());
            }
            return self.finish(now, Outcome::Failed);
        }
        None
    }

    /// The attempt's deadline passed.
    pub fn deadline(&mut self, now: Instant, limit: Duration) -> &Finished {
        if self.done.is_none() {
            let (outcome, what) = match self.relayed {
                None => (Outcome::NoRelayConnection, "no relayed connection"),
                Some(_) => (Outcome::Timeout, "no confirmed direct connection"),
            };
            let last = self.last_error.take().map(|e| format!(" (last error: {e})")).unwrap_or_default();
            self.last_error = Some(format!("{what} within {}s{last}", limit.as_secs_f64()));
            self.finish(now, outcome);
        }
        self.done.as_ref().expect("finished above")
    }

    /// The process is stopping.
    pub fn cancel(&mut self, now: Instant) -> &Finished {
        if self.done.is_none() {
            self.last_error = Some("cancelled: the punch client is shutting down".into());
            self.finish(now, Outcome::Cancelled);
        }
        self.done.as_ref().expect("finished above")
    }

    fn finished(&self, now: Instant, outcome: Outcome) -> Finished {
        Finished {
            outcome,
            transport: self.relay_transport,
            dcutr_rounds: self.relayed.map(|_| self.dials),
            relayed_rtt: self.relayed_rtt,
            direct_rtt: None,
            time_to_direct: None,
            direct_address: None,
            duration: now.saturating_duration_since(self.started),
            error: self.last_error.clone(),
        }
    }

    fn finish(&mut self, now: Instant, outcome: Outcome) -> Option<&Finished> {
        if self.done.is_none() {
            self.done = Some(self.finished(now, outcome));
        }
        self.done.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use sensor_core::{
        punch::{KaspaCheck, PunchAttempt},
        reachability::Reachability,
    };
    use time::OffsetDateTime;
    use uuid::Uuid;

    use super::*;

    fn id(n: usize) -> ConnectionId {
        ConnectionId::new_unchecked(n)
    }

    fn addr(text: &str) -> Multiaddr {
        text.parse().unwrap()
    }

    const CIRCUIT: &str =
        "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit";
    const MS: Duration = Duration::from_millis(1);

    fn relayed(t0: Instant) -> AttemptTracker {
        let mut t = AttemptTracker::new(t0, Transport::Tcp);
        t.circuit_dial_started(id(1));
        t.dialing(id(1));
        assert!(t.connection_established(t0 + 5 * MS, id(1), true, &addr(CIRCUIT)).is_none());
        t
    }

    #[test]
    fn transports_come_from_the_address() {
        assert_eq!(Transport::of(&addr("/ip4/1.2.3.4/tcp/1")), Some(Transport::Tcp));
        assert_eq!(
            Transport::of(&addr("/ip4/1.2.3.4/udp/1/quic-v1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN")),
            Some(Transport::Quic)
        );
        assert_eq!(Transport::of(&addr(CIRCUIT)), Some(Transport::Tcp), "a circuit is judged by its relay part");
        assert_eq!(Transport::of(&addr("/ip4/1.2.3.4/udp/1")), None);
    }

    #[test]
    fn the_first_direct_connection_confirmed_by_ping_is_the_success() {
        let t0 = Instant::now();
        let mut t = relayed(t0);
        assert!(t.ping(t0 + 6 * MS, id(1), Ok(Duration::from_micros(1500))).is_none());
        t.dialing(id(2));
        // QUIC may open two direct connections: the one whose ping answers first counts.
        let quic = addr("/ip4/10.0.0.2/udp/5000/quic-v1");
        assert!(t.connection_established(t0 + 20 * MS, id(2), false, &quic).is_none());
        assert!(t.connection_established(t0 + 21 * MS, id(3), false, &quic).is_none());
        let f = t.ping(t0 + 22 * MS, id(3), Ok(Duration::from_micros(250))).unwrap().clone();
        assert_eq!(f.outcome, Outcome::Success);
        assert_eq!(f.transport, Transport::Quic, "the direct connection's transport");
        assert_eq!(f.time_to_direct, Some(16 * MS));
        assert_eq!(f.direct_rtt, Some(Duration::from_micros(250)));
        assert_eq!(f.relayed_rtt, Some(Duration::from_micros(1500)));
        assert_eq!(f.dcutr_rounds, Some(1), "the circuit dial is not a round");
        assert_eq!(f.direct_address, Some(quic));
        assert_eq!(f.duration, 22 * MS);
        assert_eq!(f.error, None);
        // Later observations do not change the verdict.
        assert_eq!(t.ping(t0 + 30 * MS, id(2), Ok(MS)).unwrap(), &f);
        assert_eq!(t.deadline(t0 + Duration::from_secs(30), Duration::from_secs(30)), &f);
    }

    #[test]
    fn a_failed_circuit_dial_is_no_relay_connection() {
        let t0 = Instant::now();
        let mut t = AttemptTracker::new(t0, Transport::Quic);
        t.circuit_dial_started(id(7));
        assert!(t.dial_failed(t0 + MS, Some(id(99)), "other dial".into()).is_none(), "another dial is ignored");
        let f = t.dial_failed(t0 + 2 * MS, Some(id(7)), "NO_RESERVATION".into()).unwrap();
        assert_eq!((f.outcome, f.transport, f.dcutr_rounds), (Outcome::NoRelayConnection, Transport::Quic, None));
        assert_eq!(f.error.as_deref(), Some("NO_RESERVATION"));
        let mut refused = AttemptTracker::new(t0, Transport::Tcp);
        assert_eq!(
            refused.circuit_dial_refused(t0, "no transport".into()).unwrap().outcome,
            Outcome::NoRelayConnection
        );
    }

    #[test]
    fn three_failed_rounds_or_a_dcutr_error_fail() {
        let t0 = Instant::now();
        let mut t = relayed(t0);
        for n in 0..MAX_DCUTR_ROUNDS {
            t.dialing(id(10 + n as usize));
            let verdict = t.dial_failed(t0 + 10 * MS, Some(id(10 + n as usize)), format!("refused {n}")).cloned();
            assert_eq!(verdict.is_some(), n + 1 == MAX_DCUTR_ROUNDS);
        }
        let f = t.verdict().unwrap();
        assert_eq!((f.outcome, f.dcutr_rounds), (Outcome::Failed, Some(3)));
        assert!(f.error.as_deref().unwrap().contains("3 direct dials failed; last: refused 2"), "{:?}", f.error);

        let mut t = relayed(t0);
        let f = t.dcutr_result(t0 + 9 * MS, Err("protocol not supported".into())).unwrap();
        assert_eq!((f.outcome, f.error.as_deref()), (Outcome::Failed, Some("protocol not supported")));
    }

    #[test]
    fn unanswered_pings_and_closed_connections_fail() {
        let t0 = Instant::now();
        let mut t = relayed(t0);
        t.connection_established(t0 + 10 * MS, id(2), false, &addr("/ip4/10.0.0.2/tcp/5000"));
        let f = t.ping(t0 + 11 * MS, id(2), Err("timeout".into())).unwrap();
        assert_eq!(f.outcome, Outcome::Failed);
        assert!(f.error.as_deref().unwrap().contains("did not answer a ping"));

        let mut t = relayed(t0);
        t.connection_established(t0 + 10 * MS, id(2), false, &addr("/ip4/10.0.0.2/tcp/5000"));
        assert!(t.connection_closed(t0 + 11 * MS, id(1)).is_none(), "a direct connection is still pending");
        let f = t.connection_closed(t0 + 12 * MS, id(2)).unwrap();
        assert_eq!(f.outcome, Outcome::Failed);
    }

    #[test]
    fn deadlines_and_cancellation() {
        let t0 = Instant::now();
        let limit = Duration::from_secs(10);
        let mut waiting = AttemptTracker::new(t0, Transport::Tcp);
        waiting.circuit_dial_started(id(1));
        let f = waiting.deadline(t0 + limit, limit);
        assert_eq!((f.outcome, f.duration), (Outcome::NoRelayConnection, limit));
        assert_eq!(f.error.as_deref(), Some("no relayed connection within 10s"));

        let mut t = relayed(t0);
        t.dialing(id(2));
        t.dial_failed(t0 + MS, Some(id(2)), "refused".into());
        let f = t.deadline(t0 + limit, limit);
        assert_eq!((f.outcome, f.dcutr_rounds), (Outcome::Timeout, Some(1)));
        assert_eq!(f.error.as_deref(), Some("no confirmed direct connection within 10s (last error: refused)"));

        let mut t = relayed(t0);
        assert_eq!(t.cancel(t0 + MS).outcome, Outcome::Cancelled);
    }

    #[test]
    fn records_print_every_documented_field() {
        let t0 = Instant::now();
        let mut t = relayed(t0);
        t.connection_established(t0 + 10 * MS, id(2), false, &addr("/ip4/10.0.0.2/tcp/5000"));
        let result = t.ping(t0 + 11 * MS, id(2), Ok(Duration::from_micros(1234))).unwrap().clone();
        let attempt = PunchAttempt {
            attempt_id: Uuid::now_v7(),
            started_at: OffsetDateTime::UNIX_EPOCH,
            sensor_id: "s-1".into(),
            relay: "/ip4/127.0.0.1/tcp/4001/p2p/x".into(),
            relay_node: "edge".into(),
            target: "12D3KooWtarget".into(),
            attempt: 2,
            nat_verdict: Reachability::Unknown,
            result,
            kaspa: None,
        };
        let v = attempt.to_json();
        for key in [
            "event",
            "attempt_id",
            "started_at",
            "sensor_id",
            "relay",
            "relay_node",
            "target",
            "attempt",
            "transport",
            "outcome",
            "dcutr_rounds",
            "relayed_rtt_ms",
            "direct_rtt_ms",
            "time_to_direct_ms",
            "direct_address",
            "duration_ms",
            "nat_verdict",
            "error",
            "kaspa_handshake_ms",
            "kaspa_user_agent",
            "kaspa_network",
            "kaspa_error",
        ] {
            assert!(v.get(key).is_some(), "{key} missing from {v}");
        }
        assert_eq!(v["started_at"], "1970-01-01T00:00:00.000000000Z");
        assert_eq!((v["outcome"].as_str(), v["transport"].as_str()), (Some("success"), Some("tcp")));
        assert_eq!(v["time_to_direct_ms"], 5);
        assert_eq!(v["direct_rtt_ms"], 1.234);
        assert!(v["relayed_rtt_ms"].is_null() && v["error"].is_null());
        let line = attempt.summary_line();
        assert!(line.contains("outcome=success") && line.contains("time_to_direct_ms=5"), "{line}");
        assert!(v["kaspa_handshake_ms"].is_null() && v["kaspa_error"].is_null());
        let done =
            KaspaCheck::Done { user_agent: "/kaspad:2.1.0/".into(), network: "kaspa-devnet".into(), elapsed_ms: 8 };
        let v = PunchAttempt { kaspa: Some(done), ..attempt.clone() }.to_json();
        assert_eq!(
            (v["kaspa_handshake_ms"].as_u64(), v["kaspa_user_agent"].as_str()),
            (Some(8), Some("/kaspad:2.1.0/"))
        );
        let failed = PunchAttempt { kaspa: Some(KaspaCheck::Failed("no bridge".into())), ..attempt };
        assert_eq!(failed.to_json()["kaspa_error"], "no bridge");
        assert!(failed.summary_line().contains("kaspa_error=\"no bridge\""));
    }
}
