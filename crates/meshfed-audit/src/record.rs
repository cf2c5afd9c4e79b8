//! Audit records: one federation event each, a leaf of its scope's Merkle tree.
//!
//! A node keeps one append-only log per [`Scope`]: its own events, and one per federation (so
//! what is exchanged with a partner covers that federation's events only). A [`Record`] is the
//! scope, its 0-based place in the scope's tree (`seq`), the time and a typed [`Event`].
//!
//! # Encoding
//! [`Record::to_bytes`] is the record's CBOR form and, as is, its Merkle leaf
//! ([`Record::leaf_hash`]): a map `{v: 1, scope, seq, time, event}` whose `event` is a map with
//! its `kind` first and then its fields in a fixed order. [`Record::from_bytes`] accepts exactly
//! that encoding — one value, nothing after it, every text at most [`Text::MAX`] bytes, the
//! agreed terms at most [`Terms::MAX`], at most [`MAX_SERIALS`] serials — and names what is
//! wrong otherwise, so one record has one leaf.
//!
//! The same types serialise to a readable JSON view for exports
//! (`{"scope":"fed_…","seq":3,"time":"2026-05-01T12:00:00.000Z","kind":"messages",…}`: hashes
//! in hex, ids in their display form). Their `Deserialize` reads the CBOR form only.
//!
//! # Keys
//! An [`AuditKey`] (32 secret bytes the node keeps outside the store) makes two things, both
//! HMAC-SHA384 under separate domains: a [`RecordMac`] stored beside each record, which names an
//! edited record even when its hash was recomputed, and the salted [`Commitment`] that stands for
//! a message's payload digest in a `messages` record, opened for one envelope only by its
//! [`Opening`].

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::{digest, hmac};
use meshfed_proto::admission::{Direction as AdmissionDirection, Refusal};
use meshfed_proto::batch::merkle::{self, HASH_LEN, TreeHash};
use meshfed_proto::crypto::{CryptoError, random_fill};
use meshfed_proto::envelope::{EnvelopeId, Timestamp};
use meshfed_proto::lifecycle::FederationState;
use meshfed_proto::{FederationId, InvalidId, MeshId};
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

use crate::codec::serde_with::{digest as digest48, envelope_id, opt_envelope_id, time, tree_hash};
use crate::codec::{self, Fault};

/// The most serial numbers one `revocation` record names.
pub const MAX_SERIALS: usize = 10_000;
/// The most envelopes one `messages` record names: a signed batch's most.
pub const MAX_MESSAGES: usize = meshfed_proto::batch::SignedBatch::MAX_LEN;
/// The record format this build writes and reads.
const VERSION: u8 = 1;

/// Whose events a log holds: the node's own, or one federation's.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// The node's own events (handshake failures before a federation exists, credentials, ...).
    Node,
    /// One federation's events: what is exchanged with that partner.
    Federation(FederationId),
}

impl Scope {
    /// The federation, if this is one's scope.
    pub fn federation(&self) -> Option<&FederationId> {
        match self {
            Self::Node => None,
            Self::Federation(id) => Some(id),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Node => f.write_str("node"),
            Self::Federation(id) => f.write_str(id.as_str()),
        }
    }
}

impl FromStr for Scope {
    type Err = InvalidId;

    /// `node`, or a federation id. (A federation could be named `node`; the handshake names
    /// them `fed_…`, so `node` is read as the node's scope.)
    fn from_str(s: &str) -> Result<Self, InvalidId> {
        if s == "node" {
            return Ok(Self::Node);
        }
        s.parse().map(Self::Federation)
    }
}

