//! What the journal stores: outbound messages waiting for acknowledgement, delivered ids of the
//! dedup window, inbound messages for durable subscribers and their cursors.

use std::fmt;
use std::str::FromStr;

use meshfed_proto::envelope::export::Form;
use meshfed_proto::envelope::{EnvelopeId, Priority, Qos, Timestamp};
use meshfed_proto::{MeshId, Topic, TopicPattern};

/// A message accepted for sending to another mesh, kept until the peer acknowledges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundMessage {
    /// The envelope's id; appending an id that is already stored changes nothing.
    pub id: EnvelopeId,
    /// The mesh whose outbound queue holds the message (the link it leaves on).
    pub destination: MeshId,
    /// 0 (lowest) to 7 (highest).
    pub priority: Priority,
    /// The delivery guarantee.
    pub qos: Qos,
    /// Not delivered after this instant, if set (timestamp + `max_latency`).
    pub deadline: Option<Timestamp>,
    /// The scope whose order the message keeps, if it is `ordered`.
    pub order: Option<OrderScope>,
    /// When the node accepted it.
    pub enqueued: Timestamp,
    /// The envelope as it goes on the wire.
    pub payload: Vec<u8>,
}

/// The scope within which `ordered` messages keep their order: (source mesh, destination mesh,
/// topic), as `meshfed_queue::OrderKey` has it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OrderScope {
    /// The mesh the message comes from.
    pub source: MeshId,
    /// The mesh it finally goes to.
    pub destination: MeshId,
    /// Its topic.
    pub topic: Topic,
}

/// Where a stored outbound message stands in acceptance order: larger is later. Among the
/// messages stored at one time, positions are unique and increase with acceptance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueuePosition(pub(crate) i64);

/// An outbound message as read back, with its place in acceptance order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOutbound {
    /// Its place in acceptance order (sort by this to restore in acceptance order).
    pub position: QueuePosition,
    /// The message.
    pub message: OutboundMessage,
}

/// How much waits for one destination: for limits, metrics and `federation show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backlog {
    /// The destination mesh.
    pub destination: MeshId,
    /// Messages stored for it.
    pub messages: u64,
    /// Their payload bytes.
    pub bytes: u64,
}

/// An exactly-once message that was delivered, remembered until `until` so that a copy arriving
/// again is recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeliveredId {
    /// The envelope's id.
    pub id: EnvelopeId,
    /// The entry expires at this instant (gone once `now >= until`, as in the inbox's window).
    pub until: Timestamp,
}

/// The name of a durable subscription: 1 to 200 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubscriptionName(String);

impl SubscriptionName {
    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for SubscriptionName {
    type Err = InvalidSubscriptionName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let chars = s.chars().count();
        if chars == 0 || chars > 200 || s.chars().any(char::is_control) {
            let shown: String = s.chars().take(80).collect();
            return Err(InvalidSubscriptionName(shown));
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for SubscriptionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A subscription name that breaks the rule (1 to 200 characters, no control characters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("subscription name {0:?} must have 1 to 200 characters and no control characters")]
pub struct InvalidSubscriptionName(String);

/// The journal's sequence number of an inbound message: increases with every append, never
/// reused, so a cursor stays valid however many messages were consumed and deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InboundSeq(pub(crate) i64);

impl InboundSeq {
    /// The sequence number as a number (1 is the first message ever appended).
    pub fn get(self) -> u64 {
        // Invariant: the journal only makes positive sequence numbers (SQLite AUTOINCREMENT).
        self.0.unsigned_abs()
    }
}

impl fmt::Display for InboundSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A message received for a durable subscriber, kept until the subscriber's cursor passes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundMessage {
    /// The durable subscription it is kept for.
    pub subscription: SubscriptionName,
    /// The envelope's id; appending an id already stored for this subscription changes nothing.
    pub id: EnvelopeId,
    /// When it arrived.
    pub received: Timestamp,
    /// The mesh it came from: its records go when the agreement with that mesh no longer lets
    /// them be kept (see `Store::expire_exchanged`).
    pub source: Option<MeshId>,
    /// The envelope's bytes.
    pub payload: Vec<u8>,
}

/// An inbound message as read back, with its sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredInbound {
    /// Its sequence number: save it as the cursor once it is delivered.
    pub seq: InboundSeq,
    /// The message.
    pub message: InboundMessage,
}

/// How far a durable subscriber has been delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The subscription.
    pub subscription: SubscriptionName,
    /// The last message delivered to it.
    pub delivered: InboundSeq,
}

