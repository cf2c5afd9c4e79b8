//! The dialling side's states.

use aws_lc_rs::agreement::EphemeralPrivateKey;
use serde_bytes::ByteBuf;

use super::messages::{
    ActivationRequest, ConnectionEstablishment, FederationRequest, InvitationProof, PolicyProposal,
    Resume, TrustCredentialExchange,
};
use super::resume::{Reconciled, reconcile};
use super::{
    Context, Established, Event, HandshakeError, KnownFederation, Message, PeerIdentity, Role,
    Step, Target, agreement_input, bundle, check_share, content_secret, invitation_key,
    invitation_mac, key_share_input, signature, unexpected,
};
use crate::agreement::{Agreement, Party, SignedAgreement};
use crate::capability::Accepted;
use crate::crypto::{Digest384, sha384};
use crate::envelope::Timestamp;
use crate::id::{FederationId, MeshId, NodeName};
use crate::policy::{Evaluation, PolicyTerms};

#[expect(
    clippy::enum_variant_names,
    reason = "each state is named for what it expects, as in rustls"
)]
pub(super) enum State {
    ExpectFederationResponse(ExpectFederationResponse),
    ExpectTrustVerification(ExpectTrustVerification),
    ExpectPolicyAnswer(ExpectPolicyAnswer),
    ExpectConnectionConfirmation(ExpectConnectionConfirmation),
    ExpectActivationConfirmation(ExpectActivationConfirmation),
    ExpectResumeConfirmation(ExpectResumeConfirmation),
}

/// `Ok(None)`: the handshake is done.
type Next = Result<Option<State>, HandshakeError>;

impl State {
    pub(super) fn expects(&self) -> &'static str {
        match self {
            Self::ExpectFederationResponse(_) => "FederationResponse",
            Self::ExpectTrustVerification(_) => "TrustCredentialVerification",
            Self::ExpectPolicyAnswer(_) => "PolicyAcceptance or PolicyCounterproposal",
            Self::ExpectConnectionConfirmation(_) => "ConnectionConfirmation",
            Self::ExpectActivationConfirmation(_) => "ActivationConfirmation",
            Self::ExpectResumeConfirmation(_) => "ResumeConfirmation",
        }
    }

    pub(super) fn handle(self, cx: &mut Context, msg: Message, now: Timestamp) -> Next {
        let expects = self.expects();
        match (self, msg) {
            (Self::ExpectFederationResponse(s), Message::FederationResponse(m)) => s.handle(cx, m),
            (Self::ExpectTrustVerification(s), Message::TrustCredentialVerification(m)) => {
                s.handle(cx, m, now)
            }
            (Self::ExpectPolicyAnswer(s), Message::PolicyAcceptance(m)) => {
                s.accepted(cx, m.round, now)
            }
            (Self::ExpectPolicyAnswer(s), Message::PolicyCounterproposal(m)) => {
                s.countered(cx, m.round, m.terms)
            }
            (Self::ExpectConnectionConfirmation(s), Message::ConnectionConfirmation(m)) => {
                s.handle(cx, m)
            }
            (Self::ExpectActivationConfirmation(s), Message::ActivationConfirmation(m)) => {
                s.handle(cx, m.federation_id)
            }
            (Self::ExpectResumeConfirmation(s), Message::ResumeConfirmation(m)) => s.handle(cx, m),
            (_, msg) => Err(unexpected(expects, &msg)),
        }
    }
}

/// Whom we expect on the other side, and the CA pinned for it.
struct Expected {
    mesh: MeshId,
    ca_fingerprint: Digest384,
    invitation: Option<super::Invitation>,
}

pub(super) fn start(
    cx: &mut Context,
    target: Target,
    now: Timestamp,
) -> Result<State, HandshakeError> {
    let expected = match target {
        Target::Join(inv) => Expected {
            mesh: inv.inviter.clone(),
            ca_fingerprint: inv.ca_fingerprint,
            invitation: Some(inv),
        },
        Target::Pinned(p) => Expected {
            mesh: p.mesh,
            ca_fingerprint: p.ca_fingerprint,
            invitation: None,
        },
        Target::Resume(known) => return resume(cx, known, now),
    };
    cx.send(Message::FederationRequest(FederationRequest {
        mesh: cx.local.mesh.clone(),
        node: cx.local.node.clone(),
        capabilities: cx.local.capabilities.clone(),
    }));
    Ok(State::ExpectFederationResponse(ExpectFederationResponse {
        expected,
    }))
}

