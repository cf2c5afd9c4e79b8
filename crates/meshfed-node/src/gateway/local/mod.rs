//! The local side's delivery end: what reaches this mesh's own subscribers — live ones over the
//! API's stream, and durable subscriptions that keep qos ≥ 1 messages in the journal until
//! their subscriber acknowledges them. A connector to the mesh's own bus is one more local
//! subscriber here.
//!
//! A subscriber receives each envelope as the spec's JSON, or — when it asked for proof
//! (`proof=required`) — in the export form ([`meshfed_proto::envelope::export`]): the same JSON
//! plus the envelope exactly as it crossed. A [`Delivery`] keeps what that takes and encodes it
//! the first time a subscriber that asked for it receives it, so that deliveries to the others
//! cost nothing more. The same holds for the binary frames of subscribers that asked for
//! `format=binary` ([`Delivery::binary_in`]; the layout is the API's): a delivery that only
//! binary subscribers take is never written as JSON.
//!
//! An envelope of a streamed batch whose signer is the link's peer reaches the subscribers that
//! take the spec form on arrival, before its batch head (DESIGN §3.4): that [`Delivery`] is
//! *unproven* (its JSON has an empty `security.signature` and no `security.batch`). The
//! delivery made once the head verified is marked `early`, so that only subscribers asking for
//! proof (and durable subscriptions) take it then.

pub(crate) mod durable;
pub(crate) mod live;

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use meshfed_proto::batch::{BatchError, BatchReceipt, ProvenEnvelope, UnsignedEnvelope};
use meshfed_proto::envelope::export::{self, Form};
use meshfed_proto::envelope::{BatchProof, Envelope, Qos, WireEnvelope};
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
    /// Whether its proof is still to come: only subscribers taking the spec form receive it.
    pub(crate) unproven: bool,
    /// The mesh this node relays it to (as a trusted intermediary): it is not delivered here,
    /// but kept for the relay stage ([`Delivery::relay_record`]).
    pub(crate) relay_to: Option<MeshId>,
    /// Whether its unproven delivery already reached the subscribers taking the spec form.
    pub(crate) early: bool,
    /// The envelope with its opened message, to write the spec JSON from; `None` for one
    /// refused.
    envelope: Option<Envelope>,
    /// The spec-layout JSON envelope, written the first time a subscriber receives it.
    text: OnceLock<Arc<str>>,
    /// The envelope as it crossed, to make the export form from; `None` for one refused.
    crossed: Option<AsCrossed>,
    /// The export form, made the first time a subscriber asks for it.
    export: OnceLock<Arc<str>>,
    /// The binary frames of the spec and the export form, each made the first time a binary
    /// subscriber asks for it: no JSON is written for a delivery only binary subscribers take.
    binary: [OnceLock<Bytes>; 2],
}

/// An envelope exactly as it crossed the link, by parts the receiver already has: the envelope
/// moved out of its batch, and the batch's signature shared by all of its envelopes.
#[derive(Debug)]
pub(crate) enum AsCrossed {
    /// Signed alone.
    Alone(WireEnvelope),
    /// One envelope of a verified batch.
    InBatch {
        /// The envelope, with its payload as carried (ciphertext).
        envelope: UnsignedEnvelope,
        /// The batch's signed head and leaves.
        batch: Arc<BatchReceipt>,
        /// Its position and inclusion proof in the batch.
        position: BatchProof,
    },
}

impl AsCrossed {
    /// The CBOR of the envelope as it crossed: a wire envelope, or a proven envelope.
    fn encode(&self) -> Result<Vec<u8>, BatchError> {
        match self {
            Self::Alone(wire) => Ok(wire.encode()),
            Self::InBatch {
                envelope,
                batch,
                position,
            } => ProvenEnvelope::encode_parts(batch.signature(), position.proof(), envelope),
        }
    }
}

