//! The per-message costs a policy adds: an access decision under a realistic rule set (roles,
//! topic families, a partner, two forbids) — remembered, and made by Cedar for a topic not seen
//! before — an identified sender's arrival (its identity mapped, then decided on), the sender's
//! identity put into the sealed part and taken out, and redacting a JSON payload and checking it;
//! and what transit through a trusted intermediary adds at the destination: verifying a
//! delegation the first time it is presented (its certificate chain and signature), checking
//! the chain per message, and the transit part into a sealed part and out.

#![expect(
    clippy::unwrap_used,
    reason = "benchmark fixtures are constants that parse"
)]

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use meshfed_node::policy::access::Principal;
use meshfed_proto::MeshId;
use meshfed_proto::envelope::{Flags, Sender};

/// Ten rules, as a plant might write them: roles per topic family, a partner, a forbid.
const POLICY: &str = r#"
[[identity]]
mesh = "supplier-b"
role = "dispatcher"
to = "supplier-dispatch"
roles = ["supplier", "logistics"]

[[identity]]
mesh = "supplier-b"
subject = "federation::supplier-b"
roles = ["supplier"]

[data]
redact = ["/customer/email", "/customer/phone"]

[access]
rules = '''
permit (principal in Meshfed::Role::"buyer", action == Meshfed::Action::"publish", resource)
when { resource.name like "orders/*" };
permit (principal in Meshfed::Role::"planner", action == Meshfed::Action::"publish", resource)
when { resource.name like "plans/*" || resource.name like "forecasts/*" };
permit (principal in Meshfed::Role::"operator", action, resource)
when { resource.name like "line-*/telemetry/*" };
permit (principal in Meshfed::Role::"supplier", action == Meshfed::Action::"publish", resource)
when { context.direction == "inbound" && (resource.name like "shipments/*" || resource.name like "invoices/*") };
permit (principal in Meshfed::Mesh::"supplier-b", action == Meshfed::Action::"subscribe", resource)
when { resource.name like "orders/*" };
@id("no-recalls")
forbid (principal, action, resource) when { resource.name like "orders/recall*" };
@id("quarantine")
forbid (principal, action, resource)
when { principal.hasTag("site") && principal.getTag("site") == "quarantine" };
'''
"#;

fn bench(c: &mut Criterion) {
    let policy = meshfed_node::policy::parse(POLICY, Path::new("policy.toml")).unwrap();
    let peer: MeshId = "supplier-b".parse().unwrap();
    let topic = "orders/4711".parse().unwrap();
    let sender = Principal {
        mesh: "plant-a".parse().unwrap(),
        subject: "erp".into(),
        roles: vec!["buyer".into()],
        attributes: [("site".to_owned(), "north".to_owned())].into(),
    };
    let outbound = policy.outbound(sender, &peer).unwrap();
    assert!(outbound.publish(&topic).is_ok());
    let inbound = policy.inbound(&peer);
    let shipment = "shipments/17".parse().unwrap();
    let dispatcher = Sender {
        subject: "tms".into(),
        roles: vec!["dispatcher".into()],
        attributes: [("site".to_owned(), "basel".to_owned())].into(),
        expires: None,
        credential: None,
    };
    let mapped = inbound.admit(&peer, Some(&dispatcher), &shipment).unwrap();
    assert_eq!(mapped.subject, "supplier-dispatch");
    let mut g = c.benchmark_group("policy");
    g.bench_function("access decision, outbound (allow)", |b| {
        b.iter(|| black_box(&outbound).publish(black_box(&topic)))
    });
    g.bench_function("arrival of an identified sender (map + decision)", |b| {
        b.iter(|| black_box(&inbound).admit(&peer, Some(black_box(&dispatcher)), &shipment))
    });
    g.bench_function("arrival without a sender (federation identity)", |b| {
        b.iter(|| black_box(&inbound).admit(&peer, None, black_box(&shipment)))
    });
    // A topic never seen: Cedar decides (the decision is then remembered).
    let mut n = 0u64;
    g.bench_function("access decision, a new topic (Cedar)", |b| {
        b.iter_batched(
            || {
                n += 1;
                format!("orders/{n}")
                    .parse::<meshfed_proto::Topic>()
                    .unwrap()
            },
            |t| black_box(&outbound).publish(&t),
            criterion::BatchSize::SmallInput,
        )
    });
    let denied = "invoices/9".parse().unwrap();
    g.bench_function("access decision, outbound (deny)", |b| {
        b.iter(|| black_box(&outbound).publish(black_box(&denied)))
    });
    g.bench_function("inbound check for a transfer", |b| {
        b.iter(|| black_box(&policy).inbound(black_box(&peer)))
    });
    let payload = vec![7u8; 1024];
    g.bench_function("sender identity into a 1 KiB sealed part and out", |b| {
        b.iter(|| {
            let sealed = black_box(&dispatcher).wrap(black_box(&payload)).unwrap();
            Sender::unwrap(Flags::IDENTIFIED, sealed).unwrap()
        })
    });
    let order = br#"{"po":"PO-1042","customer":{"name":"Ada","email":"ada@example.com","phone":"+41 1"},"lines":[{"sku":"A-1","qty":40},{"sku":"B-2","qty":5}]}"#;
    let pointers = &policy.offer.redact;
    g.bench_function("redact a 150-byte JSON order", |b| {
        b.iter(|| meshfed_proto::redact::redact(black_box(order), black_box(pointers)))
    });
    g.bench_function("check a redacted order (receiver)", |b| {
        let clean = meshfed_proto::redact::redact(order, pointers).unwrap();
        b.iter(|| meshfed_proto::redact::present(black_box(&clean), black_box(pointers)))
    });
    g.finish();
}

