//! The property checks of fuzz target `version`, called by the libFuzzer target
//! (`fuzz/fuzz_targets/version.rs`) and by the corpus replay under `cargo test`
//! (`sensor/tests/fuzz_corpus.rs`).
//!
//! Input: a peer's `Version` message (protobuf bytes of kaspa-p2p-lib 2.1.0's
//! `protowire.VersionMessage`) through the sensor's validation,
//! [`sensor::kaspa::version::read_peer_version`] — what the listener's handshake
//! (`listen/connection.rs`) and the crawler's visit (`crawl/visit.rs`) do with it.
//!
//! Properties: never panics; a message is accepted only with a 16-byte `id`; an accepted one has
//! a 32-hex-digit peer id, a user agent of at most 256 bytes (kaspa-p2p-lib's
//! `MAX_USER_AGENT_LEN`), and an advertised address that is present exactly when the message had
//! one, as `IP:PORT` with the message's port; a refusal carries a reason.

use std::net::SocketAddr;

use kaspa_p2p_lib::pb;
use sensor::kaspa::version::read_peer_version;
use tonic_prost::prost::Message;

/// Panics when `data` breaks a property.
pub fn check(data: &[u8]) {
    let Ok(msg) = pb::VersionMessage::decode(data) else { return };
    let id_len = msg.id.len();
    let address = msg.address.clone();
    let peer = match read_peer_version(msg) {
        Ok(peer) => peer,
        Err(reason) => {
            assert!(!reason.is_empty(), "a refused Version must say why");
            return;
        }
    };
    assert_eq!(id_len, 16, "accepted a Version whose id is {id_len} bytes");
    let info = &peer.info;
    let hex_id = peer.id.simple().to_string();
    assert_eq!(hex_id.len(), 32);
    assert_eq!(info.peer_id.as_deref(), Some(hex_id.as_str()));
    let user_agent = info.user_agent.as_deref().expect("an accepted Version has a user agent");
    assert!(user_agent.len() <= 256, "user agent of {} bytes", user_agent.len());
    match (&address, peer.advertised_port, info.advertised_address.as_deref()) {
        (None, None, None) => {}
        (Some(sent), Some(port), Some(text)) => {
            assert_eq!(u32::from(port), sent.port);
            let parsed: SocketAddr = text.parse().expect("advertised_address is IP:PORT");
            assert_eq!(parsed.port(), port);
        }
        other => panic!("advertised address inconsistent: {other:?}"),
    }
}
