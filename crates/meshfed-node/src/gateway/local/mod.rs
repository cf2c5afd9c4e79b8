//! The local side's delivery end: what reaches this mesh's own subscribers — live ones over the
//! API's stream, and durable subscriptions that keep qos ≥ 1 messages in the journal until
//! their subscriber acknowledges them. A connector to the mesh's own bus is one more local
//! subscriber here.

pub(crate) mod durable;
pub(crate) mod live;

use std::sync::Arc;

use meshfed_proto::envelope::Qos;
use meshfed_proto::{MeshId, Topic};

/// An envelope delivered to this mesh, as local subscribers receive it.
#[derive(Debug)]
pub struct Delivery {
    /// The mesh it came from.
    pub source: MeshId,
    /// Its federation topic.
    pub topic: Topic,
    /// Its delivery guarantee.
    pub qos: Qos,
    /// The spec-layout JSON envelope, with the opened message, as text.
    pub text: Arc<str>,
}

/// This node's local subscribers.
pub(crate) struct Local {
    /// Connected live subscribers.
    pub(crate) live: live::Subscribers,
    /// Durable subscriptions, mirrored from the journal.
    pub(crate) durable: durable::Durable,
}
