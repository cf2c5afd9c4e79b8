//! Delegations (DESIGN.md §2, Tokens and Transitive trust; §3.8): a capability a mesh grants to
//! another mesh — relay my messages on these topics to these meshes — as a JWT the granting
//! mesh signs and the delegate presents.
//!
//! A delegation is verified by meshes that never federated with its issuer (the trusted
//! intermediary model: A checks C's delegation to B), so it is not signed with the gateway's
//! token issuer key, which only its own gateway knows. It is signed with the issuing gateway's
//! node key, and its header carries the certificate chain (`x5c`: the node certificate, then
//! the issuing CA), checked against the issuer mesh's trust bundle **at the time it was issued**
//! (`iat`): a node certificate lives a day, a delegation may live longer, and a leaked node key
//! is what the issuer's revocation list is for. The header pins `alg` ES384 and
//! `typ` [`TYPE`].
//!
//! Claims: `iss` `meshfed:<issuer mesh>`, `sub` `meshfed:<delegate mesh>`, `aud` the meshes it
//! may be presented to (`meshfed:<mesh>` each), `iat`, `exp`, `jti` (the id a revocation list
//! names), `topics`, `actions` and `depth`: how many further delegations may hang below this
//! one (0: the delegate may use it but not pass it on).
//!
//! A **chain** is what a relay presents for a message that did not start with it: the origin's
//! delegation to the first relay, then each relay's delegation to the next. [`check_chain`]
//! holds it to the rules of transitive trust.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use meshfed_proto::crypto::{SigningKey, random_fill};
use meshfed_proto::envelope::Timestamp;
use meshfed_proto::{MeshId, Topic, TopicPattern};
use meshfed_trust::{KeyPurpose, TrustBundle, verify_node_cert};
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use super::{Action, LEEWAY};

/// The JWT `typ` of a delegation, so that no other JWT of the system is taken for one.
pub const TYPE: &str = "meshfed-delegation+jwt";

/// The deepest a delegation may allow (`depth`), and the longest chain accepted.
pub const MAX_DEPTH: u8 = 8;

/// The longest a delegation may live.
pub const MAX_DELEGATION_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// Most topic patterns and audience meshes in one delegation.
const MAX_LIST: usize = 64;

/// What a delegation grants, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelegationGrant {
    /// The mesh it is granted to.
    pub delegate: MeshId,
    /// The meshes the delegate may present it to.
    pub audience: Vec<MeshId>,
    /// The topics it covers.
    pub topics: Vec<TopicPattern>,
    /// How many further delegations may hang below it.
    pub depth: u8,
    /// How long it lives.
    pub ttl: Duration,
}

/// A delegation as verified (or as issued).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delegation {
    /// Its id (`jti`).
    pub id: String,
    /// The mesh that granted it.
    pub issuer: MeshId,
    /// The mesh it is granted to.
    pub delegate: MeshId,
    /// The meshes it may be presented to.
    pub audience: Vec<MeshId>,
    /// The topics it covers.
    pub topics: Vec<TopicPattern>,
    /// How many further delegations may hang below it.
    pub depth: u8,
    /// When it was issued.
    pub issued: Timestamp,
    /// When it expires.
    pub expires: Timestamp,
}

impl Delegation {
    /// Whether it covers `topic`.
    pub fn covers(&self, topic: &Topic) -> bool {
        self.topics.iter().any(|p| p.matches(topic))
    }
}

