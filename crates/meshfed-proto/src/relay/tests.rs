//! Tunnels between two ends through a broker that forwards, alters, replays or terminates them;
//! the relay frame codec on good, damaged and random bytes; routes.
//!
//! Certificates here are arbitrary test bytes: [`Leaves`] maps each leaf to its key, as the
//! trust layer does for real X.509 leaves.

use std::sync::Arc;

use bytes::Bytes;
use ciborium::Value;
use proptest::prelude::*;

use super::*;
use crate::crypto::{SigningKey, VerifyingKey};
use crate::frame::{Frame, FrameType};
use crate::handshake::Role;

fn mesh(s: &str) -> MeshId {
    s.parse().unwrap()
}

/// One node: its key and a chain (test leaf, test CA) whose leaf names that key.
struct Node {
    key: Arc<SigningKey>,
    chain: Vec<Vec<u8>>,
}

fn node(name: &str) -> Node {
    Node {
        key: Arc::new(SigningKey::generate().unwrap()),
        chain: vec![
            format!("leaf of {name}").into_bytes(),
            format!("ca of {name}").into_bytes(),
        ],
    }
}

/// The trust layer's view: which key each known leaf certifies.
struct Leaves(Vec<(Vec<u8>, VerifyingKey)>);

impl Leaves {
    fn of(nodes: &[&Node]) -> Self {
        Self(
            nodes
                .iter()
                .map(|n| {
                    let key = VerifyingKey::from_sec1(n.key.public_key()).unwrap();
                    (n.chain[0].clone(), key)
                })
                .collect(),
        )
    }
}

impl LeafKey for Leaves {
    fn leaf_key(&self, leaf_der: &[u8]) -> Result<VerifyingKey, String> {
        self.0
            .iter()
            .find(|(leaf, _)| leaf == leaf_der)
            .map(|(_, key)| key.clone())
            .ok_or_else(|| "not a certificate of this test".into())
    }
}

const ID: TunnelId = TunnelId([7; 16]);

fn ends() -> Ends {
    Ends {
        initiator: mesh("plant-a"),
        responder: mesh("plant-c"),
    }
}

fn start(a: &Node) -> (ExpectAccept, Open) {
    TunnelInitiator::start(ID, ends(), a.key.clone(), a.chain.clone()).unwrap()
}

fn answer(c: &Node, open: &Open) -> (ExpectFinish, Accept) {
    TunnelResponder::accept(ID, ends(), open, c.key.clone(), c.chain.clone()).unwrap()
}

/// A and C establish a tunnel with nobody in between.
fn established(a: &Node, c: &Node) -> (Tunnel, Tunnel) {
    let leaves = Leaves::of(&[a, c]);
    let (expect_accept, open) = start(a);
    let (expect_finish, accept) = answer(c, &open);
    let (at_a, finish) = expect_accept.accepted(&accept, &leaves).unwrap();
    let at_c = expect_finish.finish(&finish, &leaves).unwrap();
    (at_a, at_c)
}

/// `sealed` as a broker passes it on: encoded in a relay frame, forwarded, decoded.
fn through_broker(sealed: Sealed) -> Sealed {
    let mut route = Route::new(mesh("plant-a"), mesh("plant-c"), Route::DEFAULT_TTL);
    route.forward(&mesh("broker-b")).unwrap();
    let frame = RelayFrame {
        tunnel: ID,
        route,
        body: Body::Data(sealed),
    };
    match RelayFrame::decode(&frame.encode()).unwrap().body {
        Body::Data(s) => s,
        other => panic!("expected data, got {other:?}"),
    }
}

#[test]
fn tunnel_carries_exact_frames_both_ways_under_one_binding() {
    let (a, c) = (node("a"), node("c"));
    let (mut at_a, mut at_c) = established(&a, &c);
    assert_eq!(at_a.binding(), at_c.binding());
    assert_eq!(at_a.peer_chain(), c.chain.as_slice());
    assert_eq!(at_c.peer_chain(), a.chain.as_slice());

    let to_c = [
        Frame::new(FrameType::FederationRequest, vec![1, 2, 3]),
        Frame::new(FrameType::Envelope, vec![9; 5000]),
        Frame::new(FrameType::Heartbeat, Vec::new()),
    ];
    for frame in &to_c {
        let sealed = through_broker(at_a.seal(frame));
        assert_eq!(at_c.open(&sealed).unwrap(), *frame);
    }
    let to_a = Frame::new(FrameType::FederationResponse, vec![4, 5]);
    let sealed = at_c.seal(&to_a);
    assert_eq!(sealed.seq, 0, "each direction counts from 0");
    assert_eq!(at_a.open(&through_broker(sealed)).unwrap(), to_a);
}

