//! `meshfed envelope inspect`: show an envelope as the spec's JSON and say whether its signature
//! verifies against the source mesh's CA.
//!
//! The file holds one envelope in any of its forms: a wire envelope (CBOR, signed alone), a proven
//! envelope (CBOR: one envelope split from a signed batch, with the batch signature and its
//! inclusion proof), the spec JSON as a gateway delivers it (with `security.batch` when the
//! envelope was signed in a batch), or the export form (`meshfed subscribe --proof`: the spec
//! JSON plus `proof`, one of the two CBOR forms in base64; see
//! [`meshfed_proto::envelope::export`]). The JSON goes to stdout and the verdict to stderr, so stdout
//! stays one JSON document that can be piped on. The verdict is decided by [`check_signature`]:
//! the signer's certificate (named by digest in the header and carried beside it; an envelope
//! as a link carries it, without the certificate, cannot be checked alone) must chain to the
//! CA, name a node of the mesh the header names as source, and its key must verify the envelope ([`Envelope::verify`]: the
//! signature over the header bytes and the payload digest, or the inclusion proof to the batch's
//! root and the batch signature over that root and the count).
//!
//! The spec JSON does not carry the header bytes or the payload digest: the header is re-encoded
//! (the bytes an origin of this version signs), and the digest is only known when the payload is
//! in clear. A sealed payload's digest covers its ciphertext, which the JSON does not show; such
//! an envelope is checked from its wire form, or from the export form, whose `proof` is the
//! wire form: the signature is checked on it, after it was found to be the JSON's envelope
//! (same header, signature and batch position). The clear `message` of the export form is not
//! what was signed — the ciphertext was — and the verdict says so.

use std::fmt;
use std::io::Read as _;
use std::path::Path;
use std::time::SystemTime;

use anyhow::{Context as _, anyhow};
use meshfed_node::chain::chain;
use meshfed_proto::MeshId;
use meshfed_proto::batch::{BatchError, ProvenEnvelope};
use meshfed_proto::crypto::{Digest384, sha384};
use meshfed_proto::envelope::export::{Crossed, ExportError, Exported};
use meshfed_proto::envelope::{
    Envelope, EnvelopeError, Header, Properties, Sender, VerifyError, WireEnvelope,
};
use meshfed_trust::{
    BundleError, Fingerprint, KeyError, KeyPurpose, NodeIdentity, TrustBundle, TrustError,
    verify_node_cert,
};
use rustls_pki_types::CertificateDer;

use crate::cli::{Input, InspectArgs, OutputFormat};
use crate::failure::Failure;
use crate::output::{Layout, outln, print};

/// Largest envelope file read: far above any frame a link accepts, small enough to hold in memory.
const MAX_ENVELOPE_FILE: u64 = 64 << 20;

/// Runs `meshfed envelope inspect`.
pub(crate) fn inspect(args: &InspectArgs, output: OutputFormat) -> Result<(), Failure> {
    // The CA configures the check: an unusable one is a configuration error, found before any work.
    let bundle = args.ca.as_deref().map(load_ca).transpose()?;
    let bytes = read_input(&args.file).map_err(Failure::Runtime)?;
    let subject = Inspected::read(&bytes).map_err(|e| match e {
        Unreadable::Json(e @ ExportError::Mismatch { .. }) => {
            Failure::Runtime(anyhow!("{} holds two different envelopes: {e}", args.file))
        }
        e => Failure::Runtime(anyhow!("{} is not a meshfed envelope: {e}", args.file)),
    })?;
    print_envelope(&subject.envelope, output)?;
    let Some(bundle) = bundle else {
        eprintln!("signature: not checked (pass --ca CERT to verify)");
        return Ok(());
    };
    let (bundle, issuing) = bundle;
    match check_signature(&subject, &bundle, &issuing, SystemTime::now()) {
        Ok(signed) if subject.opened_by_receiver() => {
            eprintln!(
                "signature: valid — {signed}; it covers the ciphertext in proof (its SHA-384 \
                 digest is signed), not the clear message shown, which the receiving gateway \
                 decrypted"
            );
            Ok(())
        }
        Ok(signed) => {
            eprintln!("signature: valid — {signed}");
            Ok(())
        }
        Err(unknown @ (Invalid::DigestUnknown | Invalid::CertificateNotCarried(_))) => {
            eprintln!("signature: not checkable — {unknown}");
            Err(Failure::CheckFailed)
        }
        Err(invalid) => {
            eprintln!("signature: INVALID — {}", chain(&invalid));
            Err(Failure::CheckFailed)
        }
    }
}

