//! Access rules (DESIGN §3.7): who may publish, subscribe or request on which topics, written
//! in Cedar (the `cedar-policy` crate) in the policy file's `[access] rules`, checked by Cedar's
//! validator against meshfed's schema ([`SCHEMA`]) when the file is read, and evaluated per
//! message by Cedar's authorizer.
//!
//! Principals are identities: a local component (its token's subject and roles), or a partner's
//! sender after identity mapping ([`map`]; the sender's identity crosses in the sealed part of
//! its envelope, and an envelope without one stands for the federation identity
//! `federation::<mesh>`). Each is a `Meshfed::Principal` in its roles (`Meshfed::Role`) and its mesh
//! (`Meshfed::Mesh`), with its attributes as tags. Resources are topics (`Meshfed::Topic`, its
//! `name` for `like` patterns). The context says which partner and which way.
//!
//! ```cedar
//! permit (principal in Meshfed::Role::"buyer", action == Meshfed::Action::"publish", resource)
//! when { resource.name like "orders/*" && context.direction == "outbound" };
//! permit (principal in Meshfed::Mesh::"supplier-b", action == Meshfed::Action::"publish", resource)
//! when { resource.name like "shipments/*" };
//! ```
//!
//! Without rules everything agreed may flow (the agreement's topics still bound it); with
//! rules, Cedar's default applies: what no `permit` allows is denied, and a `forbid` wins.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::LazyLock;

use cedar_policy::{
    Authorizer, Context, Decision, Entities, Entity, EntityId, EntityTypeName, EntityUid,
    PolicySet, Request, RestrictedExpression, Schema, ValidationMode, Validator,
};
use meshfed_proto::envelope::Sender;
use meshfed_proto::{MeshId, Topic, TopicPattern};

/// meshfed's Cedar schema: the entity types and actions access rules are written over.
pub const SCHEMA: &str = r#"
namespace Meshfed {
  entity Mesh;
  entity Role;
  entity Principal in [Role, Mesh] { subject: String, mesh: String } tags String;
  entity Topic { name: String };
  action publish, subscribe, request appliesTo {
    principal: Principal,
    resource: Topic,
    context: { peer: String, direction: String }
  };
}
"#;

static SCHEMA_PARSED: LazyLock<Schema> = LazyLock::new(|| {
    // Invariant: SCHEMA is a constant this module's tests parse.
    Schema::from_cedarschema_str(SCHEMA)
        .map(|(s, _)| s)
        .unwrap_or_else(|e| unreachable!("meshfed's Cedar schema: {e}"))
});

/// What a principal does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Sends a message on a topic.
    Publish,
    /// Receives messages on a topic.
    Subscribe,
    /// Sends a request expecting a reply.
    Request,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Self::Publish => "publish",
            Self::Subscribe => "subscribe",
            Self::Request => "request",
        }
    }
}

/// Which way a message goes, seen from this mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Way {
    /// From a local component to a partner.
    Outbound,
    /// From a partner to this mesh.
    Inbound,
}

/// An identity access rules decide on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    /// The mesh it belongs to.
    pub mesh: MeshId,
    /// Its subject within that mesh (`federation::<mesh>` for a partner as a whole).
    pub subject: String,
    /// Its roles.
    pub roles: Vec<String>,
    /// Its attributes.
    pub attributes: BTreeMap<String, String>,
}

impl Principal {
    /// `sender` of `mesh`.
    pub fn of(mesh: &MeshId, sender: &Sender) -> Self {
        Self {
            mesh: mesh.clone(),
            subject: sender.subject.clone(),
            roles: sender.roles.clone(),
            attributes: sender.attributes.clone(),
        }
    }

    /// The identity without its mesh, as a subscriber is shown it.
    pub fn sender(&self) -> Sender {
        Sender {
            subject: self.subject.clone(),
            roles: self.roles.clone(),
            attributes: self.attributes.clone(),
            expires: None,
            credential: None,
        }
    }

    /// A partner mesh as a whole: the federation identity `federation::<mesh>`.
    pub fn federation(mesh: &MeshId) -> Self {
        Self {
            mesh: mesh.clone(),
            subject: format!("federation::{mesh}"),
            roles: Vec::new(),
            attributes: BTreeMap::new(),
        }
    }
}