#[test]
fn each_tunnel_has_its_own_binding() {
    let (a, c) = (node("a"), node("c"));
    let (first, _) = established(&a, &c);
    let (second, _) = established(&a, &c);
    assert_ne!(first.binding(), second.binding());
}

#[test]
fn broker_answering_in_the_responders_name_is_refused() {
    // The broker keeps the Open from A and answers it itself: C's chain, its own share, signed
    // with its own key.
    let (a, c, b) = (node("a"), node("c"), node("b"));
    let leaves = Leaves::of(&[&a, &c, &b]);
    let (expect_accept, open) = start(&a);
    let (_, forged) =
        TunnelResponder::accept(ID, ends(), &open, b.key.clone(), c.chain.clone()).unwrap();
    let err = expect_accept.accepted(&forged, &leaves).unwrap_err();
    assert_eq!(err, TunnelError::BadSignature(Role::Responder));
    assert!(
        err.to_string()
            .starts_with("the responder's signature over the tunnel transcript does not verify"),
        "{err}"
    );
}

/// What a broker does to an [`Accept`] in flight, given its own node and key share.
type Alteration = fn(&mut Accept, &Node, &[u8]);

#[test]
fn accept_altered_on_the_way_is_refused() {
    let (a, c, b) = (node("a"), node("c"), node("b"));
    let leaves = Leaves::of(&[&a, &c, &b]);
    let broker_share = start(&b).1.share;
    let alterations: [(&str, Alteration); 3] = [
        ("share", |acc, _, share| acc.share = share.to_vec()),
        ("chain", |acc, b, _| acc.chain = b.chain.clone()),
        ("nonce", |acc, _, _| acc.nonce[0] ^= 1),
    ];
    for (what, alter) in alterations {
        let (expect_accept, open) = start(&a);
        let (_, mut accept) = answer(&c, &open);
        alter(&mut accept, &b, &broker_share);
        let err = expect_accept.accepted(&accept, &leaves).unwrap_err();
        assert_eq!(err, TunnelError::BadSignature(Role::Responder), "{what}");
    }
}

#[test]
fn open_altered_on_the_way_is_refused_by_the_initiator() {
    // C signs what it received; A checks against what it sent.
    let (a, c, b) = (node("a"), node("c"), node("b"));
    let leaves = Leaves::of(&[&a, &c, &b]);
    let broker_share = start(&b).1.share;
    let (expect_accept, mut open) = start(&a);
    open.share = broker_share;
    let (_, accept) = answer(&c, &open);
    let err = expect_accept.accepted(&accept, &leaves).unwrap_err();
    assert_eq!(err, TunnelError::BadSignature(Role::Responder));
}

#[test]
fn responder_refuses_a_finish_not_signed_by_the_initiators_leaf() {
    // The broker replaces A's share (and nonce) with its own, presents A's chain, and signs the
    // Finish with its own key.
    let (a, c, b) = (node("a"), node("c"), node("b"));
    let leaves = Leaves::of(&[&a, &c, &b]);
    let (broker_side, forged_open) =
        TunnelInitiator::start(ID, ends(), b.key.clone(), a.chain.clone()).unwrap();
    let (expect_finish, accept) = answer(&c, &forged_open);
    let (_, forged_finish) = broker_side.accepted(&accept, &leaves).unwrap();
    let err = expect_finish.finish(&forged_finish, &leaves).unwrap_err();
    assert_eq!(err, TunnelError::BadSignature(Role::Initiator));
}

