//! Capability exchange (handshake step 2). Each capability is its own module with a synchronous
//! `negotiate(local wish, peer offer)`; the responder runs them all on the initiator's offer and
//! answers with what it accepted, and the initiator checks that answer against its own offer.

pub mod compliance;
pub mod compression;
pub mod frame_size;
pub mod qos;
pub mod security;
pub mod services;
pub mod version;

use serde::{Deserialize, Serialize};

/// What one side offers, or wishes for, in the capability exchange.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Protocol versions spoken.
    pub versions: version::Offer,
    /// Security suites supported, most preferred first.
    pub security: security::Offer,
    /// Highest QoS level supported.
    pub qos: qos::Offer,
    /// Topics this side publishes and topics it wants to receive.
    pub services: services::Offer,
    /// Compliance frameworks supported and required.
    pub compliance: compliance::Offer,
    /// Compression schemes supported, most preferred first.
    pub compression: compression::Offer,
    /// Largest frame body this side accepts.
    pub max_frame: frame_size::Offer,
}

/// The capabilities both sides agreed on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    /// The protocol version spoken on this federation.
    pub version: version::Agreed,
    /// The security suite.
    pub security: security::Agreed,
    /// The highest QoS level either side may use.
    pub qos: qos::Agreed,
    /// Which topics flow in which direction.
    pub services: services::Agreed,
    /// Frameworks both support.
    pub compliance: compliance::Agreed,
    /// Compression used on the link.
    pub compression: compression::Agreed,
    /// Largest frame body on the link.
    pub max_frame: frame_size::Agreed,
}

/// A capability the two sides cannot agree on; names the capability and both sides' values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("capability {capability}: {detail}")]
pub struct Mismatch {
    /// The capability (`versions`, `security`, ...).
    pub capability: &'static str,
    /// What could not be reconciled.
    pub detail: String,
}

impl Mismatch {
    pub(crate) fn new(capability: &'static str, detail: impl Into<String>) -> Self {
        Self {
            capability,
            detail: detail.into(),
        }
    }
}

impl Capabilities {
    /// The responder's side: `self` is the local wish, `peer` the initiator's offer.
    pub fn negotiate(&self, peer: &Self) -> Result<Accepted, Mismatch> {
        Ok(Accepted {
            version: version::negotiate(&self.versions, &peer.versions)?,
            security: security::negotiate(&self.security, &peer.security)?,
            qos: qos::negotiate(&self.qos, &peer.qos),
            services: services::negotiate(&self.services, &peer.services),
            compliance: compliance::negotiate(&self.compliance, &peer.compliance)?,
            compression: compression::negotiate(&self.compression, &peer.compression),
            max_frame: frame_size::negotiate(&self.max_frame, &peer.max_frame)?,
        })
    }

    /// The initiator's side: checks that what the responder accepted lies within what was
    /// offered (`self`), so a responder cannot impose something never offered.
    pub fn check_accepted(&self, accepted: &Accepted) -> Result<(), Mismatch> {
        version::check(&self.versions, &accepted.version)?;
        security::check(&self.security, &accepted.security)?;
        qos::check(&self.qos, &accepted.qos)?;
        compliance::check(&self.compliance, &accepted.compliance)?;
        compression::check(&self.compression, &accepted.compression)?;
        frame_size::check(&self.max_frame, &accepted.max_frame)?;
        services::check(&self.services, &accepted.services)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_agree_with_themselves() {
        let c = Capabilities::default();
        let accepted = c.negotiate(&c).unwrap();
        c.check_accepted(&accepted).unwrap();
        assert_eq!(accepted.version.0, version::CURRENT);
    }

    #[test]
    fn accepted_that_was_never_offered_is_refused() {
        let c = Capabilities::default();
        let mut accepted = c.negotiate(&c).unwrap();
        accepted.max_frame = frame_size::Agreed(c.max_frame.0 + 1);
        let err = c.check_accepted(&accepted).unwrap_err();
        assert_eq!(err.capability, "max_frame");
    }
}