/// An envelope as read from the file, with what its signature covers.
#[derive(Debug)]
pub(crate) struct Inspected {
    /// The logical envelope, with its message when the payload is clear.
    envelope: Envelope,
    /// The header bytes: as carried (CBOR forms) or re-encoded (JSON).
    header_bytes: Vec<u8>,
    /// The payload digest the signature covers; `None` when the JSON of a sealed payload hides it.
    digest: Option<Digest384>,
    /// The payload as carried (CBOR forms), to check against the digest.
    payload: Option<Vec<u8>>,
    /// The export form: the JSON's envelope, checked from the wire form in `proof`.
    exported: bool,
}

/// Why a file holds no envelope.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unreadable {
    /// Not the wire form (nor a proven envelope).
    #[error(transparent)]
    Wire(EnvelopeError),
    /// JSON, but not a spec-layout envelope, or an export form whose `proof` is not readable or
    /// not the JSON's envelope.
    #[error(transparent)]
    Json(ExportError),
    /// Starts like JSON but is not UTF-8.
    #[error("envelope JSON is not UTF-8: {0}")]
    NotUtf8(std::str::Utf8Error),
}

impl Inspected {
    /// Reads the spec JSON or its export form (text starting with `{`), else a wire envelope,
    /// else a proven one.
    pub(crate) fn read(bytes: &[u8]) -> Result<Self, Unreadable> {
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
            let text = std::str::from_utf8(bytes).map_err(Unreadable::NotUtf8)?;
            let read = Exported::from_json(text).map_err(Unreadable::Json)?;
            return Ok(match read.crossed {
                Some(crossed) => Self::exported(read.envelope, &crossed),
                None => Self::json(read.envelope),
            });
        }
        match WireEnvelope::decode(bytes) {
            Ok(wire) => Ok(Self::wire(&wire)),
            // Not a wire envelope: a proven one, or else what is wrong with it as a wire envelope.
            Err(e) => ProvenEnvelope::decode(bytes)
                .map(|p| Self::proven(&p))
                .map_err(|_| Unreadable::Wire(e)),
        }
    }

    /// An envelope signed alone, as it travels.
    pub(crate) fn wire(wire: &WireEnvelope) -> Self {
        Self {
            envelope: clear(wire.to_envelope(None), wire.clear_payload().ok()),
            header_bytes: wire.header_bytes().to_vec(),
            digest: Some(*wire.payload_digest()),
            payload: Some(wire.payload().to_vec()),
            exported: false,
        }
    }

    /// One envelope of a batch, with the batch signature and its proof.
    pub(crate) fn proven(proven: &ProvenEnvelope) -> Self {
        let member = proven.envelope();
        Self {
            envelope: clear(proven.to_envelope(None), member.clear_payload().ok()),
            header_bytes: member.header_bytes().to_vec(),
            digest: Some(*member.payload_digest()),
            payload: Some(member.payload().to_vec()),
            exported: false,
        }
    }

    /// The export form: `envelope` as its JSON shows it (message opened by the receiver), checked
    /// from `crossed`, which [`Exported::from_json`] found to be the same envelope.
    pub(crate) fn exported(envelope: Envelope, crossed: &Crossed) -> Self {
        Self {
            envelope,
            header_bytes: crossed.header_bytes().to_vec(),
            digest: Some(*crossed.payload_digest()),
            payload: Some(crossed.payload().to_vec()),
            exported: true,
        }
    }

    /// The spec JSON: the header re-encoded, the digest of the message when it is clear.
    pub(crate) fn json(envelope: Envelope) -> Self {
        Self {
            header_bytes: envelope.header_bytes(),
            digest: envelope.clear_payload_digest(),
            payload: None,
            exported: false,
            envelope,
        }
    }

    /// Whether the message shown is one the receiving gateway decrypted: the export form of a
    /// sealed envelope, whose signature covers the ciphertext.
    fn opened_by_receiver(&self) -> bool {
        self.exported && self.header().encryption.is_some() && self.envelope.message.is_some()
    }

    fn header(&self) -> &Header {
        &self.envelope.header
    }
}

/// `envelope` with its clear payload `clear`, if it has one: an `identified` envelope's sender
/// and a `properties` envelope's properties taken out of it. A clear part that does not hold a
/// valid identity and valid properties is shown whole.
fn clear(mut envelope: Envelope, clear: Option<&[u8]>) -> Envelope {
    if let Some(clear) = clear {
        let flags = envelope.header.flags;
        let parts = Sender::unwrap(flags, clear.to_vec())
            .and_then(|(sender, rest)| Ok((sender, Properties::unwrap(flags, rest)?)));
        match parts {
            Ok((sender, (properties, message))) => {
                envelope.sender = sender;
                envelope.properties = properties;
                envelope.message = Some(message);
            }
            Err(_) => envelope.message = Some(clear.to_vec()),
        }
    }
    envelope
}

