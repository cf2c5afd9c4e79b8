//! Component credentials (DESIGN.md §2 Tokens, §3.7 component enforcement): JWTs a gateway
//! issues to its own mesh's components, and the checks the API makes with them.
//!
//! Each gateway has an **issuer key** (ECDSA P-384, `DIR/tokens/issuer.key`, mode 0600, made by
//! `meshfed init` or at the first start of an older node directory). It is not the node's TLS
//! key: that one is short-lived and replaced at each renewal, while a token must keep
//! verifying until it expires. A token is a JWT whose header pins `alg` ES384 and names the key
//! (`kid`); its claims say who it is for (`sub`, `roles`, `attrs`) and what it may do (`topics`,
//! `actions`), issued by `meshfed:<mesh>/<node>` for the audience `meshfed:<mesh>`, with
//! `iat`, `exp` and a random `jti` by which it can be revoked.
//!
//! What it is not: the admin token (a random secret in the node directory, still accepted
//! as it was), a policy engine (the [`Principal`] a request carries is what one will read),
//! nor tokens from other meshes (credential mapping, §3.8). Signing and verifying are
//! `jsonwebtoken`'s over aws-lc-rs; times come from the node's clock, never the library's.
//!
//! Where to start reading: [`Issuer::issue`], [`Issuer::verify`], then [`Principal`].

pub mod delegation;
#[cfg(test)]
mod tests;
pub(crate) mod translate;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::RwLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use meshfed_proto::crypto::{CryptoError, SigningKey, random_fill, sha384};
use meshfed_proto::envelope::Timestamp;
use meshfed_proto::{MeshId, NodeName, Topic, TopicPattern};
use meshfed_trust::files::IfExists;
use meshfed_trust::{FileKeyStore, KeyName, KeyStore as _, KeyStoreError};
use serde::{Deserialize, Serialize};

/// Where the issuer key lives in the node directory.
pub const ISSUER_KEY: &str = "tokens/issuer.key";

/// How long a token lives unless asked otherwise.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// The longest a token may live: revocation is the way to end one early, and a short life
/// bounds what a lost one costs.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// The clock skew tolerated between issuer and checker for `exp`, `nbf` and `iat`.
pub const LEEWAY: Duration = Duration::from_secs(30);

/// The role that makes a token count as the admin token.
pub const ADMIN_ROLE: &str = "admin";

/// What a token may do with its topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Send messages (`POST /v1/messages`, the publish WebSocket).
    Publish,
    /// Receive them (`GET /v1/messages/stream`).
    Subscribe,
    /// Request–reply (granted and recorded; no route uses it yet).
    Request,
}

impl Action {
    /// Every action, in order.
    pub const ALL: [Self; 3] = [Self::Publish, Self::Subscribe, Self::Request];

    /// Its name in claims and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Publish => "publish",
            Self::Subscribe => "subscribe",
            Self::Request => "request",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Action {
    type Err = GrantError;

    fn from_str(s: &str) -> Result<Self, GrantError> {
        Self::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| GrantError::UnknownAction(s.chars().take(40).collect()))
    }
}

/// A role name: 1 to 64 letters, digits, `.`, `_`, `-` or `:`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Role(String);

impl Role {
    /// The role as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Role {
    type Err = GrantError;

    fn from_str(s: &str) -> Result<Self, GrantError> {
        let ok = (1..=64).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'));
        if !ok {
            return Err(GrantError::BadRole(s.chars().take(80).collect()));
        }
        Ok(Self(s.to_owned()))
    }
}

impl<'de> Deserialize<'de> for Role {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A token's subject: the component it is for, 1 to 128 characters without spaces or
/// control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Subject(String);

impl Subject {
    /// The subject as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Subject {
    type Err = GrantError;

    fn from_str(s: &str) -> Result<Self, GrantError> {
        let ok = (1..=128).contains(&s.chars().count())
            && !s.chars().any(|c| c.is_control() || c.is_whitespace());
        if !ok {
            return Err(GrantError::BadSubject(s.chars().take(80).collect()));
        }
        Ok(Self(s.to_owned()))
    }
}

impl<'de> Deserialize<'de> for Subject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// What a token to issue grants: made only through [`Grant::new`], so it is always within
/// the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    subject: Subject,
    roles: Vec<Role>,
    attributes: BTreeMap<String, String>,
    topics: Vec<TopicPattern>,
    actions: Vec<Action>,
    ttl: Duration,
    act: Option<Actor>,
}