impl Serialize for Scope {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

macro_rules! bounded_text {
    ($(#[$doc:meta])* $name:ident, $max:expr, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(String);

        impl $name {
            /// The most bytes it holds.
            pub const MAX: usize = $max;

            /// `text`, cut at a character boundary to at most [`Self::MAX`] bytes, ending in
            /// `…` when it was cut.
            pub fn new(text: impl Into<String>) -> Self {
                let mut text = text.into();
                if text.len() > Self::MAX {
                    let mut end = Self::MAX - '…'.len_utf8();
                    while !text.is_char_boundary(end) {
                        end -= 1;
                    }
                    text.truncate(end);
                    text.push('…');
                }
                Self(text)
            }

            /// The text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl From<String> for $name {
            fn from(text: String) -> Self {
                Self::new(text)
            }
        }

        impl From<&str> for $name {
            fn from(text: &str) -> Self {
                Self::new(text)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                if text.len() > Self::MAX {
                    return Err(de::Error::custom(format!(
                        concat!($what, " of {} bytes is longer than the {} allowed"),
                        text.len(),
                        Self::MAX
                    )));
                }
                Ok(Self(text))
            }
        }
    };
}

bounded_text!(
    /// A text field of a record (a reason, an address, a detail): at most 4 KiB. Longer text
    /// given to [`Text::new`] is cut, so a record can always be written.
    Text,
    4096,
    "a text"
);
bounded_text!(
    /// The agreed terms of an `agreement` record, as JSON text: at most 64 KiB.
    Terms,
    65_536,
    "the agreed terms"
);

/// Why an envelope or a message was refused, as the code the metrics and the API use
/// (`bad_signature`, `access_denied`, `malformed`, `too_large`, …): 1 to 64 lowercase letters,
/// digits or `_`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RefusalKind(String);

impl RefusalKind {
    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&Refusal> for RefusalKind {
    fn from(refusal: &Refusal) -> Self {
        Self(refusal.reason().to_owned())
    }
}

impl FromStr for RefusalKind {
    type Err = InvalidId;

    fn from_str(s: &str) -> Result<Self, InvalidId> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !ok {
            return Err(InvalidId {
                kind: "refusal kind",
                value: s.chars().take(80).collect(),
                rule: "must be 1 to 64 lowercase letters, digits or '_'",
            });
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for RefusalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for RefusalKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RefusalKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

/// One audit record: a leaf of its scope's tree.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Whose log it belongs to.
    pub scope: Scope,
    /// Its 0-based index in its scope's tree.
    pub seq: u64,
    /// When the event happened (the node's clock).
    pub time: Timestamp,
    /// What happened.
    pub event: Event,
}

/// Which side of the handshake this node played.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// It dialled (joined or resumed).
    Initiator,
    /// It answered.
    Responder,
}

/// A step of the six-step handshake that was completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HandshakeStep {
    /// Both sides' capabilities were intersected.
    CapabilitiesAgreed,
    /// The peer's chain and proof of the invitation (or its stored bundle) checked out.
    PeerVerified,
    /// The policy was agreed after this many rounds of proposal and counterproposal.
    PolicyAgreed {
        /// Proposals exchanged.
        rounds: u32,
    },
    /// Both node keys signed the agreement.
    AgreementSigned,
    /// The federation became active.
    Established,
    /// A link resumed an existing federation.
    Resumed,
}

/// Why an agreement record was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgreementCause {
    /// The first agreement of a new federation.
    Established,
    /// The next version, agreed on a live link.
    Renegotiated,
    /// A newer version the peer held, taken over when a link resumed.
    CaughtUp,
}

/// Who moved a federation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum By {
    /// This node (its operator or its policy).
    Us,
    /// The peer.
    Peer,
}

/// What happened to a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialAction {
    /// A component token was issued.
    TokenIssued,
    /// A component token was revoked.
    TokenRevoked,
    /// The node's certificate was renewed.
    CertificateRenewed,
    /// A delegation was issued.
    DelegationIssued,
    /// A delegation was revoked.
    DelegationRevoked,
    /// A foreign identity was translated into a local one.
    Translated,
}

/// Which way a refused message went, seen from this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Arriving from the peer.
    Inbound,
    /// Leaving for the peer.
    Outbound,
}

impl From<AdmissionDirection> for Direction {
    fn from(d: AdmissionDirection) -> Self {
        match d {
            AdmissionDirection::Inbound => Self::Inbound,
            AdmissionDirection::Outbound => Self::Outbound,
        }
    }
}

/// Whether a delivered envelope was sent or received by this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// This node sent it and the peer acknowledged it.
    Sent,
    /// This node received and accepted it.
    Received,
}

/// The signed batch a `messages` record's envelopes travelled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BatchRef {
    /// The batch's number on its link (0 on the receiving side, which checks the batch by its
    /// root).
    pub number: u64,
    /// How many envelopes the batch holds.
    pub count: u64,
    /// The batch's Merkle root, which its head signs.
    #[serde(with = "tree_hash")]
    pub root: TreeHash,
}