/// A delegation that could not be granted, or one that does not verify. Its text never
/// includes the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DelegationError {
    /// Asked for no topics.
    #[error("a delegation needs topic patterns: give the topics the delegate may relay")]
    NoTopics,
    /// Asked for no audience.
    #[error("a delegation needs an audience: name the meshes the delegate may present it to")]
    NoAudience,
    /// Too many topics or audience meshes.
    #[error("a delegation names at most {MAX_LIST} topic patterns and {MAX_LIST} meshes")]
    TooMany,
    /// Delegated to itself.
    #[error("mesh {0} cannot delegate to itself")]
    ToItself(MeshId),
    /// A depth above [`MAX_DEPTH`].
    #[error("depth {0}: a delegation allows at most {MAX_DEPTH} further delegations")]
    Depth(u8),
    /// A lifetime out of bounds.
    #[error("ttl {}: a delegation lives from 1 s to {} days", humantime::format_duration(*.0), MAX_DELEGATION_TTL.as_secs() / 86_400)]
    Ttl(Duration),
    /// Signing failed.
    #[error("cannot sign the delegation: {0}")]
    Sign(String),
    /// Not a JWT, or not a delegation.
    #[error("not a delegation: {0}")]
    Malformed(String),
    /// Signed with another algorithm.
    #[error("algorithm {0:?} is refused: delegations are signed with ES384")]
    Algorithm(String),
    /// Its issuer's trust bundle is not known here.
    #[error("the delegation is issued by mesh {0}, whose trust bundle this mesh does not hold")]
    UnknownIssuer(MeshId),
    /// Its certificate chain is not one of the issuer mesh's nodes at the time it was issued.
    #[error("the delegation's signer is not a node of mesh {mesh} when it was issued: {reason}")]
    Untrusted {
        /// The issuer mesh.
        mesh: MeshId,
        /// Why.
        reason: String,
    },
    /// The signature does not verify.
    #[error("the delegation's signature does not verify")]
    BadSignature,
    /// Expired.
    #[error("delegation {0} expired")]
    Expired(String),
    /// Issued in the future.
    #[error("delegation {0} is not valid yet")]
    NotYetValid(String),
    /// Withdrawn by its issuer.
    #[error("delegation {id} was revoked by mesh {issuer}")]
    Revoked {
        /// Its id.
        id: String,
        /// Its issuer.
        issuer: MeshId,
    },
}

impl DelegationGrant {
    /// Checks the grant's bounds for a delegation by mesh `issuer`.
    pub fn check(&self, issuer: &MeshId) -> Result<(), DelegationError> {
        if self.topics.is_empty() {
            return Err(DelegationError::NoTopics);
        }
        if self.audience.is_empty() {
            return Err(DelegationError::NoAudience);
        }
        if self.topics.len() > MAX_LIST || self.audience.len() > MAX_LIST {
            return Err(DelegationError::TooMany);
        }
        if &self.delegate == issuer {
            return Err(DelegationError::ToItself(issuer.clone()));
        }
        if self.depth > MAX_DEPTH {
            return Err(DelegationError::Depth(self.depth));
        }
        if self.ttl < Duration::from_secs(1) || self.ttl > MAX_DELEGATION_TTL {
            return Err(DelegationError::Ttl(self.ttl));
        }
        Ok(())
    }
}

/// The claims as they cross.
#[derive(Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: Vec<String>,
    iat: u64,
    exp: u64,
    jti: String,
    topics: Vec<TopicPattern>,
    actions: Vec<Action>,
    depth: u8,
}

const PREFIX: &str = "meshfed:";

fn mesh_name(mesh: &MeshId) -> String {
    format!("{PREFIX}{mesh}")
}

fn parse_mesh(claim: &'static str, value: &str) -> Result<MeshId, DelegationError> {
    value
        .strip_prefix(PREFIX)
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| {
            DelegationError::Malformed(format!(
                "{claim} {:?} is not meshfed:<mesh>",
                value.chars().take(80).collect::<String>()
            ))
        })
}

/// Issues a delegation of `grant` from mesh `issuer`, signed at `now` with the node key `key`
/// whose certificate chain (node certificate, then the issuing CA; DER) is `chain`.
pub fn issue(
    issuer: &MeshId,
    grant: &DelegationGrant,
    key: &SigningKey,
    chain: &[Vec<u8>],
    now: SystemTime,
) -> Result<(String, Delegation), DelegationError> {
    grant.check(issuer)?;
    let mut id = [0u8; 16];
    random_fill(&mut id).map_err(|e| DelegationError::Sign(e.to_string()))?;
    let iat = super::seconds(now);
    let claims = Claims {
        iss: mesh_name(issuer),
        sub: mesh_name(&grant.delegate),
        aud: grant.audience.iter().map(mesh_name).collect(),
        iat,
        exp: iat.saturating_add(grant.ttl.as_secs()),
        jti: hex::encode(id),
        topics: grant.topics.clone(),
        actions: vec![Action::Publish],
        depth: grant.depth,
    };
    let mut header = Header::new(Algorithm::ES384);
    header.typ = Some(TYPE.to_owned());
    header.x5c = Some(
        chain
            .iter()
            .map(|der| base64::engine::general_purpose::STANDARD.encode(der))
            .collect(),
    );
    let encoding = EncodingKey::from_ec_der(
        &key.to_pkcs8()
            .map_err(|e| DelegationError::Sign(e.to_string()))?,
    );
    let token = jsonwebtoken::encode(&header, &claims, &encoding)
        .map_err(|e| DelegationError::Sign(e.to_string()))?;
    Ok((token, Delegation::of(claims)?))
}

