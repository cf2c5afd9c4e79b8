//! Deterministic simulation of two handshake endpoints: a virtual clock, per-frame delay, and a
//! hook that can drop or alter frames in flight. Certificates here are a test format checked
//! by [`TestVerifier`]; real X.509 paths are exercised by the node's end-to-end tests.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::*;
use crate::agreement::SignedAgreement;
use crate::crypto::KeyEpoch;
use crate::envelope::Timestamp;
use crate::frame::{Frame, FrameType};

const STEP: Duration = Duration::from_secs(10);
const T0: Timestamp = Timestamp(1_700_000_000_000);

/// Test certificate: who, which key, issued by which CA (by fingerprint), until when.
#[derive(Serialize, Deserialize)]
struct TestCert {
    mesh: String,
    node: String,
    key: Vec<u8>,
    issuer: Vec<u8>,
    not_after: u64,
}

#[derive(Debug)]
struct TestVerifier;

impl PeerVerifier for TestVerifier {
    fn verify(
        &self,
        bundle: &[Vec<u8>],
        leaf: &[u8],
        _intermediates: &[Vec<u8>],
        now: Timestamp,
    ) -> Result<PeerIdentity, String> {
        let cert: TestCert = ciborium::from_reader(leaf).map_err(|e| e.to_string())?;
        if !bundle.iter().any(|ca| sha384(ca).as_slice() == cert.issuer) {
            return Err("issuer not in bundle".into());
        }
        if now.0 > cert.not_after {
            return Err("certificate expired".into());
        }
        Ok(PeerIdentity {
            mesh: cert
                .mesh
                .parse()
                .map_err(|e: crate::InvalidId| e.to_string())?,
            node: cert
                .node
                .parse()
                .map_err(|e: crate::InvalidId| e.to_string())?,
            key: VerifyingKey::from_sec1(&cert.key).map_err(|e| e.to_string())?,
        })
    }
}

struct Node {
    local: LocalIdentity,
    leaf: Vec<u8>,
}

fn node(mesh: &str, ca: &[u8]) -> Node {
    let key = SigningKey::generate().unwrap();
    let cert = TestCert {
        mesh: mesh.into(),
        node: "gw1".into(),
        key: key.public_key().to_vec(),
        issuer: sha384(ca).to_vec(),
        not_after: T0.0 + 86_400_000,
    };
    let mut leaf = Vec::new();
    ciborium::into_writer(&cert, &mut leaf).unwrap();
    Node {
        local: LocalIdentity {
            mesh: mesh.parse().unwrap(),
            node: "gw1".parse().unwrap(),
            bundle: vec![ca.to_vec()],
            key: Arc::new(key),
            capabilities: Capabilities::default(),
            policy: PolicyOffer::default(),
            verifier: Arc::new(TestVerifier),
            step_timeout: STEP,
            agreement_validity: Duration::from_secs(86_400 * 365),
        },
        leaf,
    }
}

fn invitation(inviter: &Node, invitee: &str) -> (Invitation, PendingInvitation) {
    let secret = [42u8; 32];
    let inv = Invitation {
        token_id: "tok_1".into(),
        inviter: inviter.local.mesh.clone(),
        ca_fingerprint: sha384(&inviter.local.bundle[0]),
        secret,
    };
    let pending = PendingInvitation {
        token_id: "tok_1".into(),
        peer_mesh: invitee.parse().unwrap(),
        verifier_key: invitation_key(&secret),
        expires: T0.saturating_add(Duration::from_secs(3600)),
        used: None,
    };
    (inv, pending)
}

#[derive(Default)]
struct Outcome {
    established: Option<Box<Established>>,
    error: Option<HandshakeError>,
    steps: Vec<Step>,
    invitations_used: Vec<String>,
}

/// In flight: (arrival time, to the responder?, frame).
type Flight = (Timestamp, bool, Frame);

struct Pair {
    i: Handshake,
    r: Handshake,
    now: Timestamp,
    delay: Duration,
    flight: VecDeque<Flight>,
    /// Decides each frame's fate: `None` drops it.
    tamper: Box<dyn FnMut(bool, Frame) -> Option<Frame>>,
    out_i: Outcome,
    out_r: Outcome,
}

impl Pair {
    fn new(
        initiator: &Node,
        responder: &Node,
        target: Target,
        knowledge: ResponderKnowledge,
    ) -> Self {
        Self::with_bindings(initiator, responder, target, knowledge, [7; 32], [7; 32])
    }

