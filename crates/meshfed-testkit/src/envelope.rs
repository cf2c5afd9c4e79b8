//! Wire envelopes signed by a [`TestNode`]: sealed, or with a clear payload.
//!
//! The envelope names the node its certificate names (`meshfed://<mesh>/<node>`) as its source
//! and carries that certificate, so a receiver can verify it against the node's mesh CA. Each
//! sealed envelope is sealed under a fresh content key (random epoch), so no two envelopes made
//! here ever share a key and nonce.

#![expect(
    clippy::expect_used,
    reason = "test support: a failure to make a test envelope is a broken test setup"
)]

use std::time::{SystemTime, UNIX_EPOCH};

use meshfed_proto::crypto::{ContentSecret, KeyEpoch, random_fill};
use meshfed_proto::envelope::{
    ContentType, DeliveryPolicy, Destination, EnvelopeId, Flags, Header, Hop, Metadata,
    SignerCertificate, Source, Timestamp, Version, WireEnvelope,
};
use meshfed_trust::inspect_node_cert;

use crate::pki::TestNode;

/// The input keying material every test content secret is derived from.
const TEST_CONTENT_IKM: &[u8] = b"meshfed-testkit content secret";

impl TestNode {
    /// The header of a JSON message on `topic` from this node to mesh `to`: source mesh and
    /// gateway as the node's certificate names them, the certificate itself, timestamp now,
    /// reliable delivery, no encryption yet (sealing fills it in).
    pub fn envelope_header(&self, to: &str, topic: &str) -> Header {
        let me = inspect_node_cert(&self.cert).expect("read the test node's certificate");
        let now = Timestamp(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        );
        let mut random = [0u8; 10];
        random_fill(&mut random).expect("draw a random envelope id");
        let to: meshfed_proto::MeshId = to.parse().expect("test destination mesh id is valid");
        Header {
            version: Version::CURRENT,
            id: EnvelopeId::new(now, random),
            timestamp: now,
            federation_id: format!("fed_{}_{}", me.mesh, to)
                .parse()
                .expect("fed_<mesh>_<mesh> is a valid federation id"),
            source: Source {
                mesh: me.mesh,
                gateway: me.node,
            },
            destination: Destination {
                mesh: to,
                gateway: None,
            },
            flags: Flags::RELIABLE,
            agreement_version: 1,
            certificate: SignerCertificate::new(self.cert.to_vec()),
            encryption: None,
            policy: DeliveryPolicy::default(),
            metadata: Metadata {
                topic: topic.parse().expect("test topic is valid"),
                content_type: ContentType::json(),
                content_encoding: None,
                schema_id: None,
            },
        }
    }

    /// `header` with `payload` sealed (AES-256-GCM under a fresh test content key for the
    /// header's source mesh), signed with this node's key.
    pub fn seal_envelope(&self, header: Header, payload: &[u8]) -> WireEnvelope {
        let secret =
            ContentSecret::derive(TEST_CONTENT_IKM, header.federation_id.as_str().as_bytes());
        let epoch = KeyEpoch::random().expect("draw a random key epoch");
        let mut sealer = secret
            .sealer(&header.source.mesh, epoch)
            .expect("derive a test content key");
        let hop = Hop::origin(header.source.mesh.clone(), Hop::DEFAULT_TTL);
        WireEnvelope::seal(header, hop, payload, &mut sealer, &self.key)
            .expect("seal and sign a test envelope")
    }

    /// `header` with `payload` in clear, signed with this node's key.
    pub fn sign_clear_envelope(&self, header: Header, payload: &[u8]) -> WireEnvelope {
        let hop = Hop::origin(header.source.mesh.clone(), Hop::DEFAULT_TTL);
        WireEnvelope::sign_clear(header, hop, payload.to_vec(), &self.key)
            .expect("sign a test envelope")
    }

    /// A sealed, signed envelope carrying the JSON `payload` on `topic` to mesh `to`.
    pub fn sealed_envelope(&self, to: &str, topic: &str, payload: &[u8]) -> WireEnvelope {
        self.seal_envelope(self.envelope_header(to, topic), payload)
    }

    /// A signed envelope carrying the JSON `payload` in clear on `topic` to mesh `to`.
    pub fn clear_envelope(&self, to: &str, topic: &str, payload: &[u8]) -> WireEnvelope {
        self.sign_clear_envelope(self.envelope_header(to, topic), payload)
    }
}

/// Flips one bit of the last byte of the payload (ciphertext and tag) in the CBOR of an
/// envelope as it crossed: a wire envelope or a proven one.
pub fn flip_payload_bit(cbor: &mut [u8]) {
    let payload = match WireEnvelope::decode(cbor) {
        Ok(wire) => wire.payload().to_vec(),
        Err(_) => meshfed_proto::batch::ProvenEnvelope::decode(cbor)
            .expect("a wire or proven envelope")
            .envelope()
            .payload()
            .to_vec(),
    };
    let at = cbor
        .windows(payload.len())
        .position(|w| w == payload)
        .expect("the payload in its envelope");
    cbor[at + payload.len() - 1] ^= 0x01;
}

#[cfg(test)]
mod tests {
    use meshfed_trust::P384PublicKey;

    use crate::TestPki;

    #[test]
    fn sealed_envelope_verifies_with_the_node_key_and_hides_the_payload() {
        let pki = TestPki::new("plant-a");
        let node = pki.node("gw1");
        let env = node.sealed_envelope("supplier-b", "line-3/temperature", br#"{"c":21}"#);
        let back = meshfed_proto::envelope::WireEnvelope::decode(&env.encode()).unwrap();
        let key = P384PublicKey::of(&node.key).verifying_key().unwrap();
        back.verify(&key).unwrap();
        assert_eq!(back.header().source.mesh.as_str(), "plant-a");
        assert_eq!(back.header().source.gateway.as_str(), "gw1");
        // The header names the certificate by its digest; the form a file holds carries it,
        // the form a link carries does not (the link announced it).
        assert_eq!(
            back.header().certificate.digest(),
            &meshfed_proto::crypto::sha384(&node.cert)
        );
        assert_eq!(
            back.header().certificate.der().map(|d| d.to_vec()),
            Some(node.cert.to_vec())
        );
        let on_link = meshfed_proto::envelope::WireEnvelope::decode(&env.encode_on_link()).unwrap();
        assert!(on_link.header().certificate.der().is_none());
        assert_eq!(on_link.header(), back.header());
        assert!(env.encode_on_link().len() + node.cert.len() <= env.encode().len());
        assert!(back.header().encryption.is_some());
        assert!(back.clear_payload().is_err());
        assert_ne!(back.payload(), br#"{"c":21}"#);
    }

    #[test]
    fn two_sealed_envelopes_use_different_content_keys() {
        let node = TestPki::new("plant-a").node("gw1");
        let key_id = |e: &meshfed_proto::envelope::WireEnvelope| {
            e.header().encryption.as_ref().unwrap().key_id.clone()
        };
        let a = node.sealed_envelope("supplier-b", "t", b"{}");
        let b = node.sealed_envelope("supplier-b", "t", b"{}");
        assert_ne!(key_id(&a), key_id(&b));
    }

    #[test]
    fn clear_envelope_carries_the_payload_readably() {
        let node = TestPki::new("plant-a").node("gw1");
        let env = node.clear_envelope("supplier-b", "line-3/temperature", br#"{"c":21}"#);
        assert_eq!(env.clear_payload().unwrap(), br#"{"c":21}"#);
        let key = P384PublicKey::of(&node.key).verifying_key().unwrap();
        env.verify(&key).unwrap();
    }
}
