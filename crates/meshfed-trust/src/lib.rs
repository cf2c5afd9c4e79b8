//! meshfed's identities: mesh CAs, node certificates, trust bundles and keys at rest.
//!
//! A mesh has its own ECDSA P-384 CA ([`MeshCa`]), and below it an issuing CA ([`IssuingCa`],
//! path length 0) whose key gateways keep, so the root key can stay offline; each of its nodes
//! holds a short-lived leaf certificate naming it `meshfed://<mesh>/<node>` ([`NodeCert`]). A mesh presents its CA
//! certificates as a [`TrustBundle`] (two during a CA rollover), and peers check node
//! certificates against exactly that bundle with [`verify_node_cert`]. Private keys are the
//! protocol core's [`SigningKey`]s (re-exported here) and rest in a [`KeyStore`]
//! ([`FileKeyStore`]: PKCS#8 PEM files, mode 0600).
//!
//! This is an adapter crate: it reads and writes files (key store, [`files`]) but never reads
//! the clock: every function that needs the time takes `now` as an argument. It is not the TLS
//! layer (that is the transport's, which calls [`verify_node_cert`] from its rustls verifiers).
//! [`statement`] signs a mesh's statements to its partners (a new trust bundle, a revocation
//! list) and checks a partner's against its stored bundle.
//!
//! Where to start reading: [`ca`] (making a CA and issuing node certificates), then [`bundle`]
//! (verification), [`cert`] (what a certificate says) and [`keystore`].

#![forbid(unsafe_code)]

pub mod bundle;
pub mod ca;
pub mod cert;
pub mod files;
pub mod key;
pub mod keystore;
pub mod statement;

pub use bundle::{
    BundleCa, BundleError, Fingerprint, InvalidFingerprint, KeyPurpose, TrustBundle, TrustError,
    verify_node_cert,
};
pub use ca::{
    CLOCK_SKEW_ALLOWANCE, CaError, DEFAULT_CA_VALIDITY, DEFAULT_ISSUING_CA_VALIDITY,
    DEFAULT_NODE_CERT_VALIDITY, IssuingCa, MeshCa, NodeCert,
};
pub use cert::{
    CaCertInfo, CertError, NodeCertInfo, NodeIdentity, UriError, inspect_ca_cert, inspect_node_cert,
};
pub use key::{KeyError, P384PublicKey, key_from_pkcs8_pem, key_to_pkcs8_pem};
pub use keystore::{FileKeyStore, InvalidKeyName, KeyName, KeyStore, KeyStoreError};
pub use meshfed_proto::crypto::SigningKey;
pub use statement::{Signer, StatementTrustError, sign_statement, verify_statement};
