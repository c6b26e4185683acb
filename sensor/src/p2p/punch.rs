//! `sensor punch`: the DCUtR hole-punch client (docs/architecture.md, docs/natlab.md).
//!
//! It reserves a slot on the relay (`listen_on(<relay>/p2p-circuit)`) and learns its external
//! address candidates from the relay's identify (the observed address); AutoNAT v1 asks the relay
//! whether it is publicly reachable, and the address-mapping test (a second connection to the
//! relay's alternate port, [`super::reachability`]) tells a cone NAT from a symmetric one. Then,
//! by mode ([`PunchSettings::mode`]):
//!
//! - **Hold** (no targets, no `punch.targets_file`, `punch.interval_secs` 0): hold the
//!   reservation (so another punch client can target it) until SIGTERM/SIGINT or
//!   `punch.timeout_secs`, re-reserving with backoff when it is lost. With `--json` one line
//!   `{"event":"reservation","peer_id":…,"relay":…,"address":…}` is printed per circuit address
//!   a reservation gives (one per relay external address).
//! - **Once** (targets, `punch.interval_secs` 0): one round, then exit 0 whatever the outcomes.
//! - **Rounds** (`punch.interval_secs` > 0, the operator's sidecar): hold the reservation and
//!   run a round every interval until SIGTERM.
//!
//! A round: for each target (`punch.targets` plus the PeerIds in `punch.targets_file`, re-read
//! every round, own PeerId skipped) and each of `punch.attempts`, one at a time: close every
//! connection to the target, dial `<relay>/p2p-circuit/p2p/<target>`, let DCUtR upgrade, and
//! judge the attempt with the pure [`attempt::AttemptTracker`] (success = the first direct
//! connection confirmed by a ping), bounded by `punch.timeout_secs` (0 =
//! [`DEFAULT_PUNCH_TIMEOUT_SECS`]). Every attempt is printed (one JSON object per line with
//! `--json`), stored in SQLite (`punch_attempts`), counted (`sensor_punch_*`) and, with
//! `report.endpoint`, included in the cumulative report (`HolePunchSummary`, `relay` =
//! `punch.relay_node`, plus the client's PeerId, reservation and reachability). SIGTERM/SIGINT
//! cancels the attempt in flight (recorded as `cancelled`) and skips the rest.
//!
//! `/readyz` is 200 while a reservation is held (hold and rounds) or once the relay connection
//! is set up (once). The report's sender is `<report sender>-punch`, so a punch client next to
//! `sensor listen` in the same pod never replaces the listener's reports at the collector.
//!
//! Set-up errors (no or malformed relay, identity file, a listener or the metrics port that
//! cannot be bound, the database) exit non-zero; nothing the network does makes it fail.
//!
//! Layout: [`client`] (start, record, shutdown), [`events`] (what every swarm event feeds),
//! [`rounds`] (hold, rounds, one attempt), [`attempt`] (the pure verdict), [`swarm`].

pub mod attempt;
pub mod client;
mod events;
pub mod rounds;
pub mod swarm;

use std::{path::PathBuf, time::Duration};

pub use self::client::{Output, PunchClient};
use crate::error::{Result, SensorError};
use libp2p::{Multiaddr, PeerId, multiaddr::Protocol};
use sensor_core::config::{Config, DEFAULT_PUNCH_TIMEOUT_SECS};
use sensor_core::punch::Transport;

/// How long start-up waits for every local listener to report an address.
pub const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait, before the first attempt, for the relay connection, the observed address and a
/// reachability verdict.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the connections to a target to close between two attempts.
pub const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a run does (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Hold the reservation for `hold_for` (`None` = until a signal).
    Hold { hold_for: Option<Duration> },
    /// One round of attempts, then exit.
    Once,
    /// Hold the reservation and run a round every `interval`.
    Rounds { interval: Duration },
}

/// What `sensor punch` does, from `[punch]` (validated).
#[derive(Debug, Clone)]
pub struct PunchSettings {
    /// The relay, ending in `/p2p/<relay id>`.
    pub relay: Multiaddr,
    pub relay_id: PeerId,
    pub relay_transport: Transport,
    pub targets: Vec<PeerId>,
    pub targets_file: Option<PathBuf>,
    pub attempts: u32,
    /// Bound of one attempt.
    pub attempt_timeout: Duration,
    pub mode: Mode,
    pub relay_node: String,
    pub sensor_id: String,
    pub listen: Vec<Multiaddr>,
    /// After a success, a Kaspa handshake over the direct connection.
    pub kaspa_handshake: bool,
}

