//! The renegotiation exchange between two simulated sessions: accepted, refused, timed out,
//! colliding, on a suspended federation, and against a misbehaving peer. A plays the initiator
//! in the agreement, B the responder.

use std::sync::Arc;

use serde_bytes::ByteBuf;

use super::*;
use crate::agreement::{Agreement, Party, SignedAgreement};
use crate::capability::Capabilities;
use crate::crypto::{SigningKey, VerifyingKey, sha384};
use crate::envelope::Timestamp;
use crate::handshake::{Role, agreement_input};
use crate::policy::PolicyOffer;

const TIMEOUT: Duration = Duration::from_millis(1500);

/// Both sides' keys and the version-1 agreement they signed.
struct Federation {
    a_key: Arc<SigningKey>,
    b_key: Arc<SigningKey>,
    signed: SignedAgreement,
}

fn key() -> Arc<SigningKey> {
    Arc::new(SigningKey::generate().unwrap())
}

fn verifying(key: &SigningKey) -> VerifyingKey {
    VerifyingKey::from_sec1(key.public_key()).unwrap()
}

fn party(mesh: &str) -> Party {
    Party {
        mesh: mesh.parse().unwrap(),
        node: "gw-1".parse().unwrap(),
        bundle: vec![ByteBuf::from(vec![mesh.len() as u8; 8])],
    }
}

fn sign(a: &SigningKey, b: &SigningKey, agreement: &Agreement) -> SignedAgreement {
    let bytes = agreement.encode();
    let digest = sha384(&bytes);
    SignedAgreement {
        initiator_signature: ByteBuf::from(
            a.sign(&agreement_input(Role::Initiator, &digest))
                .unwrap()
                .0
                .to_vec(),
        ),
        responder_signature: ByteBuf::from(
            b.sign(&agreement_input(Role::Responder, &digest))
                .unwrap()
                .0
                .to_vec(),
        ),
        bytes: ByteBuf::from(bytes),
    }
}

fn federation() -> Federation {
    let offer = Capabilities::default();
    let agreement = Agreement {
        federation_id: "fed_0123456789abcdef".parse().unwrap(),
        version: 1,
        initiator: party("plant-a"),
        responder: party("supplier-b"),
        capabilities: offer.negotiate(&offer).unwrap(),
        policy: PolicyOffer::default().proposal(),
        valid_from: Timestamp(1_000),
        valid_until: Timestamp(1_000_000),
    };
    let (a_key, b_key) = (key(), key());
    let signed = sign(&a_key, &b_key, &agreement);
    Federation {
        a_key,
        b_key,
        signed,
    }
}

fn setup(
    f: &Federation,
    side: Side,
    capabilities: Capabilities,
    policy: PolicyOffer,
) -> RenegotiationSetup {
    let (role, key, peer) = match side {
        Side::A => (Role::Initiator, &f.a_key, &f.b_key),
        Side::B => (Role::Responder, &f.b_key, &f.a_key),
    };
    RenegotiationSetup {
        role,
        key: key.clone(),
        peer_key: verifying(peer),
        agreement: f.signed.clone(),
        capabilities,
        policy,
        timeout: TIMEOUT,
    }
}

fn renegotiating(a: RenegotiationSetup, b: RenegotiationSetup) -> Pair {
    let mut pair = Pair::new();
    let t0 = pair.t0;
    let config = SessionConfig {
        heartbeat_interval: INTERVAL,
    };
    let session = |setup| {
        LinkSession::new(config, t0, FlowState::Active)
            .with_renegotiation(setup)
            .unwrap()
    };
    pair.a = Endpoint::new(session(a));
    pair.b = Endpoint::new(session(b));
    pair
}

/// A pair where A now offers a smaller maximum frame than the agreement holds.
fn smaller_frame_on_a() -> (Federation, Pair) {
    let f = federation();
    let mut a_caps = Capabilities::default();
    a_caps.max_frame.0 = 256 << 10;
    let pair = renegotiating(
        setup(&f, Side::A, a_caps, PolicyOffer::default()),
        setup(&f, Side::B, Capabilities::default(), PolicyOffer::default()),
    );
    (f, pair)
}