#[test]
fn ends_renamed_by_a_relay_fail_the_exchange() {
    let (a, c) = (node("a"), node("c"));
    let leaves = Leaves::of(&[&a, &c]);
    let (expect_accept, open) = start(&a);
    let renamed = Ends {
        initiator: mesh("other"),
        responder: mesh("plant-c"),
    };
    let (_, accept) =
        TunnelResponder::accept(ID, renamed, &open, c.key.clone(), c.chain.clone()).unwrap();
    assert_eq!(
        expect_accept.accepted(&accept, &leaves).unwrap_err(),
        TunnelError::BadSignature(Role::Responder)
    );
}

#[test]
fn broker_terminating_both_ends_cannot_share_a_binding_with_them() {
    // The broker substitutes its own shares (and, having to sign, its own chain) towards each end:
    // both exchanges complete, but the ends hold different bindings and see the broker's leaf,
    // which the handshake inside the tunnel refuses.
    let (a, c, b) = (node("a"), node("c"), node("b"));
    let (at_a, _) = established(&a, &b);
    let (_, at_c) = established(&b, &c);
    assert_ne!(at_a.binding(), at_c.binding());
    assert_eq!(at_a.peer_chain()[0], b.chain[0]);
    assert_eq!(at_c.peer_chain()[0], b.chain[0]);
}

#[test]
fn unknown_leaf_is_refused_with_the_trust_layers_words() {
    let (a, c) = (node("a"), node("c"));
    let (expect_accept, open) = start(&a);
    let (_, accept) = answer(&c, &open);
    let err = expect_accept
        .accepted(&accept, &Leaves::of(&[&a]))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no public key for the responder's leaf certificate: not a certificate of this test"
    );
}

#[test]
fn local_chain_out_of_bounds_is_refused_before_sending() {
    let a = node("a");
    let err = TunnelInitiator::start(ID, ends(), a.key.clone(), Vec::new()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "tunnel local chain: 0 certificates, must be 1 to 4"
    );
}

#[test]
fn altered_data_is_refused_and_breaks_the_tunnel() {
    let (a, c) = (node("a"), node("c"));
    let frame = Frame::new(FrameType::Envelope, vec![0x55; 64]);
    let alterations: [fn(&mut Sealed); 4] = [
        |s| {
            let mut body = s.body.to_vec();
            body[10] ^= 0x01;
            s.body = Bytes::from(body);
        },
        |s| s.tag[TAG_LEN - 1] ^= 0x80,
        |s| s.ty = FrameType::Heartbeat as u8,
        |s| s.seq = 1,
    ];
    for alter in alterations {
        let (mut at_a, mut at_c) = established(&a, &c);
        let mut sealed = at_a.seal(&frame);
        alter(&mut sealed);
        assert_eq!(
            at_c.open(&sealed).unwrap_err(),
            TunnelError::BadTag { seq: sealed.seq }
        );
        let next = at_a.seal(&frame);
        assert_eq!(at_c.open(&next).unwrap_err(), TunnelError::Broken);
    }
}

#[test]
fn replayed_data_is_refused() {
    let (a, c) = (node("a"), node("c"));
    let (mut at_a, mut at_c) = established(&a, &c);
    let sealed = at_a.seal(&Frame::new(FrameType::Ack, vec![1]));
    at_c.open(&sealed).unwrap();
    let err = at_c.open(&sealed).unwrap_err();
    assert_eq!(
        err,
        TunnelError::WrongSequence {
            expected: 1,
            got: 0
        }
    );
    assert!(err.to_string().contains("expected 1, got 0"), "{err}");
}

#[test]
fn skipped_data_is_refused() {
    let (a, c) = (node("a"), node("c"));
    let (mut at_a, mut at_c) = established(&a, &c);
    let _lost = at_a.seal(&Frame::new(FrameType::Ack, vec![1]));
    let second = at_a.seal(&Frame::new(FrameType::Ack, vec![2]));
    assert_eq!(
        at_c.open(&second).unwrap_err(),
        TunnelError::WrongSequence {
            expected: 0,
            got: 1
        }
    );
}

#[test]
fn data_reflected_back_to_its_sender_is_refused() {
    let (a, c) = (node("a"), node("c"));
    let (mut at_a, _) = established(&a, &c);
    let sealed = at_a.seal(&Frame::new(FrameType::Ack, vec![1]));
    assert_eq!(
        at_a.open(&sealed).unwrap_err(),
        TunnelError::BadTag { seq: 0 }
    );
}