    fn with_bindings(
        initiator: &Node,
        responder: &Node,
        target: Target,
        knowledge: ResponderKnowledge,
        bind_i: [u8; 32],
        bind_r: [u8; 32],
    ) -> Self {
        let ch_i = Channel {
            peer_leaf: responder.leaf.clone(),
            peer_intermediates: vec![],
            binding: bind_i.to_vec(),
        };
        let ch_r = Channel {
            peer_leaf: initiator.leaf.clone(),
            peer_intermediates: vec![],
            binding: bind_r.to_vec(),
        };
        let mut out_i = Outcome::default();
        let i = match Handshake::initiator(initiator.local.clone(), ch_i, target, T0) {
            Ok(h) => h,
            Err(e) => {
                out_i.error = Some(e);
                // A handshake that failed before its first message: a placeholder that never speaks.
                Handshake::responder(
                    initiator.local.clone(),
                    Channel {
                        peer_leaf: vec![],
                        peer_intermediates: vec![],
                        binding: vec![],
                    },
                    ResponderKnowledge::default(),
                    T0,
                )
            }
        };
        let r = Handshake::responder(responder.local.clone(), ch_r, knowledge, T0);
        Self {
            i,
            r,
            now: T0,
            delay: Duration::from_millis(20),
            flight: VecDeque::new(),
            tamper: Box::new(|_, f| Some(f)),
            out_i,
            out_r: Outcome::default(),
        }
    }

    fn collect(hs: &mut Handshake, out: &mut Outcome) {
        while let Some(ev) = hs.poll_event() {
            match ev {
                Event::Progress(s) => out.steps.push(s),
                Event::InvitationUsed { token_id } => out.invitations_used.push(token_id),
                Event::Established(e) => out.established = Some(e),
            }
        }
    }

    fn flush(&mut self) {
        let at = self.now.saturating_add(self.delay);
        while let Some(f) = self.i.poll_transmit() {
            if let Some(f) = (self.tamper)(true, f) {
                self.flight.push_back((at, true, f));
            }
        }
        while let Some(f) = self.r.poll_transmit() {
            if let Some(f) = (self.tamper)(false, f) {
                self.flight.push_back((at, false, f));
            }
        }
    }