fn switches(ep: &Endpoint) -> Vec<(Duration, AgreementSwitch)> {
    ep.events
        .iter()
        .filter_map(|(t, e)| match e {
            SessionEvent::AgreementSwitched(s) => Some((*t, (**s).clone())),
            _ => None,
        })
        .collect()
}

fn failures(ep: &Endpoint) -> Vec<(u32, RenegotiationFailure)> {
    ep.events
        .iter()
        .filter_map(|(_, e)| match e {
            SessionEvent::RenegotiationFailed { version, failure } => {
                Some((*version, failure.clone()))
            }
            _ => None,
        })
        .collect()
}

fn sent_types(ep: &Endpoint) -> Vec<FrameType> {
    ep.sent
        .iter()
        .map(|(_, f)| f.ty)
        .filter(|t| is_renegotiation(*t))
        .collect()
}

fn is_renegotiation(ty: FrameType) -> bool {
    matches!(
        ty,
        FrameType::RenegotiationProposal
            | FrameType::RenegotiationAnswer
            | FrameType::RenegotiationConfirm
    )
}

/// Checks both signatures of `signed` with the keys of `f`.
fn assert_signed_by_both(f: &Federation, signed: &SignedAgreement) {
    let digest = sha384(&signed.bytes);
    let sig = |b: &ByteBuf| crate::crypto::Signature(b.as_ref().try_into().unwrap());
    verifying(&f.a_key)
        .verify(
            &agreement_input(Role::Initiator, &digest),
            &sig(&signed.initiator_signature),
        )
        .unwrap();
    verifying(&f.b_key)
        .verify(
            &agreement_input(Role::Responder, &digest),
            &sig(&signed.responder_signature),
        )
        .unwrap();
}

#[test]
fn accepted_renegotiation_switches_both_sides_at_the_confirm_to_one_agreement_signed_by_both() {
    let (f, mut pair) = smaller_frame_on_a();
    assert_eq!(pair.a.session.agreement_version(), Some(1));
    assert_eq!(pair.a.session.renegotiate(pair.now), Ok(2));
    assert_eq!(
        pair.a.session.renegotiate(pair.now),
        Err(RenegotiateError::InProgress(2))
    );
    // Proposal at 0 arrives at 20 ms; the answer at 40 ms, when A switches and confirms; the
    // confirm reaches B at 60 ms.
    pair.run_until(ms(59));
    assert_eq!(pair.a.session.agreement_version(), Some(2));
    assert_eq!(
        pair.b.session.agreement_version(),
        Some(1),
        "B switches at the confirm only"
    );
    pair.run_until(ms(60));
    assert_eq!(pair.b.session.agreement_version(), Some(2));

    let (at_a, on_a) = switches(&pair.a).pop().unwrap();
    let (at_b, on_b) = switches(&pair.b).pop().unwrap();
    assert_eq!((at_a, at_b), (ms(40), ms(60)));
    assert_eq!(
        on_a.signed, on_b.signed,
        "both keep the identical signed agreement"
    );
    assert_eq!(
        (on_a.proposed_by, on_b.proposed_by),
        (ProposedBy::Local, ProposedBy::Peer)
    );
    assert_eq!((on_a.previous, on_a.agreement.version), (1, 2));
    assert_eq!(on_a.agreement.capabilities.max_frame.0, 256 << 10);
    let before = f.signed.agreement().unwrap();
    assert_eq!(on_a.agreement.federation_id, before.federation_id);
    assert_eq!(on_a.agreement.initiator, before.initiator);
    assert_eq!(on_a.agreement.valid_until, before.valid_until);
    assert_signed_by_both(&f, &on_a.signed);
    assert_eq!(
        sent_types(&pair.a),
        [
            FrameType::RenegotiationProposal,
            FrameType::RenegotiationConfirm
        ]
    );
    assert_eq!(sent_types(&pair.b), [FrameType::RenegotiationAnswer]);
    assert!(failures(&pair.a).is_empty() && failures(&pair.b).is_empty());

    // A second round starts from the new version.
    assert_eq!(pair.b.session.renegotiate(pair.now), Ok(3));
    pair.run_until(ms(200));
    assert_eq!(pair.a.session.agreement_version(), Some(3));
    assert_eq!(pair.b.session.agreement_version(), Some(3));
}