/// Who a translated token acts for (RFC 8693 §4.1, `act`): the partner's sender it was
/// translated from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The sender's subject in its mesh.
    pub sub: String,
    /// Its mesh, `meshfed:<mesh>`.
    pub iss: String,
}

/// A token could not be granted as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// Not a subject.
    #[error("invalid subject {0:?}: 1 to 128 characters without spaces or control characters")]
    BadSubject(String),
    /// Not a role name.
    #[error("invalid role {0:?}: 1 to 64 letters, digits, '.', '_', '-' or ':'")]
    BadRole(String),
    /// Not an attribute, or too many.
    #[error(
        "invalid attribute {0:?}: at most 32 NAME=VALUE, the name 1 to 64 letters, digits, '.', '_', '-' or ':', the value at most 256 bytes without control characters"
    )]
    BadAttribute(String),
    /// Not an action.
    #[error("unknown action {0:?}: use publish, subscribe or request")]
    UnknownAction(String),
    /// A lifetime out of bounds.
    #[error("ttl {}: a token lives from 1 s to {} days", humantime::format_duration(*.0), MAX_TOKEN_TTL.as_secs() / 86_400)]
    Ttl(Duration),
    /// Actions without topics to use them on.
    #[error("actions {0} need topics: give the topic patterns the token may use")]
    ActionsWithoutTopics(String),
    /// A token that would allow nothing.
    #[error(
        "the token would allow nothing: give actions (publish, subscribe, request) with topics, or the role admin"
    )]
    Nothing,
}

impl Grant {
    /// A grant of `actions` on `topics` to `subject` with `roles`, for `ttl`.
    pub fn new(
        subject: Subject,
        roles: Vec<Role>,
        topics: Vec<TopicPattern>,
        mut actions: Vec<Action>,
        ttl: Duration,
    ) -> Result<Self, GrantError> {
        if ttl < Duration::from_secs(1) || ttl > MAX_TOKEN_TTL {
            return Err(GrantError::Ttl(ttl));
        }
        actions.sort();
        actions.dedup();
        let admin = roles.iter().any(|r| r.as_str() == ADMIN_ROLE);
        if !actions.is_empty() && topics.is_empty() {
            let names: Vec<&str> = actions.iter().map(|a| a.name()).collect();
            return Err(GrantError::ActionsWithoutTopics(names.join(",")));
        }
        if actions.is_empty() && !admin {
            return Err(GrantError::Nothing);
        }
        Ok(Self {
            subject,
            roles,
            attributes: BTreeMap::new(),
            topics,
            actions,
            ttl,
            act: None,
        })
    }

    /// This grant, for a token that acts for a partner's sender (credential translation).
    pub fn acting_for(mut self, actor: Actor) -> Self {
        self.act = Some(actor);
        self
    }

    /// This grant with `attributes` (`site=north`): the component's attributes, which cross
    /// with what it sends and which identity mapping and access rules may match on.
    pub fn with_attributes(
        mut self,
        attributes: BTreeMap<String, String>,
    ) -> Result<Self, GrantError> {
        if attributes.len() > 32 {
            return Err(GrantError::BadAttribute(format!(
                "{} attributes",
                attributes.len()
            )));
        }
        for (name, value) in &attributes {
            let name_ok = name.parse::<Role>().is_ok();
            let value_ok = value.len() <= 256 && !value.chars().any(char::is_control);
            if !name_ok || !value_ok {
                return Err(GrantError::BadAttribute(
                    format!("{name}={value}").chars().take(80).collect(),
                ));
            }
        }
        self.attributes = attributes;
        Ok(self)
    }
}

/// The claims of a token this gateway issues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The issuing gateway, `meshfed:<mesh>/<node>`.
    pub iss: String,
    /// The mesh it is for, `meshfed:<mesh>`.
    pub aud: String,
    /// The component.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Issue time, seconds since the Unix epoch.
    pub iat: u64,
    /// The token's id, by which it is revoked.
    pub jti: String,
    /// The component's roles.
    pub roles: Vec<Role>,
    /// The component's attributes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attrs: BTreeMap<String, String>,
    /// The topic patterns it may use.
    pub topics: Vec<TopicPattern>,
    /// What it may do with them.
    pub actions: Vec<Action>,
    /// The partner's sender a translated token acts for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Actor>,
}