/// One identity-mapping rule (DESIGN §3.8): which remote identities it matches and what they
/// become here. Matchers left out match anything; the first rule that matches wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// The partner mesh; `None`: any.
    pub mesh: Option<MeshId>,
    /// Direct: the remote subject.
    pub subject: Option<String>,
    /// Role-based: a role the remote identity holds.
    pub role: Option<String>,
    /// Attribute-based: attributes the remote identity holds, each with this value.
    pub attributes: BTreeMap<String, String>,
    /// The local subject it becomes; `None`: it keeps its own.
    pub to: Option<String>,
    /// The local roles it holds here.
    pub roles: Vec<String>,
    /// Credential translation: the sender is given a token of this mesh, valid this long at
    /// most (and never past its own credential); `None`: not translated.
    pub translate: Option<std::time::Duration>,
}

impl Mapping {
    fn matches(&self, remote: &Principal) -> bool {
        self.mesh.as_ref().is_none_or(|m| m == &remote.mesh)
            && self.subject.as_ref().is_none_or(|s| s == &remote.subject)
            && self.role.as_ref().is_none_or(|r| remote.roles.contains(r))
            && (self.attributes.iter()).all(|(k, v)| remote.attributes.get(k) == Some(v))
    }
}

/// `remote` as this mesh knows it: mapped by the first rule of `rules` that matches, which
/// names its local subject and roles (its attributes stay). A sender no rule names is taken for
/// its mesh as a whole — the federation identity `federation::<mesh>`, mapped by the first rule
/// that matches that — so that a rule for the partner covers every sender of it not named
/// finer. Unmatched even so, it keeps its subject and holds no role here. A remote identity's
/// roles never carry over by themselves: only a rule grants roles here.
pub fn map(rules: &[Mapping], remote: &Principal) -> Principal {
    match rule(rules, remote) {
        Some((rule, federation)) => Principal {
            mesh: remote.mesh.clone(),
            subject: match (&rule.to, federation) {
                (Some(to), _) => to.clone(),
                (None, Some(f)) => f.subject,
                (None, None) => remote.subject.clone(),
            },
            roles: rule.roles.clone(),
            attributes: remote.attributes.clone(),
        },
        None => Principal {
            roles: Vec::new(),
            ..remote.clone()
        },
    }
}

/// The rule that maps `remote` ([`map`]), with its mesh as a whole when that is what the rule
/// matched.
fn rule<'a>(rules: &'a [Mapping], remote: &Principal) -> Option<(&'a Mapping, Option<Principal>)> {
    if let Some(rule) = rules.iter().find(|r| r.matches(remote)) {
        return Some((rule, None));
    }
    let federation = Principal::federation(&remote.mesh);
    if remote.subject == federation.subject {
        return None;
    }
    let rule = rules.iter().find(|r| r.matches(&federation))?;
    Some((rule, Some(federation)))
}

/// What a partner sends here, checked: who sent each message as this mesh maps it ([`map`]),
/// and whether the access rules let that identity publish it.
#[derive(Debug, Clone)]
pub struct Incoming {
    access: Option<std::sync::Arc<Access>>,
    identities: std::sync::Arc<[Mapping]>,
    peer: MeshId,
    translating: Option<Translating>,
}

/// What credential translation needs of the receiving side.
#[derive(Clone)]
struct Translating {
    translator: std::sync::Arc<crate::credentials::translate::Translator>,
    now: std::time::SystemTime,
    scope: Vec<TopicPattern>,
}

