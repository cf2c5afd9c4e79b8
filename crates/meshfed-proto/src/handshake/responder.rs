//! The answering side's states.

use std::time::Duration;

use serde_bytes::ByteBuf;

use super::messages::{
    ActivationConfirmation, ConnectionConfirmation, ConnectionEstablishment, FederationRequest,
    FederationResponse, PolicyAcceptance, PolicyCounterproposal, Resume, ResumeConfirmation,
    TrustCredentialExchange, TrustCredentialVerification,
};
use super::resume::{Reconciled, reconcile};
use super::{
    CaughtUp, Context, Established, Event, HandshakeError, KnownFederation, Message, PeerIdentity,
    ResponderKnowledge, Role, Step, agreement_input, bundle, check_share, content_secret, digest,
    key_share_input, signature, unexpected, verify_invitation_mac,
};
use crate::agreement::{Agreement, Party, SignedAgreement};
use crate::capability::Accepted;
use crate::crypto::{Digest384, sha384};
use crate::envelope::Timestamp;
use crate::id::FederationId;
use crate::policy::{Evaluation, PolicyTerms};

/// How far the initiator's clock may be from ours when it dates an agreement.
const CLOCK_SKEW: Duration = Duration::from_secs(300);

#[expect(
    clippy::enum_variant_names,
    reason = "each state is named for what it expects, as in rustls"
)]
pub(super) enum State {
    ExpectFirst(ExpectFirst),
    ExpectTrustExchange(ExpectTrustExchange),
    ExpectPolicyProposal(ExpectPolicyProposal),
    ExpectConnectionEstablishment(ExpectConnectionEstablishment),
    ExpectActivationRequest(ExpectActivationRequest),
}

/// `Ok(None)`: the handshake is done.
type Next = Result<Option<State>, HandshakeError>;

pub(super) fn start(knowledge: ResponderKnowledge) -> State {
    State::ExpectFirst(ExpectFirst { knowledge })
}

impl State {
    pub(super) fn expects(&self) -> &'static str {
        match self {
            Self::ExpectFirst(_) => "FederationRequest or Resume",
            Self::ExpectTrustExchange(_) => "TrustCredentialExchange",
            Self::ExpectPolicyProposal(_) => "PolicyProposal",
            Self::ExpectConnectionEstablishment(_) => "ConnectionEstablishment",
            Self::ExpectActivationRequest(_) => "ActivationRequest",
        }
    }

    pub(super) fn handle(self, cx: &mut Context, msg: Message, now: Timestamp) -> Next {
        let expects = self.expects();
        match (self, msg) {
            (Self::ExpectFirst(s), Message::FederationRequest(m)) => s.request(cx, m),
            (Self::ExpectFirst(s), Message::Resume(m)) => s.resume(cx, m, now),
            (Self::ExpectTrustExchange(s), Message::TrustCredentialExchange(m)) => {
                s.handle(cx, m, now)
            }
            (Self::ExpectPolicyProposal(s), Message::PolicyProposal(m)) => {
                s.handle(cx, m.round, m.terms)
            }
            (Self::ExpectConnectionEstablishment(s), Message::ConnectionEstablishment(m)) => {
                s.handle(cx, m, now)
            }
            (Self::ExpectActivationRequest(s), Message::ActivationRequest(m)) => {
                s.handle(cx, m.federation_id)
            }
            (_, msg) => Err(unexpected(expects, &msg)),
        }
    }
}

pub(super) struct ExpectFirst {
    knowledge: ResponderKnowledge,
}

impl ExpectFirst {
    fn request(self, cx: &mut Context, m: FederationRequest) -> Next {
        let k = &self.knowledge;
        if let Some(existing) = k.federations.iter().find(|f| f.peer_mesh == m.mesh) {
            return Err(HandshakeError::AlreadyFederated {
                peer: m.mesh,
                existing: existing.id.clone(),
            });
        }
        let invited = k.invitations.iter().any(|i| i.peer_mesh == m.mesh);
        let pinned = k.pinned.iter().any(|p| p.mesh == m.mesh);
        if !invited && !pinned {
            return Err(HandshakeError::NotInvited(m.mesh));
        }
        // A federation that ended with this mesh comes back under its id.
        let federation_id = match k.ended.iter().find(|e| e.peer_mesh == m.mesh) {
            Some(ended) => ended.id.clone(),
            None => k.new_federation_id.clone().ok_or_else(|| {
                HandshakeError::Local("no federation id was prepared for a new federation".into())
            })?,
        };
        let accepted = cx.local.capabilities.negotiate(&m.capabilities)?;
        cx.events
            .push_back(Event::Progress(Step::CapabilitiesAgreed));
        cx.send(Message::FederationResponse(FederationResponse {
            federation_id: federation_id.clone(),
            mesh: cx.local.mesh.clone(),
            node: cx.local.node.clone(),
            accepted: accepted.clone(),
        }));
        Ok(Some(State::ExpectTrustExchange(ExpectTrustExchange {
            knowledge: self.knowledge,
            request: m,
            federation_id,
            accepted,
        })))
    }