fn resume(
    cx: &mut Context,
    known: KnownFederation,
    now: Timestamp,
) -> Result<State, HandshakeError> {
    let peer = cx.verify_peer(&known.peer_bundle, now)?;
    if peer.mesh != known.peer_mesh {
        return Err(HandshakeError::IdentityMismatch {
            claimed: known.peer_mesh.to_string(),
            certified: peer.mesh.to_string(),
        });
    }
    let (private, share) = cx.key_share()?;
    let digest = known.agreement.digest();
    let input = key_share_input(
        b"meshfed-resume-v1\0",
        &digest,
        &[&share],
        &cx.channel.binding,
    );
    let sig = cx.sign(&input)?;
    cx.send(Message::Resume(Resume {
        federation_id: known.id.clone(),
        agreement_digest: ByteBuf::from(digest.to_vec()),
        key_share: ByteBuf::from(share.clone()),
        signature: ByteBuf::from(sig.0.to_vec()),
        agreement: Some(known.agreement.clone()),
    }));
    Ok(State::ExpectResumeConfirmation(ExpectResumeConfirmation {
        known,
        peer,
        private,
        share,
    }))
}

pub(super) struct ExpectFederationResponse {
    expected: Expected,
}

impl ExpectFederationResponse {
    fn handle(self, cx: &mut Context, m: super::messages::FederationResponse) -> Next {
        if m.mesh != self.expected.mesh {
            return Err(HandshakeError::IdentityMismatch {
                claimed: m.mesh.to_string(),
                certified: self.expected.mesh.to_string(),
            });
        }
        cx.local.capabilities.check_accepted(&m.accepted)?;
        cx.events
            .push_back(Event::Progress(Step::CapabilitiesAgreed));
        let invitation = self.expected.invitation.as_ref().map(|inv| {
            let key = invitation_key(&inv.secret);
            InvitationProof {
                token_id: inv.token_id.clone(),
                mac: ByteBuf::from(invitation_mac(
                    &key,
                    &inv.token_id,
                    &cx.local.mesh,
                    &cx.channel.binding,
                )),
            }
        });
        cx.send(Message::TrustCredentialExchange(TrustCredentialExchange {
            bundle: cx.local.bundle.iter().cloned().map(ByteBuf::from).collect(),
            invitation,
        }));
        Ok(Some(State::ExpectTrustVerification(
            ExpectTrustVerification {
                expected: self.expected,
                federation_id: m.federation_id,
                peer_node: m.node,
                accepted: m.accepted,
            },
        )))
    }
}

pub(super) struct ExpectTrustVerification {
    expected: Expected,
    federation_id: FederationId,
    peer_node: NodeName,
    accepted: Accepted,
}

impl ExpectTrustVerification {
    fn handle(
        self,
        cx: &mut Context,
        m: super::messages::TrustCredentialVerification,
        now: Timestamp,
    ) -> Next {
        let peer_bundle = bundle("TrustCredentialVerification", &m.bundle)?;
        if !peer_bundle
            .iter()
            .any(|ca| sha384(ca) == self.expected.ca_fingerprint)
        {
            return Err(HandshakeError::FingerprintMismatch(hex::encode(
                self.expected.ca_fingerprint,
            )));
        }
        let peer = cx.verify_peer(&peer_bundle, now)?;
        if peer.mesh != self.expected.mesh || peer.node != self.peer_node {
            return Err(HandshakeError::IdentityMismatch {
                claimed: format!("{}/{}", self.expected.mesh, self.peer_node),
                certified: format!("{}/{}", peer.mesh, peer.node),
            });
        }
        cx.events.push_back(Event::Progress(Step::PeerVerified));
        let proposed = cx.local.policy.proposal();
        cx.send(Message::PolicyProposal(PolicyProposal {
            round: 1,
            terms: proposed.clone(),
        }));
        Ok(Some(State::ExpectPolicyAnswer(ExpectPolicyAnswer {
            federation_id: self.federation_id,
            peer,
            peer_bundle,
            accepted: self.accepted,
            round: 1,
            proposed,
        })))
    }
}

