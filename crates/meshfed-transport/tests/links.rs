//! Links that are set up: trust by pin and by bundle, frames both ways, batching, limits, close.

mod common;

use common::{Server, client, connect, issued_identity, within};
use meshfed_proto::frame::{Frame, FrameType};
use meshfed_transport::{ServerTrust, TransportError};

#[tokio::test]
async fn pinned_dial_links_both_sides_on_one_channel() {
    let server = Server::start("plant-b").await;
    let (client_pki, client_id) = client("plant-a");
    let (dialled, accepted) = connect(&server, &client_id, server.pin()).await;
    let (mut dialled, mut accepted) = (dialled.unwrap(), accepted.unwrap());

    assert_eq!(dialled.binding(), accepted.binding());
    assert_ne!(dialled.binding(), &[0u8; 32]);
    assert_eq!(dialled.peer_leaf(), server.node.cert.as_ref());
    assert_eq!(accepted.peer_leaf(), client_id.leaf());
    assert_eq!(
        dialled.peer_chain(),
        [
            server.node.cert.to_vec(),
            server.pki.ca().cert_der().to_vec()
        ]
    );
    assert_eq!(
        accepted.peer_chain()[1],
        client_pki.ca().cert_der().to_vec()
    );
    assert_eq!(dialled.peer().uri(), "meshfed://plant-b/gw1");
    assert_eq!(accepted.peer().uri(), "meshfed://plant-a/gw1");
    assert_eq!(dialled.remote_addr(), server.listener.local_addr());
    assert_eq!(accepted.channel().binding, dialled.binding().to_vec());

    let hello = Frame::new(FrameType::FederationRequest, b"hello".to_vec());
    dialled.send(&hello).await.unwrap();
    assert_eq!(within(accepted.recv()).await.unwrap(), Some(hello));
    let answer = Frame::new(FrameType::FederationResponse, vec![9; 300_000]);
    accepted.send(&answer).await.unwrap();
    assert_eq!(within(dialled.recv()).await.unwrap(), Some(answer));
}

#[tokio::test]
async fn split_link_sends_a_queued_batch_in_one_flush_and_closes_cleanly() {
    let server = Server::start("plant-b").await;
    let (_, client_id) = client("plant-a");
    let (dialled, accepted) = connect(&server, &client_id, server.pin()).await;
    let (_reader, mut writer) = dialled.unwrap().split();
    let (mut reader, _writer) = accepted.unwrap().split();

    let frames: Vec<Frame> = (0u8..100)
        .map(|i| Frame::new(FrameType::Envelope, vec![i; usize::from(i) * 10]))
        .collect();
    for f in &frames {
        writer.queue(f).unwrap();
    }
    assert!(writer.queued() > 0);
    writer.flush().await.unwrap();
    assert_eq!(writer.queued(), 0);
    for f in &frames {
        assert_eq!(within(reader.recv()).await.unwrap().as_ref(), Some(f));
    }
    writer.close().await.unwrap();
    assert_eq!(within(reader.recv()).await.unwrap(), None);
}

#[tokio::test]
async fn closing_a_link_ends_the_peers_stream_cleanly() {
    let server = Server::start("plant-b").await;
    let (_, client_id) = client("plant-a");
    let (dialled, accepted) = connect(&server, &client_id, server.pin()).await;
    let mut accepted = accepted.unwrap();
    dialled.unwrap().close().await.unwrap();
    assert_eq!(within(accepted.recv()).await.unwrap(), None);
}