    fn resume(self, cx: &mut Context, m: Resume, now: Timestamp) -> Next {
        let known = self
            .knowledge
            .federations
            .into_iter()
            .find(|f| f.id == m.federation_id)
            .ok_or_else(|| HandshakeError::UnknownFederation(m.federation_id.clone()))?;
        let theirs = digest("Resume", &m.agreement_digest)?;
        let peer = cx.verify_peer(&known.peer_bundle, now)?;
        if peer.mesh != known.peer_mesh {
            return Err(HandshakeError::IdentityMismatch {
                claimed: known.peer_mesh.to_string(),
                certified: peer.mesh.to_string(),
            });
        }
        check_share("Resume", &m.key_share)?;
        let sig = signature("Resume", "signature", &m.signature)?;
        let input = key_share_input(
            b"meshfed-resume-v1\0",
            &theirs,
            &[&m.key_share],
            &cx.channel.binding,
        );
        peer.key
            .verify(&input, &sig)
            .map_err(|_| HandshakeError::BadSignature("the resumption (initiator)"))?;
        let Agreed {
            digest: agreed,
            caught_up,
            send,
        } = reconciled(cx, &known, theirs, m.agreement, &peer)?;
        let (private, share) = cx.key_share()?;
        let input = key_share_input(
            b"meshfed-resume-confirm-v1\0",
            &agreed,
            &[&m.key_share, &share],
            &cx.channel.binding,
        );
        let sig = cx.sign(&input)?;
        let content = content_secret(private, &m.key_share, &[&agreed, &m.key_share, &share])?;
        cx.send(Message::ResumeConfirmation(ResumeConfirmation {
            key_share: ByteBuf::from(share),
            signature: ByteBuf::from(sig.0.to_vec()),
            agreement: send,
        }));
        cx.events
            .push_back(Event::Established(Box::new(Established {
                federation_id: known.id,
                role: Role::Responder,
                peer,
                peer_bundle: known.peer_bundle,
                agreement: None,
                accepted: None,
                caught_up,
                content,
            })));
        Ok(None)
    }
}

/// What the responder resumes under.
struct Agreed {
    /// The digest of the agreement both sides resume under.
    digest: Digest384,
    /// The initiator's agreement, which this side takes over: the successor of the stored one.
    caught_up: Option<Box<CaughtUp>>,
    /// The stored agreement, sent to the initiator to take over: the successor of its one.
    send: Option<SignedAgreement>,
}

/// What the responder resumes under, given the initiator's digest `theirs` and the agreement it
/// sent.
fn reconciled(
    cx: &Context,
    known: &KnownFederation,
    theirs: Digest384,
    sent: Option<SignedAgreement>,
    peer: &PeerIdentity,
) -> Result<Agreed, HandshakeError> {
    let ours = known.agreement.digest();
    if theirs == ours {
        return Ok(Agreed {
            digest: ours,
            caught_up: None,
            send: None,
        });
    }
    let Some(sent) = sent else {
        return Err(HandshakeError::AgreementMismatch("agreement_digest"));
    };
    if sent.digest() != theirs {
        return Err(HandshakeError::InvalidField {
            message: "Resume",
            field: "agreement",
            reason: "is not the agreement agreement_digest names".to_owned(),
        });
    }
    match reconcile(cx, "Resume", &known.agreement, &sent, peer)? {
        Reconciled::TakeTheirs(c) => Ok(Agreed {
            digest: theirs,
            caught_up: Some(c),
            send: None,
        }),
        Reconciled::SendOurs => Ok(Agreed {
            digest: ours,
            caught_up: None,
            send: Some(known.agreement.clone()),
        }),
    }
}

pub(super) struct ExpectTrustExchange {
    knowledge: ResponderKnowledge,
    request: FederationRequest,
    federation_id: FederationId,
    accepted: Accepted,
}