/// Reads the CA certificate file into a trust bundle and the mesh's issuing CA certificates it
/// may also hold (`cat ca/ca.crt ca/issuing.crt`: envelopes carry only the signer's leaf, so a
/// leaf of an issuing CA needs it from here); every failure is a configuration error.
fn load_ca(path: &Path) -> Result<(TrustBundle, Vec<CertificateDer<'static>>), Failure> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read CA certificate {}", path.display()))
        .map_err(Failure::Config)?;
    match TrustBundle::from_pem_with_issuing_cas(&text) {
        Ok(bundle) => Ok(bundle),
        // The PEM reader skips whatever is not a PEM block, so "no CA" means "no PEM at all".
        Err(BundleError::Empty) => Err(Failure::Config(anyhow!(
            "{} holds no PEM CERTIFICATE block, so it is not a mesh CA certificate",
            path.display()
        ))),
        Err(e) => Err(Failure::Config(anyhow::Error::new(e).context(format!(
            "{} is not a usable mesh CA certificate",
            path.display()
        )))),
    }
}

/// The whole input, refusing anything larger than [`MAX_ENVELOPE_FILE`].
fn read_input(input: &Input) -> anyhow::Result<Vec<u8>> {
    let reader: Box<dyn std::io::Read> = match input {
        Input::Stdin => Box::new(std::io::stdin().lock()),
        Input::File(path) => {
            Box::new(std::fs::File::open(path).with_context(|| format!("cannot read {input}"))?)
        }
    };
    let mut bytes = Vec::new();
    reader
        .take(MAX_ENVELOPE_FILE + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {input}"))?;
    if bytes.len() as u64 > MAX_ENVELOPE_FILE {
        return Err(anyhow!(
            "{input} is larger than {} MiB, which no meshfed envelope is",
            MAX_ENVELOPE_FILE >> 20
        ));
    }
    Ok(bytes)
}

/// Prints the spec-layout JSON, indented, or on one line for `--output json`, or as YAML;
/// the message only when the payload is clear.
fn print_envelope(envelope: &Envelope, output: OutputFormat) -> Result<(), Failure> {
    let json = envelope.to_json();
    print(output, &json, Layout::Line, |json| outln!("{json:#}"))
}

/// Who signed an envelope whose signature is valid.
#[derive(Debug)]
pub(crate) struct Signed {
    /// The signing node, as its certificate names it.
    pub(crate) signer: NodeIdentity,
    /// The CA certificate of the bundle that issued the signer's certificate.
    pub(crate) ca: Fingerprint,
    /// The batch the envelope was signed in, as (count, index); `None` when signed alone.
    pub(crate) batch: Option<(u32, u32)>,
}

impl fmt::Display for Signed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((count, index)) = self.batch {
            write!(f, "batch of {count} (leaf {index}), ")?;
        }
        write!(
            f,
            "signed by {}, certificate issued by the CA {}",
            self.signer.uri(),
            self.ca
        )
    }
}

/// Why an envelope's signature is not accepted. Each variant is the fact that decided it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Invalid {
    /// The certificate in the header does not chain to the CA, has expired, or is not a node
    /// certificate.
    #[error("the signer's certificate is not trusted")]
    UntrustedSigner(#[source] TrustError),
    /// The certificate is good but names a node of another mesh than the header's source.
    #[error("the envelope says it comes from mesh {claimed}, but it is signed by {}", signer.uri())]
    SignerOfAnotherMesh {
        /// The header's source mesh.
        claimed: MeshId,
        /// The node the certificate names.
        signer: NodeIdentity,
    },
    /// The envelope names its signer's certificate by digest and does not carry it (the form
    /// it has on a link, where the certificate is announced once).
    #[error(
        "the envelope names its signer's certificate by SHA-384 digest ({0}) and does not carry \
         it; inspect its export form (`meshfed subscribe --proof`), which carries it"
    )]
    CertificateNotCarried(String),
    /// The certificate's public key cannot verify anything.
    #[error("the signer's certificate holds an unusable public key")]
    UnusableSignerKey(#[source] KeyError),
    /// The signature or the payload digest does not match (the header, signature or payload
    /// was altered, or another key signed it).
    #[error(transparent)]
    Envelope(EnvelopeError),
    /// The envelope was signed in a batch, and its inclusion proof does not lead to the batch's
    /// root, the batch signature does not verify, or the payload does not match its digest.
    #[error(transparent)]
    Batch(BatchError),
    /// The JSON shows a sealed payload opened (or not at all), so the digest the signature covers
    /// cannot be recomputed.
    #[error(
        "the payload is encrypted and the JSON does not carry its ciphertext, whose SHA-384 digest \
         the signature covers; inspect its export form (`meshfed subscribe --proof`) or its wire \
         form to check it"
    )]
    DigestUnknown,
}

