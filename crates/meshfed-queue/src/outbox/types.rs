//! The outbox's public vocabulary: configuration, refusals, events and metrics.

use std::fmt;
use std::time::Duration;

use meshfed_proto::envelope::EnvelopeId;

use crate::message::{Deadline, Message};
use crate::rtt::RtoConfig;
use crate::stream::Seq;

/// Limits and timing of an [`Outbox`](super::Outbox).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxConfig {
    /// Most messages held (queued, awaiting persistence or unacknowledged). Default 10 000.
    pub max_messages: usize,
    /// Most bytes held. Default 64 MiB.
    pub max_bytes: u64,
    /// Most reliable (qos ≥ 1) messages sent and not yet acknowledged. Default 256.
    pub max_in_flight: usize,
    /// Credit the receiver grants a new stream before saying anything: it must equal the
    /// receiver's [`InboxConfig::window`](crate::InboxConfig::window) (negotiated on the link).
    /// Default 256.
    pub initial_credit: u64,
    /// Retransmission timeout bounds.
    pub rto: RtoConfig,
    /// Send a reliable message while it is being persisted, instead of after. It still counts
    /// as accepted only once persisted (the driver answers its sender then), so nothing
    /// acknowledged to a sender is ever lost; what changes is that a message whose storage
    /// fails, or whose sender's gateway crashes before the commit, may still reach the peer
    /// although its sender was told it failed (at least once, as a sender's retry would).
    /// Default false.
    pub send_before_persisted: bool,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            max_messages: 10_000,
            max_bytes: 64 << 20,
            max_in_flight: 256,
            initial_credit: 256,
            rto: RtoConfig::default(),
            send_before_persisted: false,
        }
    }
}

/// The limit an offer ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The message count limit.
    Messages {
        /// The configured maximum.
        max: usize,
    },
    /// The byte limit.
    Bytes {
        /// The configured maximum.
        max: u64,
    },
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Messages { max } => write!(f, "{max} messages"),
            Self::Bytes { max } => write!(f, "{max} bytes"),
        }
    }
}

/// Why an offered message was refused. Nothing of the message was kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    /// The outbox is at a limit and holds nothing it may shed for this message.
    #[error("outbox full: at its limit of {limit}, with nothing of lower priority to shed")]
    Full {
        /// The limit reached.
        limit: Limit,
    },
    /// The message alone exceeds the byte limit.
    #[error("message {id} of {size} bytes exceeds the outbox limit of {max} bytes")]
    TooLarge {
        /// The message.
        id: EnvelopeId,
        /// Its size.
        size: usize,
        /// The byte limit.
        max: u64,
    },
    /// A message with this id is already held.
    #[error("message {id} is already in the outbox")]
    AlreadyQueued {
        /// The message.
        id: EnvelopeId,
    },
    /// The message's deadline has already passed.
    #[error("message {id} is past its deadline ({deadline})")]
    DeadlinePassed {
        /// The message.
        id: EnvelopeId,
        /// Its deadline.
        deadline: Deadline,
    },
}

/// What became of an accepted offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    /// A reliable message: a [`OutboxEvent::Persist`] is queued; it counts as accepted once the
    /// driver reports it persisted.
    AwaitingPersistence,
    /// A qos 0 message, queued and accepted (nothing to persist).
    Queued,
    /// A qos 0 message accepted at a full outbox that holds nothing it outranks: it is shed at
    /// once (at most once allows it), counted in [`OutboxCounters::shed`], and nothing of it is
    /// kept. No event follows: the outbox never held it.
    Shed,
}

