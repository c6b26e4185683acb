//! A mergeable distinct count of Kaspa peer ids: HyperLogLog with 2^12 one-byte registers.
//!
//! Flajolet, Fusy, Gandouet, Meunier, "HyperLogLog: the analysis of a near-optimal cardinality
//! estimation algorithm" (2007), with the linear-counting correction for small cardinalities from
//! Heule, Nunkesser, Hall, "HyperLogLog in Practice" (2013). Standard error 1.04/√4096 ≈ 1.6 %.
//!
//! Wire form (`PeerSummary.peer_id_sketch`): exactly 4096 register bytes, or empty for an empty
//! sketch. The form is canonical (the same set always encodes to the same bytes) and carries
//! nothing but registers. Items are hashed with SHA-256 (first 8 bytes, big-endian), so peers
//! cannot choose ids that skew the estimate, and sketches from different processes merge into
//! the sketch of the union by taking the register-wise maximum.
//!
//! (cardinality-estimator was tried first; its serde form embeds a heap address, which neither
//! compares nor belongs on the wire.)

use sha2::{Digest, Sha256};

/// log2 of the number of registers.
const PRECISION: u32 = 12;
/// Number of registers, and the length of the wire form.
pub const SKETCH_BYTES: usize = 1 << PRECISION;
/// Largest valid register value: leading zeros of the remaining 52 bits, plus one.
const MAX_RANK: u8 = (64 - PRECISION + 1) as u8;

/// Distinct-count sketch of 16-byte peer ids.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerIdSketch {
    registers: Box<[u8; SKETCH_BYTES]>,
}

/// A sketch that could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("undecodable peer id sketch: {0}")]
pub struct SketchError(String);

impl Default for PeerIdSketch {
    fn default() -> Self {
        Self { registers: Box::new([0; SKETCH_BYTES]) }
    }
}

impl PeerIdSketch {
    /// An empty sketch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one peer id.
    pub fn insert(&mut self, peer_id: &[u8; 16]) {
        let digest = Sha256::digest(peer_id);
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        let hash = u64::from_be_bytes(first);
        let index = (hash >> (64 - PRECISION)) as usize;
        let rest = hash << PRECISION;
        let rank = (rest.leading_zeros() + 1).min(u32::from(MAX_RANK)) as u8;
        if rank > self.registers[index] {
            self.registers[index] = rank;
        }
    }

    /// Adds everything `other` counted (register-wise maximum).
    pub fn merge(&mut self, other: &PeerIdSketch) {
        for (mine, theirs) in self.registers.iter_mut().zip(other.registers.iter()) {
            *mine = (*mine).max(*theirs);
        }
    }

    /// True when nothing was inserted or merged.
    pub fn is_empty(&self) -> bool {
        self.registers.iter().all(|r| *r == 0)
    }

    /// Estimated number of distinct peer ids inserted or merged (±1.6 % standard error; exact
    /// within a few for small sets thanks to linear counting).
    pub fn estimate(&self) -> u64 {
        let m = SKETCH_BYTES as f64;
        let zeros = self.registers.iter().filter(|r| **r == 0).count();
        let sum: f64 = self.registers.iter().map(|r| 2f64.powi(-i32::from(*r))).sum();
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let raw = alpha * m * m / sum;
        let estimate = if raw <= 2.5 * m && zeros > 0 { m * (m / zeros as f64).ln() } else { raw };
        estimate.round() as u64
    }

    /// The wire form: 4096 register bytes, or nothing for an empty sketch.
    pub fn to_bytes(&self) -> Vec<u8> {
        if self.is_empty() { Vec::new() } else { self.registers.to_vec() }
    }

    /// Decodes the wire form. Errors: [`SketchError`] for a length other than 0 or 4096, or a
    /// register above the largest possible rank.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SketchError> {
        if bytes.is_empty() {
            return Ok(Self::new());
        }
        let registers: [u8; SKETCH_BYTES] = bytes
            .try_into()
            .map_err(|_| SketchError(format!("{} bytes, expected 0 or {SKETCH_BYTES}", bytes.len())))?;
        if let Some(bad) = registers.iter().position(|r| *r > MAX_RANK) {
            return Err(SketchError(format!("register {bad} is {} (max {MAX_RANK})", registers[bad])));
        }
        Ok(Self { registers: Box::new(registers) })
    }
}

impl std::fmt::Debug for PeerIdSketch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerIdSketch").field("estimate", &self.estimate()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> [u8; 16] {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&n.to_be_bytes());
        id
    }

    fn sketch_of(range: std::ops::Range<u32>) -> PeerIdSketch {
        let mut s = PeerIdSketch::new();
        range.for_each(|n| s.insert(&id(n)));
        s
    }

    #[test]
    fn merged_sketches_count_the_union() {
        // Two sensors with 30,000 peers each, 10,000 of them shared: the union is 50,000.
        let a = PeerIdSketch::from_bytes(&sketch_of(0..30_000).to_bytes()).unwrap();
        let b = PeerIdSketch::from_bytes(&sketch_of(20_000..50_000).to_bytes()).unwrap();
        let mut union = PeerIdSketch::new();
        union.merge(&a);
        union.merge(&b);
        let estimate = union.estimate() as f64;
        assert!((estimate - 50_000.0).abs() / 50_000.0 < 0.05, "estimate {estimate}");
        assert_eq!(union, sketch_of(0..50_000), "merge equals the sketch of the union");
    }

    #[test]
    fn estimates_stay_within_five_percent_across_sizes() {
        for n in [1u32, 10, 100, 1_000, 5_000, 20_000, 200_000] {
            let estimate = sketch_of(0..n).estimate() as f64;
            let error = (estimate - f64::from(n)).abs() / f64::from(n);
            assert!(error < 0.05, "n {n}: estimate {estimate}");
        }
    }

    #[test]
    fn wire_form_is_canonical_and_round_trips() {
        let mut s = sketch_of(0..3);
        s.insert(&id(1));
        assert_eq!(s.estimate(), 3);
        let bytes = s.to_bytes();
        assert_eq!(bytes.len(), SKETCH_BYTES);
        assert_eq!(bytes, sketch_of(0..3).to_bytes(), "same set, same bytes");
        assert_eq!(PeerIdSketch::from_bytes(&bytes).unwrap(), s);
        assert!(PeerIdSketch::new().to_bytes().is_empty());
        assert_eq!(PeerIdSketch::from_bytes(b"").unwrap().estimate(), 0);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(PeerIdSketch::from_bytes(b"{").is_err());
        assert!(PeerIdSketch::from_bytes(&[0; SKETCH_BYTES + 1]).is_err());
        let mut too_high = [0u8; SKETCH_BYTES];
        too_high[7] = MAX_RANK + 1;
        assert!(PeerIdSketch::from_bytes(&too_high).is_err());
    }
}