#[test]
fn debug_output_names_no_keys() {
    let (a, c) = (node("a"), node("c"));
    let (at_a, _) = established(&a, &c);
    let shown = format!("{at_a:?}");
    assert!(!shown.contains(&hex::encode(at_a.binding())), "{shown}");
    assert!(
        shown.starts_with("Tunnel { id: TunnelId(07070707"),
        "{shown}"
    );
}

// ---- The relay frame codec ----

fn route_via(relays: &[&str]) -> Route {
    let mut route = Route::new(mesh("plant-a"), mesh("plant-c"), Route::DEFAULT_TTL);
    for r in relays {
        route.forward(&mesh(r)).unwrap();
    }
    route
}

/// One frame of every body kind, from a real exchange.
fn every_body() -> Vec<Body> {
    let (a, c) = (node("a"), node("c"));
    let leaves = Leaves::of(&[&a, &c]);
    let (expect_accept, open) = start(&a);
    let (_, accept) = answer(&c, &open);
    let (mut at_a, finish) = expect_accept.accepted(&accept, &leaves).unwrap();
    let data = at_a.seal(&Frame::new(FrameType::Envelope, vec![3; 300]));
    vec![
        Body::Open(open),
        Body::Accept(accept),
        Body::Finish(finish),
        Body::Data(data),
        Body::unreachable("no route to plant-c"),
        Body::close("federation terminated"),
    ]
}

#[test]
fn every_body_kind_round_trips() {
    for body in every_body() {
        let frame = RelayFrame {
            tunnel: ID,
            route: route_via(&["b1", "b2"]),
            body,
        };
        assert_eq!(RelayFrame::decode(&frame.encode()).unwrap(), frame);
    }
}

fn frame_value(body: Body) -> Value {
    let frame = RelayFrame {
        tunnel: ID,
        route: route_via(&["b1"]),
        body,
    };
    ciborium::from_reader(frame.encode().as_slice()).unwrap()
}

fn items(value: &mut Value) -> &mut Vec<Value> {
    match value {
        Value::Array(items) => items,
        other => panic!("not an array: {other:?}"),
    }
}

fn decode_value(value: &Value) -> RelayError {
    let mut bytes = Vec::new();
    ciborium::into_writer(value, &mut bytes).unwrap();
    RelayFrame::decode(&bytes).unwrap_err()
}

/// Decodes the frame of `body` after `alter`ing its CBOR value; the error's words.
fn refusal(body: Body, alter: impl FnOnce(&mut Vec<Value>)) -> String {
    let mut value = frame_value(body);
    alter(items(&mut value));
    decode_value(&value).to_string()
}

fn close() -> Body {
    Body::close("bye")
}

#[test]
fn damaged_frames_are_refused_naming_the_field() {
    let long_path: Vec<Value> = (0..17).map(|i| Value::Text(format!("m{i}"))).collect();
    let cases: Vec<(String, &str)> = vec![
        (
            refusal(close(), |f| f[1] = Value::Array(vec![])),
            "relay frame field route: an array of 0 items, expected 5",
        ),
        (
            refusal(close(), |f| {
                f.pop();
            }),
            "relay frame field frame: an array of 2 items, expected 3",
        ),
        (
            refusal(close(), |f| f[0] = Value::Bytes(vec![0; 15])),
            "relay frame field tunnel: 15 bytes, expected 16",
        ),
        (
            refusal(close(), |f| {
                items(&mut f[1])[0] = Value::Text("Plant A".into());
            }),
            "relay frame field route.source: invalid mesh id \"Plant A\"",
        ),
        (
            refusal(close(), |f| {
                let route = items(&mut f[1]);
                route[2] = Value::Array(long_path);
                route[4] = Value::Integer(17.into());
            }),
            "relay frame field route.path: 17 meshes, at most 16",
        ),
        (
            refusal(close(), |f| {
                items(&mut f[1])[4] = Value::Integer(3.into());
            }),
            "relay frame field route.hops: 3, but route.path names 1 relays",
        ),
        (
            refusal(close(), |f| {
                items(&mut f[1])[3] = Value::Integer(256.into());
            }),
            "relay frame field route.ttl: 256, expected an unsigned integer up to 255",
        ),
        (
            refusal(close(), |f| items(&mut f[2])[0] = Value::Integer(9.into())),
            "relay frame field body.kind: 9 is not a relay frame kind (0 to 5)",
        ),
        (
            refusal(close(), |f| {
                items(&mut f[2])[1] = Value::Text("x".repeat(MAX_REASON + 1));
            }),
            "relay frame field body.reason: 1025 bytes, at most 1024",
        ),
        (
            refusal(every_body().swap_remove(0), |f| {
                items(&mut f[2])[2] = Value::Bytes(vec![4; 65]);
            }),
            "relay frame field body.share: 65 bytes, not an uncompressed P-384 point",
        ),
        (
            refusal(every_body().swap_remove(0), |f| {
                items(&mut f[2])[1] = Value::Array(vec![Value::Bytes(vec![1]); 5]);
            }),
            "relay frame field body.chain: 5 certificates, at most 4",
        ),
        (
            refusal(every_body().swap_remove(2), |f| {
                items(&mut f[2]).push(Value::Null);
            }),
            "relay frame field body (finish): an array of 3 items, expected 2",
        ),
        (
            refusal(every_body().swap_remove(3), |f| {
                items(&mut f[2])[4] = Value::Bytes(vec![0; 32]);
            }),
            "relay frame field body.tag: 32 bytes, expected 16",
        ),
    ];
    for (got, expected) in cases {
        assert!(got.starts_with(expected), "{got}\n  expected: {expected}");
    }
}

