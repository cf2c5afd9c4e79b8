//! The envelope's cryptography, all from aws-lc-rs: ECDSA P-384 / SHA-384 signatures, AES-256-GCM
//! content keys derived with HKDF-SHA384, and the nonce discipline that keeps GCM safe.
//!
//! # Why a nonce never repeats under one key
//! A [`Sealer`] is the only thing that can encrypt under a content key, and it is made exactly once
//! per key: [`ContentSecret::sealer`] derives a *fresh* AES key from the federation secret, the
//! sender's mesh id and a random 128-bit [`KeyEpoch`]. The sealer is neither `Clone` nor `Copy`, and
//! it takes each nonce from a 64-bit counter that only increases; when the counter reaches the
//! volume limit, [`Sealer::next_iv`] refuses ([`CryptoError::KeyExhausted`]) instead of wrapping. A
//! restarted process, or a second gateway of the same mesh, makes its own sealer with a new random
//! epoch, hence a different key, so counters starting again at zero never meet an old key.

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::digest::{SHA384, SHA384_OUTPUT_LEN};
use aws_lc_rs::hkdf::{self, HKDF_SHA384};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{
    ECDSA_P384_SHA384_FIXED, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};

use crate::id::{KeyId, MeshId};

/// Length of a fixed-size (r ‖ s) ECDSA P-384 signature.
pub const SIGNATURE_LEN: usize = 96;
/// Length of a SHA-384 digest.
pub const DIGEST_LEN: usize = SHA384_OUTPUT_LEN;
/// Length of the AES-256-GCM authentication tag appended to a sealed payload.
pub const TAG_LEN: usize = 16;
/// Messages one content key may seal before it must be rotated. Far below GCM's limits for
/// counter nonces, and low enough that rotation by volume is exercised in real deployments.
pub const KEY_VOLUME_LIMIT: u64 = 1 << 32;

/// What went wrong in a cryptographic operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The PKCS#8 document is not an ECDSA P-384 private key.
    #[error("the key is not a valid PKCS#8 ECDSA P-384 private key")]
    KeyRejected,
    /// The bytes are not an uncompressed P-384 public point.
    #[error("the public key is not a P-384 point ({len} bytes)")]
    PublicKeyRejected {
        /// Length of the rejected key.
        len: usize,
    },
    /// The signature does not verify under the given public key.
    #[error("the signature does not verify")]
    BadSignature,
    /// The content key sealed [`KEY_VOLUME_LIMIT`] messages and must be rotated.
    #[error("content key {0} reached its volume limit and must be rotated")]
    KeyExhausted(KeyId),
    /// The key id does not name a key this secret can derive.
    #[error("key id {0} is not a meshfed content key id (expected ck1_ and 32 hex digits)")]
    UnknownKeyId(String),
    /// AES-GCM refused to open: wrong key, wrong header, or altered ciphertext or tag.
    #[error("authentication tag check failed")]
    OpenFailed,
    /// The system random generator failed.
    #[error("the system random number generator failed")]
    Rng,
}

/// A fixed-size ECDSA P-384 signature (r ‖ s, 96 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; SIGNATURE_LEN]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}…)", hex::encode(&self.0[..8]))
    }
}

/// A SHA-384 digest.
pub type Digest384 = [u8; DIGEST_LEN];

/// SHA-384 of `data`.
pub fn sha384(data: &[u8]) -> Digest384 {
    let d = aws_lc_rs::digest::digest(&SHA384, data);
    let mut out = [0u8; DIGEST_LEN];
    out.copy_from_slice(d.as_ref());
    out
}

/// SHA-384 over several byte strings, as if concatenated.
pub fn sha384_parts(parts: &[&[u8]]) -> Digest384 {
    let mut ctx = aws_lc_rs::digest::Context::new(&SHA384);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; DIGEST_LEN];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Fills `buf` from the system's secure random generator.
pub fn random_fill(buf: &mut [u8]) -> Result<(), CryptoError> {
    SystemRandom::new().fill(buf).map_err(|_| CryptoError::Rng)
}

/// An ECDSA P-384 private key that signs with SHA-384.
pub struct SigningKey {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
}