#[tokio::test]
async fn dropping_a_link_is_reported_as_a_lost_connection() {
    let server = Server::start("plant-b").await;
    let (_, client_id) = client("plant-a");
    let (dialled, accepted) = connect(&server, &client_id, server.pin()).await;
    let mut accepted = accepted.unwrap();
    drop(dialled.unwrap());
    let err = within(accepted.recv()).await.unwrap_err();
    assert!(
        matches!(err, TransportError::ConnectionLost { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("without a TLS close_notify"),
        "{err}"
    );
}

#[tokio::test]
async fn bundle_trust_accepts_the_stored_bundle() {
    let server = Server::start("plant-b").await;
    let (_, client_id) = client("plant-a");
    let trust = ServerTrust::Bundle {
        mesh: server.pki.mesh().clone(),
        bundle: server.pki.bundle().clone(),
    };
    let (dialled, accepted) = connect(&server, &client_id, trust).await;
    assert_eq!(dialled.unwrap().peer().uri(), "meshfed://plant-b/gw1");
    accepted.unwrap();
}

#[tokio::test]
async fn nodes_of_issuing_cas_link_by_pin_and_by_bundle_and_present_the_issuing_ca() {
    let server_pki = meshfed_testkit::TestPki::new("plant-b");
    let server_node = server_pki.node_from_issuing_ca("gw1");
    let server_id = issued_identity(&server_pki, &server_node);
    let listener = meshfed_transport::Listener::bind(common::loopback(), &server_id)
        .await
        .unwrap();
    let server = Server {
        pki: server_pki,
        node: server_node,
        identity: server_id,
        listener,
    };
    let client_pki = meshfed_testkit::TestPki::new("plant-a");
    let client_id = issued_identity(&client_pki, &client_pki.node_from_issuing_ca("gw1"));
    let (dialled, accepted) = connect(&server, &client_id, server.pin()).await;
    let (dialled, accepted) = (dialled.unwrap(), accepted.unwrap());
    assert_eq!(
        dialled.peer_chain(),
        [
            server.node.cert.to_vec(),
            server.pki.issuing_ca().cert_der().to_vec(),
            server.pki.ca().cert_der().to_vec()
        ]
    );
    assert_eq!(
        accepted.channel().peer_intermediates,
        [
            client_pki.issuing_ca().cert_der().to_vec(),
            client_pki.ca().cert_der().to_vec()
        ]
    );
    let trust = ServerTrust::Bundle {
        mesh: server.pki.mesh().clone(),
        bundle: server.pki.bundle().clone(),
    };
    let (dialled, accepted) = connect(&server, &client_id, trust).await;
    assert_eq!(dialled.unwrap().peer().uri(), "meshfed://plant-b/gw1");
    accepted.unwrap();
}

#[tokio::test]
async fn frame_over_the_maximum_is_refused_by_the_receiver() {
    let server = Server::start("plant-b").await;
    let (_, client_id) = client("plant-a");
    let (dialled, accepted) = connect(&server, &client_id, server.pin()).await;
    let (mut dialled, mut accepted) = (dialled.unwrap(), accepted.unwrap());
    accepted.set_max_frame(64 << 10);
    let big = Frame::new(FrameType::Envelope, vec![1; 100 << 10]);
    dialled.send(&big).await.unwrap();
    let err = within(accepted.recv()).await.unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::FrameTooLarge {
                len: 102_400,
                max: 65_536
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "frame of 102400 bytes exceeds the maximum of 65536"
    );
}

#[tokio::test]
async fn frame_over_the_senders_maximum_is_refused_before_it_is_written() {
    let server = Server::start("plant-b").await;
    let (_, client_id) = client("plant-a");
    let (dialled, accepted) = connect(&server, &client_id, server.pin()).await;
    let (mut dialled, mut accepted) = (dialled.unwrap(), accepted.unwrap());
    dialled.set_max_frame(64 << 10);
    let big = Frame::new(FrameType::Envelope, vec![1; 100 << 10]);
    let err = dialled.send(&big).await.unwrap_err();
    assert!(
        matches!(err, TransportError::FrameTooLarge { .. }),
        "{err:?}"
    );
    let small = Frame::new(FrameType::Heartbeat, vec![1]);
    dialled.send(&small).await.unwrap();
    assert_eq!(within(accepted.recv()).await.unwrap(), Some(small));
}