impl From<VerifyError> for Invalid {
    fn from(e: VerifyError) -> Self {
        match e {
            VerifyError::Envelope(e) => Self::Envelope(e),
            VerifyError::Batch(e) => Self::Batch(e),
        }
    }
}

/// Verifies the origin of `subject` against the source mesh's CA `bundle` at `now`, through
/// the mesh's `issuing` CA certificates when its node certificate was issued by one.
pub(crate) fn check_signature(
    subject: &Inspected,
    bundle: &TrustBundle,
    issuing: &[CertificateDer<'_>],
    now: SystemTime,
) -> Result<Signed, Invalid> {
    let header = subject.header();
    let der = header
        .certificate
        .der()
        .ok_or_else(|| Invalid::CertificateNotCarried(header.certificate.digest_name()))?;
    let cert = CertificateDer::from(&der[..]);
    // Node certificates carry both client and server authentication; either purpose will do.
    let info = verify_node_cert(bundle, &cert, issuing, KeyPurpose::ClientAuth, now)
        .map_err(Invalid::UntrustedSigner)?;
    let signer = info.identity();
    if signer.mesh != header.source.mesh {
        return Err(Invalid::SignerOfAnotherMesh {
            claimed: header.source.mesh.clone(),
            signer,
        });
    }
    let key = info
        .public_key
        .verifying_key()
        .map_err(Invalid::UnusableSignerKey)?;
    let digest = subject.digest.ok_or(Invalid::DigestUnknown)?;
    let envelope = &subject.envelope;
    envelope.verify(&subject.header_bytes, &digest, &key)?;
    if let Some(payload) = &subject.payload
        && sha384(payload) != digest
    {
        return Err(match &envelope.batch {
            None => Invalid::Envelope(EnvelopeError::PayloadAltered),
            Some(b) => Invalid::Batch(BatchError::PayloadAltered { index: b.index() }),
        });
    }
    Ok(Signed {
        signer,
        ca: issuer(bundle, &cert, issuing, now),
        batch: envelope.batch.as_ref().map(|b| (b.count(), b.index())),
    })
}

/// The fingerprint of the bundle CA that issued `cert` (already verified against the bundle).
fn issuer(
    bundle: &TrustBundle,
    cert: &CertificateDer<'_>,
    issuing: &[CertificateDer<'_>],
    now: SystemTime,
) -> Fingerprint {
    let cas = bundle.cas();
    // During a rollover the bundle holds two CAs: ask each alone which one the chain leads to.
    cas.iter()
        .find(|ca| {
            cas.len() == 1
                || TrustBundle::new(vec![ca.der().clone()]).is_ok_and(|alone| {
                    verify_node_cert(&alone, cert, issuing, KeyPurpose::ClientAuth, now).is_ok()
                })
        })
        // Invariant: a TrustBundle holds at least one CA (`TrustBundle::new` refuses none).
        .unwrap_or(&cas[0])
        .fingerprint()
}

#[cfg(test)]
mod tests {
    use meshfed_proto::envelope::SignerCertificate;
    use meshfed_testkit::TestPki;

    use super::*;

    #[test]
    fn valid_envelope_names_its_signer_and_the_issuing_ca() {
        let pki = TestPki::new("plant-a");
        let env = pki.node("gw1").sealed_envelope("supplier-b", "t", b"{}");
        let signed = check_signature(&Inspected::wire(&env), pki.bundle(), &[], pki.now()).unwrap();
        assert_eq!(signed.signer.uri(), "meshfed://plant-a/gw1");
        assert_eq!(signed.ca, pki.ca().fingerprint());
        assert_eq!(
            signed.to_string(),
            format!(
                "signed by meshfed://plant-a/gw1, certificate issued by the CA {}",
                pki.ca().fingerprint()
            )
        );
    }

    #[test]
    fn envelope_of_an_issuing_ca_node_verifies_with_that_ca_given_and_not_without() {
        let pki = TestPki::new("plant-a");
        let env = pki
            .node_from_issuing_ca("gw1")
            .sealed_envelope("supplier-b", "t", b"{}");
        let issuing = [pki.issuing_ca().cert_der().clone()];
        let signed =
            check_signature(&Inspected::wire(&env), pki.bundle(), &issuing, pki.now()).unwrap();
        assert_eq!(signed.signer.uri(), "meshfed://plant-a/gw1");
        assert_eq!(signed.ca, pki.ca().fingerprint());
        let err =
            check_signature(&Inspected::wire(&env), pki.bundle(), &[], pki.now()).unwrap_err();
        assert!(
            matches!(
                err,
                Invalid::UntrustedSigner(TrustError::UnknownIssuer { .. })
            ),
            "{err:?}"
        );
    }

    #[test]
    fn issuer_is_found_among_two_rollover_cas() {
        let old = TestPki::new("plant-a");
        let new = TestPki::new("plant-a");
        let bundle = TrustBundle::new(vec![
            old.ca().cert_der().clone(),
            new.ca().cert_der().clone(),
        ])
        .unwrap();
        let env = new.node("gw1").clear_envelope("supplier-b", "t", b"{}");
        let signed = check_signature(&Inspected::wire(&env), &bundle, &[], new.now()).unwrap();
        assert_eq!(signed.ca, new.ca().fingerprint());
    }

    #[test]
    fn envelope_of_another_mesh_is_not_issued_by_this_ca() {
        let ours = TestPki::new("plant-a");
        let theirs = TestPki::new("plant-b");
        let env = ours.node("gw1").sealed_envelope("supplier-b", "t", b"{}");
        let err = check_signature(&Inspected::wire(&env), theirs.bundle(), &[], theirs.now())
            .unwrap_err();
        assert!(
            matches!(
                err,
                Invalid::UntrustedSigner(TrustError::UnknownIssuer { .. })
            ),
            "{err:?}"
        );
        assert_eq!(
            chain(&err),
            "the signer's certificate is not trusted: certificate was not issued by a CA in the \
             trust bundle of mesh plant-b"
        );
    }

    #[test]
    fn expired_signer_certificate_is_untrusted() {
        let pki = TestPki::new("plant-a");
        let env = pki
            .expired_node("gw1")
            .sealed_envelope("supplier-b", "t", b"{}");
        let err =
            check_signature(&Inspected::wire(&env), pki.bundle(), &[], pki.now()).unwrap_err();
        assert!(
            matches!(err, Invalid::UntrustedSigner(TrustError::Expired { .. })),
            "{err:?}"
        );
        assert!(chain(&err).contains("certificate expired at"), "{err}");
    }

    #[test]
    fn header_claiming_another_source_mesh_is_refused() {
        let pki = TestPki::new("plant-a");
        let node = pki.node("gw1");
        let mut header = node.envelope_header("supplier-b", "t");
        header.source.mesh = "plant-z".parse().unwrap();
        let env = node.seal_envelope(header, b"{}");
        let err =
            check_signature(&Inspected::wire(&env), pki.bundle(), &[], pki.now()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the envelope says it comes from mesh plant-z, but it is signed by \
             meshfed://plant-a/gw1"
        );
    }

    #[test]
    fn envelope_signed_with_another_key_does_not_verify() {
        let pki = TestPki::new("plant-a");
        let node = pki.node("gw1");
        let other = pki.node("gw2");
        // gw1's certificate in the header, gw2's key on the signature.
        let env = other.seal_envelope(node.envelope_header("supplier-b", "t"), b"{}");
        let err =
            check_signature(&Inspected::wire(&env), pki.bundle(), &[], pki.now()).unwrap_err();
        assert!(
            matches!(err, Invalid::Envelope(EnvelopeError::BadSignature)),
            "{err:?}"
        );
    }

    #[test]
    fn envelope_as_it_crossed_a_link_names_its_certificate_and_cannot_be_checked_alone() {
        let pki = TestPki::new("plant-a");
        let node = pki.node("gw1");
        let env = node.sealed_envelope("supplier-b", "t", b"{}");
        let on_link = WireEnvelope::decode(&env.encode_on_link()).unwrap();
        let err =
            check_signature(&Inspected::wire(&on_link), pki.bundle(), &[], pki.now()).unwrap_err();
        let digest = SignerCertificate::new(node.cert.to_vec()).digest_name();
        assert!(
            matches!(&err, Invalid::CertificateNotCarried(d) if *d == digest),
            "{err:?}"
        );
        // The form a file holds carries it, and checks.
        let alone = WireEnvelope::decode(&env.encode()).unwrap();
        check_signature(&Inspected::wire(&alone), pki.bundle(), &[], pki.now()).unwrap();
    }
}