impl PunchSettings {
    /// Errors: [`SensorError::Config`] with key `punch.relay` when no relay is configured.
    pub fn from_config(config: &Config) -> Result<PunchSettings> {
        let p = &config.punch;
        let missing = || SensorError::Config {
            key: "punch.relay".into(),
            reason: "sensor punch needs the relay's multiaddr (--relay or SENSOR_PUNCH_RELAY), \
                     e.g. /ip4/203.0.113.7/tcp/4001/p2p/12D3KooW…"
                .into(),
        };
        let relay = p.relay.clone().ok_or_else(missing)?;
        let relay_id = p.relay_peer_id().ok_or_else(missing)?;
        let relay_transport = Transport::of(&relay).unwrap_or(Transport::Tcp);
        let secs = if p.timeout_secs == 0 { DEFAULT_PUNCH_TIMEOUT_SECS } else { p.timeout_secs };
        let mode = if p.interval_secs > 0 {
            Mode::Rounds { interval: Duration::from_secs(p.interval_secs) }
        } else if p.targets.is_empty() && p.targets_file.is_none() {
            Mode::Hold { hold_for: (p.timeout_secs > 0).then(|| Duration::from_secs(p.timeout_secs)) }
        } else {
            Mode::Once
        };
        Ok(PunchSettings {
            relay,
            relay_id,
            relay_transport,
            targets: p.targets.clone(),
            targets_file: p.targets_file.clone(),
            attempts: p.attempts.max(1),
            attempt_timeout: Duration::from_secs(secs),
            mode,
            relay_node: p.relay_node.trim().to_owned(),
            sensor_id: config.sensor_id(),
            listen: p.listen.clone(),
            kaspa_handshake: p.kaspa_handshake,
        })
    }

    /// Whether readiness means "a reservation is held" (hold and rounds) rather than "set up".
    pub fn holds_reservation(&self) -> bool {
        !matches!(self.mode, Mode::Once)
    }

    /// `<relay>/p2p-circuit`: the address a reservation listens on.
    pub fn circuit(&self) -> Multiaddr {
        self.relay.clone().with(Protocol::P2pCircuit)
    }

    /// `<relay>/p2p-circuit/p2p/<target>`.
    pub fn circuit_to(&self, target: PeerId) -> Multiaddr {
        self.circuit().with(Protocol::P2p(target))
    }
}

/// `sensor punch`: start, run the mode, shut down. Exit 0 after the attempts whatever their
/// outcomes.
pub async fn run(config: Config, output: Output) -> Result<()> {
    let settings = PunchSettings::from_config(&config)?;
    let stop = crate::signal::stop_on_signal();
    let mut client = PunchClient::start(&config, settings, output).await?;
    client.run(stop).await;
    client.shutdown().await
}

#[cfg(test)]
mod tests {
    use libp2p::identity::Keypair;

    use super::*;

    #[test]
    fn settings_follow_the_config() {
        let relay_id = Keypair::generate_ed25519().public().to_peer_id();
        let target = Keypair::generate_ed25519().public().to_peer_id();
        let mut config = Config::default();
        match PunchSettings::from_config(&config) {
            Err(SensorError::Config { key, reason }) => {
                assert_eq!(key, "punch.relay");
                assert!(reason.contains("--relay"), "{reason}");
            }
            other => panic!("expected a config error, got {other:?}"),
        }
        config.punch.relay = Some(format!("/ip4/127.0.0.1/udp/4001/quic-v1/p2p/{relay_id}").parse().unwrap());
        let s = PunchSettings::from_config(&config).unwrap();
        assert_eq!(s.mode, Mode::Hold { hold_for: None }, "no targets, timeout 0 = hold until a signal");
        assert!(s.holds_reservation());
        config.punch.targets = vec![target];
        config.punch.attempts = 3;
        let s = PunchSettings::from_config(&config).unwrap();
        assert_eq!((s.relay_id, s.relay_transport, s.attempts, s.mode), (relay_id, Transport::Quic, 3, Mode::Once));
        assert!(!s.holds_reservation());
        assert_eq!(s.attempt_timeout, Duration::from_secs(DEFAULT_PUNCH_TIMEOUT_SECS));
        assert_eq!(
            s.circuit_to(target).to_string(),
            format!("/ip4/127.0.0.1/udp/4001/quic-v1/p2p/{relay_id}/p2p-circuit/p2p/{target}")
        );
        config.punch.timeout_secs = 7;
        config.punch.targets.clear();
        let s = PunchSettings::from_config(&config).unwrap();
        assert_eq!(
            (s.attempt_timeout, s.mode),
            (Duration::from_secs(7), Mode::Hold { hold_for: Some(s.attempt_timeout) })
        );
        config.punch.targets_file = Some("/etc/sensor/punch-targets".into());
        assert_eq!(PunchSettings::from_config(&config).unwrap().mode, Mode::Once, "a targets file means attempts");
        config.punch.interval_secs = 300;
        let s = PunchSettings::from_config(&config).unwrap();
        assert_eq!(s.mode, Mode::Rounds { interval: Duration::from_secs(300) });
        assert!(s.holds_reservation());
    }
}