impl Claims {
    /// When it was issued, as a protocol timestamp.
    pub fn issued(&self) -> Timestamp {
        Timestamp(self.iat.saturating_mul(1000))
    }

    /// When it expires, as a protocol timestamp.
    pub fn expires(&self) -> Timestamp {
        Timestamp(self.exp.saturating_mul(1000))
    }
}

/// A bearer token that does not authenticate, named as what is wrong with it. Its text never
/// includes the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Neither the admin token nor three base64url parts with a JSON header.
    #[error("neither the admin token (the node directory's admin.token) nor a JWT")]
    NotAJwt,
    /// A JWT signed (or not) with another algorithm than ES384.
    #[error("algorithm {0:?} is refused: tokens are signed with ES384")]
    AlgorithmRefused(String),
    /// A `kid` that is not this gateway's issuer key.
    #[error("the token names key {0:?}, which is not this gateway's issuer key")]
    UnknownKey(String),
    /// The signature does not verify with the issuer key.
    #[error("the token's signature does not verify")]
    BadSignature,
    /// A required claim is absent.
    #[error("the token has no {0:?} claim")]
    MissingClaim(&'static str),
    /// A claim that does not parse.
    #[error("the token's claims do not parse: {0}")]
    BadClaims(String),
    /// Issued by someone else.
    #[error("the token was issued by {0:?}, not this gateway")]
    WrongIssuer(String),
    /// Meant for another audience.
    #[error("the token is for another audience, not this mesh")]
    WrongAudience,
    /// Expired.
    #[error("the token expired")]
    Expired,
    /// Issued in the future, or not valid before a later time.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// Revoked.
    #[error("token {0} was revoked")]
    Revoked(String),
}

impl TokenError {
    /// The label this refusal is counted under.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotAJwt => "malformed",
            Self::AlgorithmRefused(_) => "algorithm",
            Self::UnknownKey(_) => "unknown_key",
            Self::BadSignature => "signature",
            Self::MissingClaim(_) | Self::BadClaims(_) => "claims",
            Self::WrongIssuer(_) => "issuer",
            Self::WrongAudience => "audience",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::Revoked(_) => "revoked",
        }
    }

    /// Every label of [`TokenError::reason`].
    pub const REASONS: [&'static str; 10] = [
        "malformed",
        "algorithm",
        "unknown_key",
        "signature",
        "claims",
        "issuer",
        "audience",
        "expired",
        "not_yet_valid",
        "revoked",
    ];
}

/// A token could not be made.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// No randomness for its id.
    #[error("cannot make a token id")]
    Random(#[from] CryptoError),
    /// The signer failed.
    #[error("cannot sign the token: {0}")]
    Sign(String),
}

/// This gateway's token issuer: its key, the key's id, and the names it issues under.
#[derive(Clone)]
pub struct Issuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
    iss: String,
    aud: String,
}

impl fmt::Debug for Issuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issuer")
            .field("kid", &self.kid)
            .field("iss", &self.iss)
            .finish_non_exhaustive()
    }
}