/// What the audit trail keeps of a delivery besides what the inbox knows: the envelope as
/// it crossed (its header bytes, payload digest, its own signature or its index in its batch)
/// and, for a batch, the batch whose record it joins.
pub(crate) struct AuditFacts {
    pub(crate) message: crate::audit::CrossedMessage,
    /// Its verified batch (shared by the batch's envelopes: one record each).
    pub(crate) batch: Option<Arc<BatchReceipt>>,
}

impl AsCrossed {
    /// The audit trail's facts of this envelope, `size` bytes of payload as delivered.
    pub(crate) fn audit(&self, size: usize) -> AuditFacts {
        match self {
            Self::Alone(wire) => AuditFacts {
                message: crate::audit::crossed_message(
                    wire.header(),
                    wire.header_bytes(),
                    wire.payload_digest(),
                    size,
                    0,
                    Some(serde_bytes::ByteBuf::from(wire.signature().0.to_vec())),
                ),
                batch: None,
            },
            Self::InBatch {
                envelope,
                batch,
                position,
            } => AuditFacts {
                message: crate::audit::crossed_message(
                    envelope.header(),
                    envelope.header_bytes(),
                    envelope.payload_digest(),
                    size,
                    position.index(),
                    None,
                ),
                batch: Some(batch.clone()),
            },
        }
    }
}

impl Delivery {
    /// The audit trail's facts of this delivery; `None` for one refused.
    pub(crate) fn audit(&self, size: usize) -> Option<AuditFacts> {
        self.crossed.as_ref().map(|c| c.audit(size))
    }

    /// A delivery of `envelope` (`None`: refused, never delivered), kept `crossed` as it
    /// crossed; `early` if its unproven delivery already reached the spec-form subscribers.
    pub(crate) fn new(
        source: MeshId,
        topic: Topic,
        qos: Qos,
        envelope: Option<Envelope>,
        crossed: Option<AsCrossed>,
        early: bool,
    ) -> Self {
        Self {
            source,
            topic,
            qos,
            unproven: false,
            relay_to: None,
            early,
            envelope,
            text: OnceLock::new(),
            crossed,
            export: OnceLock::new(),
            binary: Default::default(),
        }
    }

    /// This delivery, to be relayed to `to` (if some) rather than delivered here.
    pub(crate) fn relayed_to(mut self, to: Option<MeshId>) -> Self {
        self.relay_to = to;
        self
    }

    /// What the relay stage needs of a delivery this node relays: the envelope as it crossed
    /// (CBOR) and its sealed part as it opened, as one CBOR array; `None` for a delivery that is
    /// not relayed, or refused.
    pub(crate) fn relay_record(&self) -> Option<Vec<u8>> {
        self.relay_to.as_ref()?;
        let sealed = self.envelope.as_ref()?.message.as_deref()?;
        let crossed = self.crossed.as_ref()?.encode().ok()?;
        let mut out = Vec::with_capacity(crossed.len() + sealed.len() + 16);
        // Invariant: encoding two byte strings into a Vec cannot fail.
        ciborium::into_writer(
            &(
                serde_bytes::Bytes::new(&crossed),
                serde_bytes::Bytes::new(sealed),
            ),
            &mut out,
        )
        .unwrap_or_else(|e| unreachable!("CBOR into Vec: {e}"));
        Some(out)
    }

    /// The delivery of `envelope` before its batch head arrived, for spec-form subscribers.
    /// The envelope with its opened message; `None` for one refused.
    pub(crate) fn envelope(&self) -> Option<&Envelope> {
        self.envelope.as_ref()
    }

    pub(crate) fn unproven(envelope: Envelope) -> Self {
        Self {
            source: envelope.header.source.mesh.clone(),
            topic: envelope.header.metadata.topic.clone(),
            qos: envelope.header.policy.qos,
            unproven: true,
            relay_to: None,
            early: false,
            envelope: Some(envelope),
            text: OnceLock::new(),
            crossed: None,
            export: OnceLock::new(),
            binary: Default::default(),
        }
    }

