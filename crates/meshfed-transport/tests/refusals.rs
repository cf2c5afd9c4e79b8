//! Links that must not be set up, and peers that misbehave: each failure names its fact, and
//! the listener keeps working.

mod common;

use std::time::Duration;

use common::{
    HANDSHAKE, Server, client, connect, identity, raw_client_config, raw_connect, within,
};
use meshfed_testkit::TestPki;
use meshfed_transport::{ServerTrust, TransportError, dial};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn reason(result: Result<meshfed_transport::Link, TransportError>) -> String {
    match result {
        Ok(link) => panic!("expected a refusal, got a link to {}", link.peer()),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn dial_with_a_wrong_pin_names_the_fingerprint_mismatch() {
    let server = Server::start("plant-b").await;
    let (_, client_id) = client("plant-a");
    let other = TestPki::new("plant-b");
    let pin = *other.ca().fingerprint().as_bytes();
    let trust = ServerTrust::PinnedCa {
        mesh: "plant-b".parse().unwrap(),
        fingerprint: pin,
    };
    let (dialled, accepted) = connect(&server, &client_id, trust).await;
    let err = reason(dialled);
    assert!(
        err.contains(&format!(
            "no CA in the server's chain matches the pinned fingerprint {}",
            other.ca().fingerprint()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("presented: {}", server.pki.ca().fingerprint())),
        "{err}"
    );
    let err = reason(accepted);
    assert!(err.contains("the peer refused our certificate"), "{err}");
}

#[tokio::test]
async fn dial_with_another_meshs_bundle_names_the_unknown_issuer() {
    let server = Server::start("plant-b").await;
    let (_, client_id) = client("plant-a");
    let stranger = TestPki::new("plant-c");
    let trust = ServerTrust::Bundle {
        mesh: "plant-b".parse().unwrap(),
        bundle: stranger.bundle().clone(),
    };
    let (dialled, _) = connect(&server, &client_id, trust).await;
    assert_eq!(
        reason(dialled),
        format!(
            "TLS handshake with {} failed: server certificate: certificate was not issued by a CA \
             in the trust bundle of mesh plant-c",
            server.listener.local_addr()
        )
    );
}

#[tokio::test]
async fn server_of_another_mesh_is_refused_naming_both_meshes() {
    let server = Server::start("plant-b").await;
    let (_, client_id) = client("plant-a");
    let trust = ServerTrust::PinnedCa {
        mesh: "plant-x".parse().unwrap(),
        fingerprint: *server.pki.ca().fingerprint().as_bytes(),
    };
    let (dialled, _) = connect(&server, &client_id, trust).await;
    let err = reason(dialled);
    assert!(
        err.ends_with("server certificate names mesh plant-b, expected plant-x"),
        "{err}"
    );
}

#[tokio::test]
async fn expired_server_certificate_is_refused_as_expired() {
    let pki = TestPki::new("plant-b");
    let node = pki.expired_node("gw1");
    let server = Server::with(pki, node).await;
    let (_, client_id) = client("plant-a");
    let (dialled, accepted) = connect(&server, &client_id, server.pin()).await;
    let err = reason(dialled);
    assert!(
        err.contains("server certificate: certificate expired at"),
        "{err}"
    );
    assert!(
        reason(accepted).contains("the peer refused our certificate"),
        "listener side"
    );
}

#[tokio::test]
async fn expired_client_certificate_is_refused_by_the_listener_and_seen_by_the_client() {
    let server = Server::start("plant-b").await;
    let pki = TestPki::new("plant-a");
    let client_id = identity(&pki, &pki.expired_node("gw1"));
    let (dialled, accepted) = connect(&server, &client_id, server.pin()).await;
    let err = reason(accepted);
    assert!(
        err.contains("client certificate: certificate expired at"),
        "{err}"
    );
    // TLS 1.3: the client's handshake is over before the server judges its certificate, so the
    // refusal arrives on the first read.
    let err = match dialled {
        Err(e) => e,
        Ok(mut link) => within(link.recv()).await.unwrap_err(),
    };
    assert!(
        err.to_string().contains("the peer refused our certificate"),
        "{err}"
    );
}

#[tokio::test]
async fn client_chain_signed_by_another_ca_than_presented_is_refused() {
    let server = Server::start("plant-b").await;
    let pki = TestPki::new("plant-a");
    let impostor_leaf = pki.node_signed_by_impostor("gw1");
    let config = raw_client_config(
        &[&rustls::version::TLS13],
        vec![impostor_leaf.cert.clone(), pki.ca().cert_der().clone()],
        &impostor_leaf.key,
        &[b"meshfed/1"],
    );
    let addr = server.listener.local_addr();
    let (accepted, client_side) = within(async {
        tokio::join!(server.accept(HANDSHAKE), async {
            let mut tls = raw_connect(addr, config).await?;
            let mut buf = [0u8; 16];
            tls.read(&mut buf).await
        })
    })
    .await;
    let err = reason(accepted);
    assert!(
        err.contains(
            "client certificate does not chain to the CA certificate it presents last (certificate \
             signature does not verify with the key of its issuing CA)"
        ),
        "{err}"
    );
    let client_err = client_side.unwrap_err().to_string();
    assert!(client_err.contains("CertificateUnknown"), "{client_err}");
}

#[tokio::test]
async fn client_presenting_another_meshs_ca_is_refused() {
    let server = Server::start("plant-b").await;
    let pki = TestPki::new("plant-a");
    let node = pki.node("gw1");
    let stranger = TestPki::new("plant-c");
    let config = raw_client_config(
        &[&rustls::version::TLS13],
        vec![node.cert.clone(), stranger.ca().cert_der().clone()],
        &node.key,
        &[b"meshfed/1"],
    );
    let addr = server.listener.local_addr();
    let (accepted, _) =
        within(async { tokio::join!(server.accept(HANDSHAKE), raw_connect(addr, config)) }).await;
    let err = reason(accepted);
    assert!(
        err.contains("client certificate does not chain to the CA certificate it presents last"),
        "{err}"
    );
}

#[tokio::test]
async fn client_presenting_its_leaf_alone_is_refused() {
    let server = Server::start("plant-b").await;
    let pki = TestPki::new("plant-a");
    let node = pki.node("gw1");
    let config = raw_client_config(
        &[&rustls::version::TLS13],
        vec![node.cert.clone()],
        &node.key,
        &[b"meshfed/1"],
    );
    let addr = server.listener.local_addr();
    let (accepted, _) =
        within(async { tokio::join!(server.accept(HANDSHAKE), raw_connect(addr, config)) }).await;
    assert!(
        reason(accepted).ends_with("client presented no CA certificate after its node certificate")
    );
}

#[tokio::test]
async fn garbage_fails_its_handshake_and_the_listener_keeps_accepting() {
    let server = Server::start("plant-b").await;
    let mut garbage = TcpStream::connect(server.listener.local_addr())
        .await
        .unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let err = reason(within(server.accept(HANDSHAKE)).await);
    assert!(err.contains("not TLS"), "{err}");

    let (_, client_id) = client("plant-a");
    let (dialled, accepted) = connect(&server, &client_id, server.pin()).await;
    assert_eq!(dialled.unwrap().binding(), accepted.unwrap().binding());
}

#[tokio::test]
async fn silent_client_times_out_its_handshake() {
    let server = Server::start("plant-b").await;
    let _silent = TcpStream::connect(server.listener.local_addr())
        .await
        .unwrap();
    let incoming = within(server.listener.accept()).await.unwrap();
    let remote = incoming.remote_addr();
    let after = Duration::from_millis(200);
    let err = within(incoming.handshake(after)).await.unwrap_err();
    match &err {
        TransportError::Timeout { what, after: a } => {
            assert_eq!(what, &format!("TLS handshake with {remote}"));
            assert_eq!(*a, after);
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
}

#[tokio::test]
async fn tls12_only_client_is_refused() {
    let server = Server::start("plant-b").await;
    let pki = TestPki::new("plant-a");
    let node = pki.node("gw1");
    let config = raw_client_config(
        &[&rustls::version::TLS12],
        vec![node.cert.clone(), pki.ca().cert_der().clone()],
        &node.key,
        &[b"meshfed/1"],
    );
    let addr = server.listener.local_addr();
    let (accepted, client_side) =
        within(async { tokio::join!(server.accept(HANDSHAKE), raw_connect(addr, config)) }).await;
    let err = reason(accepted);
    assert!(err.contains("does not offer TLS 1.3"), "{err}");
    let client_err = client_side.unwrap_err().to_string();
    assert!(client_err.contains("ProtocolVersion"), "{client_err}");
}

#[tokio::test]
async fn client_without_alpn_is_refused() {
    let server = Server::start("plant-b").await;
    let pki = TestPki::new("plant-a");
    let node = pki.node("gw1");
    let config = raw_client_config(
        &[&rustls::version::TLS13],
        vec![node.cert.clone(), pki.ca().cert_der().clone()],
        &node.key,
        &[],
    );
    let addr = server.listener.local_addr();
    let (accepted, client_side) =
        within(async { tokio::join!(server.accept(HANDSHAKE), raw_connect(addr, config)) }).await;
    assert!(
        reason(accepted).ends_with("the client did not offer ALPN meshfed/1"),
        "listener side"
    );
    assert!(client_side.is_err());
}

#[tokio::test]
async fn client_with_another_alpn_is_refused_naming_it() {
    let server = Server::start("plant-b").await;
    let pki = TestPki::new("plant-a");
    let node = pki.node("gw1");
    let config = raw_client_config(
        &[&rustls::version::TLS13],
        vec![node.cert.clone(), pki.ca().cert_der().clone()],
        &node.key,
        &[b"h2"],
    );
    let addr = server.listener.local_addr();
    let (accepted, client_side) =
        within(async { tokio::join!(server.accept(HANDSHAKE), raw_connect(addr, config)) }).await;
    let err = reason(accepted);
    assert!(
        err.ends_with("the client offered ALPN [\"h2\"], not meshfed/1"),
        "{err}"
    );
    let client_err = client_side.unwrap_err().to_string();
    assert!(client_err.contains("NoApplicationProtocol"), "{client_err}");
}

#[tokio::test]
async fn server_without_alpn_is_refused_by_the_dialler() {
    let pki = TestPki::new("plant-b");
    let node = pki.node("gw1");
    let chain = vec![node.cert.clone(), pki.ca().cert_der().clone()];
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(node.key.to_pkcs8().unwrap().into());
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let tcp = tokio::net::TcpListener::bind(common::loopback())
        .await
        .unwrap();
    let addr = tcp.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let (_, client_id) = client("plant-a");
    let trust = ServerTrust::PinnedCa {
        mesh: pki.mesh().clone(),
        fingerprint: *pki.ca().fingerprint().as_bytes(),
    };
    let target = addr.to_string();
    let (dialled, _) = within(async {
        tokio::join!(dial(&target, &client_id, trust, HANDSHAKE), async {
            let (tcp, _) = tcp.accept().await?;
            acceptor.accept(tcp).await
        })
    })
    .await;
    let err = reason(dialled);
    assert!(
        err.ends_with("the peer did not agree on ALPN meshfed/1 (selected None)"),
        "{err}"
    );
}

#[tokio::test]
async fn dial_to_a_closed_port_is_a_connect_error() {
    let (_, client_id) = client("plant-a");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let trust = ServerTrust::PinnedCa {
        mesh: "plant-b".parse().unwrap(),
        fingerprint: [0; 48],
    };
    let err = within(dial(&port.to_string(), &client_id, trust, HANDSHAKE))
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Connect { .. }), "{err:?}");
    assert_eq!(err.to_string(), format!("cannot connect to {port}"));
}

#[tokio::test]
async fn dial_to_a_server_that_never_answers_times_out() {
    // The kernel completes the TCP connection from the backlog; nobody ever speaks TLS.
    let mute = tokio::net::TcpListener::bind(common::loopback())
        .await
        .unwrap();
    let addr = mute.local_addr().unwrap();
    let (_, client_id) = client("plant-a");
    let trust = ServerTrust::PinnedCa {
        mesh: "plant-b".parse().unwrap(),
        fingerprint: [0; 48],
    };
    let after = Duration::from_millis(200);
    let err = within(dial(&addr.to_string(), &client_id, trust, after))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("TLS handshake with {addr} timed out after 200ms")
    );
}
