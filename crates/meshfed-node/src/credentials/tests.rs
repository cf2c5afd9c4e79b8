//! Issuing and verifying component tokens: every way a token can be wrong is refused by name.

use serde_json::{Value, json};

use super::*;

fn issuer() -> Issuer {
    let key = SigningKey::generate().unwrap();
    Issuer::new(&key, &"plant-a".parse().unwrap(), &"gw1".parse().unwrap()).unwrap()
}

fn grant(topics: &[&str], actions: &[Action], ttl: Duration) -> Grant {
    Grant::new(
        "erp".parse().unwrap(),
        vec!["writer".parse().unwrap()],
        topics.iter().map(|t| t.parse().unwrap()).collect(),
        actions.to_vec(),
        ttl,
    )
    .unwrap()
}

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

/// Claims as an issuer would write them, to be changed one at a time.
fn claims_of(issuer: &Issuer) -> Value {
    let iat = seconds(now());
    json!({
        "iss": issuer.issuer(), "aud": issuer.audience(), "sub": "erp",
        "iat": iat, "exp": iat + 3600, "jti": "00112233",
        "roles": [], "topics": ["orders/#"], "actions": ["publish"],
    })
}

/// `claims` signed by `issuer`'s key with its kid.
fn signed(issuer: &Issuer, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES384);
    header.kid = Some(issuer.kid().to_owned());
    jsonwebtoken::encode(&header, claims, &issuer.encoding).unwrap()
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[test]
fn issuer_key_name_is_valid() {
    assert_eq!(issuer_key_name().as_str(), ISSUER_KEY);
}

#[test]
fn an_issued_token_verifies_with_its_claims_and_pins_es384_and_the_kid() {
    let issuer = issuer();
    let (token, claims) = issuer
        .issue(
            &grant(&["orders/#"], &[Action::Publish], Duration::from_secs(3600)),
            now(),
        )
        .unwrap();
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, Algorithm::ES384);
    assert_eq!(header.kid.as_deref(), Some(issuer.kid()));
    assert_eq!(claims.iss, "meshfed:plant-a/gw1");
    assert_eq!(claims.aud, "meshfed:plant-a");
    assert_eq!(claims.exp - claims.iat, 3600);
    assert_eq!(claims.jti.len(), 32);
    assert_eq!(issuer.verify(&token, now()), Ok(claims.clone()));
    // Within the leeway after expiry it still works; past it, it does not.
    let at_exp = UNIX_EPOCH + Duration::from_secs(claims.exp) + LEEWAY;
    assert!(issuer.verify(&token, at_exp).is_ok());
    assert_eq!(
        issuer.verify(&token, at_exp + Duration::from_secs(1)),
        Err(TokenError::Expired)
    );
}

#[test]
fn two_tokens_have_different_ids() {
    let issuer = issuer();
    let g = grant(&["orders/#"], &[Action::Publish], Duration::from_secs(60));
    let (_, a) = issuer.issue(&g, now()).unwrap();
    let (_, b) = issuer.issue(&g, now()).unwrap();
    assert_ne!(a.jti, b.jti);
}

#[test]
fn a_token_signed_with_hs256_is_refused_even_with_the_public_key_as_secret() {
    let issuer = issuer();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(issuer.kid().to_owned());
    // The classic confusion: the public key used as an HMAC secret.
    let key = EncodingKey::from_secret(issuer.decoding.as_bytes());
    let token = jsonwebtoken::encode(&header, &claims_of(&issuer), &key).unwrap();
    assert_eq!(
        issuer.verify(&token, now()),
        Err(TokenError::AlgorithmRefused("HS256".into()))
    );
}

#[test]
fn an_unsigned_token_is_refused() {
    let issuer = issuer();
    let header = json!({"alg": "none", "kid": issuer.kid()});
    let token = format!("{}.{}.", b64(&header), b64(&claims_of(&issuer)));
    assert_eq!(
        issuer.verify(&token, now()),
        Err(TokenError::AlgorithmRefused("none".into()))
    );
}

#[test]
fn a_token_naming_another_key_is_refused() {
    let issuer = issuer();
    let other = self::issuer();
    let (token, _) = other
        .issue(
            &grant(&["orders/#"], &[Action::Publish], Duration::from_secs(60)),
            now(),
        )
        .unwrap();
    assert_eq!(
        issuer.verify(&token, now()),
        Err(TokenError::UnknownKey(other.kid().to_owned()))
    );
    let mut header = Header::new(Algorithm::ES384);
    header.kid = None;
    let token = jsonwebtoken::encode(&header, &claims_of(&issuer), &issuer.encoding).unwrap();
    assert_eq!(
        issuer.verify(&token, now()),
        Err(TokenError::MissingClaim("kid"))
    );
}

#[test]
fn a_token_signed_by_another_key_under_this_kid_is_refused() {
    let issuer = issuer();
    let forger = self::issuer();
    let mut header = Header::new(Algorithm::ES384);
    header.kid = Some(issuer.kid().to_owned());
    let token = jsonwebtoken::encode(&header, &claims_of(&issuer), &forger.encoding).unwrap();
    assert_eq!(issuer.verify(&token, now()), Err(TokenError::BadSignature));
}