#[test]
fn truncated_and_trailing_bytes_are_refused() {
    let bytes = RelayFrame {
        tunnel: ID,
        route: route_via(&[]),
        body: close(),
    }
    .encode();
    assert_eq!(
        RelayFrame::decode(&bytes[..bytes.len() - 1])
            .unwrap_err()
            .to_string(),
        "relay frame is not one CBOR value: the input ends early"
    );
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(
        RelayFrame::decode(&longer).unwrap_err(),
        RelayError::TrailingBytes(1)
    );
}

#[test]
fn reasons_are_cut_to_the_limit_on_a_character_boundary() {
    let Body::Close { reason } = Body::close(&"é".repeat(MAX_REASON)) else {
        unreachable!()
    };
    assert_eq!(reason.len(), MAX_REASON);
    let Body::Unreachable { reason } = Body::unreachable(&format!("x{}", "é".repeat(600))) else {
        unreachable!()
    };
    assert_eq!(reason.len(), MAX_REASON - 1);
}

#[test]
fn overhead_bounds_a_maximal_route() {
    let longest = |i: usize| mesh(&format!("{i:02}{}", "m".repeat(61)));
    let mut route = Route::new(longest(98), longest(99), u8::MAX);
    for i in 0..MAX_PATH {
        route.forward(&longest(i)).unwrap();
    }
    assert_eq!(route.path.len(), MAX_PATH);
    let body = Bytes::from(vec![0; 70_000]);
    let frame = RelayFrame {
        tunnel: ID,
        route,
        body: Body::Data(Sealed {
            seq: u64::MAX,
            ty: u8::MAX,
            body: body.clone(),
            tag: [0xff; TAG_LEN],
        }),
    };
    let added = frame.encode().len() - body.len();
    assert!(
        added <= OVERHEAD as usize,
        "{added} bytes around the body, OVERHEAD is {OVERHEAD}"
    );
}

// ---- Routes ----

#[test]
fn forwarding_appends_the_relay_and_counts_the_hop() {
    let mut route = Route::new(mesh("a"), mesh("d"), 2);
    route.forward(&mesh("b")).unwrap();
    route.forward(&mesh("c")).unwrap();
    assert_eq!(route.path, [mesh("b"), mesh("c")]);
    assert_eq!((route.ttl, route.hops), (0, 2));
}

#[test]
fn forwarding_refuses_a_loop_naming_the_path() {
    let mut route = Route::new(mesh("a"), mesh("d"), Route::DEFAULT_TTL);
    route.forward(&mesh("b")).unwrap();
    route.forward(&mesh("c")).unwrap();
    let before = route.clone();
    let err = route.forward(&mesh("b")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the route loops: mesh b is already on the path a → b → c"
    );
    assert!(matches!(
        route.forward(&mesh("a")),
        Err(Dropped::Loop { .. })
    ));
    assert_eq!(route, before, "a refused frame's route is unchanged");
}