/// The digest record of one envelope that crossed: what its header says, and a keyed
/// commitment instead of its payload digest (the payload is never stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageDigest {
    /// The envelope.
    #[serde(with = "envelope_id")]
    pub envelope: EnvelopeId,
    /// Its source mesh.
    pub source: MeshId,
    /// Its destination mesh.
    pub destination: MeshId,
    /// Its topic.
    pub topic: Text,
    /// Payload size in bytes.
    pub size: u64,
    /// Its QoS.
    pub qos: u8,
    /// Its index in the record's batch (its place in the record when signed alone).
    pub index: u64,
    /// The salted commitment to its payload digest.
    pub commitment: Commitment,
}

/// A federation event, one variant per kind (the JSON view's `kind`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A handshake step completed.
    Handshake {
        /// The peer, once known.
        peer: Option<MeshId>,
        /// Our side.
        role: Role,
        /// The step.
        step: HandshakeStep,
    },
    /// Handshakes from one remote failed with one code: one record per (remote, code) per
    /// window, counting them.
    HandshakeFailed {
        /// The peer, if it got as far as naming itself.
        peer: Option<MeshId>,
        /// The remote address.
        remote: Text,
        /// The failure's code (the handshake's wire code or a TLS failure).
        code: Text,
        /// The last failure's message.
        reason: Text,
        /// How many failed in the window.
        count: u64,
        /// The first of them.
        #[serde(with = "time")]
        first: Timestamp,
        /// The last of them.
        #[serde(with = "time")]
        last: Timestamp,
    },
    /// An agreement came into force.
    Agreement {
        /// The partner.
        peer: MeshId,
        /// Its version.
        version: u64,
        /// SHA-384 of the signed agreement.
        #[serde(with = "digest48")]
        agreement_digest: [u8; HASH_LEN],
        /// The agreed terms, as JSON text.
        policy: Terms,
        /// Why.
        cause: AgreementCause,
    },
    /// A lifecycle transition.
    Lifecycle {
        /// The partner.
        peer: MeshId,
        /// The state before.
        #[serde(with = "state")]
        from: FederationState,
        /// The state after.
        #[serde(with = "state")]
        to: FederationState,
        /// Who moved it.
        by: By,
        /// Why.
        reason: Text,
    },
    /// A credential event.
    Credential {
        /// What happened.
        action: CredentialAction,
        /// Whose credential (a component, a node, a foreign identity).
        subject: Text,
        /// The credential's id (token id, serial, delegation id).
        id: Text,
    },
    /// A mesh's revocation list arrived (or was issued).
    Revocation {
        /// The mesh whose list it is.
        mesh: MeshId,
        /// The list's version.
        number: u64,
        /// The certificate serials it names, hex.
        #[serde(deserialize_with = "serials")]
        serials: Vec<Text>,
        /// Whether it was accepted.
        accepted: bool,
        /// Why (not) accepted.
        reason: Text,
    },
    /// A message or an envelope was refused.
    Refused {
        /// Which way it went.
        direction: Direction,
        /// The partner, if known.
        peer: Option<MeshId>,
        /// The envelope, if it got one.
        #[serde(with = "opt_envelope_id")]
        envelope: Option<EnvelopeId>,
        /// Its topic, if it was read.
        topic: Option<Text>,
        /// The refusal's code.
        reason: RefusalKind,
        /// The refusal's message.
        detail: Text,
    },
    /// The digest records of envelopes that crossed together, one per envelope: the
    /// envelopes of one signed batch (or of a few signed alone) sent to or received from one
    /// partner. The payloads are never stored.
    Messages {
        /// Sent or received.
        direction: Delivery,
        /// The partner on the link they crossed.
        peer: MeshId,
        /// The signed batch they travelled in; `None` when each was signed alone.
        batch: Option<BatchRef>,
        /// One digest per envelope, 1 to [`MAX_MESSAGES`].
        #[serde(deserialize_with = "digests")]
        messages: Vec<MessageDigest>,
    },
    /// A measure deviated from its baseline.
    Anomaly {
        /// The partner.
        peer: MeshId,
        /// The topic, when the baseline is per topic.
        topic: Option<Text>,
        /// What was measured (`rate`, `size`, `error_rate`, `rejection_rate`).
        measure: Text,
        /// The value seen.
        observed: f64,
        /// The baseline.
        baseline: f64,
        /// What was done about it.
        action: Text,
    },
    /// A partner's circuit breaker moved.
    Breaker {
        /// The partner.
        peer: MeshId,
        /// The state before.
        from: Text,
        /// The state after.
        to: Text,
        /// Why.
        reason: Text,
    },
    /// This node countersigned the partner's tree head.
    Countersigned {
        /// The partner.
        peer: MeshId,
        /// The head's size.
        size: u64,
        /// The head's root.
        #[serde(with = "tree_hash")]
        root: TreeHash,
    },
    /// A partner's head or claim did not match.
    Discrepancy {
        /// The partner.
        peer: MeshId,
        /// What did not match.
        what: Text,
    },
    /// Records were pruned by retention (their leaf hashes and MACs stay).
    Pruned {
        /// Records before this seq lost their bodies.
        before_seq: u64,
        /// How many.
        records: u64,
        /// Why (the retention rule).
        reason: Text,
    },
}