#[test]
fn a_token_whose_claims_were_changed_is_refused() {
    let issuer = issuer();
    let token = signed(&issuer, &claims_of(&issuer));
    let mut wider = claims_of(&issuer);
    wider["topics"] = json!(["#"]);
    let parts: Vec<&str> = token.split('.').collect();
    let tampered = format!("{}.{}.{}", parts[0], b64(&wider), parts[2]);
    assert_eq!(
        issuer.verify(&tampered, now()),
        Err(TokenError::BadSignature)
    );
    // A flipped bit in the signature itself.
    let mut sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[2])
        .unwrap();
    sig[10] ^= 1;
    let flipped = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig)
    );
    assert_eq!(
        issuer.verify(&flipped, now()),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn each_required_claim_is_named_when_missing() {
    let issuer = issuer();
    for claim in ["iss", "aud", "exp", "jti", "sub", "iat"] {
        let mut claims = claims_of(&issuer);
        claims.as_object_mut().unwrap().remove(claim);
        assert_eq!(
            issuer.verify(&signed(&issuer, &claims), now()),
            Err(TokenError::MissingClaim(claim)),
            "{claim}"
        );
    }
}

#[test]
fn a_token_for_another_audience_or_from_another_issuer_is_refused() {
    let issuer = issuer();
    let mut claims = claims_of(&issuer);
    claims["aud"] = json!("meshfed:supplier-b");
    assert_eq!(
        issuer.verify(&signed(&issuer, &claims), now()),
        Err(TokenError::WrongAudience)
    );
    claims["aud"] = json!(["meshfed:supplier-b", "meshfed:plant-a"]);
    assert!(issuer.verify(&signed(&issuer, &claims), now()).is_ok());
    let mut claims = claims_of(&issuer);
    claims["iss"] = json!("meshfed:plant-a/gw2");
    assert_eq!(
        issuer.verify(&signed(&issuer, &claims), now()),
        Err(TokenError::WrongIssuer("meshfed:plant-a/gw2".into()))
    );
}

#[test]
fn an_expired_or_future_token_is_refused() {
    let issuer = issuer();
    let (token, _) = issuer
        .issue(
            &grant(&["orders/#"], &[Action::Publish], Duration::from_secs(3600)),
            now() - Duration::from_secs(7200),
        )
        .unwrap();
    assert_eq!(issuer.verify(&token, now()), Err(TokenError::Expired));
    let mut claims = claims_of(&issuer);
    claims["iat"] = json!(seconds(now()) + 600);
    assert_eq!(
        issuer.verify(&signed(&issuer, &claims), now()),
        Err(TokenError::NotYetValid)
    );
    let mut claims = claims_of(&issuer);
    claims["nbf"] = json!(seconds(now()) + 600);
    assert_eq!(
        issuer.verify(&signed(&issuer, &claims), now()),
        Err(TokenError::NotYetValid)
    );
}

#[test]
fn garbage_and_bad_claims_are_refused_by_name() {
    let issuer = issuer();
    for junk in ["", "abc", "a.b", "a.b.c.d", "!!.x.y"] {
        assert_eq!(
            issuer.verify(junk, now()),
            Err(TokenError::NotAJwt),
            "{junk}"
        );
    }
    let mut claims = claims_of(&issuer);
    claims["topics"] = json!(["orders/#/x"]);
    assert!(matches!(
        issuer.verify(&signed(&issuer, &claims), now()),
        Err(TokenError::BadClaims(_))
    ));
    let mut claims = claims_of(&issuer);
    claims["actions"] = json!(["delete"]);
    assert!(matches!(
        issuer.verify(&signed(&issuer, &claims), now()),
        Err(TokenError::BadClaims(_))
    ));
}

#[test]
fn grants_are_bounded() {
    let sub = || "erp".parse::<Subject>().unwrap();
    let topics = || vec!["orders/#".parse().unwrap()];
    let err = Grant::new(
        sub(),
        vec![],
        topics(),
        vec![Action::Publish],
        MAX_TOKEN_TTL + Duration::from_secs(1),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "ttl 30days 1s: a token lives from 1 s to 30 days"
    );
    assert_eq!(
        Grant::new(
            sub(),
            vec![],
            vec![],
            vec![Action::Publish],
            DEFAULT_TOKEN_TTL
        ),
        Err(GrantError::ActionsWithoutTopics("publish".into()))
    );
    assert_eq!(
        Grant::new(sub(), vec![], topics(), vec![], DEFAULT_TOKEN_TTL),
        Err(GrantError::Nothing)
    );
    assert!(
        Grant::new(
            sub(),
            vec![ADMIN_ROLE.parse().unwrap()],
            vec![],
            vec![],
            DEFAULT_TOKEN_TTL
        )
        .is_ok()
    );
    assert!("a b".parse::<Subject>().is_err());
    assert!("ops team".parse::<Role>().is_err());
    assert!("delete".parse::<Action>().is_err());
}

#[test]
fn a_scoped_principal_may_use_only_its_actions_on_its_topics() {
    let issuer = issuer();
    let (_, claims) = issuer
        .issue(
            &grant(&["orders/#"], &[Action::Publish], Duration::from_secs(60)),
            now(),
        )
        .unwrap();
    let p = Principal::of(claims);
    assert!(!p.is_admin());
    assert!(p.may_publish(&"orders/1".parse().unwrap()).is_ok());
    let refused = p.may_publish(&"invoices/1".parse().unwrap()).unwrap_err();
    assert_eq!(
        refused.to_string(),
        "the token of erp may not publish on invoices/1: its topics are orders/#"
    );
    assert!(p.may_subscribe(Some(&"orders/#".parse().unwrap())).is_err());

    let (_, claims) = issuer
        .issue(
            &grant(&["orders/#"], &[Action::Subscribe], Duration::from_secs(60)),
            now(),
        )
        .unwrap();
    let p = Principal::of(claims);
    assert!(p.may_subscribe(Some(&"orders/+".parse().unwrap())).is_ok());
    assert!(p.may_subscribe(Some(&"#".parse().unwrap())).is_err());
    assert!(p.may_subscribe(None).is_err());
    assert!(p.may_publish(&"orders/1".parse().unwrap()).is_err());
}

#[test]
fn a_token_with_the_admin_role_counts_as_admin() {
    let issuer = issuer();
    let g = Grant::new(
        "ops".parse().unwrap(),
        vec![ADMIN_ROLE.parse().unwrap()],
        vec![],
        vec![],
        DEFAULT_TOKEN_TTL,
    )
    .unwrap();
    let (_, claims) = issuer.issue(&g, now()).unwrap();
    let p = Principal::of(claims);
    assert!(p.is_admin());
    assert!(p.may_subscribe(None).is_ok());
}

#[test]
fn a_revoked_token_is_refused() {
    let credentials = Credentials::new(issuer(), []);
    let (token, claims) = credentials
        .issuer
        .issue(
            &grant(&["orders/#"], &[Action::Publish], Duration::from_secs(60)),
            now(),
        )
        .unwrap();
    let principal = credentials.check(&token, now()).unwrap();
    assert_eq!(credentials.recheck(&principal, now()), Ok(()));
    assert_eq!(
        credentials.recheck(
            &principal,
            now() + Duration::from_secs(60) + LEEWAY + Duration::from_secs(1)
        ),
        Err(TokenError::Expired)
    );
    credentials.revoke(
        claims.jti.clone(),
        claims.expires(),
        crate::clock::timestamp(now()),
    );
    assert_eq!(
        credentials.recheck(&principal, now()),
        Err(TokenError::Revoked(claims.jti.clone()))
    );
    assert_eq!(
        credentials.check(&token, now()),
        Err(TokenError::Revoked(claims.jti))
    );
    assert_eq!(credentials.recheck(&Principal::admin(), now()), Ok(()));
}

#[test]
fn the_issuer_key_is_made_once_with_mode_0600_and_loads_back() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let (mesh, node) = ("plant-a".parse().unwrap(), "gw1".parse().unwrap());
    let first = Issuer::load_or_create(dir.path(), &mesh, &node).unwrap();
    let file = dir.path().join(ISSUER_KEY);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let again = Issuer::load_or_create(dir.path(), &mesh, &node).unwrap();
    assert_eq!(first.kid(), again.kid());
}