/// The issuer key of the node directory `dir` could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum IssuerKeyError {
    /// Reading or writing it failed.
    #[error("token issuer key")]
    Store(#[from] KeyStoreError),
    /// A new one could not be made, or the stored one exported.
    #[error("token issuer key")]
    Crypto(#[from] CryptoError),
}

/// The name of the issuer key in the node directory's key store.
fn issuer_key_name() -> KeyName {
    // Invariant: ISSUER_KEY is a valid key name (`issuer_key_name_is_valid` checks it).
    ISSUER_KEY
        .parse()
        .unwrap_or_else(|e| unreachable!("ISSUER_KEY: {e}"))
}

/// Creates the issuer key of the node directory `dir` unless it exists (or, with
/// [`IfExists::Replace`], anew). Says whether it wrote one.
pub fn create_issuer_key(dir: &Path, if_exists: IfExists) -> Result<bool, IssuerKeyError> {
    let keys = FileKeyStore::new(dir);
    let name = issuer_key_name();
    if if_exists == IfExists::Refuse && keys.path(&name).symlink_metadata().is_ok() {
        return Ok(false);
    }
    keys.store(&name, &SigningKey::generate()?, if_exists)?;
    Ok(true)
}

impl Issuer {
    /// The issuer of node `node` of mesh `mesh` with the key in `dir`, made there first if
    /// missing (a node directory from before component tokens).
    pub fn load_or_create(
        dir: &Path,
        mesh: &MeshId,
        node: &NodeName,
    ) -> Result<Self, IssuerKeyError> {
        if create_issuer_key(dir, IfExists::Refuse)? {
            tracing::info!(file = %dir.join(ISSUER_KEY).display(), "created the token issuer key");
        }
        let key = FileKeyStore::new(dir).load(&issuer_key_name())?;
        Ok(Self::new(&key, mesh, node)?)
    }

    /// The issuer of node `node` of mesh `mesh` signing with `key`.
    pub fn new(key: &SigningKey, mesh: &MeshId, node: &NodeName) -> Result<Self, CryptoError> {
        let public = key.public_key();
        let digest = sha384(public);
        let kid = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16]);
        Ok(Self {
            encoding: EncodingKey::from_ec_der(&key.to_pkcs8()?),
            decoding: DecodingKey::from_ec_der(public),
            kid,
            iss: format!("meshfed:{mesh}/{node}"),
            aud: format!("meshfed:{mesh}"),
        })
    }

    /// The issuer key's id, as tokens name it (`kid`): base64url of the first 16 bytes of the
    /// SHA-384 of its public key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The issuer's name (`iss`).
    pub fn issuer(&self) -> &str {
        &self.iss
    }

    /// The audience tokens are for (`aud`).
    pub fn audience(&self) -> &str {
        &self.aud
    }

    /// A signed token for `grant`, issued at `now`, and its claims.
    pub fn issue(&self, grant: &Grant, now: SystemTime) -> Result<(String, Claims), IssueError> {
        let mut id = [0u8; 16];
        random_fill(&mut id)?;
        let iat = seconds(now);
        let claims = Claims {
            iss: self.iss.clone(),
            aud: self.aud.clone(),
            sub: grant.subject.0.clone(),
            exp: iat.saturating_add(grant.ttl.as_secs()),
            iat,
            jti: hex::encode(id),
            roles: grant.roles.clone(),
            attrs: grant.attributes.clone(),
            topics: grant.topics.clone(),
            actions: grant.actions.clone(),
            act: grant.act.clone(),
        };
        let mut header = Header::new(Algorithm::ES384);
        header.kid = Some(self.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map_err(|e| IssueError::Sign(e.to_string()))?;
        Ok((token, claims))
    }

    /// The claims of `token` if this issuer issued it and it is valid at `now` (within
    /// [`LEEWAY`]). Revocation is the caller's check ([`Credentials`]).
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<Claims, TokenError> {
        let header = peek_header(token)?;
        if header.alg != "ES384" {
            return Err(TokenError::AlgorithmRefused(header.alg));
        }
        match header.kid {
            Some(kid) if kid == self.kid => {}
            Some(kid) => return Err(TokenError::UnknownKey(kid)),
            None => return Err(TokenError::MissingClaim("kid")),
        }
        let mut validation = Validation::new(Algorithm::ES384);
        // Times are checked below on the node's clock; presence and audience too, to name
        // what is wrong.
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let raw = jsonwebtoken::decode::<RawClaims>(token, &self.decoding, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::BadSignature,
                jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => {
                    TokenError::AlgorithmRefused("?".into())
                }
                jsonwebtoken::errors::ErrorKind::Json(e) => TokenError::BadClaims(e.to_string()),
                _ => TokenError::NotAJwt,
            })?
            .claims;
        raw.check(self, seconds(now))
    }
}

/// The header fields read before the signature is checked: which algorithm and key.
#[derive(Deserialize)]
struct PeekedHeader {
    alg: String,
    kid: Option<String>,
}

/// The header of `token`, read only to refuse a wrong algorithm or key by name before the
/// library checks anything else.
fn peek_header(token: &str) -> Result<PeekedHeader, TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::NotAJwt);
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenError::NotAJwt)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::NotAJwt)
}

/// The claims as a token carries them, each optional so that a missing one is named.
#[derive(Deserialize)]
struct RawClaims {
    iss: Option<String>,
    aud: Option<Audience>,
    sub: Option<String>,
    exp: Option<u64>,
    iat: Option<u64>,
    nbf: Option<u64>,
    jti: Option<String>,
    #[serde(default)]
    roles: Vec<Role>,
    #[serde(default)]
    attrs: BTreeMap<String, String>,
    #[serde(default)]
    topics: Vec<TopicPattern>,
    #[serde(default)]
    actions: Vec<Action>,
    #[serde(default)]
    act: Option<Actor>,
}

