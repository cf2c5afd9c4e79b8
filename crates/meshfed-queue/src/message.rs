//! What the queue knows about a message: its id, how it must be delivered, and an opaque payload
//! handle it carries along for the driver.

use std::fmt;
use std::time::Duration;

use meshfed_proto::envelope::{EnvelopeId, Flags, Header, MaxLatency, Priority, Qos, Timestamp};
use meshfed_proto::{MeshId, NodeName, Topic};

/// The instant after which a message must not be delivered: the envelope's timestamp plus its
/// `max_latency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline(Timestamp);

impl Deadline {
    /// The deadline of a message made at `timestamp` with `max_latency`.
    pub fn after(timestamp: Timestamp, max_latency: MaxLatency) -> Self {
        Self(timestamp.saturating_add(max_latency.duration()))
    }

    /// A deadline at `at`.
    pub fn at(at: Timestamp) -> Self {
        Self(at)
    }

    /// The last instant at which delivery is still in time.
    pub fn instant(self) -> Timestamp {
        self.0
    }

    /// Whether the deadline has passed at `now` (delivery exactly at the deadline is in time).
    pub fn passed(self, now: Timestamp) -> bool {
        now > self.0
    }

    /// The first instant at which the deadline has passed: when to look again.
    pub(crate) fn expiry(self) -> Timestamp {
        self.0.saturating_add(Duration::from_millis(1))
    }
}

impl fmt::Display for Deadline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ms", self.0.0)
    }
}

/// The scope within which `ordered` messages keep their order: (source mesh, destination mesh,
/// topic).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OrderKey {
    /// The mesh the message comes from.
    pub source: MeshId,
    /// The mesh it goes to.
    pub destination: MeshId,
    /// Its topic.
    pub topic: Topic,
}

impl fmt::Display for OrderKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}→{} {}",
            self.source,
            self.destination,
            self.topic.as_str()
        )
    }
}

/// The sending end of one stream, as the receiver knows it from the link: a node of a mesh.
///
/// A node, not only a mesh, because a mesh with redundant gateways runs one stream per gateway.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Peer {
    /// The peer's mesh.
    pub mesh: MeshId,
    /// The peer's node.
    pub node: NodeName,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.mesh, self.node)
    }
}

/// A message as the queue handles it. `P` is whatever the driver needs to send or store the
/// message (the envelope's bytes, an `Arc` of the envelope, a store key); the queue only clones it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<P> {
    /// The envelope's id: unique, used for acknowledgements by id and for deduplication.
    pub id: EnvelopeId,
    /// 0 (lowest) to 7 (highest).
    pub priority: Priority,
    /// At most once, at least once, exactly once.
    pub qos: Qos,
    /// Not delivered after this, if set.
    pub deadline: Option<Deadline>,
    /// Kept in order with the other messages of this key, if set (the `ordered` flag).
    pub order: Option<OrderKey>,
    /// Its size in bytes, as counted against the queue's byte limit.
    pub size: usize,
    /// The driver's handle on the message.
    pub payload: P,
}

impl<P> Message<P> {
    /// A message of priority 0, qos 0, no deadline and no ordering; adjust with the `with_*`
    /// methods.
    pub fn new(id: EnvelopeId, size: usize, payload: P) -> Self {
        Self {
            id,
            priority: Priority::default(),
            qos: Qos::default(),
            deadline: None,
            order: None,
            size,
            payload,
        }
    }

    /// The delivery fields of an envelope header: priority, qos, deadline (timestamp +
    /// max_latency) and, with the `ordered` flag, the order key (source, destination, topic).
    pub fn from_header(header: &Header, size: usize, payload: P) -> Self {
        let order = header.flags.contains(Flags::ORDERED).then(|| OrderKey {
            source: header.source.mesh.clone(),
            destination: header.destination.mesh.clone(),
            topic: header.metadata.topic.clone(),
        });
        Self {
            id: header.id,
            priority: header.policy.priority,
            qos: header.policy.qos,
            deadline: header
                .policy
                .max_latency
                .map(|m| Deadline::after(header.timestamp, m)),
            order,
            size,
            payload,
        }
    }

    /// This message with priority `priority`.
    pub fn with_priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// This message with delivery guarantee `qos`.
    pub fn with_qos(mut self, qos: Qos) -> Self {
        self.qos = qos;
        self
    }

    /// This message with deadline `deadline`.
    pub fn with_deadline(mut self, deadline: Deadline) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// This message, kept in order within `key`.
    pub fn with_order(mut self, key: OrderKey) -> Self {
        self.order = Some(key);
        self
    }

    /// Whether the message must survive loss and restarts (qos ≥ 1).
    pub fn is_reliable(&self) -> bool {
        self.qos != Qos::AtMostOnce
    }

    /// Whether the deadline, if any, has passed at `now`.
    pub fn is_late(&self, now: Timestamp) -> bool {
        self.deadline.is_some_and(|d| d.passed(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_is_timestamp_plus_max_latency_and_inclusive() {
        let max = MaxLatency::try_from(250u32).unwrap();
        let d = Deadline::after(Timestamp(1_000), max);
        assert_eq!(d.instant(), Timestamp(1_250));
        assert!(
            !d.passed(Timestamp(1_250)),
            "delivery at the deadline is in time"
        );
        assert!(d.passed(Timestamp(1_251)));
        assert_eq!(d.expiry(), Timestamp(1_251));
    }

    #[test]
    fn builder_sets_delivery_fields() {
        let id = EnvelopeId::new(Timestamp(1), [1; 10]);
        let key = OrderKey {
            source: "a".parse().unwrap(),
            destination: "b".parse().unwrap(),
            topic: "t".parse().unwrap(),
        };
        let m = Message::new(id, 10, ())
            .with_priority(Priority::MAX)
            .with_qos(Qos::ExactlyOnce)
            .with_deadline(Deadline::at(Timestamp(5)))
            .with_order(key.clone());
        assert_eq!(m.priority.get(), 7);
        assert!(m.is_reliable());
        assert!(m.is_late(Timestamp(6)) && !m.is_late(Timestamp(5)));
        assert_eq!(m.order, Some(key));
        assert_eq!(
            m.order.as_ref().map(ToString::to_string).as_deref(),
            Some("a→b t")
        );
    }
}
