//! Keys: the PEM (PKCS#8) form of the protocol core's [`SigningKey`], and the
//! [`P384PublicKey`] a certificate carries.
//!
//! The private key type itself is [`meshfed_proto::crypto::SigningKey`] (the envelope code signs
//! with it); this module only moves it in and out of PEM.

use std::fmt;

use meshfed_proto::crypto::{CryptoError, SigningKey, VerifyingKey};

/// Length of an uncompressed P-384 public point: `0x04 ‖ x ‖ y`.
pub const PUBLIC_KEY_LEN: usize = 97;

/// PEM label of a PKCS#8 private key.
const PKCS8_PEM_LABEL: &str = "PRIVATE KEY";

/// A problem with a private or public key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The text is not PEM.
    #[error("private key is not PEM")]
    NotPem(#[source] pem::PemError),
    /// The PEM block has another label than `PRIVATE KEY`.
    #[error("PEM block is labelled {label:?}, expected \"PRIVATE KEY\" (PKCS#8)")]
    WrongPemLabel {
        /// The label found.
        label: String,
    },
    /// The key was rejected or could not be generated, exported or used.
    #[error("ECDSA P-384 key operation failed")]
    Crypto(#[from] CryptoError),
    /// The public key bytes are not an uncompressed P-384 point.
    #[error(
        "public key is not an uncompressed P-384 point ({len} bytes, expected {PUBLIC_KEY_LEN} \
         starting with 0x04)"
    )]
    NotP384Point {
        /// Length of the rejected bytes.
        len: usize,
    },
}

/// Loads a key from a PEM `PRIVATE KEY` block (unencrypted PKCS#8). Keys on other curves than
/// P-384 are rejected.
pub fn key_from_pkcs8_pem(text: &str) -> Result<SigningKey, KeyError> {
    let block = pem::parse(text).map_err(KeyError::NotPem)?;
    if block.tag() != PKCS8_PEM_LABEL {
        return Err(KeyError::WrongPemLabel {
            label: block.tag().to_owned(),
        });
    }
    Ok(SigningKey::from_pkcs8(block.contents())?)
}

/// The key as a PEM `PRIVATE KEY` block (PKCS#8). This is the secret: handle it accordingly.
pub fn key_to_pkcs8_pem(key: &SigningKey) -> Result<String, KeyError> {
    let der = key.to_pkcs8()?;
    Ok(pem::encode(&pem::Pem::new(PKCS8_PEM_LABEL, der)))
}

/// An ECDSA P-384 public key: the uncompressed point `0x04 ‖ x ‖ y` (97 bytes), as found in a
/// certificate's SubjectPublicKeyInfo.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct P384PublicKey(Vec<u8>);

impl P384PublicKey {
    /// Takes an uncompressed P-384 point. Checks its shape; whether it lies on the curve is
    /// checked when it is used to verify.
    pub fn from_uncompressed(bytes: &[u8]) -> Result<Self, KeyError> {
        if bytes.len() != PUBLIC_KEY_LEN || bytes.first() != Some(&0x04) {
            return Err(KeyError::NotP384Point { len: bytes.len() });
        }
        Ok(Self(bytes.to_vec()))
    }

    /// The public half of `key`.
    pub fn of(key: &SigningKey) -> Self {
        Self(key.public_key().to_vec())
    }

    /// The uncompressed point bytes, usable with
    /// `aws_lc_rs::signature::UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, bytes)`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The key as the protocol core's signature verifier.
    pub fn verifying_key(&self) -> Result<VerifyingKey, KeyError> {
        Ok(VerifyingKey::from_sec1(&self.0)?)
    }
}

impl fmt::Debug for P384PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "P384PublicKey({})", hex::encode(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};

    use super::*;

    #[test]
    fn pkcs8_pem_round_trip_keeps_the_key() {
        let key = SigningKey::generate().unwrap();
        let pem = key_to_pkcs8_pem(&key).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
        let again = key_from_pkcs8_pem(&pem).unwrap();
        assert_eq!(again.public_key(), key.public_key());
    }

    #[test]
    fn p256_key_is_rejected() {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let text = pem::encode(&pem::Pem::new("PRIVATE KEY", doc.as_ref().to_vec()));
        let err = key_from_pkcs8_pem(&text).unwrap_err();
        assert!(
            matches!(err, KeyError::Crypto(CryptoError::KeyRejected)),
            "{err:?}"
        );
    }

    #[test]
    fn pem_with_a_certificate_label_is_rejected() {
        let text = pem::encode(&pem::Pem::new("CERTIFICATE", vec![1, 2, 3]));
        let err = key_from_pkcs8_pem(&text).unwrap_err();
        assert!(err.to_string().contains("\"CERTIFICATE\""), "{err}");
    }

    #[test]
    fn public_key_verifies_what_the_key_signs() {
        let key = SigningKey::generate().unwrap();
        let public = P384PublicKey::of(&key);
        assert_eq!(public.as_bytes().len(), PUBLIC_KEY_LEN);
        let sig = key.sign(b"header bytes").unwrap();
        let verifier = public.verifying_key().unwrap();
        verifier.verify(b"header bytes", &sig).unwrap();
        assert!(verifier.verify(b"header bytez", &sig).is_err());
    }

    #[test]
    fn short_point_is_rejected() {
        let err = P384PublicKey::from_uncompressed(&[4; 65]).unwrap_err();
        assert!(err.to_string().contains("65 bytes"), "{err}");
    }
}