impl std::fmt::Debug for Translating {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Translating")
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl Incoming {
    /// What partner `peer` sends here, under `access` (`None`: no rules) and `identities`.
    pub fn new(
        access: Option<std::sync::Arc<Access>>,
        identities: std::sync::Arc<[Mapping]>,
        peer: MeshId,
    ) -> Self {
        Self {
            access,
            identities,
            peer,
            translating: None,
        }
    }

    /// These checks, translating the credentials of senders whose rule says so (at `now`,
    /// into tokens to publish on `scope`: what the agreement lets flow back to the partner).
    pub(crate) fn translating(
        mut self,
        translator: &std::sync::Arc<crate::credentials::translate::Translator>,
        now: std::time::SystemTime,
        scope: &[TopicPattern],
    ) -> Self {
        if self.identities.iter().any(|m| m.translate.is_some()) {
            self.translating = Some(Translating {
                translator: translator.clone(),
                now,
                scope: scope.to_vec(),
            });
        }
        self
    }

    /// The sender a subscriber here is shown: `sender` of `source` as mapped (`mapped`), with
    /// its credential's expiry and, when its rule translates credentials, this mesh's token for
    /// it.
    pub(crate) fn delivered(&self, source: &MeshId, sender: &Sender, mapped: &Principal) -> Sender {
        let mut shown = mapped.sender();
        shown.expires = sender.expires;
        if let Some(t) = &self.translating {
            let remote = Principal::of(source, sender);
            if let Some((rule, _)) = rule(&self.identities, &remote)
                && let Some(ttl) = rule.translate
            {
                let credential = (t.translator).token(
                    &sender.subject,
                    &mapped.mesh,
                    &shown,
                    sender.expires,
                    &t.scope,
                    ttl,
                    t.now,
                );
                shown.credential = credential;
            }
        }
        shown
    }

    /// Who sent a message on `topic` from mesh `source` (whose sealed part named `sender`;
    /// `None`: the mesh as a whole), as this mesh maps it — if the access rules let it publish
    /// that here.
    pub fn admit(
        &self,
        source: &MeshId,
        sender: Option<&Sender>,
        topic: &Topic,
    ) -> Result<Principal, Denied> {
        let remote = sender.map_or_else(
            || Principal::federation(source),
            |s| Principal::of(source, s),
        );
        let principal = map(&self.identities, &remote);
        if let Some(access) = &self.access {
            access.decide(&principal, Action::Publish, topic, &self.peer, Way::Inbound)?;
        }
        Ok(principal)
    }
}

/// The access check of one direction of one federation: the rules in force and the principal
/// they decide on.
#[derive(Debug, Clone)]
pub struct Guard {
    access: std::sync::Arc<Access>,
    principal: Principal,
    peer: MeshId,
    way: Way,
}

impl Guard {
    /// `principal` going `way` with partner `peer` under `access`.
    pub fn new(
        access: std::sync::Arc<Access>,
        principal: Principal,
        peer: MeshId,
        way: Way,
    ) -> Self {
        Self {
            access,
            principal,
            peer,
            way,
        }
    }

    /// Whether the principal may publish on `topic`.
    pub fn publish(&self, topic: &Topic) -> Result<(), Denied> {
        self.access.decide(
            &self.principal,
            Action::Publish,
            topic,
            &self.peer,
            self.way,
        )
    }
}

/// Why access was denied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{subject} of {mesh} may not {action} on {topic}: {why}")]
pub struct Denied {
    /// The principal's subject.
    pub subject: String,
    /// Its mesh.
    pub mesh: MeshId,
    /// What it tried.
    pub action: &'static str,
    /// On which topic.
    pub topic: String,
    /// Which rule forbade it, or that none permits it.
    pub why: String,
}

/// A problem in the rules: byte offset in the rules text, and what is wrong.
pub type RuleProblem = (usize, String);

/// Most decisions [`Access`] remembers; past it, it forgets them all and starts again.
const REMEMBERED: usize = 16_384;

/// What a decision depends on: who, what, on which topic (or subscription pattern), with
/// which partner (`*`: any), which way.
type Question = (Principal, Action, String, String, Way);

/// Compiled access rules, and the decisions made with them: a decision depends only on the
/// principal, the action, the topic, the partner and the way, and topics repeat, so each is
/// made by Cedar once (about 17 µs) and remembered for as long as these rules are in force.
#[derive(Debug)]
pub struct Access {
    policies: PolicySet,
    decisions: std::sync::Mutex<std::collections::HashMap<Question, Result<(), Denied>>>,
}

impl PartialEq for Access {
    fn eq(&self, other: &Self) -> bool {
        self.policies.to_string() == other.policies.to_string()
    }
}

impl Eq for Access {}

fn uid(kind: &str, id: &str) -> EntityUid {
    // Invariant: the type names are the constants of SCHEMA.
    let kind =
        EntityTypeName::from_str(kind).unwrap_or_else(|e| unreachable!("Cedar type {kind}: {e}"));
    EntityUid::from_type_name_and_id(kind, EntityId::new(id))
}

/// The byte offset of a diagnostic's first label, else 0.
fn offset(d: &dyn miette::Diagnostic) -> usize {
    d.labels()
        .and_then(|mut l| l.next())
        .map_or(0, |l| l.offset())
}

impl Access {
    /// Parses `rules` and validates them against [`SCHEMA`]: every problem with its offset.
    pub fn parse(rules: &str) -> Result<Self, Vec<RuleProblem>> {
        let policies = PolicySet::from_str(rules).map_err(|errors| {
            errors
                .iter()
                .map(|e| (offset(e), e.to_string()))
                .collect::<Vec<_>>()
        })?;
        let result =
            Validator::new(SCHEMA_PARSED.clone()).validate(&policies, ValidationMode::Strict);
        let problems: Vec<RuleProblem> = result
            .validation_errors()
            .map(|e| (offset(e), e.to_string()))
            .collect();
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Self {
            policies,
            decisions: Default::default(),
        })
    }

