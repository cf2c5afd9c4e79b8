//! What it costs to federate: the six-step federation handshake alone (sans-IO, in memory, real
//! X.509 verification, ECDH and signatures), the mutual-TLS 1.3 connection alone, and both
//! together over loopback — the last is what `meshfed federation join` and every re-dial pay.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmark fixtures"
)]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use meshfed_proto::capability::Capabilities;
use meshfed_proto::crypto::sha384;
use meshfed_proto::envelope::Timestamp;
use meshfed_proto::frame::Frame;
use meshfed_proto::handshake::{
    Channel, Event, Handshake, Invitation, LocalIdentity, PendingInvitation, ResponderKnowledge,
    Target, invitation_key,
};
use meshfed_proto::policy::PolicyOffer;
use meshfed_testkit::{TestNode, TestPki};
use meshfed_transport::{
    KeyPurpose, Link, Listener, ServerTrust, TlsIdentity, X509PeerVerifier, dial,
};

struct Side {
    pki: TestPki,
    node: TestNode,
}

impl Side {
    fn new(mesh: &str) -> Self {
        let pki = TestPki::new(mesh);
        let node = pki.node("gw1");
        Self { pki, node }
    }

    fn local(&self, purpose: KeyPurpose) -> LocalIdentity {
        LocalIdentity {
            mesh: self.pki.mesh().clone(),
            node: "gw1".parse().unwrap(),
            bundle: vec![self.pki.ca().cert_der().to_vec()],
            key: Arc::new(
                meshfed_proto::crypto::SigningKey::from_pkcs8(&self.node.key.to_pkcs8().unwrap())
                    .unwrap(),
            ),
            capabilities: Capabilities::default(),
            policy: PolicyOffer::default(),
            verifier: Arc::new(X509PeerVerifier::new(purpose)),
            step_timeout: Duration::from_secs(10),
            agreement_validity: Duration::from_secs(86_400),
        }
    }

    fn tls(&self) -> TlsIdentity {
        TlsIdentity::new(
            self.node.cert.to_vec(),
            self.pki.ca().cert_der().to_vec(),
            self.node.key.to_pkcs8().unwrap(),
        )
        .unwrap()
    }
}

fn now() -> Timestamp {
    Timestamp(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
    )
}

/// Invitation from `b` for `a`, as each side holds it.
fn invitation(b: &Side) -> (Invitation, ResponderKnowledge) {
    let secret = [7u8; 32];
    let inv = Invitation {
        token_id: "tok_bench".into(),
        inviter: b.pki.mesh().clone(),
        ca_fingerprint: sha384(b.pki.ca().cert_der()),
        secret,
    };
    let knowledge = ResponderKnowledge {
        invitations: vec![PendingInvitation {
            token_id: "tok_bench".into(),
            peer_mesh: "plant-a".parse().unwrap(),
            verifier_key: invitation_key(&secret),
            expires: Timestamp(u64::MAX),
            used: None,
        }],
        new_federation_id: Some("fed_bench".parse().unwrap()),
        ..ResponderKnowledge::default()
    };
    (inv, knowledge)
}

fn established(hs: &mut Handshake) -> bool {
    let mut done = false;
    while let Some(e) = hs.poll_event() {
        done |= matches!(e, Event::Established(_));
    }
    done
}

/// The six steps in memory: frames handed straight from one state machine to the other.
fn core_handshake(a: &Side, b: &Side) {
    let (inv, knowledge) = invitation(b);
    let binding = vec![9u8; 32];
    let ch_a = Channel {
        peer_leaf: b.node.cert.to_vec(),
        peer_intermediates: vec![b.pki.ca().cert_der().to_vec()],
        binding: binding.clone(),
    };
    let ch_b = Channel {
        peer_leaf: a.node.cert.to_vec(),
        peer_intermediates: vec![a.pki.ca().cert_der().to_vec()],
        binding,
    };
    let mut i = Handshake::initiator(
        a.local(KeyPurpose::ServerAuth),
        ch_a,
        Target::Join(inv),
        now(),
    )
    .unwrap();
    let mut r = Handshake::responder(b.local(KeyPurpose::ClientAuth), ch_b, knowledge, now());
    let (mut done_i, mut done_r) = (false, false);
    while !(done_i && done_r) {
        while let Some(f) = i.poll_transmit() {
            r.handle_frame(&f, now()).unwrap();
        }
        done_r |= established(&mut r);
        while let Some(f) = r.poll_transmit() {
            i.handle_frame(&f, now()).unwrap();
        }
        done_i |= established(&mut i);
    }
}

/// Drives one side's handshake over a real link until it is established.
async fn over_link(mut hs: Handshake, link: &mut Link) {
    loop {
        let mut out: Vec<Frame> = Vec::new();
        while let Some(f) = hs.poll_transmit() {
            out.push(f);
        }
        for f in &out {
            link.send(f).await.unwrap();
        }
        if established(&mut hs) {
            return;
        }
        let frame = link.recv().await.unwrap().expect("peer closed");
        hs.handle_frame(&frame, now()).unwrap();
    }
}

fn benches(c: &mut Criterion) {
    let a = Side::new("plant-a");
    let b = Side::new("supplier-b");
    let mut g = c.benchmark_group("federate");
    g.sample_size(30);
    g.bench_function("six_step_handshake_in_memory", |bench| {
        bench.iter(|| core_handshake(&a, &b))
    });

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (tls_a, tls_b) = (a.tls(), b.tls());
    let listener = rt
        .block_on(Listener::bind("127.0.0.1:0".parse().unwrap(), &tls_b))
        .unwrap();
    let addr = listener.local_addr().to_string();
    let listener = Arc::new(listener);
    let pin = ServerTrust::PinnedCa {
        mesh: b.pki.mesh().clone(),
        fingerprint: sha384(b.pki.ca().cert_der()),
    };
    let timeout = Duration::from_secs(10);

    g.bench_function("mtls13_connect_loopback", |bench| {
        bench.iter(|| {
            rt.block_on(async {
                let l = listener.clone();
                let server = tokio::spawn(async move {
                    l.accept().await.unwrap().handshake(timeout).await.unwrap()
                });
                let client = dial(&addr, &tls_a, pin.clone(), timeout).await.unwrap();
                let server = server.await.unwrap();
                (client, server)
            })
        })
    });

    g.bench_function("mtls13_connect_plus_six_steps_loopback", |bench| {
        bench.iter(|| {
            rt.block_on(async {
                let l = listener.clone();
                let (inv, knowledge) = invitation(&b);
                let local_b = b.local(KeyPurpose::ClientAuth);
                let server = tokio::spawn(async move {
                    let mut link = l.accept().await.unwrap().handshake(timeout).await.unwrap();
                    let hs = Handshake::responder(local_b, link.channel(), knowledge, now());
                    over_link(hs, &mut link).await;
                    link
                });
                let mut link = dial(&addr, &tls_a, pin.clone(), timeout).await.unwrap();
                let hs = Handshake::initiator(
                    a.local(KeyPurpose::ServerAuth),
                    link.channel(),
                    Target::Join(inv),
                    now(),
                )
                .unwrap();
                over_link(hs, &mut link).await;
                (link, server.await.unwrap())
            })
        })
    });
    g.finish();
}

criterion_group!(handshake, benches);
criterion_main!(handshake);