mod state {
    use super::*;

    #[expect(
        clippy::trivially_copy_pass_by_ref,
        reason = "serde's serialize_with passes a reference to the field"
    )]
    pub(super) fn serialize<S: Serializer>(st: &FederationState, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(st.name())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<FederationState, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

fn serials<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Text>, D::Error> {
    bounded(d, 0, MAX_SERIALS, "serials in a revocation record")
}

fn digests<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<MessageDigest>, D::Error> {
    bounded(d, 1, MAX_MESSAGES, "envelopes in a messages record")
}

/// A list of `min` to `max` `T`s, refused as soon as it holds more (`what` names them).
fn bounded<'de, D, T>(d: D, min: usize, max: usize, what: &'static str) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct V<T> {
        min: usize,
        max: usize,
        what: &'static str,
        item: std::marker::PhantomData<T>,
    }
    impl<'de, T: Deserialize<'de>> de::Visitor<'de> for V<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{} to {} {}", self.min, self.max, self.what)
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            while let Some(s) = seq.next_element::<T>()? {
                if out.len() == self.max {
                    return Err(de::Error::custom(format!(
                        "more than {} {}",
                        self.max, self.what
                    )));
                }
                out.push(s);
            }
            if out.len() < self.min {
                return Err(de::Error::custom(format!(
                    "fewer than {} {}",
                    self.min, self.what
                )));
            }
            Ok(out)
        }
    }
    d.deserialize_seq(V {
        min,
        max,
        what,
        item: std::marker::PhantomData,
    })
}

impl Event {
    /// The kind's name, as the JSON view's `kind` shows it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Handshake { .. } => "handshake",
            Self::HandshakeFailed { .. } => "handshake_failed",
            Self::Agreement { .. } => "agreement",
            Self::Lifecycle { .. } => "lifecycle",
            Self::Credential { .. } => "credential",
            Self::Revocation { .. } => "revocation",
            Self::Refused { .. } => "refused",
            Self::Messages { .. } => "messages",
            Self::Anomaly { .. } => "anomaly",
            Self::Breaker { .. } => "breaker",
            Self::Countersigned { .. } => "countersigned",
            Self::Discrepancy { .. } => "discrepancy",
            Self::Pruned { .. } => "pruned",
        }
    }

    /// Every kind's name, for filters that check theirs.
    pub const KINDS: [&'static str; 13] = [
        "handshake",
        "handshake_failed",
        "agreement",
        "lifecycle",
        "credential",
        "revocation",
        "refused",
        "messages",
        "anomaly",
        "breaker",
        "countersigned",
        "discrepancy",
        "pruned",
    ];

    /// The partner mesh the event is about, if any: for messages, the partner on the link they
    /// crossed; for a revocation list, the mesh that issued it.
    pub fn peer(&self) -> Option<&MeshId> {
        match self {
            Self::Handshake { peer, .. }
            | Self::HandshakeFailed { peer, .. }
            | Self::Refused { peer, .. } => peer.as_ref(),
            Self::Agreement { peer, .. }
            | Self::Lifecycle { peer, .. }
            | Self::Anomaly { peer, .. }
            | Self::Breaker { peer, .. }
            | Self::Countersigned { peer, .. }
            | Self::Discrepancy { peer, .. }
            | Self::Messages { peer, .. } => Some(peer),
            Self::Revocation { mesh, .. } => Some(mesh),
            Self::Credential { .. } | Self::Pruned { .. } => None,
        }
    }
}

