//! Credential translation (DESIGN §3.8; the spec's "Credential Mapping"): a partner's sender —
//! verified by its own gateway, which sealed its identity and its credential's expiry into the
//! envelope — mapped here by an `[[identity]]` rule with `translate`, becomes a component token
//! of this mesh. It is signed by this gateway's issuer key like every token it issues, for the
//! mapped subject, roles and attributes, with an `act` claim naming the remote sender
//! (RFC 8693 §4.1), scoped to publishing on the topics the agreement lets flow back to that
//! partner, and valid until the earlier of the remote credential's expiry and the rule's
//! lifetime. It is cached until then, so a sender's stream of messages costs one signature.
//!
//! Local subscribers receive it with each message from that sender (`sender.credential`) and
//! may act for the remote sender with it here — a reply, say — within this mesh's access rules
//! (a token's scope and the rules must both allow). The remote bearer token itself never leaves
//! its mesh.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshfed_proto::MeshId;
use meshfed_proto::envelope::Sender;
use meshfed_proto::topic::TopicPattern;

use super::{Action, Actor, Grant, Issuer, Role, Subject};

/// Most translated tokens kept; past it, the expired ones are dropped, then all.
const KEPT: usize = 4096;

/// A translated token is not handed out for less than this: one closer to its expiry is made
/// again.
const MARGIN: Duration = Duration::from_secs(5);

/// What a token is translated from: the partner, the identity as mapped here, the remote
/// credential's expiry, and what the token may be used on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    remote_subject: String,
    mapped: (MeshId, String, Vec<String>, Vec<(String, String)>),
    remote_expires: Option<u64>,
    scope: Vec<TopicPattern>,
}

/// This gateway's translations, cached until they expire.
pub(crate) struct Translator {
    issuer: Issuer,
    cache: Mutex<HashMap<Key, (String, u64)>>,
}

fn seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

impl Translator {
    pub(crate) fn new(issuer: Issuer) -> Self {
        Self {
            issuer,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The token of this mesh for `remote_subject` of `mesh`, mapped here to `mapped`, whose
    /// credential expires at `remote_expires`, to publish on `scope`, for at most `ttl`;
    /// `None` when it cannot be made (the remote credential expired, an identity the token
    /// rules refuse, nothing to publish on) — the message is delivered without it.
    #[expect(
        clippy::too_many_arguments,
        reason = "each is one fact of the translation, none belongs with another"
    )]
    pub(crate) fn token(
        &self,
        remote_subject: &str,
        mesh: &MeshId,
        mapped: &Sender,
        remote_expires: Option<u64>,
        scope: &[TopicPattern],
        ttl: Duration,
        now: SystemTime,
    ) -> Option<String> {
        let key = Key {
            remote_subject: remote_subject.to_owned(),
            mapped: (
                mesh.clone(),
                mapped.subject.clone(),
                mapped.roles.clone(),
                (mapped.attributes.iter())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            remote_expires,
            scope: scope.to_vec(),
        };
        let at = seconds(now);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((token, exp)) = cache.get(&key)
            && *exp > at.saturating_add(MARGIN.as_secs())
        {
            return Some(token.clone());
        }
        let left = match remote_expires {
            Some(exp) => Duration::from_secs(exp.checked_sub(at)?),
            None => ttl,
        };
        let ttl = ttl.min(left);
        if ttl <= MARGIN {
            return None;
        }
        let grant = self.grant(remote_subject, mesh, mapped, scope, ttl)?;
        let (token, claims) = match self.issuer.issue(&grant, now) {
            Ok(issued) => issued,
            Err(e) => {
                tracing::warn!(error = %e, subject = %mapped.subject, "cannot translate a partner's credential");
                return None;
            }
        };
        if cache.len() >= KEPT {
            cache.retain(|_, (_, exp)| *exp > at);
            if cache.len() >= KEPT {
                cache.clear();
            }
        }
        tracing::debug!(subject = %claims.sub, from = remote_subject, %mesh, expires = claims.exp, "translated a partner's credential");
        cache.insert(key, (token.clone(), claims.exp));
        Some(token)
    }

    fn grant(
        &self,
        remote_subject: &str,
        mesh: &MeshId,
        mapped: &Sender,
        scope: &[TopicPattern],
        ttl: Duration,
    ) -> Option<Grant> {
        let subject: Subject = mapped.subject.parse().ok()?;
        let roles: Vec<Role> = (mapped.roles.iter())
            .map(|r| r.parse())
            .collect::<Result<_, _>>()
            .ok()?;
        let grant = Grant::new(subject, roles, scope.to_vec(), vec![Action::Publish], ttl)
            .ok()?
            .with_attributes(mapped.attributes.clone())
            .ok()?;
        Some(grant.acting_for(Actor {
            sub: remote_subject.to_owned(),
            iss: format!("meshfed:{mesh}"),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translator() -> Translator {
        let key = meshfed_trust::SigningKey::generate().unwrap();
        let issuer = Issuer::new(
            &key,
            &"supplier-b".parse().unwrap(),
            &"gw1".parse().unwrap(),
        )
        .unwrap();
        Translator::new(issuer)
    }

    fn mapped() -> Sender {
        Sender {
            subject: "plant-buyer".into(),
            roles: vec!["purchasing".into()],
            attributes: [("site".to_owned(), "north".to_owned())].into(),
            ..Sender::default()
        }
    }

    fn plant() -> MeshId {
        "plant-a".parse().unwrap()
    }

    #[test]
    fn a_translated_token_is_this_gateways_lives_no_longer_than_the_remote_one_and_is_cached() {
        let t = translator();
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let scope = vec!["replies/#".parse().unwrap()];
        let hour = Duration::from_secs(3600);
        let remote_exp = Some(1_800_000_600);
        let token = t
            .token("erp", &plant(), &mapped(), remote_exp, &scope, hour, now)
            .unwrap();
        let claims = t.issuer.verify(&token, now).unwrap();
        assert_eq!(
            (claims.sub.as_str(), claims.exp, claims.iat),
            ("plant-buyer", 1_800_000_600, 1_800_000_000)
        );
        assert_eq!(
            claims.act,
            Some(Actor {
                sub: "erp".into(),
                iss: "meshfed:plant-a".into()
            })
        );
        assert_eq!(
            (claims.topics, claims.actions),
            (scope.clone(), vec![Action::Publish])
        );
        assert_eq!(claims.attrs.get("site").map(String::as_str), Some("north"));
        // The same sender again: the cached token, not a new signature.
        let later = now + Duration::from_secs(60);
        assert_eq!(
            t.token("erp", &plant(), &mapped(), remote_exp, &scope, hour, later),
            Some(token.clone())
        );
        // Without a remote expiry, the rule's lifetime bounds it.
        let lasting = t
            .token("admin", &plant(), &mapped(), None, &scope, hour, now)
            .unwrap();
        assert_eq!(t.issuer.verify(&lasting, now).unwrap().exp, 1_800_003_600);
        // A remote credential already expired is not translated.
        let expired = Some(1_799_999_999);
        assert_eq!(
            t.token("erp", &plant(), &mapped(), expired, &scope, hour, now),
            None
        );
        // Nor one with nothing to publish on.
        assert_eq!(
            t.token("erp", &plant(), &mapped(), remote_exp, &[], hour, now),
            None
        );
    }
}