impl Delegation {
    fn of(claims: Claims) -> Result<Self, DelegationError> {
        let audience = (claims.aud.iter())
            .map(|a| parse_mesh("aud", a))
            .collect::<Result<Vec<_>, _>>()?;
        let id_ok = (1..=meshfed_proto::revocation::MAX_DELEGATION_ID_LEN)
            .contains(&claims.jti.len())
            && claims.jti.bytes().all(|b| b.is_ascii_alphanumeric());
        if !id_ok {
            return Err(DelegationError::Malformed(
                "jti is not 1 to 64 ASCII letters and digits".into(),
            ));
        }
        if claims.topics.is_empty() || audience.is_empty() {
            return Err(DelegationError::Malformed(
                "a delegation names topics and an audience".into(),
            ));
        }
        if claims.topics.len() > MAX_LIST || audience.len() > MAX_LIST {
            return Err(DelegationError::TooMany);
        }
        if claims.depth > MAX_DEPTH {
            return Err(DelegationError::Depth(claims.depth));
        }
        if !claims.actions.contains(&Action::Publish) {
            return Err(DelegationError::Malformed(
                "a delegation grants the action publish".into(),
            ));
        }
        Ok(Self {
            id: claims.jti,
            issuer: parse_mesh("iss", &claims.iss)?,
            delegate: parse_mesh("sub", &claims.sub)?,
            audience,
            topics: claims.topics,
            depth: claims.depth,
            issued: Timestamp(claims.iat.saturating_mul(1000)),
            expires: Timestamp(claims.exp.saturating_mul(1000)),
        })
    }
}

/// The header fields a delegation must have.
#[derive(Deserialize)]
struct PeekedHeader {
    alg: String,
    typ: Option<String>,
    #[serde(default)]
    x5c: Vec<String>,
}

/// The part of a JWT between its dots, decoded, before anything is verified.
fn part(token: &str, index: usize) -> Result<Vec<u8>, DelegationError> {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err(DelegationError::Malformed(
            "not three dot-separated parts".into(),
        ));
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[index])
        .map_err(|_| DelegationError::Malformed("a part is not base64url".into()))
}

/// Longest delegation accepted, in bytes (a chain of two certificates and a few patterns).
pub const MAX_DELEGATION_LEN: usize = 16 * 1024;