#[test]
fn data_frames_keep_their_place_around_the_switch_point() {
    let (_, mut pair) = smaller_frame_on_a();
    pair.a.session.renegotiate(pair.now).unwrap();
    // A transfer A sends before the confirm arrives under version 1, one after it under 2: B
    // reads the version in force as each arrives, in stream order.
    pair.run_until(ms(39));
    pair.send_raw(Side::A, data(FrameType::Transfer));
    pair.run_until(ms(45));
    pair.send_raw(Side::A, data(FrameType::Transfer));
    let mut seen = Vec::new();
    let end = ms(200);
    while pair.elapsed() < end {
        let before = pair.b.received.len();
        let next = pair.elapsed() + ms(1);
        pair.run_until(next);
        for (_, ty, _) in &pair.b.received[before..] {
            if *ty == FrameType::Transfer || *ty == FrameType::RenegotiationConfirm {
                seen.push((*ty, pair.b.session.agreement_version()));
            }
        }
    }
    assert_eq!(
        seen,
        [
            (FrameType::Transfer, Some(1)),
            (FrameType::RenegotiationConfirm, Some(2)),
            (FrameType::Transfer, Some(2)),
        ]
    );
}

#[test]
fn refused_proposal_leaves_the_old_agreement_in_force_and_says_why_on_both_sides() {
    let f = federation();
    let a_policy = PolicyOffer {
        residency: vec!["eu".into()],
        ..PolicyOffer::default()
    };
    let b_policy = PolicyOffer {
        residency: vec!["us".into()],
        ..PolicyOffer::default()
    };
    let mut pair = renegotiating(
        setup(&f, Side::A, Capabilities::default(), a_policy),
        setup(&f, Side::B, Capabilities::default(), b_policy),
    );
    pair.a.session.renegotiate(pair.now).unwrap();
    pair.run_until(ms(100));
    let [(2, RenegotiationFailure::RefusedByPeer(why))] = &failures(&pair.a)[..] else {
        panic!("{:?}", failures(&pair.a));
    };
    assert!(why.contains("compliance.residency"), "{why}");
    let [(2, RenegotiationFailure::RefusedHere(here))] = &failures(&pair.b)[..] else {
        panic!("{:?}", failures(&pair.b));
    };
    assert_eq!(here, why);
    assert_eq!(
        RenegotiationFailure::RefusedByPeer(why.clone()).to_string(),
        format!("the peer refused the proposal: {why}")
    );
    assert!(switches(&pair.a).is_empty() && switches(&pair.b).is_empty());
    assert_eq!(pair.a.session.agreement_version(), Some(1));
    assert_eq!(pair.b.session.agreement_version(), Some(1));
    // The session carries on, and A may propose again.
    assert!(pair.a.closed().is_none() && pair.b.closed().is_none());
    assert_eq!(pair.a.session.renegotiate(pair.now), Ok(2));
}

#[test]
fn a_capability_the_peer_cannot_agree_is_refused_naming_it() {
    let f = federation();
    let mut a_caps = Capabilities::default();
    a_caps.max_frame.0 = 1024;
    let mut pair = renegotiating(
        setup(&f, Side::A, a_caps, PolicyOffer::default()),
        setup(&f, Side::B, Capabilities::default(), PolicyOffer::default()),
    );
    pair.a.session.renegotiate(pair.now).unwrap();
    pair.run_until(ms(100));
    let [(2, RenegotiationFailure::RefusedByPeer(why))] = &failures(&pair.a)[..] else {
        panic!("{:?}", failures(&pair.a));
    };
    assert!(why.starts_with("capability max_frame"), "{why}");
    assert_eq!(pair.b.session.agreement_version(), Some(1));
}

