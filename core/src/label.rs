//! Closed enums whose variants are stored values and metric labels.
//!
//! Every such enum derives its string form with `strum` (`IntoStaticStr`, `EnumString`,
//! `VariantArray`, in snake_case unless the enum says otherwise) and gets [`Label`] for free, so
//! no enum hand-writes an `ALL` array, an `as_str` match or a parser. The strings are part of the
//! data format (SQLite columns, export rows, reports, metric labels): renaming a variant without
//! a `#[strum(serialize = "...")]` that keeps the old string is a format change.

use std::str::FromStr;

use strum::VariantArray;

/// A closed enum with a stable string form. Implemented for every enum that derives
/// `strum::IntoStaticStr`, `strum::EnumString` and `strum::VariantArray`.
pub trait Label: Copy + Into<&'static str> + FromStr + VariantArray + 'static {
    /// Every variant, in declaration order (metric series are pre-created from it).
    const ALL: &'static [Self] = Self::VARIANTS;

    /// The stored value and metric label, e.g. `handshake_verified`.
    fn as_str(self) -> &'static str {
        self.into()
    }

    /// Every variant's string form, in declaration order: the label values a metric family is
    /// pre-created with.
    fn all_labels() -> Vec<&'static str> {
        Self::ALL.iter().map(|v| v.as_str()).collect()
    }

    /// The variant whose [`as_str`](Label::as_str) is `s` (exact match); `None` otherwise.
    fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }
}

impl<T> Label for T where T: Copy + Into<&'static str> + FromStr + VariantArray + 'static {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{crawl::ErrorClass, reachability::Reachability, verdict::VerdictReason};

    fn round_trips<T: Label + PartialEq + std::fmt::Debug>() {
        let mut seen = std::collections::HashSet::new();
        for v in T::ALL {
            assert_eq!(T::parse(v.as_str()), Some(*v), "{v:?}");
            assert!(seen.insert(v.as_str()), "two variants share {:?}", v.as_str());
        }
        assert_eq!(T::parse("no such label"), None);
    }

    #[test]
    fn labels_round_trip_and_are_distinct() {
        round_trips::<VerdictReason>();
        round_trips::<ErrorClass>();
        round_trips::<Reachability>();
        round_trips::<crate::connection::RejectReason>();
        round_trips::<crate::connection::DisconnectReason>();
        round_trips::<crate::punch::Outcome>();
        round_trips::<crate::crawl::FilterReason>();
    }

    #[test]
    fn stored_forms_are_the_documented_ones() {
        assert_eq!(VerdictReason::HandshakeVerified.as_str(), "handshake_verified");
        assert_eq!(ErrorClass::ProtocolVersionRejected.as_str(), "protocol_version_rejected");
        assert_eq!(Reachability::all_labels(), ["public", "private-cone", "private-symmetric", "unknown"]);
        assert_eq!(crate::connection::DisconnectReason::MessageTooLarge.as_str(), "message_too_large");
        assert_eq!(crate::punch::Outcome::NoRelayConnection.as_str(), "no_relay_connection");
    }
}