    /// The spec-layout JSON, written on the first call.
    fn text(&self) -> Arc<str> {
        self.text
            .get_or_init(|| match &self.envelope {
                Some(e) if self.unproven => e.to_json_string_unproven().into(),
                Some(e) => e.to_json_string().into(),
                None => Arc::from(""),
            })
            .clone()
    }

    /// The text a subscriber that asked for `form` receives.
    pub fn text_in(&self, form: Form) -> Arc<str> {
        match form {
            Form::Spec => self.text(),
            Form::Export => self.export(),
        }
    }

    /// The export form: the spec JSON with `proof`, the base64 CBOR of the envelope as it
    /// crossed. Encoded once, on the first call. The parts come from one verified batch (or
    /// one verified envelope), so they always fit; should that ever fail, the spec JSON is
    /// given, which `envelope inspect` says it cannot check, and the failure is logged.
    pub fn export(&self) -> Arc<str> {
        self.export
            .get_or_init(|| {
                let made = self
                    .crossed
                    .as_ref()
                    .ok_or_else(|| "the envelope as it crossed was not kept".to_owned())
                    .and_then(|c| c.encode().map_err(|e| e.to_string()))
                    .and_then(|cbor| {
                        export::export_json(&self.text(), &cbor)
                            .ok_or_else(|| "its JSON is not an object".to_owned())
                    });
                match made {
                    Ok(text) => text.into(),
                    Err(e) => {
                        tracing::error!(source = %self.source, topic = %self.topic, error = %e, "cannot make the export form of a delivered envelope; delivering its spec JSON");
                        self.text()
                    }
                }
            })
            .clone()
    }
}

/// What a binary frame of a delivery is made from (the API's `binary` module knows the layout).
pub(crate) struct Parts<'a> {
    /// The envelope with its opened message.
    pub(crate) envelope: &'a Envelope,
    /// Its proof is still to come: no signature or batch position yet.
    pub(crate) unproven: bool,
    /// For the export form: the CBOR of the envelope as it crossed.
    pub(crate) crossed: Option<&'a [u8]>,
}

impl Delivery {
    /// The binary frame a subscriber that asked for `form` receives, made by `encode` on the
    /// first call for that form and shared by every later one. Like [`Delivery::export`], the
    /// export form falls back to the spec form (logged) should the envelope as it crossed not
    /// encode. Empty for a refused delivery, which no subscriber receives.
    pub(crate) fn binary_in(&self, form: Form, encode: fn(Parts<'_>) -> Vec<u8>) -> Bytes {
        let slot = match form {
            Form::Spec => 0,
            Form::Export => 1,
        };
        self.binary[slot]
            .get_or_init(|| {
                let Some(envelope) = &self.envelope else {
                    return Bytes::new();
                };
                let spec = || {
                    encode(Parts {
                        envelope,
                        unproven: self.unproven,
                        crossed: None,
                    })
                };
                if form == Form::Spec {
                    return spec().into();
                }
                let crossed = self
                    .crossed
                    .as_ref()
                    .ok_or_else(|| "the envelope as it crossed was not kept".to_owned())
                    .and_then(|c| c.encode().map_err(|e| e.to_string()));
                match crossed {
                    Ok(cbor) => encode(Parts {
                        envelope,
                        unproven: self.unproven,
                        crossed: Some(&cbor),
                    })
                    .into(),
                    Err(e) => {
                        tracing::error!(source = %self.source, topic = %self.topic, error = %e, "cannot make the export form of a delivered envelope; delivering its spec form");
                        self.binary_in(Form::Spec, encode)
                    }
                }
            })
            .clone()
    }
}

/// This node's local subscribers.
pub(crate) struct Local {
    /// Connected live subscribers.
    pub(crate) live: live::Subscribers,
    /// Durable subscriptions, mirrored from the journal.
    pub(crate) durable: durable::Durable,
}