#[test]
fn unanswered_proposal_times_out_and_a_lost_confirm_leaves_nothing_half_switched() {
    let (_, mut pair) = smaller_frame_on_a();
    // The answer is lost: A gives up after its timeout, B after twice that; neither switched.
    pair.deliver = Box::new(|_, _, f| f.ty != FrameType::RenegotiationAnswer);
    pair.a.session.renegotiate(pair.now).unwrap();
    pair.run_until(secs(5));
    assert_eq!(
        failures(&pair.a),
        [(2, RenegotiationFailure::TimedOut(TIMEOUT))]
    );
    assert_eq!(
        failures(&pair.b),
        [(2, RenegotiationFailure::TimedOut(TIMEOUT * 2))]
    );
    let (at, _) = pair
        .a
        .events
        .iter()
        .find(|(_, e)| matches!(e, SessionEvent::RenegotiationFailed { .. }))
        .unwrap();
    assert_eq!(*at, TIMEOUT);
    assert!(switches(&pair.a).is_empty() && switches(&pair.b).is_empty());
    assert_eq!(pair.a.session.agreement_version(), Some(1));
    assert_eq!(pair.b.session.agreement_version(), Some(1));
    assert!(
        pair.a.closed().is_none(),
        "a timeout does not end the session"
    );

    // With the answer delivered again, the next proposal goes through.
    pair.deliver = Box::new(|_, _, _| true);
    pair.a.session.renegotiate(pair.now).unwrap();
    pair.run_until(secs(6));
    assert_eq!(pair.b.session.agreement_version(), Some(2));
}

#[test]
fn simultaneous_proposals_resolve_to_the_agreement_initiators() {
    let f = federation();
    let mut a_caps = Capabilities::default();
    a_caps.max_frame.0 = 512 << 10;
    let mut b_caps = Capabilities::default();
    b_caps.max_frame.0 = 256 << 10;
    let mut pair = renegotiating(
        setup(&f, Side::A, a_caps, PolicyOffer::default()),
        setup(&f, Side::B, b_caps, PolicyOffer::default()),
    );
    pair.a.session.renegotiate(pair.now).unwrap();
    pair.b.session.renegotiate(pair.now).unwrap();
    pair.run_until(secs(1));
    assert_eq!(failures(&pair.b), [(2, RenegotiationFailure::Superseded)]);
    assert!(failures(&pair.a).is_empty());
    let (_, on_a) = switches(&pair.a).pop().unwrap();
    let (_, on_b) = switches(&pair.b).pop().unwrap();
    assert_eq!(on_a.signed, on_b.signed);
    assert_eq!(on_a.proposed_by, ProposedBy::Local);
    // A's offer answered with B's wish: the smaller of the two.
    assert_eq!(on_a.agreement.capabilities.max_frame.0, 256 << 10);
    assert_eq!(
        sent_types(&pair.a),
        [
            FrameType::RenegotiationProposal,
            FrameType::RenegotiationConfirm
        ]
    );
    assert_eq!(
        sent_types(&pair.b),
        [
            FrameType::RenegotiationProposal,
            FrameType::RenegotiationAnswer
        ]
    );
}

#[test]
fn services_keep_their_directions_when_the_responder_proposes() {
    let f = federation();
    let mut b_caps = Capabilities::default();
    b_caps.services.publishes = vec!["orders/#".parse().unwrap()];
    let mut pair = renegotiating(
        setup(&f, Side::A, Capabilities::default(), PolicyOffer::default()),
        setup(&f, Side::B, b_caps, PolicyOffer::default()),
    );
    pair.b.session.renegotiate(pair.now).unwrap();
    pair.run_until(ms(100));
    let (_, on_b) = switches(&pair.b).pop().unwrap();
    let services = &on_b.agreement.capabilities.services;
    // B is the responder: what it publishes flows to the initiator.
    assert_eq!(services.to_initiator, vec!["orders/#".parse().unwrap()]);
    assert_eq!(services.to_responder, vec![crate::TopicPattern::all()]);
    assert_eq!(pair.a.session.agreement_version(), Some(2));
}