pub(super) struct ExpectPolicyAnswer {
    federation_id: FederationId,
    peer: PeerIdentity,
    peer_bundle: Vec<Vec<u8>>,
    accepted: Accepted,
    round: u8,
    proposed: PolicyTerms,
}

impl ExpectPolicyAnswer {
    fn check_round(&self, round: u8) -> Result<(), HandshakeError> {
        if round != self.round {
            return Err(HandshakeError::InvalidField {
                message: "PolicyAcceptance",
                field: "round",
                reason: format!("answers round {round}, the open round is {}", self.round),
            });
        }
        Ok(())
    }

    fn countered(mut self, cx: &mut Context, round: u8, terms: PolicyTerms) -> Next {
        self.check_round(round)?;
        let next = match cx.local.policy.evaluate(&terms)? {
            Evaluation::Accept => terms,
            Evaluation::Counter(c) => *c,
        };
        if self.round >= super::MAX_POLICY_ROUNDS {
            return Err(HandshakeError::PolicyRoundsExhausted(
                super::MAX_POLICY_ROUNDS,
            ));
        }
        self.round += 1;
        cx.send(Message::PolicyProposal(PolicyProposal {
            round: self.round,
            terms: next.clone(),
        }));
        self.proposed = next;
        Ok(Some(State::ExpectPolicyAnswer(self)))
    }

    fn accepted(self, cx: &mut Context, round: u8, now: Timestamp) -> Next {
        self.check_round(round)?;
        cx.events
            .push_back(Event::Progress(Step::PolicyAgreed { rounds: self.round }));
        let agreement = Agreement {
            federation_id: self.federation_id.clone(),
            version: 1,
            initiator: Party {
                mesh: cx.local.mesh.clone(),
                node: cx.local.node.clone(),
                bundle: cx.local.bundle.iter().cloned().map(ByteBuf::from).collect(),
            },
            responder: Party {
                mesh: self.peer.mesh.clone(),
                node: self.peer.node.clone(),
                bundle: self
                    .peer_bundle
                    .iter()
                    .cloned()
                    .map(ByteBuf::from)
                    .collect(),
            },
            capabilities: self.accepted.clone(),
            policy: self.proposed,
            valid_from: now,
            valid_until: now.saturating_add(cx.local.agreement_validity),
        };
        let bytes = agreement.encode();
        let digest = sha384(&bytes);
        let agreement_sig = cx.sign(&agreement_input(Role::Initiator, &digest))?;
        let (private, share) = cx.key_share()?;
        let share_sig = cx.sign(&key_share_input(
            b"meshfed-key-share-v1\0",
            &digest,
            &[&share],
            &cx.channel.binding,
        ))?;
        cx.send(Message::ConnectionEstablishment(ConnectionEstablishment {
            agreement: ByteBuf::from(bytes.clone()),
            agreement_signature: ByteBuf::from(agreement_sig.0.to_vec()),
            key_share: ByteBuf::from(share.clone()),
            key_share_signature: ByteBuf::from(share_sig.0.to_vec()),
        }));
        Ok(Some(State::ExpectConnectionConfirmation(
            ExpectConnectionConfirmation {
                federation_id: self.federation_id,
                peer: self.peer,
                peer_bundle: self.peer_bundle,
                accepted: self.accepted,
                bytes,
                digest,
                initiator_signature: agreement_sig.0.to_vec(),
                private,
                share,
            },
        )))
    }
}

pub(super) struct ExpectConnectionConfirmation {
    federation_id: FederationId,
    peer: PeerIdentity,
    peer_bundle: Vec<Vec<u8>>,
    accepted: Accepted,
    bytes: Vec<u8>,
    digest: Digest384,
    initiator_signature: Vec<u8>,
    private: EphemeralPrivateKey,
    share: Vec<u8>,
}