impl SigningKey {
    /// Loads a key from a PKCS#8 (v1 or v2) DER document.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, CryptoError> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, der)
            .map_err(|_| CryptoError::KeyRejected)?;
        Ok(Self {
            pair,
            rng: SystemRandom::new(),
        })
    }

    /// Generates a new random key.
    pub fn generate() -> Result<Self, CryptoError> {
        let pair = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING)
            .map_err(|_| CryptoError::Rng)?;
        Ok(Self {
            pair,
            rng: SystemRandom::new(),
        })
    }

    /// The key as a PKCS#8 v1 DER document.
    pub fn to_pkcs8(&self) -> Result<Vec<u8>, CryptoError> {
        let doc = self
            .pair
            .to_pkcs8v1()
            .map_err(|_| CryptoError::KeyRejected)?;
        Ok(doc.as_ref().to_vec())
    }

    /// The public key as an uncompressed SEC1 point (97 bytes).
    pub fn public_key(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// Signs `msg` (hashed with SHA-384 inside).
    pub fn sign(&self, msg: &[u8]) -> Result<Signature, CryptoError> {
        let sig = self
            .pair
            .sign(&self.rng, msg)
            .map_err(|_| CryptoError::Rng)?;
        let mut out = [0u8; SIGNATURE_LEN];
        // ECDSA_P384_SHA384_FIXED_SIGNING always yields exactly 96 bytes.
        if sig.as_ref().len() != SIGNATURE_LEN {
            return Err(CryptoError::KeyRejected);
        }
        out.copy_from_slice(sig.as_ref());
        Ok(Signature(out))
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey").finish_non_exhaustive()
    }
}

/// An ECDSA P-384 public key that verifies SHA-384 signatures.
#[derive(Clone)]
pub struct VerifyingKey(UnparsedPublicKey<Vec<u8>>);

impl VerifyingKey {
    /// Takes an uncompressed SEC1 P-384 point (97 bytes, starting with 0x04).
    pub fn from_sec1(point: &[u8]) -> Result<Self, CryptoError> {
        if point.len() != 97 || point[0] != 0x04 {
            return Err(CryptoError::PublicKeyRejected { len: point.len() });
        }
        Ok(Self(UnparsedPublicKey::new(
            &ECDSA_P384_SHA384_FIXED,
            point.to_vec(),
        )))
    }

    /// Checks `sig` over `msg`.
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> Result<(), CryptoError> {
        self.0
            .verify(msg, &sig.0)
            .map_err(|_| CryptoError::BadSignature)
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyingKey({}…)", hex::encode(&self.0.as_ref()[1..9]))
    }
}

/// The random 128-bit value that makes each content key unique; named in the key id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyEpoch(pub [u8; 16]);

impl KeyEpoch {
    /// A new epoch from the system's secure random generator.
    pub fn random() -> Result<Self, CryptoError> {
        let mut e = [0u8; 16];
        random_fill(&mut e)?;
        Ok(Self(e))
    }

    /// The key id that names the content key of this epoch: `ck1_<32 hex>`.
    pub fn key_id(&self) -> KeyId {
        let s = format!("ck1_{}", hex::encode(self.0));
        // Invariant: "ck1_" and hex digits satisfy KeyId's [A-Za-z0-9_-]{1,128} rule.
        s.parse()
            .unwrap_or_else(|_| unreachable!("ck1_ key ids are valid"))
    }

    /// Parses the epoch back out of a key id made by [`KeyEpoch::key_id`].
    pub fn from_key_id(id: &KeyId) -> Result<Self, CryptoError> {
        let bad = || CryptoError::UnknownKeyId(id.to_string());
        let hex_part = id.as_str().strip_prefix("ck1_").ok_or_else(bad)?;
        let mut e = [0u8; 16];
        hex::decode_to_slice(hex_part, &mut e).map_err(|_| bad())?;
        Ok(Self(e))
    }
}

/// A federation's content secret, agreed in the handshake (ECDH P-384, then HKDF-SHA384).
/// Every content key of the federation is derived from it; it never encrypts anything itself.
pub struct ContentSecret {
    prk: hkdf::Prk,
}

struct KeyLen;

impl hkdf::KeyType for KeyLen {
    fn len(&self) -> usize {
        32
    }
}

impl ContentSecret {
    /// Extracts the secret from the ECDH shared secret `ikm`, salted with `context`
    /// (the handshake transcript hash or the federation id).
    pub fn derive(ikm: &[u8], context: &[u8]) -> Self {
        let salt = hkdf::Salt::new(HKDF_SHA384, context);
        Self {
            prk: salt.extract(ikm),
        }
    }

    fn key(&self, sender: &MeshId, epoch: &KeyEpoch) -> Result<LessSafeKey, CryptoError> {
        let info: [&[u8]; 4] = [
            b"meshfed content key v1",
            sender.as_str().as_bytes(),
            b"/",
            &epoch.0,
        ];
        let okm = self
            .prk
            .expand(&info, KeyLen)
            .map_err(|_| CryptoError::Rng)?;
        let mut key = [0u8; 32];
        okm.fill(&mut key).map_err(|_| CryptoError::Rng)?;
        let unbound = UnboundKey::new(&AES_256_GCM, &key).map_err(|_| CryptoError::KeyRejected)?;
        Ok(LessSafeKey::new(unbound))
    }