/// `aud`: one audience or several (RFC 7519 §4.1.3).
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl RawClaims {
    fn check(self, issuer: &Issuer, now: u64) -> Result<Claims, TokenError> {
        let leeway = LEEWAY.as_secs();
        let iss = self.iss.ok_or(TokenError::MissingClaim("iss"))?;
        if iss != issuer.iss {
            return Err(TokenError::WrongIssuer(iss.chars().take(80).collect()));
        }
        let aud = match self.aud.ok_or(TokenError::MissingClaim("aud"))? {
            Audience::One(a) => a == issuer.aud,
            Audience::Many(all) => all.contains(&issuer.aud),
        };
        if !aud {
            return Err(TokenError::WrongAudience);
        }
        let exp = self.exp.ok_or(TokenError::MissingClaim("exp"))?;
        let jti = self.jti.ok_or(TokenError::MissingClaim("jti"))?;
        let sub = self.sub.ok_or(TokenError::MissingClaim("sub"))?;
        let iat = self.iat.ok_or(TokenError::MissingClaim("iat"))?;
        if now > exp.saturating_add(leeway) {
            return Err(TokenError::Expired);
        }
        let not_before = self.nbf.unwrap_or(iat).max(iat);
        if not_before > now.saturating_add(leeway) {
            return Err(TokenError::NotYetValid);
        }
        Ok(Claims {
            iss,
            aud: issuer.aud.clone(),
            sub,
            exp,
            iat,
            jti,
            roles: self.roles,
            attrs: self.attrs,
            topics: self.topics,
            actions: self.actions,
            act: self.act,
        })
    }
}

/// Whole seconds since the Unix epoch.
fn seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// Who made a request, as the API's guard found it: the admin token, or a component token's
/// subject, roles and id with what it may do. Handlers read it from the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The component (`admin` for the admin token).
    pub subject: String,
    /// Its roles.
    pub roles: Vec<Role>,
    /// Its attributes (none for the admin token).
    pub attributes: BTreeMap<String, String>,
    /// The token's id; `None` for the admin token.
    pub token_id: Option<String>,
    /// When the token expires, in seconds since the Unix epoch; `None` for the admin token.
    pub expires: Option<u64>,
    access: Access,
}

/// What a principal may do.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Access {
    /// Everything.
    Admin,
    /// Its actions on its topics, nothing else.
    Scoped {
        topics: Vec<TopicPattern>,
        actions: Vec<Action>,
    },
}

/// A principal may not do what it asked; the text says what it may.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Forbidden(String);

impl Principal {
    /// The holder of the admin token.
    pub fn admin() -> Self {
        Self {
            subject: "admin".into(),
            roles: vec![Role(ADMIN_ROLE.into())],
            attributes: BTreeMap::new(),
            token_id: None,
            expires: None,
            access: Access::Admin,
        }
    }

    /// The holder of a token with `claims`: admin if it has the admin role.
    pub fn of(claims: Claims) -> Self {
        let admin = claims.roles.iter().any(|r| r.as_str() == ADMIN_ROLE);
        Self {
            subject: claims.sub,
            roles: claims.roles,
            attributes: claims.attrs,
            token_id: Some(claims.jti),
            expires: Some(claims.exp),
            access: if admin {
                Access::Admin
            } else {
                Access::Scoped {
                    topics: claims.topics,
                    actions: claims.actions,
                }
            },
        }
    }

    /// Whether it may do everything.
    pub fn is_admin(&self) -> bool {
        self.access == Access::Admin
    }

    /// Whether it may do `action` at all.
    pub fn may(&self, action: Action) -> Result<(), Forbidden> {
        match &self.access {
            Access::Admin => Ok(()),
            Access::Scoped { actions, .. } if actions.contains(&action) => Ok(()),
            Access::Scoped { .. } => Err(Forbidden(format!(
                "the token of {} does not allow {action} (it allows: {})",
                self.subject,
                self.allowed()
            ))),
        }
    }

    /// Whether it may publish on `topic`.
    pub fn may_publish(&self, topic: &Topic) -> Result<(), Forbidden> {
        self.may(Action::Publish)?;
        match &self.access {
            Access::Scoped { topics, .. } if !topics.iter().any(|p| p.matches(topic)) => {
                Err(Forbidden(format!(
                    "the token of {} may not publish on {topic}: its topics are {}",
                    self.subject,
                    self.topics()
                )))
            }
            _ => Ok(()),
        }
    }