#[test]
fn attributes_are_signed_into_the_token_and_bounded() {
    let issuer = issuer();
    let attrs: BTreeMap<String, String> = [("site".to_owned(), "north".to_owned())].into();
    let g = grant(&["orders/#"], &[Action::Publish], DEFAULT_TOKEN_TTL)
        .with_attributes(attrs.clone())
        .unwrap();
    let (token, claims) = issuer.issue(&g, now()).unwrap();
    assert_eq!(claims.attrs, attrs);
    let verified = issuer.verify(&token, now()).unwrap();
    assert_eq!(Principal::of(verified).attributes, attrs);
    // A token without the claim has none.
    let plain = signed(&issuer, &claims_of(&issuer));
    assert!(issuer.verify(&plain, now()).unwrap().attrs.is_empty());

    let with = |name: &str, value: &str| {
        grant(&["orders/#"], &[Action::Publish], DEFAULT_TOKEN_TTL)
            .with_attributes([(name.to_owned(), value.to_owned())].into())
    };
    assert_eq!(
        with("a b", "x").unwrap_err().to_string(),
        "invalid attribute \"a b=x\": at most 32 NAME=VALUE, the name 1 to 64 letters, digits, '.', '_', '-' or ':', the value at most 256 bytes without control characters"
    );
    assert!(with("site", "line\nfeed").is_err());
    assert!(with("site", &"x".repeat(257)).is_err());
    assert!(with("site", "").is_ok());
    let many = (0..33).map(|i| (format!("a{i}"), String::new())).collect();
    assert!(
        grant(&["orders/#"], &[Action::Publish], DEFAULT_TOKEN_TTL)
            .with_attributes(many)
            .is_err()
    );
}