    /// The one sealer for content sent by `sender` under `epoch` (see the module doc).
    pub fn sealer(&self, sender: &MeshId, epoch: KeyEpoch) -> Result<Sealer, CryptoError> {
        Ok(Sealer {
            key: self.key(sender, &epoch)?,
            key_id: epoch.key_id(),
            sender: sender.clone(),
            next: 0,
        })
    }

    /// An opener for content sealed by `sender` under the key named `key_id`.
    pub fn opener(&self, sender: &MeshId, key_id: &KeyId) -> Result<Opener, CryptoError> {
        let epoch = KeyEpoch::from_key_id(key_id)?;
        Ok(Opener {
            key: self.key(sender, &epoch)?,
            key_id: key_id.clone(),
        })
    }
}

impl ContentSecret {
    /// The federation's *custody secret* of this session: what both ends derive from the
    /// session's secret and keep in their stores, so that an envelope sealed while the peer is
    /// away (left in a broker's custody, DESIGN §3.4) can still be opened when it returns, after
    /// the session that agreed the secret has ended.
    pub fn custody(&self) -> Result<CustodySecret, CryptoError> {
        let info: [&[u8]; 1] = [b"meshfed custody secret v1"];
        let okm = self
            .prk
            .expand(&info, KeyLen)
            .map_err(|_| CryptoError::Rng)?;
        let mut bytes = [0u8; 32];
        okm.fill(&mut bytes).map_err(|_| CryptoError::Rng)?;
        Ok(CustodySecret::from_bytes(bytes))
    }
}

/// A federation's custody secret (see [`ContentSecret::custody`]): 32 bytes both ends store,
/// named by an id derived from them. Content keys come from it as from a session's secret,
/// under a label of their own, each with a random [`KeyEpoch`].
pub struct CustodySecret {
    bytes: [u8; 32],
    id: KeyId,
    content: ContentSecret,
}

impl CustodySecret {
    /// The secret of these stored bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let digest = sha384_parts(&[b"meshfed custody secret id v1", &bytes]);
        let id = format!("cs1_{}", hex::encode(&digest[..12]));
        Self {
            bytes,
            // Invariant: "cs1_" and hex digits satisfy KeyId's [A-Za-z0-9_-]{1,128} rule.
            id: id
                .parse()
                .unwrap_or_else(|_| unreachable!("cs1_ key ids are valid")),
            content: ContentSecret::derive(&bytes, b"meshfed custody content v1"),
        }
    }

    /// The bytes to store.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// Its name: `cs1_<24 hex>`.
    pub fn id(&self) -> &KeyId {
        &self.id
    }

    /// A sealer for content sent by `sender`, under a fresh random epoch.
    pub fn sealer(&self, sender: &MeshId) -> Result<Sealer, CryptoError> {
        self.content.sealer(sender, KeyEpoch::random()?)
    }

    /// An opener for content sealed by `sender` under the key named `key_id`.
    pub fn opener(&self, sender: &MeshId, key_id: &KeyId) -> Result<Opener, CryptoError> {
        self.content.opener(sender, key_id)
    }
}

impl fmt::Debug for CustodySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CustodySecret")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for ContentSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContentSecret").finish_non_exhaustive()
    }
}

/// A 96-bit AES-GCM nonce.
pub type Iv = [u8; NONCE_LEN];

/// Encrypts under one content key, drawing each nonce from a counter (see the module doc).
pub struct Sealer {
    key: LessSafeKey,
    key_id: KeyId,
    sender: MeshId,
    next: u64,
}

impl Sealer {
    /// The id of the key this sealer encrypts under.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// The mesh whose content this sealer encrypts (its key is derived for that sender).
    pub fn sender(&self) -> &MeshId {
        &self.sender
    }

    /// How many messages this key has sealed.
    pub fn sealed(&self) -> u64 {
        self.next
    }

    /// Takes the next nonce, or refuses when the key's volume limit is reached.
    pub fn next_iv(&mut self) -> Result<Iv, CryptoError> {
        if self.next >= KEY_VOLUME_LIMIT {
            return Err(CryptoError::KeyExhausted(self.key_id.clone()));
        }
        let mut iv = [0u8; NONCE_LEN];
        iv[4..].copy_from_slice(&self.next.to_be_bytes());
        self.next += 1;
        Ok(iv)
    }

    /// Encrypts `in_out` in place under `iv` (from [`Sealer::next_iv`], used once), appending the tag.
    pub fn seal_in_place(
        &self,
        iv: Iv,
        aad: &[u8],
        in_out: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(iv), Aad::from(aad), in_out)
            .map_err(|_| CryptoError::KeyExhausted(self.key_id.clone()))
    }
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("key_id", &self.key_id)
            .field("sealed", &self.next)
            .finish()
    }
}

/// Decrypts content sealed under one content key.
pub struct Opener {
    key: LessSafeKey,
    key_id: KeyId,
}