impl ExpectTrustExchange {
    fn handle(self, cx: &mut Context, m: TrustCredentialExchange, now: Timestamp) -> Next {
        let peer_bundle = bundle("TrustCredentialExchange", &m.bundle)?;
        let peer = cx.verify_peer(&peer_bundle, now)?;
        if peer.mesh != self.request.mesh || peer.node != self.request.node {
            return Err(HandshakeError::IdentityMismatch {
                claimed: format!("{}/{}", self.request.mesh, self.request.node),
                certified: format!("{}/{}", peer.mesh, peer.node),
            });
        }
        match &m.invitation {
            Some(proof) => {
                let token = proof.token_id.chars().take(64).collect::<String>();
                let inv = self
                    .knowledge
                    .invitations
                    .iter()
                    .find(|i| i.token_id == proof.token_id)
                    .ok_or_else(|| HandshakeError::InvitationUnknown(token.clone()))?;
                if inv.used.is_some() {
                    return Err(HandshakeError::InvitationReused(token));
                }
                if inv.expires <= now {
                    return Err(HandshakeError::InvitationExpired(token));
                }
                if inv.peer_mesh != peer.mesh {
                    return Err(HandshakeError::InvitationWrongMesh {
                        token,
                        invited: inv.peer_mesh.clone(),
                        presented: peer.mesh,
                    });
                }
                if !verify_invitation_mac(
                    &inv.verifier_key,
                    &inv.token_id,
                    &peer.mesh,
                    &cx.channel.binding,
                    &proof.mac,
                ) {
                    return Err(HandshakeError::InvitationProofInvalid(token));
                }
                cx.events.push_back(Event::InvitationUsed {
                    token_id: inv.token_id.clone(),
                });
            }
            None => {
                let pin = self
                    .knowledge
                    .pinned
                    .iter()
                    .find(|p| p.mesh == peer.mesh)
                    .ok_or_else(|| HandshakeError::NotInvited(peer.mesh.clone()))?;
                if !peer_bundle
                    .iter()
                    .any(|ca| sha384(ca) == pin.ca_fingerprint)
                {
                    return Err(HandshakeError::FingerprintMismatch(hex::encode(
                        pin.ca_fingerprint,
                    )));
                }
            }
        }
        cx.events.push_back(Event::Progress(Step::PeerVerified));
        cx.send(Message::TrustCredentialVerification(
            TrustCredentialVerification {
                bundle: cx.local.bundle.iter().cloned().map(ByteBuf::from).collect(),
            },
        ));
        Ok(Some(State::ExpectPolicyProposal(ExpectPolicyProposal {
            federation_id: self.federation_id,
            peer,
            peer_bundle,
            accepted: self.accepted,
            round: 1,
        })))
    }
}

pub(super) struct ExpectPolicyProposal {
    federation_id: FederationId,
    peer: PeerIdentity,
    peer_bundle: Vec<Vec<u8>>,
    accepted: Accepted,
    round: u8,
}

impl ExpectPolicyProposal {
    fn handle(mut self, cx: &mut Context, round: u8, terms: PolicyTerms) -> Next {
        if round != self.round {
            return Err(HandshakeError::InvalidField {
                message: "PolicyProposal",
                field: "round",
                reason: format!("is {round}, expected {}", self.round),
            });
        }
        match cx.local.policy.evaluate(&terms)? {
            Evaluation::Accept => {
                cx.send(Message::PolicyAcceptance(PolicyAcceptance { round }));
                cx.events
                    .push_back(Event::Progress(Step::PolicyAgreed { rounds: round }));
                Ok(Some(State::ExpectConnectionEstablishment(
                    ExpectConnectionEstablishment {
                        proposal: self,
                        terms,
                    },
                )))
            }
            Evaluation::Counter(counter) => {
                if round >= super::MAX_POLICY_ROUNDS {
                    return Err(HandshakeError::PolicyRoundsExhausted(
                        super::MAX_POLICY_ROUNDS,
                    ));
                }
                cx.send(Message::PolicyCounterproposal(PolicyCounterproposal {
                    round,
                    terms: *counter,
                }));
                self.round += 1;
                Ok(Some(State::ExpectPolicyProposal(self)))
            }
        }
    }
}

pub(super) struct ExpectConnectionEstablishment {
    proposal: ExpectPolicyProposal,
    terms: PolicyTerms,
}