#[test]
fn a_suspended_federation_renegotiates_and_stays_suspended() {
    let (_, mut pair) = smaller_frame_on_a();
    pair.a.session.suspend().unwrap();
    pair.run_until(ms(100));
    pair.b.session.renegotiate(pair.now).unwrap();
    pair.run_until(ms(300));
    assert_eq!(pair.a.session.agreement_version(), Some(2));
    assert_eq!(pair.b.session.agreement_version(), Some(2));
    assert_eq!(pair.status(Side::A).flow, FlowState::Suspended);
    assert_eq!(pair.status(Side::B).flow, FlowState::Suspended);
}

#[test]
fn a_session_that_does_not_renegotiate_refuses_a_proposal_and_keeps_running() {
    let (t0, mut s) = one_session();
    drain(&mut s);
    let proposal = Control::RenegotiationProposal(Box::new(RenegotiationProposal {
        version: 2,
        capabilities: Capabilities::default(),
        policy: PolicyOffer::default(),
    }));
    assert_eq!(
        s.handle_frame(&proposal.to_frame(), t0),
        Ok(Received::Consumed)
    );
    let (frames, events) = drain(&mut s);
    assert_eq!(
        frames.iter().map(Control::from_frame).collect::<Vec<_>>(),
        [Ok(Some(Control::RenegotiationAnswer(
            RenegotiationAnswer::Refuse {
                version: 2,
                reason: "this side does not renegotiate on this link".into()
            }
        )))]
    );
    assert!(events.is_empty());
    assert!(!s.is_closed());
    assert_eq!(s.renegotiate(t0), Err(RenegotiateError::NotEnabled));
    assert_eq!(s.agreement_version(), None);
    // An answer it never asked for breaks the protocol.
    let err = s.handle_frame(&frames[0], t0).unwrap_err();
    assert_eq!(
        err.to_string(),
        "a RenegotiationAnswer frame on a session that does not renegotiate"
    );
}

/// B's session, renegotiating, and what it says to `frame` from A.
fn b_receives(f: &Federation, frame: &Frame) -> (Result<Received, SessionError>, Vec<Frame>) {
    let (t0, s) = one_session();
    let mut s = s
        .with_renegotiation(setup(
            f,
            Side::B,
            Capabilities::default(),
            PolicyOffer::default(),
        ))
        .unwrap();
    drain(&mut s);
    let result = s.handle_frame(frame, t0);
    (result, drain(&mut s).0)
}

fn error_code(frames: &[Frame]) -> u16 {
    let Some(Ok(Some(Control::Error(e)))) = frames.last().map(Control::from_frame) else {
        panic!("no error frame last: {frames:?}");
    };
    e.code
}

#[test]
fn malformed_renegotiation_bodies_close_the_session_naming_the_frame() {
    let f = federation();
    let cases: [(FrameType, Vec<u8>, &str); 4] = [
        (
            FrameType::RenegotiationProposal,
            vec![0xa0],
            "RenegotiationProposal body refused: not its CBOR form",
        ),
        (
            FrameType::RenegotiationAnswer,
            vec![0xff],
            "RenegotiationAnswer body refused: not its CBOR form",
        ),
        (
            FrameType::RenegotiationConfirm,
            RenegotiationConfirm {
                version: 2,
                signature: ByteBuf::from(vec![1; 5]),
            }
            .encode(),
            "RenegotiationConfirm body refused: a signature of 5 bytes is not a P-384 signature",
        ),
        (
            FrameType::RenegotiationAnswer,
            RenegotiationAnswer::Refuse {
                version: 2,
                reason: "x".repeat(MAX_REASON_LEN + 1),
            }
            .encode(),
            "RenegotiationAnswer body refused: a reason of 1025 bytes exceeds the maximum of 1024",
        ),
    ];
    for (ty, body, message) in cases {
        let (result, frames) = b_receives(&f, &Frame::new(ty, body));
        let err = result.unwrap_err();
        assert!(err.to_string().starts_with(message), "{err}");
        assert_eq!(error_code(&frames), ErrorCode::Malformed.to_u16());
    }
}