impl ExpectConnectionConfirmation {
    fn handle(self, cx: &mut Context, m: super::messages::ConnectionConfirmation) -> Next {
        check_share("ConnectionConfirmation", &m.key_share)?;
        let agreement_sig = signature(
            "ConnectionConfirmation",
            "agreement_signature",
            &m.agreement_signature,
        )?;
        let share_sig = signature(
            "ConnectionConfirmation",
            "key_share_signature",
            &m.key_share_signature,
        )?;
        self.peer
            .key
            .verify(
                &agreement_input(Role::Responder, &self.digest),
                &agreement_sig,
            )
            .map_err(|_| HandshakeError::BadSignature("the agreement (responder)"))?;
        let input = key_share_input(
            b"meshfed-key-share-v1\0",
            &self.digest,
            &[&self.share, &m.key_share],
            &cx.channel.binding,
        );
        self.peer
            .key
            .verify(&input, &share_sig)
            .map_err(|_| HandshakeError::BadSignature("the responder's key share"))?;
        let content = content_secret(
            self.private,
            &m.key_share,
            &[&self.digest, &self.share, &m.key_share],
        )?;
        cx.events.push_back(Event::Progress(Step::AgreementSigned));
        cx.send(Message::ActivationRequest(ActivationRequest {
            federation_id: self.federation_id.clone(),
        }));
        let established = Established {
            federation_id: self.federation_id,
            role: Role::Initiator,
            peer: self.peer,
            peer_bundle: self.peer_bundle,
            agreement: Some(SignedAgreement {
                bytes: ByteBuf::from(self.bytes),
                initiator_signature: ByteBuf::from(self.initiator_signature),
                responder_signature: ByteBuf::from(agreement_sig.0.to_vec()),
            }),
            accepted: Some(self.accepted),
            caught_up: None,
            content,
        };
        Ok(Some(State::ExpectActivationConfirmation(
            ExpectActivationConfirmation { established },
        )))
    }
}

pub(super) struct ExpectActivationConfirmation {
    established: Established,
}

impl ExpectActivationConfirmation {
    fn handle(self, cx: &mut Context, id: FederationId) -> Next {
        if id != self.established.federation_id {
            return Err(HandshakeError::InvalidField {
                message: "ActivationConfirmation",
                field: "federation_id",
                reason: format!("confirms {id}, not {}", self.established.federation_id),
            });
        }
        cx.events
            .push_back(Event::Established(Box::new(self.established)));
        Ok(None)
    }
}

pub(super) struct ExpectResumeConfirmation {
    known: KnownFederation,
    peer: PeerIdentity,
    private: EphemeralPrivateKey,
    share: Vec<u8>,
}

impl ExpectResumeConfirmation {
    fn handle(self, cx: &mut Context, m: super::messages::ResumeConfirmation) -> Next {
        check_share("ResumeConfirmation", &m.key_share)?;
        let sig = signature("ResumeConfirmation", "signature", &m.signature)?;
        // The responder sends its agreement only when it is the newer one; this side then takes
        // it over, and the confirmation covers its digest.
        let caught_up = match &m.agreement {
            None => None,
            Some(theirs) => match reconcile(
                cx,
                "ResumeConfirmation",
                &self.known.agreement,
                theirs,
                &self.peer,
            )? {
                Reconciled::TakeTheirs(c) => Some(c),
                Reconciled::SendOurs => {
                    return Err(HandshakeError::AgreementNotReconciled(
                        "the peer sent back the older agreement, which the one stored here replaced".to_owned(),
                    ));
                }
            },
        };
        let digest = caught_up
            .as_ref()
            .map_or_else(|| self.known.agreement.digest(), |c| c.signed.digest());
        let input = key_share_input(
            b"meshfed-resume-confirm-v1\0",
            &digest,
            &[&self.share, &m.key_share],
            &cx.channel.binding,
        );
        self.peer
            .key
            .verify(&input, &sig)
            .map_err(|_| HandshakeError::BadSignature("the resumption (responder)"))?;
        let content = content_secret(
            self.private,
            &m.key_share,
            &[&digest, &self.share, &m.key_share],
        )?;
        cx.events
            .push_back(Event::Established(Box::new(Established {
                federation_id: self.known.id,
                role: Role::Initiator,
                peer: self.peer,
                peer_bundle: self.known.peer_bundle,
                agreement: None,
                accepted: None,
                caught_up,
                content,
            })));
        Ok(None)
    }
}