/// Verifies `token` as a delegation at `now`: its signer a node of its issuer mesh when it was
/// issued (against the bundle `bundle_of` gives for that mesh), its signature, its claims and
/// times. Revocation is the caller's check (see [`check_chain`]).
pub fn verify(
    token: &str,
    bundle_of: impl Fn(&MeshId) -> Option<TrustBundle>,
    now: SystemTime,
) -> Result<Delegation, DelegationError> {
    if token.len() > MAX_DELEGATION_LEN {
        return Err(DelegationError::Malformed(format!(
            "{} bytes, at most {MAX_DELEGATION_LEN}",
            token.len()
        )));
    }
    let header: PeekedHeader = serde_json::from_slice(&part(token, 0)?)
        .map_err(|e| DelegationError::Malformed(format!("header: {e}")))?;
    if header.alg != "ES384" {
        return Err(DelegationError::Algorithm(header.alg));
    }
    if header.typ.as_deref() != Some(TYPE) {
        return Err(DelegationError::Malformed(format!("typ is not {TYPE:?}")));
    }
    if !(1..=2).contains(&header.x5c.len()) {
        return Err(DelegationError::Malformed(
            "x5c carries the signer's certificate and at most its issuing CA".into(),
        ));
    }
    let chain = (header.x5c.iter())
        .map(|c| base64::engine::general_purpose::STANDARD.decode(c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| DelegationError::Malformed("x5c is not base64".into()))?;
    // Read, not trusted yet: which mesh's bundle to check the signer against, and when.
    let unverified = unverified_claims(token)?;
    let issuer = parse_mesh("iss", &unverified.iss)?;
    let bundle =
        bundle_of(&issuer).ok_or_else(|| DelegationError::UnknownIssuer(issuer.clone()))?;
    let issued_at = SystemTime::UNIX_EPOCH + Duration::from_secs(unverified.iat);
    let intermediates: Vec<CertificateDer<'_>> = chain[1..]
        .iter()
        .map(|c| CertificateDer::from(&c[..]))
        .collect();
    let signer = verify_node_cert(
        &bundle,
        &CertificateDer::from(&chain[0][..]),
        &intermediates,
        KeyPurpose::ClientAuth,
        issued_at,
    )
    .map_err(|e| DelegationError::Untrusted {
        mesh: issuer.clone(),
        reason: e.to_string(),
    })?;
    if signer.mesh != issuer {
        return Err(DelegationError::Untrusted {
            mesh: issuer,
            reason: format!("signed by a node of mesh {}", signer.mesh),
        });
    }
    let mut validation = Validation::new(Algorithm::ES384);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let claims = jsonwebtoken::decode::<Claims>(
        token,
        &DecodingKey::from_ec_der(signer.public_key.as_bytes()),
        &validation,
    )
    .map_err(|e| match e.kind() {
        jsonwebtoken::errors::ErrorKind::InvalidSignature => DelegationError::BadSignature,
        _ => DelegationError::Malformed(e.to_string()),
    })?
    .claims;
    let delegation = Delegation::of(claims)?;
    let now = super::seconds(now);
    let leeway = LEEWAY.as_secs();
    if delegation.issued.0 / 1000 > now.saturating_add(leeway) {
        return Err(DelegationError::NotYetValid(delegation.id));
    }
    if now > (delegation.expires.0 / 1000).saturating_add(leeway) {
        return Err(DelegationError::Expired(delegation.id));
    }
    Ok(delegation)
}

/// The claims of `token`, read without verifying it.
fn unverified_claims(token: &str) -> Result<Claims, DelegationError> {
    serde_json::from_slice(&part(token, 1)?)
        .map_err(|e| DelegationError::Malformed(format!("claims: {e}")))
}

/// The mesh `token` says issued it, read without verifying it: whose trust bundle to verify it
/// against.
pub fn issuer_of(token: &str) -> Result<MeshId, DelegationError> {
    parse_mesh("iss", &unverified_claims(token)?.iss)
}

/// The certificate chain (DER) in `token`'s header (`x5c`: its signer, then the issuing CA),
/// read without verifying it.
pub fn chain_of(token: &str) -> Result<Vec<Vec<u8>>, DelegationError> {
    let header: PeekedHeader = serde_json::from_slice(&part(token, 0)?)
        .map_err(|e| DelegationError::Malformed(format!("header: {e}")))?;
    header
        .x5c
        .iter()
        .map(|c| base64::engine::general_purpose::STANDARD.decode(c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| DelegationError::Malformed("x5c is not base64".into()))
}

/// What `token` says, read without verifying it: for delegations this node verified (or
/// issued) before it recorded them.
pub fn read_recorded(token: &str) -> Result<Delegation, DelegationError> {
    Delegation::of(unverified_claims(token)?)
}

/// Why a chain of delegations does not let a message through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// No delegation at all.
    #[error("no delegation is presented")]
    Empty,
    /// Longer than allowed.
    #[error("the chain has {len} delegations, at most {max} are accepted")]
    TooLong {
        /// Its length.
        len: usize,
        /// The most accepted.
        max: usize,
    },
    /// The first delegation is not the origin's.
    #[error("the first delegation is mesh {found}'s, the message comes from mesh {origin}")]
    NotOrigin {
        /// The message's origin mesh.
        origin: MeshId,
        /// The first delegation's issuer.
        found: MeshId,
    },
    /// A link of the chain is not issued by the previous delegate.
    #[error(
        "delegation {id} is issued by mesh {issuer}, not by mesh {expected}, the previous delegate"
    )]
    Broken {
        /// The delegation.
        id: String,
        /// Its issuer.
        issuer: MeshId,
        /// The previous delegation's delegate.
        expected: MeshId,
    },
    /// The last delegate is not the mesh that relayed the message.
    #[error("the chain delegates to mesh {delegate}, but mesh {last_hop} relayed the message")]
    NotLastHop {
        /// The last delegation's delegate.
        delegate: MeshId,
        /// The authenticated peer that relayed it.
        last_hop: MeshId,
    },
    /// A delegation deeper than its parent allows.
    #[error(
        "delegation {id} is {position} deep in the chain, its parent allows {allowed} below it"
    )]
    TooDeep {
        /// The delegation.
        id: String,
        /// Its position below the first (1 for the second).
        position: usize,
        /// What the one above it allows.
        allowed: u8,
    },
    /// Not for this mesh.
    #[error("delegation {id} may not be presented to mesh {receiver}")]
    Audience {
        /// The delegation.
        id: String,
        /// This mesh.
        receiver: MeshId,
    },
    /// A topic it does not cover.
    #[error("delegation {id} does not cover topic {topic}")]
    Topic {
        /// The delegation.
        id: String,
        /// The message's topic.
        topic: String,
    },
    /// Withdrawn.
    #[error("delegation {id} was revoked by mesh {issuer}")]
    Revoked {
        /// The delegation.
        id: String,
        /// Its issuer.
        issuer: MeshId,
    },
    /// Expired since it was verified.
    #[error("delegation {0} expired")]
    Expired(String),
}