impl Opener {
    /// The id of the key this opener decrypts with.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// Decrypts `ciphertext ‖ tag`, checking the tag over `aad`.
    pub fn open(&self, iv: Iv, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut buf = sealed.to_vec();
        let len = self
            .key
            .open_in_place(Nonce::assume_unique_for_key(iv), Aad::from(aad), &mut buf)
            .map_err(|_| CryptoError::OpenFailed)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

impl fmt::Debug for Opener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opener")
            .field("key_id", &self.key_id)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh(s: &str) -> MeshId {
        s.parse().unwrap()
    }

    #[test]
    fn signature_verifies_and_rejects_other_message() {
        let key = SigningKey::generate().unwrap();
        let vk = VerifyingKey::from_sec1(key.public_key()).unwrap();
        let sig = key.sign(b"hello").unwrap();
        vk.verify(b"hello", &sig).unwrap();
        assert_eq!(vk.verify(b"hellO", &sig), Err(CryptoError::BadSignature));
    }

    #[test]
    fn pkcs8_round_trips() {
        let key = SigningKey::generate().unwrap();
        let again = SigningKey::from_pkcs8(&key.to_pkcs8().unwrap()).unwrap();
        assert_eq!(key.public_key(), again.public_key());
        assert_eq!(
            SigningKey::from_pkcs8(b"junk").unwrap_err(),
            CryptoError::KeyRejected
        );
    }

    #[test]
    fn sealer_nonces_never_repeat_and_stop_at_the_limit() {
        let secret = ContentSecret::derive(b"shared", b"fed_1");
        let mut sealer = secret.sealer(&mesh("a"), KeyEpoch([7; 16])).unwrap();
        let a = sealer.next_iv().unwrap();
        let b = sealer.next_iv().unwrap();
        assert_ne!(a, b);
        sealer.next = KEY_VOLUME_LIMIT;
        assert!(matches!(
            sealer.next_iv(),
            Err(CryptoError::KeyExhausted(_))
        ));
    }

    #[test]
    fn both_ends_derive_one_custody_secret_that_opens_after_the_session() {
        let a = ContentSecret::derive(b"shared", b"fed_1")
            .custody()
            .unwrap();
        let b = ContentSecret::derive(b"shared", b"fed_1")
            .custody()
            .unwrap();
        assert_eq!(a.id(), b.id());
        assert!(a.id().as_str().starts_with("cs1_"));
        // Stored and read back, as after the session (and a restart).
        let stored = CustodySecret::from_bytes(*b.bytes());
        let mut sealer = a.sealer(&mesh("a")).unwrap();
        let iv = sealer.next_iv().unwrap();
        let mut buf = b"payload".to_vec();
        sealer.seal_in_place(iv, b"aad", &mut buf).unwrap();
        let opener = stored.opener(&mesh("a"), sealer.key_id()).unwrap();
        assert_eq!(opener.open(iv, b"aad", &buf).unwrap(), b"payload");
        // Not the session's own content key, nor another session's custody secret.
        let session = ContentSecret::derive(b"shared", b"fed_1");
        let plain = session.opener(&mesh("a"), sealer.key_id()).unwrap();
        assert_eq!(plain.open(iv, b"aad", &buf), Err(CryptoError::OpenFailed));
        let other = ContentSecret::derive(b"other", b"fed_1").custody().unwrap();
        assert_ne!(other.id(), a.id());
    }

    #[test]
    fn opener_for_the_same_sender_and_epoch_opens() {
        let secret = ContentSecret::derive(b"shared", b"fed_1");
        let mut sealer = secret.sealer(&mesh("a"), KeyEpoch([7; 16])).unwrap();
        let iv = sealer.next_iv().unwrap();
        let mut buf = b"payload".to_vec();
        sealer.seal_in_place(iv, b"aad", &mut buf).unwrap();
        let opener = secret.opener(&mesh("a"), sealer.key_id()).unwrap();
        assert_eq!(opener.open(iv, b"aad", &buf).unwrap(), b"payload");
        assert_eq!(opener.open(iv, b"AAD", &buf), Err(CryptoError::OpenFailed));
        // The other direction's key differs even under the same epoch.
        let other = secret.opener(&mesh("b"), sealer.key_id()).unwrap();
        assert_eq!(other.open(iv, b"aad", &buf), Err(CryptoError::OpenFailed));
    }

    #[test]
    fn key_id_round_trips_and_rejects_foreign_ids() {
        let e = KeyEpoch([0xab; 16]);
        assert_eq!(KeyEpoch::from_key_id(&e.key_id()).unwrap(), e);
        let foreign: KeyId = "key_12345".parse().unwrap();
        assert!(matches!(
            KeyEpoch::from_key_id(&foreign),
            Err(CryptoError::UnknownKeyId(_))
        ));
    }
}