impl ExpectConnectionEstablishment {
    /// The agreement must be exactly what was negotiated, dated plausibly.
    fn check(&self, cx: &Context, a: &Agreement, now: Timestamp) -> Result<(), HandshakeError> {
        let p = &self.proposal;
        let party = |mesh, node, bundle: &[Vec<u8>]| Party {
            mesh,
            node,
            bundle: bundle.iter().cloned().map(ByteBuf::from).collect(),
        };
        let checks: [(bool, &'static str); 7] = [
            (a.federation_id == p.federation_id, "federation_id"),
            (a.version == 1, "version"),
            (
                a.initiator == party(p.peer.mesh.clone(), p.peer.node.clone(), &p.peer_bundle),
                "initiator",
            ),
            (
                a.responder
                    == party(
                        cx.local.mesh.clone(),
                        cx.local.node.clone(),
                        &cx.local.bundle,
                    ),
                "responder",
            ),
            (a.capabilities == p.accepted, "capabilities"),
            (a.policy == self.terms, "policy"),
            (
                a.valid_from.0.abs_diff(now.0) <= CLOCK_SKEW.as_millis() as u64,
                "valid_from",
            ),
        ];
        if let Some((_, field)) = checks.iter().find(|(ok, _)| !ok) {
            return Err(HandshakeError::AgreementMismatch(field));
        }
        let longest = a.valid_from.saturating_add(cx.local.agreement_validity);
        if a.valid_until <= a.valid_from || a.valid_until > longest {
            return Err(HandshakeError::AgreementMismatch("valid_until"));
        }
        Ok(())
    }

    fn handle(self, cx: &mut Context, m: ConnectionEstablishment, now: Timestamp) -> Next {
        let agreement =
            Agreement::decode(&m.agreement).map_err(|e| HandshakeError::InvalidField {
                message: "ConnectionEstablishment",
                field: "agreement",
                reason: e.to_string(),
            })?;
        self.check(cx, &agreement, now)?;
        let digest: Digest384 = sha384(&m.agreement);
        let peer = &self.proposal.peer;
        let agreement_sig = signature(
            "ConnectionEstablishment",
            "agreement_signature",
            &m.agreement_signature,
        )?;
        peer.key
            .verify(&agreement_input(Role::Initiator, &digest), &agreement_sig)
            .map_err(|_| HandshakeError::BadSignature("the agreement (initiator)"))?;
        check_share("ConnectionEstablishment", &m.key_share)?;
        let share_sig = signature(
            "ConnectionEstablishment",
            "key_share_signature",
            &m.key_share_signature,
        )?;
        let input = key_share_input(
            b"meshfed-key-share-v1\0",
            &digest,
            &[&m.key_share],
            &cx.channel.binding,
        );
        peer.key
            .verify(&input, &share_sig)
            .map_err(|_| HandshakeError::BadSignature("the initiator's key share"))?;

        let own_agreement_sig = cx.sign(&agreement_input(Role::Responder, &digest))?;
        let (private, share) = cx.key_share()?;
        let input = key_share_input(
            b"meshfed-key-share-v1\0",
            &digest,
            &[&m.key_share, &share],
            &cx.channel.binding,
        );
        let own_share_sig = cx.sign(&input)?;
        let content = content_secret(private, &m.key_share, &[&digest, &m.key_share, &share])?;
        cx.send(Message::ConnectionConfirmation(ConnectionConfirmation {
            agreement_signature: ByteBuf::from(own_agreement_sig.0.to_vec()),
            key_share: ByteBuf::from(share),
            key_share_signature: ByteBuf::from(own_share_sig.0.to_vec()),
        }));
        cx.events.push_back(Event::Progress(Step::AgreementSigned));
        let p = self.proposal;
        let established = Established {
            federation_id: p.federation_id,
            role: Role::Responder,
            peer: p.peer,
            peer_bundle: p.peer_bundle,
            agreement: Some(SignedAgreement {
                bytes: m.agreement,
                initiator_signature: m.agreement_signature,
                responder_signature: ByteBuf::from(own_agreement_sig.0.to_vec()),
            }),
            accepted: Some(p.accepted),
            caught_up: None,
            content,
        };
        Ok(Some(State::ExpectActivationRequest(
            ExpectActivationRequest { established },
        )))
    }
}

pub(super) struct ExpectActivationRequest {
    established: Established,
}

impl ExpectActivationRequest {
    fn handle(self, cx: &mut Context, id: FederationId) -> Next {
        if id != self.established.federation_id {
            return Err(HandshakeError::InvalidField {
                message: "ActivationRequest",
                field: "federation_id",
                reason: format!("names {id}, not {}", self.established.federation_id),
            });
        }
        cx.send(Message::ActivationConfirmation(ActivationConfirmation {
            federation_id: id,
        }));
        cx.events
            .push_back(Event::Established(Box::new(self.established)));
        Ok(None)
    }
}