    /// Runs until nothing is in flight and no timer is pending; virtual time only.
    fn run(&mut self) {
        for _ in 0..1000 {
            Self::collect(&mut self.i, &mut self.out_i);
            Self::collect(&mut self.r, &mut self.out_r);
            self.flush();
            let next_timer = [self.i.poll_timeout(), self.r.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let arrival = self.flight.front().map(|f| f.0);
            let deliver = match (arrival, next_timer) {
                (Some(at), Some(t)) => at <= t,
                (Some(_), None) => true,
                (None, _) => false,
            };
            match (deliver, next_timer) {
                (true, _) => {
                    let (at, to_r, frame) = self.flight.pop_front().unwrap();
                    self.now = self.now.max(at);
                    let (hs, out) = if to_r {
                        (&mut self.r, &mut self.out_r)
                    } else {
                        (&mut self.i, &mut self.out_i)
                    };
                    if hs.is_finished() {
                        continue;
                    }
                    if let Err(e) = hs.handle_frame(&frame, self.now) {
                        out.error.get_or_insert(e);
                    }
                }
                (false, Some(t)) => {
                    self.now = self.now.max(t);
                    for (hs, out) in [
                        (&mut self.i, &mut self.out_i),
                        (&mut self.r, &mut self.out_r),
                    ] {
                        if let Err(e) = hs.handle_timeout(self.now) {
                            out.error.get_or_insert(e);
                        }
                    }
                }
                (false, None) => return,
            }
        }
        panic!("simulation did not settle");
    }
}

fn invited_pair() -> (Node, Node, Pair) {
    let a = node("plant-a", b"ca of plant-a");
    let b = node("supplier-b", b"ca of supplier-b");
    let (inv, pending) = invitation(&b, "plant-a");
    let knowledge = ResponderKnowledge {
        invitations: vec![pending],
        new_federation_id: Some("fed_ab".parse().unwrap()),
        ..ResponderKnowledge::default()
    };
    let pair = Pair::new(&a, &b, Target::Join(inv), knowledge);
    (a, b, pair)
}

fn interoperate(sender: &Established, receiver: &Established, mesh: &MeshId) {
    let mut sealer = sender.content.sealer(mesh, KeyEpoch([5; 16])).unwrap();
    let iv = sealer.next_iv().unwrap();
    let mut buf = b"hello".to_vec();
    sealer.seal_in_place(iv, b"aad", &mut buf).unwrap();
    let opener = receiver.content.opener(mesh, sealer.key_id()).unwrap();
    assert_eq!(opener.open(iv, b"aad", &buf).unwrap(), b"hello");
}

#[test]
fn joining_a_mesh_whose_federation_ended_re_establishes_it_under_its_id() {
    let a = node("plant-a", b"ca of plant-a");
    let b = node("supplier-b", b"ca of supplier-b");
    let (inv, pending) = invitation(&b, "plant-a");
    let knowledge = ResponderKnowledge {
        invitations: vec![pending],
        new_federation_id: Some("fed_new".parse().unwrap()),
        ended: vec![
            EndedFederation {
                id: "fed_other".parse().unwrap(),
                peer_mesh: "plant-z".parse().unwrap(),
            },
            EndedFederation {
                id: "fed_old".parse().unwrap(),
                peer_mesh: "plant-a".parse().unwrap(),
            },
        ],
        ..ResponderKnowledge::default()
    };
    let mut pair = Pair::new(&a, &b, Target::Join(inv), knowledge);
    pair.run();
    assert!(pair.out_i.error.is_none(), "{:?}", pair.out_i.error);
    let ei = pair
        .out_i
        .established
        .take()
        .expect("initiator established");
    let er = pair
        .out_r
        .established
        .take()
        .expect("responder established");
    assert_eq!(ei.federation_id.as_str(), "fed_old");
    assert_eq!(er.federation_id.as_str(), "fed_old");
}

#[test]
fn join_by_invitation_establishes_both_sides_with_one_agreement() {
    let (a, b, mut pair) = invited_pair();
    pair.run();
    assert!(pair.out_i.error.is_none(), "{:?}", pair.out_i.error);
    assert!(pair.out_r.error.is_none(), "{:?}", pair.out_r.error);
    let ei = pair
        .out_i
        .established
        .take()
        .expect("initiator established");
    let er = pair
        .out_r
        .established
        .take()
        .expect("responder established");
    assert_eq!(ei.federation_id.as_str(), "fed_ab");
    assert_eq!(ei.peer.mesh, b.local.mesh);
    assert_eq!(er.peer.mesh, a.local.mesh);
    assert_eq!(
        ei.agreement, er.agreement,
        "both sides keep the same signed agreement"
    );
    let agreement = ei.agreement.as_ref().unwrap().agreement().unwrap();
    assert_eq!(agreement.initiator.mesh, a.local.mesh);
    assert_eq!(
        agreement.responder.bundle[0].as_slice(),
        b"ca of supplier-b"
    );
    assert_eq!(pair.out_r.invitations_used, ["tok_1"]);
    let expected = [
        Step::CapabilitiesAgreed,
        Step::PeerVerified,
        Step::PolicyAgreed { rounds: 1 },
        Step::AgreementSigned,
    ];
    assert_eq!(pair.out_i.steps, expected);
    assert_eq!(pair.out_r.steps, expected);
    interoperate(&ei, &er, &a.local.mesh);
    interoperate(&er, &ei, &b.local.mesh);
}

#[test]
fn agreement_signatures_verify_with_the_node_keys() {
    let (a, b, mut pair) = invited_pair();
    pair.run();
    let signed = pair.out_i.established.take().unwrap().agreement.unwrap();
    let digest = signed.digest();
    let ka = VerifyingKey::from_sec1(a.local.key.public_key()).unwrap();
    let kb = VerifyingKey::from_sec1(b.local.key.public_key()).unwrap();
    let sig = |b: &[u8]| Signature(b.try_into().unwrap());
    ka.verify(
        &agreement_input(Role::Initiator, &digest),
        &sig(&signed.initiator_signature),
    )
    .unwrap();
    kb.verify(
        &agreement_input(Role::Responder, &digest),
        &sig(&signed.responder_signature),
    )
    .unwrap();
}

fn join_with(edit: impl FnOnce(&mut Invitation, &mut PendingInvitation)) -> Pair {
    let a = node("plant-a", b"ca of plant-a");
    let b = node("supplier-b", b"ca of supplier-b");
    let (mut inv, mut pending) = invitation(&b, "plant-a");
    edit(&mut inv, &mut pending);
    let knowledge = ResponderKnowledge {
        invitations: vec![pending],
        new_federation_id: Some("fed_ab".parse().unwrap()),
        ..ResponderKnowledge::default()
    };
    let mut pair = Pair::new(&a, &b, Target::Join(inv), knowledge);
    pair.run();
    pair
}

/// Both sides failed with `code`: the responder by its own check, the initiator by the error frame.
fn assert_refused(pair: &Pair, code: ErrorCode, reason: &str) {
    let r = pair.out_r.error.as_ref().expect("responder refused");
    assert_eq!(r.code(), code, "{r}");
    assert!(r.to_string().contains(reason), "{r}");
    match pair.out_i.error.as_ref().expect("initiator told") {
        HandshakeError::PeerError {
            code: c,
            reason: text,
        } => {
            assert_eq!(*c, code);
            assert!(text.contains(reason), "{text}");
        }
        other => panic!("initiator saw {other}"),
    }
    assert!(pair.out_i.established.is_none() && pair.out_r.established.is_none());
}

#[test]
fn join_rejects_reused_token() {
    let pair = join_with(|_, p| p.used = Some(T0));
    assert_refused(
        &pair,
        ErrorCode::InvitationReused,
        "invitation tok_1 was already used",
    );
    assert!(pair.out_r.invitations_used.is_empty());
}

#[test]
fn join_rejects_expired_token() {
    let pair = join_with(|_, p| p.expires = T0);
    assert_refused(
        &pair,
        ErrorCode::InvitationExpired,
        "invitation tok_1 has expired",
    );
    assert!(pair.out_r.invitations_used.is_empty());
}

#[test]
fn join_rejects_token_for_another_mesh() {
    let pair = join_with(|_, p| p.peer_mesh = "plant-a".parse().unwrap());
    assert!(pair.out_r.error.is_none());
    let pair = join_with(|inv, _| inv.token_id = "tok_other".into());
    assert_refused(
        &pair,
        ErrorCode::InvitationUnknown,
        "invitation tok_other is unknown",
    );
    // The token was issued for another mesh than the one that presents it.
    let a = node("plant-a", b"ca of plant-a");
    let b = node("supplier-b", b"ca of supplier-b");
    let (inv, mut pending) = invitation(&b, "plant-a");
    pending.peer_mesh = "plant-c".parse().unwrap();
    let knowledge = ResponderKnowledge {
        invitations: vec![
            pending.clone(),
            PendingInvitation {
                token_id: "tok_a".into(),
                peer_mesh: a.local.mesh.clone(),
                ..pending
            },
        ],
        new_federation_id: Some("fed_ab".parse().unwrap()),
        ..ResponderKnowledge::default()
    };
    let mut pair = Pair::new(&a, &b, Target::Join(inv), knowledge);
    pair.run();
    assert_refused(
        &pair,
        ErrorCode::InvitationWrongMesh,
        "is for mesh plant-c, not plant-a",
    );
}

#[test]
fn join_proof_from_another_channel_is_refused() {
    let a = node("plant-a", b"ca of plant-a");
    let b = node("supplier-b", b"ca of supplier-b");
    let (inv, pending) = invitation(&b, "plant-a");
    let knowledge = ResponderKnowledge {
        invitations: vec![pending],
        new_federation_id: Some("fed_ab".parse().unwrap()),
        ..Default::default()
    };
    let mut pair = Pair::with_bindings(&a, &b, Target::Join(inv), knowledge, [1; 32], [2; 32]);
    pair.run();
    assert_refused(
        &pair,
        ErrorCode::InvitationProofInvalid,
        "does not verify on this channel",
    );
}

#[test]
fn join_with_wrong_secret_is_refused() {
    let pair = join_with(|inv, _| inv.secret = [0; 32]);
    assert_refused(
        &pair,
        ErrorCode::InvitationProofInvalid,
        "proof of the secret",
    );
    assert!(pair.out_r.invitations_used.is_empty());
}

#[test]
fn join_refuses_inviter_whose_ca_does_not_match_the_fingerprint() {
    let pair = join_with(|inv, _| inv.ca_fingerprint = sha384(b"some other ca"));
    let err = pair.out_i.error.as_ref().expect("initiator refused");
    assert_eq!(err.code(), ErrorCode::FingerprintMismatch);
    assert!(matches!(
        pair.out_r.error,
        Some(HandshakeError::PeerError {
            code: ErrorCode::FingerprintMismatch,
            ..
        })
    ));
    assert!(pair.out_i.established.is_none());
}

#[test]
fn uninvited_mesh_is_refused_at_the_first_message() {
    let a = node("plant-a", b"ca of plant-a");
    let b = node("supplier-b", b"ca of supplier-b");
    let (inv, _) = invitation(&b, "plant-a");
    let mut pair = Pair::new(
        &a,
        &b,
        Target::Join(inv),
        ResponderKnowledge {
            new_federation_id: Some("fed_x".parse().unwrap()),
            ..Default::default()
        },
    );
    pair.run();
    assert_refused(
        &pair,
        ErrorCode::NotInvited,
        "mesh plant-a has no invitation",
    );
}

#[test]
fn certificate_from_an_unknown_ca_is_refused() {
    let a = node("plant-a", b"ca of plant-a");
    let mut impostor = node("plant-a", b"ca of someone else");
    impostor.local.bundle = a.local.bundle.clone();
    let b = node("supplier-b", b"ca of supplier-b");
    let (inv, pending) = invitation(&b, "plant-a");
    let knowledge = ResponderKnowledge {
        invitations: vec![pending],
        new_federation_id: Some("fed_ab".parse().unwrap()),
        ..Default::default()
    };
    let mut pair = Pair::new(&impostor, &b, Target::Join(inv), knowledge);
    pair.run();
    assert_refused(&pair, ErrorCode::UntrustedPeer, "issuer not in bundle");
}

#[test]
fn stalled_peer_times_out_both_sides_at_their_step() {
    let (_, _, mut pair) = invited_pair();
    // The link partitions right after the responder's first answer: nothing more arrives.
    let mut answered = false;
    pair.tamper = Box::new(move |to_r, f| {
        if answered {
            return None;
        }
        answered = !to_r;
        Some(f)
    });
    pair.run();
    let i = pair.out_i.error.as_ref().unwrap();
    assert_eq!(
        i.to_string(),
        "timed out waiting for TrustCredentialVerification"
    );
    let r = pair.out_r.error.as_ref().unwrap();
    assert_eq!(
        r.to_string(),
        "timed out waiting for TrustCredentialExchange"
    );
    assert!(pair.now.0 - T0.0 >= STEP.as_millis() as u64);
}

#[test]
fn out_of_order_message_is_refused_with_an_error_frame() {
    let (a, _, mut pair) = invited_pair();
    let proposal = Message::PolicyProposal(messages::PolicyProposal {
        round: 1,
        terms: a.local.policy.proposal(),
    })
    .to_frame();
    pair.tamper = Box::new(move |to_r, f| {
        if to_r && f.ty == FrameType::FederationRequest {
            Some(proposal.clone())
        } else {
            Some(f)
        }
    });
    pair.run();
    assert_refused(
        &pair,
        ErrorCode::UnexpectedMessage,
        "expected FederationRequest or Resume, got PolicyProposal",
    );
}

#[test]
fn garbage_body_is_malformed_not_a_panic() {
    let (_, _, mut pair) = invited_pair();
    pair.tamper = Box::new(|to_r, f| {
        if to_r {
            Some(Frame::new(f.ty, vec![0xff, 0x00, 0x13]))
        } else {
            Some(f)
        }
    });
    pair.run();
    assert_refused(
        &pair,
        ErrorCode::Malformed,
        "FederationRequest body does not decode",
    );
}

#[test]
fn non_handshake_frame_during_handshake_is_unexpected() {
    let (_, _, mut pair) = invited_pair();
    pair.tamper = Box::new(|to_r, f| {
        if to_r {
            Some(Frame::new(FrameType::Envelope, vec![1, 2, 3]))
        } else {
            Some(f)
        }
    });
    pair.run();
    assert_refused(&pair, ErrorCode::UnexpectedMessage, "got Envelope frame");
}

#[test]
fn altered_agreement_is_refused() {
    let (_, _, mut pair) = invited_pair();
    pair.tamper = Box::new(|to_r, f| {
        if !to_r || f.ty != FrameType::ConnectionEstablishment {
            return Some(f);
        }
        let Ok(Some(Message::ConnectionEstablishment(mut m))) = Message::from_frame(&f) else {
            unreachable!()
        };
        let mut agreement = crate::agreement::Agreement::decode(&m.agreement).unwrap();
        agreement.policy.max_message_size += 1;
        m.agreement = serde_bytes::ByteBuf::from(agreement.encode());
        Some(Message::ConnectionEstablishment(m).to_frame())
    });
    pair.run();
    assert_refused(
        &pair,
        ErrorCode::AgreementMismatch,
        "agreement field policy",
    );
}

#[test]
fn differing_policies_converge_by_counterproposal() {
    let mut a = node("plant-a", b"ca of plant-a");
    let mut b = node("supplier-b", b"ca of supplier-b");
    a.local.policy.max_rate = Some(1000);
    b.local.policy.max_message_size = 65_536;
    b.local.policy.retention_days = 30;
    let (inv, pending) = invitation(&b, "plant-a");
    let knowledge = ResponderKnowledge {
        invitations: vec![pending],
        new_federation_id: Some("fed_ab".parse().unwrap()),
        ..Default::default()
    };
    let mut pair = Pair::new(&a, &b, Target::Join(inv), knowledge);
    pair.run();
    let e = pair.out_i.established.take().expect("established");
    let terms = e.agreement.unwrap().agreement().unwrap().policy;
    assert_eq!(
        (terms.max_message_size, terms.max_rate, terms.retention_days),
        (65_536, Some(1000), 30)
    );
    assert!(
        pair.out_i.steps.contains(&Step::PolicyAgreed { rounds: 2 }),
        "{:?}",
        pair.out_i.steps
    );
}

#[test]
fn unsatisfiable_policy_ends_naming_the_clause() {
    let mut a = node("plant-a", b"ca of plant-a");
    let mut b = node("supplier-b", b"ca of supplier-b");
    a.local.policy.residency = vec!["eu".into()];
    b.local.policy.residency = vec!["us".into()];
    let (inv, pending) = invitation(&b, "plant-a");
    let knowledge = ResponderKnowledge {
        invitations: vec![pending],
        new_federation_id: Some("fed_ab".parse().unwrap()),
        ..Default::default()
    };
    let mut pair = Pair::new(&a, &b, Target::Join(inv), knowledge);
    pair.run();
    assert_eq!(
        pair.out_r.invitations_used,
        ["tok_1"],
        "the invitation was accepted before policy failed"
    );
    let r = pair.out_r.error.as_ref().unwrap();
    assert_eq!(r.code(), ErrorCode::PolicyUnsatisfiable);
    assert!(r.to_string().contains("compliance.residency"), "{r}");
}

#[test]
fn capability_mismatch_names_the_capability() {
    let mut a = node("plant-a", b"ca of plant-a");
    let b = node("supplier-b", b"ca of supplier-b");
    a.local.capabilities.versions = crate::capability::version::Offer(vec![9]);
    let (inv, pending) = invitation(&b, "plant-a");
    let knowledge = ResponderKnowledge {
        invitations: vec![pending],
        new_federation_id: Some("fed_ab".parse().unwrap()),
        ..Default::default()
    };
    let mut pair = Pair::new(&a, &b, Target::Join(inv), knowledge);
    pair.run();
    assert_refused(
        &pair,
        ErrorCode::Capability,
        "capability versions: no common protocol version",
    );
}

fn established_pair() -> (Node, Node, KnownFederation, KnownFederation) {
    let (a, b, mut pair) = invited_pair();
    pair.run();
    let ei = pair.out_i.established.take().unwrap();
    let agreement = ei.agreement.clone().unwrap();
    let for_a = KnownFederation {
        id: ei.federation_id.clone(),
        peer_mesh: b.local.mesh.clone(),
        peer_bundle: b.local.bundle.clone(),
        agreement: agreement.clone(),
    };
    let for_b = KnownFederation {
        id: ei.federation_id.clone(),
        peer_mesh: a.local.mesh.clone(),
        peer_bundle: a.local.bundle.clone(),
        agreement,
    };
    (a, b, for_a, for_b)
}

/// `known`'s agreement as a renegotiation to `version` leaves it, edited by `edit`, signed by
/// `initiator` (plant-a) and `responder` (supplier-b).
fn renegotiated(
    known: &KnownFederation,
    version: u32,
    initiator: &Node,
    responder: &Node,
    edit: impl FnOnce(&mut crate::agreement::Agreement),
) -> SignedAgreement {
    let mut agreement = known.agreement.agreement().unwrap();
    agreement.version = version;
    agreement.policy.max_message_size = 1000 + version;
    edit(&mut agreement);
    let bytes = agreement.encode();
    let digest = sha384(&bytes);
    let sign = |n: &Node, role| {
        let sig = n.local.key.sign(&agreement_input(role, &digest)).unwrap();
        serde_bytes::ByteBuf::from(sig.0.to_vec())
    };
    SignedAgreement {
        initiator_signature: sign(initiator, Role::Initiator),
        responder_signature: sign(responder, Role::Responder),
        bytes: serde_bytes::ByteBuf::from(bytes),
    }
}

fn resume_pair(a: &Node, b: &Node, for_a: KnownFederation, for_b: KnownFederation) -> Pair {
    let mut pair = Pair::new(
        a,
        b,
        Target::Resume(for_a),
        ResponderKnowledge {
            federations: vec![for_b],
            ..Default::default()
        },
    );
    pair.run();
    pair
}

#[test]
fn stored_federation_resumes_with_fresh_content_keys() {
    let (a, b, for_a, for_b) = established_pair();
    let mut pair = resume_pair(&a, &b, for_a, for_b);
    let ei = pair.out_i.established.take().expect("initiator resumed");
    let er = pair.out_r.established.take().expect("responder resumed");
    assert!(ei.agreement.is_none() && er.agreement.is_none());
    assert!(ei.caught_up.is_none() && er.caught_up.is_none());
    interoperate(&ei, &er, &a.local.mesh);
}

#[test]
fn resume_brings_the_responder_up_to_the_initiators_renegotiated_agreement() {
    let (a, b, mut for_a, for_b) = established_pair();
    let v2 = renegotiated(&for_a, 2, &a, &b, |_| {});
    for_a.agreement = v2.clone();
    let mut pair = resume_pair(&a, &b, for_a, for_b.clone());
    let ei = pair.out_i.established.take().expect("initiator resumed");
    let er = pair.out_r.established.take().expect("responder resumed");
    assert!(ei.caught_up.is_none());
    let caught_up = er
        .caught_up
        .as_ref()
        .expect("responder takes version 2 over");
    assert_eq!(caught_up.signed, v2);
    assert_eq!(caught_up.agreement.version, 2);
    assert_eq!(caught_up.replaces_digest, for_b.agreement.digest());
    interoperate(&ei, &er, &a.local.mesh);
    interoperate(&er, &ei, &b.local.mesh);
}

#[test]
fn resume_brings_the_initiator_up_to_the_responders_renegotiated_agreement() {
    let (a, b, for_a, mut for_b) = established_pair();
    let v2 = renegotiated(&for_b, 2, &a, &b, |_| {});
    for_b.agreement = v2.clone();
    let mut pair = resume_pair(&a, &b, for_a.clone(), for_b);
    let ei = pair.out_i.established.take().expect("initiator resumed");
    let er = pair.out_r.established.take().expect("responder resumed");
    assert!(er.caught_up.is_none());
    let caught_up = ei
        .caught_up
        .as_ref()
        .expect("initiator takes version 2 over");
    assert_eq!(caught_up.signed, v2);
    assert_eq!(caught_up.replaces_digest, for_a.agreement.digest());
    interoperate(&ei, &er, &a.local.mesh);
}

#[test]
fn resume_refuses_an_agreement_two_versions_ahead() {
    let (a, b, mut for_a, for_b) = established_pair();
    for_a.agreement = renegotiated(&for_a, 3, &a, &b, |_| {});
    let pair = resume_pair(&a, &b, for_a, for_b);
    assert_refused(
        &pair,
        ErrorCode::AgreementMismatch,
        "version 1 here, version 3 at the peer: only agreements one renegotiation apart are reconciled",
    );
}

#[test]
fn resume_refuses_a_successor_with_a_signature_from_another_key() {
    let (a, b, mut for_a, for_b) = established_pair();
    let stranger = node("supplier-b", b"ca of supplier-b");
    for_a.agreement = renegotiated(&for_a, 2, &a, &stranger, |_| {});
    let pair = resume_pair(&a, &b, for_a, for_b);
    assert_refused(
        &pair,
        ErrorCode::AgreementMismatch,
        "Responder's signature over agreement version 2 does not verify",
    );
}

#[test]
fn initiator_refuses_a_successor_from_the_responder_with_a_bad_signature() {
    let (a, b, for_a, mut for_b) = established_pair();
    let stranger = node("plant-a", b"ca of plant-a");
    for_b.agreement = renegotiated(&for_b, 2, &stranger, &b, |_| {});
    let pair = resume_pair(&a, &b, for_a, for_b);
    let err = pair.out_i.error.as_ref().expect("initiator refused");
    assert_eq!(err.code(), ErrorCode::AgreementMismatch, "{err}");
    assert!(
        err.to_string()
            .contains("Initiator's signature over agreement version 2 does not verify"),
        "{err}"
    );
    assert!(pair.out_i.established.is_none());
}

#[test]
fn resume_refuses_a_successor_of_another_federation() {
    let (a, b, mut for_a, for_b) = established_pair();
    for_a.agreement = renegotiated(&for_a, 2, &a, &b, |g| {
        g.federation_id = "fed_other".parse().unwrap();
    });
    let pair = resume_pair(&a, &b, for_a, for_b);
    assert_refused(
        &pair,
        ErrorCode::AgreementMismatch,
        "it changes the federation, a party or the validity",
    );
}

#[test]
fn resume_refuses_another_agreement_of_the_same_version() {
    let (a, b, mut for_a, for_b) = established_pair();
    for_a.agreement = renegotiated(&for_a, 1, &a, &b, |_| {});
    let pair = resume_pair(&a, &b, for_a, for_b);
    assert_refused(
        &pair,
        ErrorCode::AgreementMismatch,
        "version 1 here, version 1 at the peer: the same version with other contents",
    );
}

#[test]
fn resume_without_the_agreement_is_refused_when_the_digests_differ() {
    let (a, b, mut for_a, for_b) = established_pair();
    for_a.agreement = renegotiated(&for_a, 2, &a, &b, |_| {});
    let mut pair = Pair::new(
        &a,
        &b,
        Target::Resume(for_a),
        ResponderKnowledge {
            federations: vec![for_b],
            ..Default::default()
        },
    );
    // An initiator from before agreements were sent along.
    pair.tamper = Box::new(|_, f| match Message::from_frame(&f) {
        Ok(Some(Message::Resume(mut r))) => {
            r.agreement = None;
            Some(Message::Resume(r).to_frame())
        }
        _ => Some(f),
    });
    pair.run();
    assert_refused(&pair, ErrorCode::AgreementMismatch, "agreement_digest");
}

#[test]
fn resume_refuses_an_agreement_that_is_not_the_one_its_digest_names() {
    let (a, b, mut for_a, for_b) = established_pair();
    for_a.agreement = renegotiated(&for_a, 2, &a, &b, |_| {});
    let other = renegotiated(&for_b, 2, &a, &b, |g| g.policy.max_message_size = 7);
    let mut pair = Pair::new(
        &a,
        &b,
        Target::Resume(for_a),
        ResponderKnowledge {
            federations: vec![for_b],
            ..Default::default()
        },
    );
    pair.tamper = Box::new(move |_, f| match Message::from_frame(&f) {
        Ok(Some(Message::Resume(mut r))) => {
            r.agreement = Some(other.clone());
            Some(Message::Resume(r).to_frame())
        }
        _ => Some(f),
    });
    pair.run();
    assert_refused(
        &pair,
        ErrorCode::Malformed,
        "Resume.agreement: is not the agreement agreement_digest names",
    );
}

#[test]
fn resume_from_a_certificate_outside_the_stored_bundle_is_refused() {
    let (a, b, for_a, for_b) = established_pair();
    // Same mesh name, certificate from a CA that is not the stored one.
    let mut impostor = node("plant-a", b"rogue ca");
    impostor.local.bundle = a.local.bundle.clone();
    let mut pair = Pair::new(
        &impostor,
        &b,
        Target::Resume(for_a),
        ResponderKnowledge {
            federations: vec![for_b],
            ..Default::default()
        },
    );
    pair.run();
    assert_refused(&pair, ErrorCode::UntrustedPeer, "issuer not in bundle");
}

#[test]
fn joining_again_while_federated_is_refused() {
    let (a, b, _, for_b) = established_pair();
    let (inv, pending) = invitation(&b, "plant-a");
    let knowledge = ResponderKnowledge {
        invitations: vec![pending],
        federations: vec![for_b],
        new_federation_id: Some("fed_2".parse().unwrap()),
        ..Default::default()
    };
    let mut pair = Pair::new(&a, &b, Target::Join(inv), knowledge);
    pair.run();
    assert_refused(
        &pair,
        ErrorCode::AlreadyFederated,
        "already federated as fed_ab",
    );
}

#[test]
fn slow_links_within_the_step_timeout_still_establish() {
    let (_, _, mut pair) = invited_pair();
    pair.delay = STEP / 2;
    pair.run();
    assert!(pair.out_i.established.is_some() && pair.out_r.established.is_some());
}
