//! meshfed's audit core (DESIGN §3.9, §3.13), sans-IO: time is an argument, nothing here
//! touches files, sockets or the clock.
//!
//! - [`record`]: the typed audit records, their CBOR form (a leaf of the audit tree), the keyed
//!   commitments that stand for payloads and the keyed MAC that names an edited record.
//! - [`head`]: tree heads, signed by the node that keeps the log and countersigned by a
//!   federation partner.
//! - [`verify`]: checking a whole log against its heads and countersignatures.
//! - [`proof`]: the proof for one message, checked by a third party.
//! - [`anomaly`]: per partner and topic baselines and their deviations.
//! - [`breaker`]: a partner's circuit breaker.

#![forbid(unsafe_code)]

pub mod anomaly;
pub mod breaker;
mod codec;
pub mod head;
pub mod proof;
pub mod record;
pub mod verify;