#[test]
fn a_confirm_for_nothing_answered_breaks_the_protocol() {
    let f = federation();
    let confirm = Control::RenegotiationConfirm(RenegotiationConfirm {
        version: 2,
        signature: ByteBuf::from(vec![0; 96]),
    });
    let (result, frames) = b_receives(&f, &confirm.to_frame());
    assert_eq!(
        result.unwrap_err().to_string(),
        "a confirm of agreement version 2 answers no accepted proposal"
    );
    assert_eq!(error_code(&frames), ErrorCode::UnexpectedMessage.to_u16());
}

/// A session of A that proposed version 2, and what it says to B's `answer`.
fn a_answered(
    f: &Federation,
    answer: RenegotiationAnswer,
) -> (Result<Received, SessionError>, Vec<Frame>, u32) {
    let (t0, s) = one_session();
    let mut s = s
        .with_renegotiation(setup(
            f,
            Side::A,
            Capabilities::default(),
            PolicyOffer::default(),
        ))
        .unwrap();
    s.renegotiate(t0).unwrap();
    drain(&mut s);
    let result = s.handle_frame(&Control::RenegotiationAnswer(answer).to_frame(), t0);
    let version = s.agreement_version().unwrap();
    (result, drain(&mut s).0, version)
}

#[test]
fn an_answer_that_changes_more_than_the_terms_or_is_signed_wrongly_is_refused() {
    let f = federation();
    let current = f.signed.agreement().unwrap();
    let answer_with = |agreement: &Agreement, key: &SigningKey| {
        let bytes = agreement.encode();
        let sig = key
            .sign(&agreement_input(Role::Responder, &sha384(&bytes)))
            .unwrap();
        RenegotiationAnswer::Accept {
            agreement: ByteBuf::from(bytes),
            signature: ByteBuf::from(sig.0.to_vec()),
        }
    };
    let v2 = Agreement {
        version: 2,
        ..current.clone()
    };

    let moved = Agreement {
        valid_until: Timestamp(9_999_999),
        ..v2.clone()
    };
    let (result, frames, version) = a_answered(&f, answer_with(&moved, &f.b_key));
    assert_eq!(
        result.unwrap_err().to_string(),
        "the renegotiated agreement is not acceptable: it changes the federation, a party or the validity"
    );
    assert_eq!(error_code(&frames), ErrorCode::AgreementMismatch.to_u16());
    assert_eq!(version, 1, "nothing switched");

    let mut bigger = v2.clone();
    bigger.capabilities.max_frame.0 += 1;
    let (result, _, _) = a_answered(&f, answer_with(&bigger, &f.b_key));
    assert!(
        result
            .unwrap_err()
            .to_string()
            .contains("capability max_frame")
    );

    let mut looser = v2.clone();
    looser.policy.retention_days += 1;
    let (result, _, _) = a_answered(&f, answer_with(&looser, &f.b_key));
    assert!(result.unwrap_err().to_string().contains("less restrictive"));

    let stranger = key();
    let (result, frames, version) = a_answered(&f, answer_with(&v2, &stranger));
    assert_eq!(
        result.unwrap_err().to_string(),
        "the peer's signature over agreement version 2 does not verify"
    );
    assert_eq!(error_code(&frames), ErrorCode::BadSignature.to_u16());
    assert_eq!(version, 1);

    let (result, frames, version) = a_answered(&f, answer_with(&v2, &f.b_key));
    assert_eq!(result, Ok(Received::Consumed));
    assert_eq!(frames.last().unwrap().ty, FrameType::RenegotiationConfirm);
    assert_eq!(version, 2);
}