#[test]
fn forwarding_drops_a_frame_arriving_with_ttl_zero() {
    let mut route = Route::new(mesh("a"), mesh("d"), 1);
    route.forward(&mesh("b")).unwrap();
    let err = route.forward(&mesh("c")).unwrap_err();
    assert_eq!(err, Dropped::TtlExpired { hops: 1 });
    assert_eq!(err.to_string(), "ttl expired after 1 hops");
}

#[test]
fn forwarding_stops_at_a_full_path() {
    let mut route = Route::new(mesh("a"), mesh("z"), u8::MAX);
    for i in 0..MAX_PATH {
        route.forward(&mesh(&format!("r{i}"))).unwrap();
    }
    assert_eq!(route.forward(&mesh("last")), Err(Dropped::PathFull));
}

#[test]
fn reversed_route_leads_back_to_the_source() {
    let route = route_via(&["b1", "b2"]);
    let back = route.reversed(&mesh("b2"));
    assert_eq!(
        back,
        Route::new(mesh("b2"), mesh("plant-a"), Route::DEFAULT_TTL)
    );
}

// ---- Generated frames ----

fn mesh_id() -> impl Strategy<Value = MeshId> {
    "[a-z0-9][a-z0-9-]{0,12}".prop_map(|s| s.parse().unwrap())
}

fn blob(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), len)
}

fn fixed_bytes<const N: usize>() -> impl Strategy<Value = [u8; N]> {
    blob(N..N + 1).prop_map(|v| v.try_into().unwrap())
}

fn chain() -> impl Strategy<Value = Vec<Vec<u8>>> {
    proptest::collection::vec(blob(1..64), 1..=MAX_CHAIN)
}

fn share() -> impl Strategy<Value = Vec<u8>> {
    blob(96..97).prop_map(|v| [vec![4], v].concat())
}

fn body() -> impl Strategy<Value = Body> {
    let signature = || fixed_bytes::<96>().prop_map(crate::crypto::Signature);
    prop_oneof![
        (chain(), share(), fixed_bytes::<32>()).prop_map(|(chain, share, nonce)| Body::Open(
            Open {
                chain,
                share,
                nonce
            }
        )),
        (chain(), share(), fixed_bytes::<32>(), signature()).prop_map(
            |(chain, share, nonce, signature)| Body::Accept(Accept {
                chain,
                share,
                nonce,
                signature
            })
        ),
        signature().prop_map(|signature| Body::Finish(Finish { signature })),
        (
            any::<u64>(),
            any::<u8>(),
            blob(0..256),
            fixed_bytes::<TAG_LEN>()
        )
            .prop_map(|(seq, ty, body, tag)| Body::Data(Sealed {
                seq,
                ty,
                body: body.into(),
                tag
            })),
        ".{0,40}".prop_map(|reason| Body::Unreachable { reason }),
        ".{0,40}".prop_map(|reason| Body::Close { reason }),
    ]
}

fn relay_frame() -> impl Strategy<Value = RelayFrame> {
    (
        fixed_bytes::<16>(),
        mesh_id(),
        mesh_id(),
        proptest::collection::vec(mesh_id(), 0..=MAX_PATH),
        any::<u8>(),
        body(),
    )
        .prop_map(|(id, source, destination, path, ttl, body)| RelayFrame {
            tunnel: TunnelId(id),
            route: Route {
                source,
                destination,
                hops: path.len() as u8,
                path,
                ttl,
            },
            body,
        })
}

proptest! {
    #[test]
    fn generated_frames_round_trip(frame in relay_frame()) {
        prop_assert_eq!(RelayFrame::decode(&frame.encode()).unwrap(), frame);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in blob(0..512)) {
        let _ = RelayFrame::decode(&bytes);
    }

    #[test]
    fn damaged_encodings_never_panic_the_decoder(
        frame in relay_frame(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = frame.encode();
        for (at, xor) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= xor;
        }
        if let Ok(decoded) = RelayFrame::decode(&bytes) {
            prop_assert_eq!(RelayFrame::decode(&decoded.encode()).unwrap(), decoded);
        }
    }
}