fn transit(c: &mut Criterion) {
    use std::time::{Duration, SystemTime};

    use meshfed_node::credentials::delegation::{self, DelegationGrant};
    use meshfed_proto::envelope::Transit;
    use meshfed_testkit::pki::TestPki;
    use serde_bytes::ByteBuf;

    let now = SystemTime::now();
    let relay: MeshId = "hub-b".parse().unwrap();
    let here: MeshId = "plant-a".parse().unwrap();
    let pki = TestPki::at("supplier-c", now);
    let origin = pki.mesh().clone();
    let node = pki.node_from_issuing_ca("gw1");
    let chain = [node.cert.to_vec(), pki.issuing_ca().cert_der().to_vec()];
    let grant = DelegationGrant {
        delegate: relay.clone(),
        audience: vec![here.clone()],
        topics: vec!["parts/#".parse().unwrap()],
        depth: 0,
        ttl: Duration::from_secs(3600),
    };
    let (token, issued) = delegation::issue(&origin, &grant, &node.key, &chain, now).unwrap();
    let bundle = pki.bundle().clone();
    let mut g = c.benchmark_group("transit");
    g.bench_function("verify a delegation (first presentation)", |b| {
        b.iter(|| delegation::verify(black_box(&token), |_| Some(bundle.clone()), now).unwrap())
    });
    let topic = "parts/gear/7".parse().unwrap();
    let at = meshfed_proto::envelope::Timestamp(
        u64::try_from(
            now.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap(),
    );
    g.bench_function("check a one-delegation chain (per message)", |b| {
        b.iter(|| {
            delegation::check_chain(
                std::slice::from_ref(black_box(&issued)),
                &origin,
                &relay,
                &here,
                &topic,
                1,
                at,
                |_, _| false,
            )
            .unwrap()
        })
    });
    let transit = Transit {
        origin: ByteBuf::from(vec![0xa5; 1500]),
        bundle: vec![ByteBuf::from(bundle.cas()[0].der().to_vec())],
        delegations: vec![token.clone()],
        revocations: None,
        issuers: Vec::new(),
    };
    let payload = vec![7u8; 1024];
    g.bench_function("transit part into a 1 KiB sealed part and out", |b| {
        b.iter(|| {
            let sealed = black_box(&transit).wrap(black_box(&payload)).unwrap();
            Transit::unwrap(Flags::TRANSIT, sealed).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench, transit);
criterion_main!(benches);