#[test]
fn a_proposal_for_the_wrong_version_is_refused() {
    let f = federation();
    let proposal = Control::RenegotiationProposal(Box::new(RenegotiationProposal {
        version: 7,
        capabilities: Capabilities::default(),
        policy: PolicyOffer::default(),
    }));
    let (result, frames) = b_receives(&f, &proposal.to_frame());
    assert_eq!(result, Ok(Received::Consumed));
    let Some(Ok(Some(Control::RenegotiationAnswer(RenegotiationAnswer::Refuse {
        version,
        reason,
    })))) = frames.last().map(Control::from_frame)
    else {
        panic!("{frames:?}");
    };
    assert_eq!(version, 7);
    assert_eq!(
        reason,
        "proposes agreement version 7, but version 1 is in force here (expected 2)"
    );
}

/// One input to a renegotiating session in [`random_renegotiation_input_never_panics`].
#[derive(Debug, Clone)]
enum Input {
    Raw(u8, Vec<u8>),
    Proposal(u32, u32),
    Refuse(u32, String),
    Accept(Vec<u8>, Vec<u8>),
    Confirm(u32, Vec<u8>),
    Renegotiate,
    Advance(u64),
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        (0x18..0x1bu8, proptest::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(c, b)| Input::Raw(c, b)),
        (0..4u32, (32u32 << 10)..(2u32 << 20)).prop_map(|(v, f)| Input::Proposal(v, f)),
        (0..4u32, ".{0,8}").prop_map(|(v, r)| Input::Refuse(v, r)),
        (
            proptest::collection::vec(any::<u8>(), 0..32),
            proptest::collection::vec(any::<u8>(), 96..=96)
        )
            .prop_map(|(a, s)| Input::Accept(a, s)),
        (0..4u32, proptest::collection::vec(any::<u8>(), 96..=96))
            .prop_map(|(v, s)| Input::Confirm(v, s)),
        Just(Input::Renegotiate),
        (0..3_000u64).prop_map(Input::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn random_renegotiation_input_never_panics_and_keeps_one_version_in_force(
        steps in proptest::collection::vec(input(), 0..24),
        side_a in any::<bool>(),
    ) {
        let f = federation();
        let side = if side_a { Side::A } else { Side::B };
        let (t0, s) = one_session();
        let mut s = s
            .with_renegotiation(setup(&f, side, Capabilities::default(), PolicyOffer::default()))
            .unwrap();
        let mut now = t0;
        for step in steps {
            let frame = match step {
                Input::Raw(code, body) => FrameType::from_code(code).map(|ty| Frame::new(ty, body)),
                Input::Proposal(version, max_frame) => {
                    let mut capabilities = Capabilities::default();
                    capabilities.max_frame.0 = max_frame;
                    Some(Control::RenegotiationProposal(Box::new(RenegotiationProposal {
                        version,
                        capabilities,
                        policy: PolicyOffer::default(),
                    })).to_frame())
                }
                Input::Refuse(version, reason) => {
                    Some(Control::RenegotiationAnswer(RenegotiationAnswer::Refuse { version, reason }).to_frame())
                }
                Input::Accept(agreement, signature) => Some(
                    Control::RenegotiationAnswer(RenegotiationAnswer::Accept {
                        agreement: ByteBuf::from(agreement),
                        signature: ByteBuf::from(signature),
                    })
                    .to_frame(),
                ),
                Input::Confirm(version, signature) => Some(
                    Control::RenegotiationConfirm(RenegotiationConfirm {
                        version,
                        signature: ByteBuf::from(signature),
                    })
                    .to_frame(),
                ),
                Input::Renegotiate => {
                    let _ = s.renegotiate(now);
                    None
                }
                Input::Advance(n) => {
                    now += ms(n);
                    s.handle_timeout(now);
                    None
                }
            };
            if let Some(frame) = frame {
                let _ = s.handle_frame(&frame, now);
            }
            let (_, events) = drain(&mut s);
            // Forged answers and confirms never verify: nothing switches.
            prop_assert!(
                !events.iter().any(|e| matches!(e, SessionEvent::AgreementSwitched(_))),
                "{events:?}"
            );
            prop_assert_eq!(s.agreement_version(), Some(1));
            if s.is_closed() {
                break;
            }
        }
    }
}
