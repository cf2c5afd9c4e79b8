//! meshfed's store-and-forward and delivery logic: "delivery that loses nothing", decided
//! deterministically.
//!
//! **What it is.** Two sans-IO state machines, one per end of a stream of messages over a link:
//! - [`Outbox`] (sender): admits messages within count and byte limits (refusing with a typed
//!   [`OfferError`], shedding only qos 0 under overload), has reliable ones persisted before they
//!   count as accepted, sends by priority with order kept per order key, within the receiver's
//!   credit and an in-flight window, retransmits on an adaptive timeout (RFC 6298), dead-letters
//!   what passes its deadline, and puts everything unacknowledged back in line when the link
//!   drops.
//! - [`Inbox`] (receiver): tracks each sending peer's stream, acknowledges cumulatively and
//!   selectively, delivers `ordered` messages in order per key (holding back behind gaps and
//!   reporting gaps), deduplicates exactly-once messages by envelope id in a bounded window, never
//!   delivers after a deadline, and grants credit as the local consumer frees space.
//!
//! **What it is not.** No IO: no sockets, files, tasks or clock reads; time is an argument, inputs
//! come in through `handle_*` methods and outputs leave through `poll_*` methods. No persistence
//! either: the machines say *what* to persist or forget as events ([`OutboxEvent::Persist`],
//! [`InboxEvent::RememberDelivered`], [`InboxEvent::Forget`]) and the driver stores it, in batches
//! if it likes (group commit). The link-level wire codec is in [`wire`] ([`Transfer`] carries
//! many [`Transmit`]s with their signed envelopes; [`Ack`], [`Credit`] and [`Forward`] have
//! theirs); putting those bytes in frames is the transport's business.
//!
//! **Where to start reading.** [`outbox`] (the driving loop is in its documentation), then
//! [`inbox`], then [`stream`] for what travels between them. The deterministic two-endpoint
//! simulation in `src/tests/` (a virtual clock; knobs for loss, delay, reordering and link drops)
//! shows them working together.

#![forbid(unsafe_code)]

pub mod inbox;
pub mod message;
pub mod outbox;
pub mod rtt;
pub mod stream;
pub mod wire;

#[cfg(test)]
mod tests;

pub use inbox::{
    Delivery, DiscardReason, Inbox, InboxConfig, InboxCounters, InboxError, InboxEvent, Occupancy,
};
pub use message::{Deadline, Message, OrderKey, Peer};
pub use outbox::{
    AckError, Backlog, DeadLetterReason, Limit, OfferError, Offered, Outbox, OutboxConfig,
    OutboxCounters, OutboxEvent,
};
pub use rtt::{RtoConfig, RttEstimator};
pub use stream::{Ack, Credit, Epoch, Forward, KeySeq, Seq, SeqRange, Transmit};
pub use wire::{Item, Signed, SignedRef, Transfer, WireError};