    /// Whether `who` may `action` on `topic` with partner `peer`, going `way`: remembered, or
    /// asked of Cedar.
    pub fn decide(
        &self,
        who: &Principal,
        action: Action,
        topic: &Topic,
        peer: &MeshId,
        way: Way,
    ) -> Result<(), Denied> {
        self.decide_named(who, action, topic.as_str(), peer.as_str(), way)
    }

    /// Whether local component `who` may subscribe to `pattern` for what partner `from` (or,
    /// `None`, any partner) sends: decided on the pattern as written, so a rule on
    /// `resource.name like "orders/*"` lets it subscribe to `orders/#` and not to `#`.
    pub fn decide_subscription(
        &self,
        who: &Principal,
        pattern: &TopicPattern,
        from: Option<&MeshId>,
    ) -> Result<(), Denied> {
        self.decide_named(
            who,
            Action::Subscribe,
            pattern.as_str(),
            from.map_or("*", MeshId::as_str),
            Way::Inbound,
        )
    }

    /// Whether `who`, subscribed, may receive one delivery: on `topic`, from `from` — decided
    /// per delivery under the rules in force (remembered per question), so that changed rules
    /// hold for subscriptions already open.
    pub fn decide_delivery(
        &self,
        who: &Principal,
        topic: &Topic,
        from: &MeshId,
    ) -> Result<(), Denied> {
        self.decide_named(
            who,
            Action::Subscribe,
            topic.as_str(),
            from.as_str(),
            Way::Inbound,
        )
    }

    /// [`Access::decide`] on a topic or pattern `name` with partner `peer`.
    fn decide_named(
        &self,
        who: &Principal,
        action: Action,
        name: &str,
        peer: &str,
        way: Way,
    ) -> Result<(), Denied> {
        let question = (who.clone(), action, name.to_owned(), peer.to_owned(), way);
        let decisions = || self.decisions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(known) = decisions().get(&question) {
            return known.clone();
        }
        let decided = self.ask(who, action, name, peer, way);
        let mut known = decisions();
        if known.len() >= REMEMBERED {
            known.clear();
        }
        known.insert(question, decided.clone());
        decided
    }