/// Why a message will not be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadLetterReason {
    /// The deadline passed while the message was queued; it was never sent.
    ExpiredInQueue,
    /// The deadline passed before the receiver acknowledged it. It may have been delivered in
    /// time; it is never delivered later.
    ExpiredUnacknowledged,
    /// The receiver got it after its deadline and did not deliver it.
    ArrivedLate,
    /// Shed under overload (qos 0 only): to make room for a message of higher priority or qos,
    /// or, offered at a full outbox that holds nothing it outranks, at once.
    Shed,
    /// The federation ended (terminated) before the peer acknowledged it.
    FederationEnded,
    /// The agreement in force refuses it (renegotiated since it was accepted: a topic, size or
    /// qos no longer agreed); it is not sent again.
    RefusedByAgreement,
    /// The receiving gateway refused it after verifying it (its agreement or its access
    /// rules), with its reason code (the transport names it).
    RefusedByPeer {
        /// The receiver's code for why.
        reason: u8,
    },
}

impl fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ExpiredInQueue => "deadline passed while queued",
            Self::ExpiredUnacknowledged => "deadline passed before acknowledgement",
            Self::ArrivedLate => "arrived after its deadline",
            Self::Shed => "shed under overload",
            Self::FederationEnded => "the federation ended before acknowledgement",
            Self::RefusedByAgreement => "the renegotiated agreement refuses it",
            Self::RefusedByPeer { .. } => "the receiving gateway refused it",
        })
    }
}

/// What the outbox tells its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboxEvent<P> {
    /// Store this reliable message durably, then report its id to
    /// [`Outbox::handle_persisted`](super::Outbox::handle_persisted).
    Persist(Message<P>),
    /// The peer acknowledged the message: it is off this node's hands (delete the stored copy,
    /// tell a waiting sender).
    Acknowledged {
        /// The message.
        id: EnvelopeId,
    },
    /// The message will not be delivered: tell the sender, count it, move a stored copy to the
    /// dead letters.
    DeadLettered {
        /// The message.
        id: EnvelopeId,
        /// Why.
        reason: DeadLetterReason,
    },
}

/// An acknowledgement the outbox cannot have earned; nothing of it was applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// A selective range ends before it starts.
    #[error("acknowledgement range {start}..{end} is inverted")]
    InvertedRange {
        /// The range's start.
        start: Seq,
        /// The range's end.
        end: Seq,
    },
    /// The peer acknowledged a sequence number this stream never used.
    #[error("acknowledgement covers {seq}, which was never sent (next is {next})")]
    AcknowledgesUnsent {
        /// The highest number acknowledged.
        seq: Seq,
        /// The next number this stream would use.
        next: Seq,
    },
}

/// The backlog, for metrics.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Backlog {
    /// Messages held: queued, awaiting persistence or unacknowledged.
    pub messages: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Messages held per priority (index = priority).
    pub by_priority: [usize; 8],
    /// Reliable messages not yet reported persisted.
    pub awaiting_persistence: usize,
    /// Reliable messages sent and not yet acknowledged (including those awaiting retransmission).
    pub in_flight: usize,
    /// How long the oldest held message has been held.
    pub oldest: Option<Duration>,
}

/// Running totals, for metrics.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutboxCounters {
    /// Offers accepted.
    pub accepted: u64,
    /// Offers refused.
    pub refused: u64,
    /// First transmissions.
    pub transmitted: u64,
    /// Retransmissions.
    pub retransmitted: u64,
    /// Messages acknowledged by the peer.
    pub acknowledged: u64,
    /// Messages dead-lettered because their deadline passed in the queue.
    pub expired_in_queue: u64,
    /// Messages dead-lettered because their deadline passed before acknowledgement.
    pub expired_unacknowledged: u64,
    /// Messages the peer reported as arrived after their deadline.
    pub arrived_late: u64,
    /// qos 0 messages shed under overload: taken from the queue for a message that outranks
    /// them, or shed as they were offered ([`Offered::Shed`]).
    pub shed: u64,
    /// Messages dead-lettered because the federation ended.
    pub federation_ended: u64,
    /// Messages dead-lettered because a renegotiated agreement refuses them.
    pub refused_by_agreement: u64,
    /// Messages dead-lettered because the receiving gateway refused them.
    pub refused_by_peer: u64,
    /// Acknowledgements and credit for another epoch, ignored.
    pub foreign_epoch: u64,
}
