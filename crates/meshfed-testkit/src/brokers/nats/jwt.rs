//! NATS decentralised-auth credentials made in Rust: an [`Operator`] (with its system
//! account), [`Account`]s it signs and [`User`]s an account signs, as NATS JWT v2 tokens, and
//! the `.creds` file a client reads.
//!
//! A token is `BASE64URL(header) . BASE64URL(claims) . BASE64URL(signature)` without padding:
//! the header is `{"typ":"JWT","alg":"ed25519-nkey"}`, the signature is Ed25519 over the first
//! two parts by the issuer's nkey, and the claims are `jti`, `iat`, `iss`, `sub`, `name` and
//! `nats` (`type` `operator` | `account` | `user`, `version` 2, and the limits). `jti` is what
//! nats-io/jwt makes it: base32 (no padding) of the SHA-512/256 of the claims without it. The
//! server checks the header, the signature, the issuer's kind (an operator signs accounts, an
//! account signs users) and the chain up to the trusted operator; it does not check `jti`.
//!
//! What it is not: nsc. No signing keys, exports, imports, revocations or expiry; every limit
//! is unlimited (-1), JetStream included for ordinary accounts.

#![expect(
    clippy::expect_used,
    reason = "test support: a key that cannot sign or a claim that cannot be encoded is a broken test setup"
)]

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nkeys::KeyPair;
use serde_json::{Value, json};

/// The JWT header of every NATS JWT v2.
const HEADER: &str = r#"{"typ":"JWT","alg":"ed25519-nkey"}"#;

/// An operator: the key a server in operator mode trusts, and its system account.
#[derive(Debug)]
pub struct Operator {
    key: KeyPair,
    name: String,
    system_account: Account,
}

/// An account, signed by an [`Operator`].
#[derive(Debug)]
pub struct Account {
    key: KeyPair,
    name: String,
    jwt: String,
}

/// A user, signed by an [`Account`]: what a client connects as.
#[derive(Debug)]
pub struct User {
    key: KeyPair,
    jwt: String,
}

impl Operator {
    /// A fresh operator called `name` and its system account `SYS`.
    pub fn generate(name: &str) -> Self {
        let key = KeyPair::new_operator();
        let system_account = Account::signed_by(&key, "SYS", AccountKind::System);
        Self {
            key,
            name: name.to_owned(),
            system_account,
        }
    }

    /// The operator's public nkey (`O…`).
    pub fn public_key(&self) -> String {
        self.key.public_key()
    }

    /// The operator JWT (self-signed, naming the system account): what the server's
    /// `operator` setting points at.
    pub fn jwt(&self) -> String {
        let claims = json!({
            "name": self.name,
            "sub": self.key.public_key(),
            "nats": {
                "system_account": self.system_account.public_key(),
                "type": "operator",
                "version": 2,
            },
        });
        encode(claims, &self.key)
    }

    /// The system account (`system_account` of the server).
    pub fn system_account(&self) -> &Account {
        &self.system_account
    }

    /// A new account called `name`, signed by this operator, with no limits (JetStream
    /// enabled).
    pub fn account(&self, name: &str) -> Account {
        Account::signed_by(&self.key, name, AccountKind::Ordinary)
    }
}

/// Whether an account may use JetStream: the system account may not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AccountKind {
    System,
    Ordinary,
}

impl Account {
    fn signed_by(operator: &KeyPair, name: &str, kind: AccountKind) -> Self {
        let key = KeyPair::new_account();
        let mut limits = json!({
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
            "wildcards": true, "conn": -1, "leaf": -1,
        });
        if kind == AccountKind::Ordinary {
            for (limit, value) in [
                ("mem_storage", -1),
                ("disk_storage", -1),
                ("streams", -1),
                ("consumer", -1),
            ] {
                limits[limit] = json!(value);
            }
        }
        let claims = json!({
            "name": name,
            "sub": key.public_key(),
            "nats": {
                "limits": limits,
                "default_permissions": { "pub": {}, "sub": {} },
                "type": "account",
                "version": 2,
            },
        });
        let jwt = encode(claims, operator);
        Self {
            key,
            name: name.to_owned(),
            jwt,
        }
    }

    /// The account's public nkey (`A…`).
    pub fn public_key(&self) -> String {
        self.key.public_key()
    }

    /// The account's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The account JWT, signed by the operator: what the server's `resolver_preload` holds.
    pub fn jwt(&self) -> &str {
        &self.jwt
    }

    /// A new user called `name`, signed by this account, with no limits or permissions.
    pub fn user(&self, name: &str) -> User {
        let key = KeyPair::new_user();
        let claims = json!({
            "name": name,
            "sub": key.public_key(),
            "nats": {
                "pub": {}, "sub": {},
                "subs": -1, "data": -1, "payload": -1,
                "type": "user",
                "version": 2,
            },
        });
        let jwt = encode(claims, &self.key);
        User { key, jwt }
    }
}

impl User {
    /// The user's public nkey (`U…`).
    pub fn public_key(&self) -> String {
        self.key.public_key()
    }

    /// The user's nkey seed (`SU…`): the secret that signs the server's nonce.
    pub fn seed(&self) -> String {
        self.key.seed().expect("a generated user key has a seed")
    }