/// Checks that `chain` (verified delegations, the origin's first) lets a message on `topic`
/// from mesh `origin`, relayed to mesh `receiver` by its authenticated peer `last_hop`, through:
/// each delegation issued by the previous one's delegate, the first by the origin, the last to
/// `last_hop`; each presentable to `receiver`, covering the topic, unexpired at `now` and not
/// revoked (`revoked(issuer, id)`); no delegation below one whose `depth` does not allow it;
/// and at most `max_len` of them.
#[allow(clippy::too_many_arguments)]
pub fn check_chain(
    chain: &[Delegation],
    origin: &MeshId,
    last_hop: &MeshId,
    receiver: &MeshId,
    topic: &Topic,
    max_len: usize,
    now: Timestamp,
    revoked: impl Fn(&MeshId, &str) -> bool,
) -> Result<(), ChainError> {
    let (Some(first), Some(last)) = (chain.first(), chain.last()) else {
        return Err(ChainError::Empty);
    };
    if chain.len() > max_len.min(usize::from(MAX_DEPTH) + 1) {
        return Err(ChainError::TooLong {
            len: chain.len(),
            max: max_len,
        });
    }
    if &first.issuer != origin {
        return Err(ChainError::NotOrigin {
            origin: origin.clone(),
            found: first.issuer.clone(),
        });
    }
    if &last.delegate != last_hop {
        return Err(ChainError::NotLastHop {
            delegate: last.delegate.clone(),
            last_hop: last_hop.clone(),
        });
    }
    for (i, d) in chain.iter().enumerate() {
        if i > 0 {
            let parent = &chain[i - 1];
            if d.issuer != parent.delegate {
                return Err(ChainError::Broken {
                    id: d.id.clone(),
                    issuer: d.issuer.clone(),
                    expected: parent.delegate.clone(),
                });
            }
        }
        // Every delegation above this one must allow as many below it as follow.
        let below = chain.len() - 1 - i;
        if usize::from(d.depth) < below {
            return Err(ChainError::TooDeep {
                id: chain[i + 1].id.clone(),
                position: i + 1,
                allowed: d.depth,
            });
        }
        if !d.audience.contains(receiver) {
            return Err(ChainError::Audience {
                id: d.id.clone(),
                receiver: receiver.clone(),
            });
        }
        if !d.covers(topic) {
            return Err(ChainError::Topic {
                id: d.id.clone(),
                topic: topic.as_str().to_owned(),
            });
        }
        if now.0 > d.expires.0.saturating_add(LEEWAY.as_millis() as u64) {
            return Err(ChainError::Expired(d.id.clone()));
        }
        if revoked(&d.issuer, &d.id) {
            return Err(ChainError::Revoked {
                id: d.id.clone(),
                issuer: d.issuer.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use meshfed_trust::{IssuingCa, MeshCa, P384PublicKey};

    use super::*;

    struct Mesh {
        root: MeshCa,
        issuing: IssuingCa,
        key: SigningKey,
        chain: Vec<Vec<u8>>,
    }

    const T0: u64 = 1_790_000_000;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn mesh(name: &str) -> Mesh {
        let now = at(T0);
        let root = MeshCa::generate(
            &name.parse().unwrap(),
            now,
            Duration::from_secs(86_400 * 30),
        )
        .unwrap();
        let issuing = root
            .issue_issuing_ca(now, Duration::from_secs(86_400 * 20))
            .unwrap();
        let key = SigningKey::generate().unwrap();
        // A node certificate of one hour: delegations outlive it.
        let cert = issuing
            .issue_node_cert(
                &"gw1".parse().unwrap(),
                &P384PublicKey::of(&key),
                now,
                Duration::from_secs(3600),
            )
            .unwrap();
        let chain = vec![cert.der().to_vec(), issuing.cert_der().to_vec()];
        Mesh {
            root,
            issuing,
            key,
            chain,
        }
    }

    fn id(s: &str) -> MeshId {
        s.parse().unwrap()
    }

    fn grant(to: &str, audience: &[&str], topics: &[&str], depth: u8) -> DelegationGrant {
        DelegationGrant {
            delegate: id(to),
            audience: audience.iter().map(|a| id(a)).collect(),
            topics: topics.iter().map(|t| t.parse().unwrap()).collect(),
            depth,
            ttl: Duration::from_secs(86_400),
        }
    }

    fn issue_by(m: &Mesh, by: &str, g: &DelegationGrant) -> (String, Delegation) {
        issue(&id(by), g, &m.key, &m.chain, at(T0 + 60)).unwrap()
    }

    fn bundles<'a>(meshes: &'a [(&str, &Mesh)]) -> impl Fn(&MeshId) -> Option<TrustBundle> + 'a {
        move |mesh| {
            meshes
                .iter()
                .find(|(name, _)| mesh.as_str() == *name)
                .map(|(_, m)| m.root.trust_bundle().clone())
        }
    }

    #[test]
    fn a_delegation_verifies_after_its_node_certificate_expired_and_names_what_it_grants() {
        let c = mesh("supplier-c");
        let g = grant("hub-b", &["plant-a"], &["parts/#"], 1);
        let (token, issued) = issue_by(&c, "supplier-c", &g);
        let hours_later = at(T0 + 5 * 3600);
        let verified = verify(&token, bundles(&[("supplier-c", &c)]), hours_later).unwrap();
        assert_eq!(verified, issued);
        assert_eq!(verified.issuer, id("supplier-c"));
        assert_eq!(verified.delegate, id("hub-b"));
        assert_eq!(verified.audience, vec![id("plant-a")]);
        assert_eq!(verified.depth, 1);
        assert!(verified.covers(&"parts/gear/7".parse().unwrap()));
        assert!(!verified.covers(&"orders/1".parse().unwrap()));
        assert_eq!(
            verify(&token, bundles(&[("supplier-c", &c)]), at(T0 + 2 * 86_400)),
            Err(DelegationError::Expired(issued.id))
        );
    }

    #[test]
    fn a_delegation_of_another_ca_a_changed_claim_or_an_unknown_issuer_is_refused() {
        let c = mesh("supplier-c");
        let impostor = mesh("supplier-c");
        let g = grant("hub-b", &["plant-a"], &["parts/#"], 0);
        let (token, _) = issue_by(&impostor, "supplier-c", &g);
        let err = verify(&token, bundles(&[("supplier-c", &c)]), at(T0 + 120)).unwrap_err();
        assert!(matches!(err, DelegationError::Untrusted { .. }), "{err}");
        let (token, _) = issue_by(&c, "supplier-c", &g);
        assert_eq!(
            verify(&token, bundles(&[]), at(T0 + 120)),
            Err(DelegationError::UnknownIssuer(id("supplier-c")))
        );
        // Widen the topics without the signer: the signature no longer verifies.
        let parts: Vec<&str> = token.split('.').collect();
        let claims = String::from_utf8(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(parts[1])
                .unwrap(),
        )
        .unwrap()
        .replace("parts/#", "#");
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims),
            parts[2]
        );
        assert_eq!(
            verify(&forged, bundles(&[("supplier-c", &c)]), at(T0 + 120)),
            Err(DelegationError::BadSignature)
        );
        // A delegation signed by a node of another mesh is not that mesh's.
        let b = mesh("hub-b");
        let (token, _) = issue(&id("supplier-c"), &g, &b.key, &b.chain, at(T0 + 60)).unwrap();
        let err = verify(&token, bundles(&[("supplier-c", &b)]), at(T0 + 120)).unwrap_err();
        assert!(matches!(err, DelegationError::Untrusted { .. }), "{err}");
        assert!(err.to_string().contains("mesh hub-b"), "{err}");
    }

    #[test]
    fn a_grant_out_of_bounds_is_refused_before_signing() {
        let c = mesh("supplier-c");
        let mut g = grant("supplier-c", &["plant-a"], &["parts/#"], 0);
        let refused = |g: &DelegationGrant| {
            issue(&id("supplier-c"), g, &c.key, &c.chain, at(T0)).unwrap_err()
        };
        assert_eq!(refused(&g), DelegationError::ToItself(id("supplier-c")));
        g.delegate = id("hub-b");
        g.depth = MAX_DEPTH + 1;
        assert_eq!(refused(&g), DelegationError::Depth(MAX_DEPTH + 1));
        g.depth = 0;
        g.topics.clear();
        assert_eq!(refused(&g), DelegationError::NoTopics);
        let _ = &c.issuing;
    }

    fn verified(m: &Mesh, by: &str, g: &DelegationGrant) -> Delegation {
        issue_by(m, by, g).1
    }

    #[test]
    fn a_chain_holds_to_origin_last_hop_depth_audience_topic_and_revocation() {
        let c = mesh("supplier-c");
        let b = mesh("hub-b");
        let topic: Topic = "parts/gear/7".parse().unwrap();
        let check = |chain: &[Delegation], last_hop: &str, revoked: &[&str]| {
            check_chain(
                chain,
                &id("supplier-c"),
                &id(last_hop),
                &id("plant-a"),
                &topic,
                3,
                Timestamp((T0 + 120) * 1000),
                |_, id| revoked.contains(&id),
            )
        };
        let c_to_b = verified(
            &c,
            "supplier-c",
            &grant("hub-b", &["plant-a"], &["parts/#"], 0),
        );
        assert_eq!(check(std::slice::from_ref(&c_to_b), "hub-b", &[]), Ok(()));
        assert!(matches!(
            check(std::slice::from_ref(&c_to_b), "hub-d", &[]),
            Err(ChainError::NotLastHop { .. })
        ));
        assert!(matches!(
            check(
                std::slice::from_ref(&c_to_b),
                "hub-b",
                &[c_to_b.id.as_str()]
            ),
            Err(ChainError::Revoked { .. })
        ));
        assert_eq!(check(&[], "hub-b", &[]), Err(ChainError::Empty));
        // B passes it on to D: C's depth 0 does not allow it, depth 1 does.
        let b_to_d = verified(
            &b,
            "hub-b",
            &grant("hub-d", &["plant-a"], &["parts/gear/#"], 0),
        );
        assert!(matches!(
            check(&[c_to_b.clone(), b_to_d.clone()], "hub-d", &[]),
            Err(ChainError::TooDeep {
                position: 1,
                allowed: 0,
                ..
            })
        ));
        let deep = verified(
            &c,
            "supplier-c",
            &grant("hub-b", &["plant-a"], &["parts/#"], 1),
        );
        assert_eq!(check(&[deep.clone(), b_to_d.clone()], "hub-d", &[]), Ok(()));
        // A link not issued by the previous delegate breaks the chain.
        assert!(matches!(
            check(&[b_to_d.clone(), deep.clone()], "hub-b", &[]),
            Err(ChainError::NotOrigin { .. })
        ));
        // Every link must cover the topic and name this mesh.
        let narrow = verified(
            &b,
            "hub-b",
            &grant("hub-d", &["plant-a"], &["parts/bolt/#"], 0),
        );
        assert!(matches!(
            check(&[deep.clone(), narrow], "hub-d", &[]),
            Err(ChainError::Topic { .. })
        ));
        let elsewhere = verified(&b, "hub-b", &grant("hub-d", &["plant-x"], &["parts/#"], 0));
        assert!(matches!(
            check(&[deep, elsewhere], "hub-d", &[]),
            Err(ChainError::Audience { .. })
        ));
    }
}