/// Why record bytes were refused. Each variant says what is wrong and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The bytes are not a record's CBOR form (the reason names the field or the byte).
    #[error("audit record is malformed: {0}")]
    Malformed(String),
    /// Bytes follow the record.
    #[error("audit record is followed by {0} stray bytes")]
    Trailing(usize),
    /// The record decodes but is not in the one encoding records are written in.
    #[error("audit record is {0}")]
    NotCanonical(String),
    /// A record format this build does not read.
    #[error("audit record has format version {0}; this build reads version 1")]
    Version(u8),
}

impl From<Fault> for RecordError {
    fn from(f: Fault) -> Self {
        match f {
            Fault::NotCbor(reason) => Self::Malformed(reason),
            Fault::Trailing(n) => Self::Trailing(n),
            f @ Fault::NotCanonical(_) => Self::NotCanonical(f.to_string()),
        }
    }
}

/// The record as written: `{v, scope, seq, time, event}`.
#[derive(Serialize)]
struct RecordOut<'a> {
    v: u8,
    scope: &'a Scope,
    seq: u64,
    time: u64,
    event: &'a Event,
}

/// The record as read.
#[derive(Deserialize)]
struct RecordIn {
    v: u8,
    scope: Scope,
    seq: u64,
    time: u64,
    event: Event,
}

/// The JSON view: the event's fields beside the record's.
#[derive(Serialize)]
struct RecordJson<'a> {
    scope: &'a Scope,
    seq: u64,
    #[serde(with = "time")]
    time: Timestamp,
    #[serde(flatten)]
    event: &'a Event,
}

impl Record {
    /// The record's CBOR form: its Merkle leaf.
    pub fn to_bytes(&self) -> Vec<u8> {
        // A digest takes about 170 bytes; other records fit in a few hundred.
        let capacity = match &self.event {
            Event::Messages { messages, .. } => 256 + 192 * messages.len(),
            _ => 512,
        };
        codec::encode_sized(&self.wire(), capacity)
    }

    fn wire(&self) -> RecordOut<'_> {
        RecordOut {
            v: VERSION,
            scope: &self.scope,
            seq: self.seq,
            time: self.time.0,
            event: &self.event,
        }
    }

    /// Reads a record written by [`Record::to_bytes`]; refuses anything else, saying what.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, RecordError> {
        let r: RecordIn = codec::decode(bytes, |r: &RecordIn| {
            codec::encode(&RecordOut {
                v: r.v,
                scope: &r.scope,
                seq: r.seq,
                time: r.time,
                event: &r.event,
            })
        })?;
        if r.v != VERSION {
            return Err(RecordError::Version(r.v));
        }
        Ok(Self {
            scope: r.scope,
            seq: r.seq,
            time: Timestamp(r.time),
            event: r.event,
        })
    }

    /// The record's leaf hash in its scope's tree: `SHA-384(0x00 ‖ to_bytes())`.
    pub fn leaf_hash(&self) -> TreeHash {
        merkle::leaf_hash(&self.to_bytes())
    }

    /// The event's kind (`message`, `refused`, …).
    pub fn kind(&self) -> &'static str {
        self.event.kind()
    }

    /// The partner mesh the event is about, if any (see [`Event::peer`]).
    pub fn peer(&self) -> Option<&MeshId> {
        self.event.peer()
    }

    /// The JSON view.
    pub fn to_json(&self) -> serde_json::Value {
        // Invariant: the view has string keys and no non-finite floats that serde_json
        // refuses (it writes them as null).
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

impl Serialize for Record {
    /// The JSON view in human-readable formats, the CBOR form's structure otherwise.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            RecordJson {
                scope: &self.scope,
                seq: self.seq,
                time: self.time,
                event: &self.event,
            }
            .serialize(s)
        } else {
            self.wire().serialize(s)
        }
    }
}

macro_rules! digest_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name(pub [u8; HASH_LEN]);

        impl $name {
            /// From its 48 bytes.
            pub const fn from_bytes(bytes: [u8; HASH_LEN]) -> Self {
                Self(bytes)
            }

            /// The 48 bytes.
            pub fn as_bytes(&self) -> &[u8; HASH_LEN] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({}…)"), hex::encode(&self.0[..8]))
            }
        }

        impl FromStr for $name {
            type Err = hex::FromHexError;

            /// From 96 hex digits.
            fn from_str(s: &str) -> Result<Self, hex::FromHexError> {
                let mut out = [0u8; HASH_LEN];
                hex::decode_to_slice(s, &mut out)?;
                Ok(Self(out))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                crate::codec::serde_with::ser_bytes(&self.0, s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                crate::codec::serde_with::de_bytes::<D, HASH_LEN>(d).map(Self)
            }
        }
    };
}

