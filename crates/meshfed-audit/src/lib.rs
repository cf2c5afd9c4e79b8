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
//!
//! Where to start reading: [`record`] (what a log holds and how a record becomes a leaf), then
//! [`head`] (how partners keep each other honest). The Merkle tree itself, with its inclusion
//! and consistency proofs, is `meshfed_proto::batch::merkle`, shared with batch signatures.
//! This crate stores nothing: the node keeps the rows, the heads and the audit key, and hands
//! them to [`verify`] and [`proof`].

#![forbid(unsafe_code)]

pub mod anomaly;
pub mod breaker;
mod codec;
pub mod head;
pub mod proof;
pub mod record;
pub mod verify;