    /// The user JWT, signed by the account.
    pub fn jwt(&self) -> &str {
        &self.jwt
    }

    /// The `.creds` file contents (user JWT and seed, in the decorated form `nsc` writes and
    /// clients such as async-nats's `ConnectOptions::with_credentials_file` read).
    pub fn creds(&self) -> String {
        format!(
            "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\
             NKEYs are sensitive and should be treated as secrets.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
             *************************************************************\n",
            jwt = self.jwt,
            seed = self.seed(),
        )
    }
}

/// Completes `claims` (an object with `name`, `sub` and `nats`) with `iss`, `iat` and `jti`,
/// and signs them with `issuer`.
fn encode(mut claims: Value, issuer: &KeyPair) -> String {
    let iat = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs();
    claims["iss"] = json!(issuer.public_key());
    claims["iat"] = json!(iat);
    claims["jti"] = json!(jti(&claims));
    let body = serde_json::to_vec(&claims).expect("JSON claims serialise");
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(HEADER),
        URL_SAFE_NO_PAD.encode(body)
    );
    let signature = issuer
        .sign(signing_input.as_bytes())
        .expect("a generated key signs");
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// Base32 (no padding) of the SHA-512/256 of `claims` (which has no `jti` yet).
fn jti(claims: &Value) -> String {
    let bytes = serde_json::to_vec(claims).expect("JSON claims serialise");
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA512_256, &bytes);
    data_encoding::BASE32_NOPAD.encode(digest.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header and claims of `jwt`, after checking its signature against its `iss`.
    fn verified(jwt: &str) -> (Value, Value) {
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3, "{jwt}");
        let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).unwrap();
        let header: Value = serde_json::from_slice(&decode(parts[0])).unwrap();
        let claims: Value = serde_json::from_slice(&decode(parts[1])).unwrap();
        let issuer = KeyPair::from_public_key(claims["iss"].as_str().unwrap()).unwrap();
        let signed = format!("{}.{}", parts[0], parts[1]);
        issuer.verify(signed.as_bytes(), &decode(parts[2])).unwrap();
        (header, claims)
    }

    #[test]
    fn the_chain_is_signed_operator_to_account_to_user() {
        let operator = Operator::generate("test-op");
        let account = operator.account("app");
        let user = account.user("alice");

        let (header, op) = verified(&operator.jwt());
        assert_eq!(header, json!({"typ": "JWT", "alg": "ed25519-nkey"}));
        assert_eq!(op["iss"], json!(operator.public_key()));
        assert_eq!(op["sub"], json!(operator.public_key()));
        assert_eq!(op["nats"]["type"], "operator");
        assert_eq!(op["nats"]["version"], 2);
        assert_eq!(
            op["nats"]["system_account"],
            json!(operator.system_account().public_key())
        );

        let (_, acc) = verified(account.jwt());
        assert_eq!(acc["iss"], json!(operator.public_key()));
        assert_eq!(acc["sub"], json!(account.public_key()));
        assert_eq!(acc["nats"]["type"], "account");
        assert_eq!(acc["nats"]["limits"]["conn"], -1);
        assert_eq!(acc["nats"]["limits"]["disk_storage"], -1);

        let (_, usr) = verified(user.jwt());
        assert_eq!(usr["iss"], json!(account.public_key()));
        assert_eq!(usr["sub"], json!(user.public_key()));
        assert_eq!(usr["name"], "alice");
        assert_eq!(usr["nats"]["type"], "user");
        assert_eq!(usr["nats"]["subs"], -1);
    }

    #[test]
    fn the_system_account_has_no_jetstream() {
        let operator = Operator::generate("test-op");
        let (_, sys) = verified(operator.system_account().jwt());
        assert_eq!(sys["name"], "SYS");
        assert!(sys["nats"]["limits"].get("disk_storage").is_none(), "{sys}");
    }

    #[test]
    fn jti_is_the_base32_digest_of_the_claims_without_it() {
        let operator = Operator::generate("test-op");
        let (_, mut claims) = verified(&operator.jwt());
        let jti_seen = claims["jti"].as_str().unwrap().to_owned();
        claims.as_object_mut().unwrap().remove("jti");
        assert_eq!(jti_seen, jti(&claims));
        // 32 bytes in base32 without padding.
        assert_eq!(jti_seen.len(), 52);
    }

    #[test]
    fn creds_hold_the_jwt_and_the_seed_between_their_markers() {
        let user = Operator::generate("test-op").account("app").user("bob");
        let creds = user.creds();
        let between = |begin: &str, end: &str| {
            let start = creds.find(begin).unwrap() + begin.len();
            let stop = creds.find(end).unwrap();
            creds[start..stop].trim().to_owned()
        };
        assert_eq!(
            between(
                "-----BEGIN NATS USER JWT-----",
                "------END NATS USER JWT------"
            ),
            user.jwt()
        );
        let seed = between(
            "-----BEGIN USER NKEY SEED-----",
            "------END USER NKEY SEED------",
        );
        assert!(seed.starts_with("SU"), "{seed}");
        assert_eq!(
            KeyPair::from_seed(&seed).unwrap().public_key(),
            user.public_key()
        );
    }
}