/// A durable subscription: messages that match it are kept for it while its subscriber is away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Its name.
    pub name: SubscriptionName,
    /// The topics it receives.
    pub topic: TopicPattern,
    /// Only messages from this mesh, if set.
    pub from: Option<MeshId>,
    /// The form its messages are kept and sent in (the export form for `proof=required`).
    pub form: Form,
    /// When it was created.
    pub created: Timestamp,
}

/// An outbound message that will not be delivered, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The envelope's id.
    pub id: EnvelopeId,
    /// The mesh it was for.
    pub destination: MeshId,
    /// Its topic.
    pub topic: Topic,
    /// Its priority.
    pub priority: Priority,
    /// Its delivery guarantee.
    pub qos: Qos,
    /// Why it was given up (as the queue words it).
    pub reason: String,
    /// When.
    pub at: Timestamp,
}

/// One change to the journal. A request of several writes is applied all-or-nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Store an outbound message (`OutboxEvent::Persist`). Queued messages live in the segment
    /// log: a request holding one cannot hold writes kept in SQLite (inbound messages, cursors,
    /// subscriptions, dead letters).
    AppendOutbound(OutboundMessage),
    /// Delete these outbound messages: acknowledged or dead-lettered. Unknown ids are ignored.
    RemoveOutbound(Vec<EnvelopeId>),
    /// Remember that this exactly-once message was delivered (`InboxEvent::RememberDelivered`);
    /// remembering an id again keeps the later expiry.
    RememberDelivered(DeliveredId),
    /// Forget these delivered ids (`InboxEvent::Forget`).
    ForgetDelivered(Vec<EnvelopeId>),
    /// Forget every delivered id whose entry has expired at `now` (`until <= now`).
    ForgetExpired {
        /// The current time.
        now: Timestamp,
    },
    /// Store a message for a durable subscriber.
    AppendInbound(InboundMessage),
    /// Move a subscription's cursor forward to `delivered` and delete the messages up to it. A
    /// cursor never moves back: an older value changes nothing.
    SaveCursor {
        /// The subscription.
        subscription: SubscriptionName,
        /// The last message delivered to it.
        delivered: InboundSeq,
    },
    /// Create a durable subscription, or change the topic, source and form of an existing one.
    PutSubscription(Subscription),
    /// Record a dead letter and delete its stored outbound copy, if any.
    DeadLetter(DeadLetter),
}

impl Write {
    /// Whether applying it in SQLite is one SQL statement, which SQLite applies or undoes as a
    /// whole.
    pub(crate) fn is_one_statement(&self) -> bool {
        match self {
            Self::AppendOutbound(_)
            | Self::RememberDelivered(_)
            | Self::ForgetExpired { .. }
            | Self::AppendInbound(_)
            | Self::PutSubscription(_)
            | Self::DeadLetter(_) => true,
            Self::RemoveOutbound(ids) | Self::ForgetDelivered(ids) => ids.len() <= 1,
            Self::SaveCursor { .. } => false,
        }
    }

    /// Whether it is kept in SQLite (a request holding one goes wholly to SQLite), rather than
    /// in the segment log.
    pub(crate) fn kept_in_sqlite(&self) -> bool {
        match self {
            Self::AppendInbound(_)
            | Self::SaveCursor { .. }
            | Self::PutSubscription(_)
            | Self::DeadLetter(_) => true,
            Self::AppendOutbound(_)
            | Self::RemoveOutbound(_)
            | Self::RememberDelivered(_)
            | Self::ForgetDelivered(_)
            | Self::ForgetExpired { .. } => false,
        }
    }

    /// Payload bytes this write carries, counted against the batch's byte bound.
    pub(crate) fn bytes(&self) -> usize {
        match self {
            Self::AppendOutbound(m) => m.payload.len(),
            Self::AppendInbound(m) => m.payload.len(),
            Self::RemoveOutbound(ids) | Self::ForgetDelivered(ids) => ids.len() * 16,
            Self::RememberDelivered(_)
            | Self::ForgetExpired { .. }
            | Self::SaveCursor { .. }
            | Self::PutSubscription(_)
            | Self::DeadLetter(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_names_are_non_empty_printable_and_bounded() {
        assert_eq!(
            "orders".parse::<SubscriptionName>().unwrap().as_str(),
            "orders"
        );
        let err = "".parse::<SubscriptionName>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "subscription name \"\" must have 1 to 200 characters and no control characters"
        );
        assert!("a\nb".parse::<SubscriptionName>().is_err());
        assert!("x".repeat(201).parse::<SubscriptionName>().is_err());
    }
}