digest_type!(
    /// `SHA-384(opening ‖ payload digest)`: stands for a payload in a `message` record without
    /// letting a low-entropy payload be guessed from it.
    Commitment
);
digest_type!(
    /// `HMAC-SHA384(audit key, "commitment" domain ‖ envelope id)`: opens one record's
    /// commitment, revealed by `audit prove` for that record only.
    Opening
);
digest_type!(
    /// `HMAC-SHA384(audit key, "record mac" domain ‖ scope ‖ seq ‖ leaf hash)`: stored beside a
    /// record; an edited record fails it even when its hash was recomputed.
    RecordMac
);

impl Commitment {
    /// Whether `opening` opens this commitment to `payload_digest`.
    pub fn check(&self, opening: &Opening, payload_digest: &[u8; HASH_LEN]) -> bool {
        commitment(opening, payload_digest) == *self
    }
}

fn commitment(opening: &Opening, payload_digest: &[u8; HASH_LEN]) -> Commitment {
    let mut ctx = digest::Context::new(&digest::SHA384);
    ctx.update(&opening.0);
    ctx.update(payload_digest);
    let mut out = [0u8; HASH_LEN];
    out.copy_from_slice(ctx.finish().as_ref());
    Commitment(out)
}

/// Domain of record MACs.
const MAC_DOMAIN: &[u8] = b"meshfed audit record mac v1\0";
/// Domain of commitment openings.
const COMMITMENT_DOMAIN: &[u8] = b"meshfed audit commitment v1\0";

/// The node's audit secret: 32 bytes kept outside the store, keying record MACs and payload
/// commitments.
#[derive(Clone)]
pub struct AuditKey {
    bytes: [u8; AuditKey::LEN],
    key: hmac::Key,
}

impl AuditKey {
    /// Its length in bytes.
    pub const LEN: usize = 32;

    /// The key from its bytes.
    pub fn from_bytes(bytes: [u8; Self::LEN]) -> Self {
        Self {
            bytes,
            key: hmac::Key::new(hmac::HMAC_SHA384, &bytes),
        }
    }

    /// A fresh random key.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut bytes = [0u8; Self::LEN];
        random_fill(&mut bytes)?;
        Ok(Self::from_bytes(bytes))
    }

    /// The bytes, to keep the key.
    pub fn as_bytes(&self) -> &[u8; Self::LEN] {
        &self.bytes
    }

    /// The MAC stored beside the record at `seq` of `scope` whose leaf hash is `leaf_hash`.
    pub fn mac(&self, scope: &Scope, seq: u64, leaf_hash: &TreeHash) -> RecordMac {
        let scope = scope.to_string();
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(MAC_DOMAIN);
        // The scope is at most 128 bytes (a federation id), so its length fits a u16.
        ctx.update(&u16::try_from(scope.len()).unwrap_or(u16::MAX).to_be_bytes());
        ctx.update(scope.as_bytes());
        ctx.update(&seq.to_be_bytes());
        ctx.update(leaf_hash.as_bytes());
        RecordMac(tag(ctx.sign()))
    }

    /// The opening of the commitment for the envelope `envelope`.
    pub fn opening(&self, envelope: &EnvelopeId) -> Opening {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(COMMITMENT_DOMAIN);
        ctx.update(&envelope.0);
        Opening(tag(ctx.sign()))
    }

    /// The commitment to `payload_digest` for the envelope `envelope`, and its opening.
    pub fn commit(
        &self,
        envelope: &EnvelopeId,
        payload_digest: &[u8; HASH_LEN],
    ) -> (Commitment, Opening) {
        let opening = self.opening(envelope);
        (commitment(&opening, payload_digest), opening)
    }
}

fn tag(t: hmac::Tag) -> [u8; HASH_LEN] {
    let mut out = [0u8; HASH_LEN];
    out.copy_from_slice(t.as_ref());
    out
}

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuditKey(…)")
    }
}

#[cfg(test)]
pub(crate) mod tests;