    /// Cedar's decision.
    fn ask(
        &self,
        who: &Principal,
        action: Action,
        topic: &str,
        peer: &str,
        way: Way,
    ) -> Result<(), Denied> {
        let denied = |why: String| Denied {
            subject: who.subject.clone(),
            mesh: who.mesh.clone(),
            action: action.name(),
            topic: topic.to_string(),
            why,
        };
        let principal = uid(
            "Meshfed::Principal",
            &format!("{}/{}", who.mesh, who.subject),
        );
        let mesh = uid("Meshfed::Mesh", who.mesh.as_str());
        let roles: Vec<EntityUid> = who.roles.iter().map(|r| uid("Meshfed::Role", r)).collect();
        let resource = uid("Meshfed::Topic", topic);
        let string = |s: &str| RestrictedExpression::new_string(s.to_owned());
        let entity = Entity::new_with_tags(
            principal.clone(),
            [
                ("subject".to_owned(), string(&who.subject)),
                ("mesh".to_owned(), string(who.mesh.as_str())),
            ],
            roles.iter().cloned().chain([mesh.clone()]),
            who.attributes.iter().map(|(k, v)| (k.clone(), string(v))),
        )
        .map_err(|e| denied(format!("its identity is not usable: {e}")))?;
        let topic_entity = Entity::new(
            resource.clone(),
            [("name".to_owned(), string(topic))].into(),
            Default::default(),
        )
        .map_err(|e| denied(format!("the topic is not usable: {e}")))?;
        let entities = Entities::from_entities(
            [
                entity,
                topic_entity,
                Entity::new_no_attrs(mesh, Default::default()),
            ]
            .into_iter()
            .chain(
                roles
                    .into_iter()
                    .map(|r| Entity::new_no_attrs(r, Default::default())),
            ),
            None,
        )
        .map_err(|e| denied(format!("its identity is not usable: {e}")))?;
        let context = Context::from_pairs([
            ("peer".to_owned(), string(peer)),
            (
                "direction".to_owned(),
                string(match way {
                    Way::Outbound => "outbound",
                    Way::Inbound => "inbound",
                }),
            ),
        ])
        .map_err(|e| denied(e.to_string()))?;
        let request = Request::new(
            principal,
            uid("Meshfed::Action", action.name()),
            resource,
            context,
            None,
        )
        .map_err(|e| denied(e.to_string()))?;
        let response = Authorizer::new().is_authorized(&request, &self.policies, &entities);
        if response.decision() == Decision::Allow {
            return Ok(());
        }
        let forbidding: Vec<String> = response
            .diagnostics()
            .reason()
            .map(|id| {
                self.policies
                    .annotation(id, "id")
                    .map_or_else(|| id.to_string(), str::to_owned)
            })
            .collect();
        Err(denied(if forbidding.is_empty() {
            "no access rule permits it".to_owned()
        } else {
            format!("forbidden by {}", forbidding.join(", "))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buyer() -> Principal {
        Principal {
            mesh: "plant-a".parse().unwrap(),
            subject: "erp".into(),
            roles: vec!["buyer".into()],
            attributes: [("site".to_owned(), "north".to_owned())].into(),
        }
    }

    fn topic(s: &str) -> Topic {
        s.parse().unwrap()
    }

    #[test]
    fn rules_permit_by_role_mesh_and_tag_and_deny_the_rest() {
        let rules = r#"
            permit (principal in Meshfed::Role::"buyer", action == Meshfed::Action::"publish", resource)
            when { resource.name like "orders/*" && context.direction == "outbound" };
            @id("no-south")
            forbid (principal, action, resource)
            when { principal.hasTag("site") && principal.getTag("site") == "south" };
            permit (principal in Meshfed::Mesh::"supplier-b", action == Meshfed::Action::"publish", resource)
            when { resource.name like "shipments/*" };
        "#;
        let access = Access::parse(rules).unwrap();
        let peer: MeshId = "supplier-b".parse().unwrap();
        let erp = buyer();
        assert_eq!(
            access.decide(
                &erp,
                Action::Publish,
                &topic("orders/1"),
                &peer,
                Way::Outbound
            ),
            Ok(())
        );
        let denied = access
            .decide(
                &erp,
                Action::Publish,
                &topic("invoices/1"),
                &peer,
                Way::Outbound,
            )
            .unwrap_err();
        assert_eq!(
            denied.to_string(),
            "erp of plant-a may not publish on invoices/1: no access rule permits it"
        );
        let south = Principal {
            attributes: [("site".to_owned(), "south".to_owned())].into(),
            ..buyer()
        };
        let denied = access
            .decide(
                &south,
                Action::Publish,
                &topic("orders/1"),
                &peer,
                Way::Outbound,
            )
            .unwrap_err();
        assert!(
            denied.to_string().ends_with("forbidden by no-south"),
            "{denied}"
        );
        let partner = Principal::federation(&peer);
        assert_eq!(
            access.decide(
                &partner,
                Action::Publish,
                &topic("shipments/9"),
                &peer,
                Way::Inbound
            ),
            Ok(())
        );
        assert!(
            access
                .decide(
                    &partner,
                    Action::Publish,
                    &topic("orders/9"),
                    &peer,
                    Way::Inbound
                )
                .is_err()
        );
    }

    #[test]
    fn identities_map_directly_by_role_by_attribute_or_as_the_federation() {
        let b: MeshId = "supplier-b".parse().unwrap();
        let rules = vec![
            Mapping {
                mesh: Some(b.clone()),
                subject: Some("erp".into()),
                role: None,
                attributes: BTreeMap::new(),
                to: Some("supplier-erp".into()),
                roles: vec!["supplier".into()],
                translate: None,
            },
            Mapping {
                mesh: None,
                subject: None,
                role: Some("buyer".into()),
                attributes: BTreeMap::new(),
                to: None,
                roles: vec!["purchasing".into()],
                translate: None,
            },
            Mapping {
                mesh: Some(b.clone()),
                subject: None,
                role: None,
                attributes: [("site".to_owned(), "north".to_owned())].into(),
                to: None,
                roles: vec!["north-site".into()],
                translate: None,
            },
        ];
        let remote = |subject: &str, roles: &[&str], site: &str| Principal {
            mesh: b.clone(),
            subject: subject.into(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            attributes: [("site".to_owned(), site.to_owned())].into(),
        };
        let direct = map(&rules, &remote("erp", &[], "x"));
        assert_eq!(
            (direct.subject.as_str(), direct.roles.as_slice()),
            ("supplier-erp", &["supplier".to_owned()][..])
        );
        let by_role = map(&rules, &remote("mes", &["buyer"], "x"));
        assert_eq!(
            (by_role.subject.as_str(), by_role.roles.as_slice()),
            ("mes", &["purchasing".to_owned()][..])
        );
        let by_attr = map(&rules, &remote("scada", &["operator"], "north"));
        assert_eq!(by_attr.roles, ["north-site"]);
        let unmatched = map(&rules, &Principal::federation(&"plant-c".parse().unwrap()));
        assert_eq!(
            (unmatched.subject.as_str(), unmatched.roles.len()),
            ("federation::plant-c", 0)
        );
        // A sender no rule names is taken for its mesh as a whole, when a rule names that.
        let mut with_partner = rules.clone();
        with_partner.push(Mapping {
            mesh: Some(b.clone()),
            subject: Some("federation::supplier-b".into()),
            role: None,
            attributes: BTreeMap::new(),
            to: None,
            roles: vec!["supplier".into()],
            translate: None,
        });
        let stranger = map(&with_partner, &remote("mes", &["operator"], "x"));
        assert_eq!(
            (stranger.subject.as_str(), stranger.roles.as_slice()),
            ("federation::supplier-b", &["supplier".to_owned()][..])
        );
        let without = map(&rules, &remote("mes", &["operator"], "x"));
        assert_eq!((without.subject.as_str(), without.roles.len()), ("mes", 0));
    }

    #[test]
    fn an_arrival_is_mapped_then_decided_on() {
        let b: MeshId = "supplier-b".parse().unwrap();
        let access = Access::parse(
            r#"permit (principal in Meshfed::Role::"purchasing", action == Meshfed::Action::"publish", resource)
when { resource.name like "orders/*" };"#,
        )
        .unwrap();
        let rules: std::sync::Arc<[Mapping]> = vec![Mapping {
            mesh: Some(b.clone()),
            subject: None,
            role: Some("buyer".into()),
            attributes: BTreeMap::new(),
            to: Some("b-buyer".into()),
            roles: vec!["purchasing".into()],
            translate: None,
        }]
        .into();
        let incoming = Incoming::new(Some(std::sync::Arc::new(access)), rules, b.clone());
        let buyer = Sender {
            subject: "erp".into(),
            roles: vec!["buyer".into()],
            attributes: BTreeMap::new(),
            expires: None,
            credential: None,
        };
        let orders = topic("orders/1");
        let mapped = incoming.admit(&b, Some(&buyer), &orders).unwrap();
        assert_eq!(
            (mapped.subject.as_str(), mapped.roles.as_slice()),
            ("b-buyer", &["purchasing".to_owned()][..])
        );
        let clerk = Sender {
            roles: vec!["clerk".into()],
            ..buyer.clone()
        };
        assert_eq!(
            incoming
                .admit(&b, Some(&clerk), &orders)
                .unwrap_err()
                .to_string(),
            "erp of supplier-b may not publish on orders/1: no access rule permits it"
        );
        // Without a sender, the mesh as a whole: no rule maps it, no rule permits it.
        assert!(incoming.admit(&b, None, &orders).is_err());
        // Without rules, whoever sent it is mapped and let through.
        let open = Incoming::new(None, Vec::new().into(), b.clone());
        assert_eq!(
            open.admit(&b, Some(&clerk), &orders).unwrap().subject,
            "erp"
        );
    }

    #[test]
    fn parse_and_validation_errors_have_offsets() {
        let bad_syntax = "permit (principal, action, resource) when { true ";
        let errors = Access::parse(bad_syntax).unwrap_err();
        assert!(!errors.is_empty());
        let unknown = "permit (principal, action, resource) when { resource.size > 3 };";
        let errors = Access::parse(unknown).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(
            errors[0].0,
            unknown.find("resource.size").unwrap(),
            "{errors:?}"
        );
        let wrong_type = r#"permit (principal == Meshfed::Topic::"x", action, resource);"#;
        assert!(Access::parse(wrong_type).is_err());
    }
}
