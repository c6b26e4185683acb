//! The RelayNode controller: validate (pure) → identity (the relay's libp2p key, generated once
//! or read from the user's Secret) → build desired children (pure) → server-side apply → prune →
//! status (pure aggregation, one patch).

/// `app.kubernetes.io/component` of relay pods and of the owned identity Secret.
pub const COMPONENT: &str = "relay";

pub mod build;
pub mod identity;
pub mod reconcile;
pub mod relay_config;
pub mod status;
pub mod validate;

#[cfg(test)]
mod fixture_tests;