    /// Whether it may subscribe to `pattern` (`None`: every topic).
    pub fn may_subscribe(&self, pattern: Option<&TopicPattern>) -> Result<(), Forbidden> {
        self.may(Action::Subscribe)?;
        let Access::Scoped { topics, .. } = &self.access else {
            return Ok(());
        };
        match pattern {
            Some(p) if topics.iter().any(|t| p.is_within(t)) => Ok(()),
            Some(p) => Err(Forbidden(format!(
                "the token of {} may not subscribe to {p}: give a topic pattern within {}",
                self.subject,
                self.topics()
            ))),
            None => Err(Forbidden(format!(
                "the token of {} may not subscribe to every topic: give ?topic= a pattern within {}",
                self.subject,
                self.topics()
            ))),
        }
    }

    /// A refusal of an admin-only request.
    pub fn admin_only(&self, what: &str) -> Forbidden {
        Forbidden(format!(
            "{what} needs the admin token or a token with the admin role; the token of {} may only {} on {}",
            self.subject,
            self.allowed(),
            self.topics()
        ))
    }

    fn allowed(&self) -> String {
        match &self.access {
            Access::Admin => "everything".into(),
            Access::Scoped { actions, .. } if actions.is_empty() => "nothing".into(),
            Access::Scoped { actions, .. } => actions
                .iter()
                .map(|a| a.name())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    fn topics(&self) -> String {
        match &self.access {
            Access::Admin => "every topic".into(),
            Access::Scoped { topics, .. } => topics
                .iter()
                .map(TopicPattern::as_str)
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

/// What the gateway checks bearer tokens with: its issuer and the revoked token ids (each
/// until its token expires), loaded from the store at start.
#[derive(Debug)]
pub(crate) struct Credentials {
    pub(crate) issuer: Issuer,
    /// Revoked token ids and when each token expires.
    revoked: RwLock<HashMap<String, Timestamp>>,
}

impl Credentials {
    /// `issuer` with the revocations `revoked` (ids and expiries).
    pub(crate) fn new(
        issuer: Issuer,
        revoked: impl IntoIterator<Item = (String, Timestamp)>,
    ) -> Self {
        Self {
            issuer,
            revoked: RwLock::new(revoked.into_iter().collect()),
        }
    }

    /// The principal holding the component token `token` at `now`.
    pub(crate) fn check(&self, token: &str, now: SystemTime) -> Result<Principal, TokenError> {
        let claims = self.issuer.verify(token, now)?;
        if self
            .revoked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&claims.jti)
        {
            return Err(TokenError::Revoked(claims.jti));
        }
        Ok(Principal::of(claims))
    }

    /// Whether the token `principal` authenticated with still holds at `now`: neither revoked
    /// nor expired since. What a long-lived request (a WebSocket) checks as it goes.
    pub(crate) fn recheck(&self, principal: &Principal, now: SystemTime) -> Result<(), TokenError> {
        let (Some(jti), Some(exp)) = (&principal.token_id, principal.expires) else {
            return Ok(());
        };
        if self
            .revoked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(jti)
        {
            return Err(TokenError::Revoked(jti.clone()));
        }
        if seconds(now) > exp.saturating_add(LEEWAY.as_secs()) {
            return Err(TokenError::Expired);
        }
        Ok(())
    }

    /// Refuses token `jti` (which expires at `expires`) from now on; forgets revocations of
    /// tokens expired before `now` less the leeway.
    pub(crate) fn revoke(&self, jti: String, expires: Timestamp, now: Timestamp) {
        let mut revoked = self.revoked.write().unwrap_or_else(|e| e.into_inner());
        let horizon = prune_horizon(now);
        revoked.retain(|_, until| *until >= horizon);
        revoked.insert(jti, expires);
    }
}

/// Records of tokens that expired before this are no longer needed: such tokens are refused
/// as expired.
pub(crate) fn prune_horizon(now: Timestamp) -> Timestamp {
    let leeway = u64::try_from(LEEWAY.as_millis()).unwrap_or(u64::MAX);
    // One more second: `exp` is in whole seconds.
    Timestamp(now.0.saturating_sub(leeway + 1000))
}
