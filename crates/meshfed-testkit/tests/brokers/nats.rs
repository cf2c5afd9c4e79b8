//! [`NatsServer`] with async-nats: token, user and password, nkey and JWT (creds file)
//! authentication, TLS with and without client certificates, JetStream, restarts.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use async_nats::{Client, ConnectErrorKind, ConnectOptions};
use futures_util::StreamExt as _;
use meshfed_testkit::brokers::nats::jwt::Operator;
use meshfed_testkit::{NatsAuth, NatsOptions, NatsServer};

use crate::{tls_config, within};

/// Connects to `server` with `options` (no reconnection: a refusal is the answer).
async fn connect(
    server: &NatsServer,
    options: ConnectOptions,
) -> Result<Client, async_nats::ConnectError> {
    within(
        &format!("connect to {}", server.url()),
        options
            .connection_timeout(Duration::from_secs(5))
            .max_reconnects(1)
            .connect(server.url()),
    )
    .await
}

/// [`connect`], failing the test when the server does not accept the client.
async fn open(server: &NatsServer, options: ConnectOptions) -> Client {
    connect(server, options)
        .await
        .unwrap_or_else(|e| panic!("could not connect to {}: {e}", server.url()))
}

/// [`connect`], failing the test when the server accepts the client; returns why it was not
/// connected.
async fn refusal(server: &NatsServer, options: ConnectOptions) -> async_nats::ConnectError {
    match connect(server, options).await {
        Ok(_) => panic!("connected to {}; a refusal was expected", server.url()),
        Err(e) => e,
    }
}

/// Subscribes to `subject`, publishes to it, and receives the message back.
async fn round_trip(client: &Client, subject: &str) {
    let mut messages = client
        .subscribe(subject.to_owned())
        .await
        .unwrap_or_else(|e| panic!("subscribe to {subject}: {e}"));
    client
        .publish(subject.to_owned(), "hello over nats".into())
        .await
        .unwrap_or_else(|e| panic!("publish to {subject}: {e}"));
    let message = within("the message comes back", messages.next())
        .await
        .unwrap_or_else(|| panic!("the subscription to {subject} ended"));
    assert_eq!(message.subject.as_str(), subject);
    assert_eq!(message.payload, "hello over nats");
}

/// Fails the test unless the server's authorization refuses a client with `options`.
async fn assert_refused(server: &NatsServer, options: ConnectOptions) {
    let err = refusal(server, options).await;
    assert_eq!(
        err.kind(),
        ConnectErrorKind::AuthorizationViolation,
        "{err}"
    );
}

#[tokio::test]
async fn plain_server_carries_a_message_on_its_random_port() {
    let server = NatsServer::start(NatsOptions::plain());
    assert_eq!(server.url(), format!("nats://127.0.0.1:{}", server.port()));
    assert_ne!(server.port(), 4222, "not the default port");
    let client = open(&server, ConnectOptions::new()).await;
    round_trip(&client, "plant.line1.temp").await;
}

#[tokio::test]
async fn token_server_accepts_its_token_and_refuses_another() {
    let server = NatsServer::start(NatsOptions::plain().auth(NatsAuth::Token));
    let options = ConnectOptions::with_token(server.token().to_owned());
    let client = open(&server, options).await;
    round_trip(&client, "auth.token").await;

    assert_refused(&server, ConnectOptions::with_token("guess".to_owned())).await;
    assert_refused(&server, ConnectOptions::new()).await;
}

#[tokio::test]
async fn password_server_accepts_its_user_and_refuses_a_wrong_password() {
    let server = NatsServer::start(NatsOptions::plain().auth(NatsAuth::UserPassword));
    let login = |password: &str| {
        ConnectOptions::with_user_and_password(server.user().to_owned(), password.to_owned())
    };
    let client = open(&server, login(server.password())).await;
    round_trip(&client, "auth.password").await;

    assert_refused(&server, login("guess")).await;
}

#[tokio::test]
async fn nkey_server_accepts_its_user_seed_and_refuses_another_key() {
    let server = NatsServer::start(NatsOptions::plain().auth(NatsAuth::Nkey));
    assert!(
        server.nkey_seed().starts_with("SU"),
        "{}",
        server.nkey_seed()
    );
    let options = ConnectOptions::with_nkey(server.nkey_seed().to_owned());
    let client = open(&server, options).await;
    round_trip(&client, "auth.nkey").await;

    let stranger = nkeys::KeyPair::new_user().seed().unwrap();
    assert_refused(&server, ConnectOptions::with_nkey(stranger)).await;
}

#[tokio::test]
async fn jwt_server_accepts_the_creds_file_and_refuses_a_user_of_another_operator() {
    let server = NatsServer::start(NatsOptions::plain().auth(NatsAuth::Jwt));
    let options = ConnectOptions::with_credentials_file(server.creds_file())
        .await
        .unwrap();
    let client = open(&server, options).await;
    round_trip(&client, "auth.jwt").await;

    // Another user of the same account, issued by the test: accepted too.
    let colleague = server.account().user("colleague");
    let options = ConnectOptions::with_credentials(&colleague.creds()).unwrap();
    let client = open(&server, options).await;
    round_trip(&client, "auth.jwt.colleague").await;

    // A user whose account the server's operator never signed.
    let stranger = Operator::generate("elsewhere")
        .account("app")
        .user("stranger");
    let options = ConnectOptions::with_credentials(&stranger.creds()).unwrap();
    assert_refused(&server, options).await;
}

#[tokio::test]
async fn tls_server_is_reached_through_its_ca() {
    let server = NatsServer::start(NatsOptions::plain().tls());
    assert_eq!(server.url(), format!("tls://127.0.0.1:{}", server.port()));
    let options = ConnectOptions::new()
        .require_tls(true)
        .tls_client_config(tls_config(server.ca_pem(), None));
    let client = open(&server, options).await;
    round_trip(&client, "secure.subject").await;

    // A client trusting only another CA does not accept the server.
    let other = NatsServer::start(NatsOptions::plain().tls());
    let options = ConnectOptions::new()
        .require_tls(true)
        .tls_client_config(tls_config(other.ca_pem(), None));
    let err = refusal(&server, options).await;
    // async-nats reports a certificate it rejects as an IO error of the handshake.
    assert_eq!(err.kind(), ConnectErrorKind::Io, "{err}");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn client_cert_server_accepts_the_issued_certificate_and_refuses_a_client_without_one() {
    let server = NatsServer::start(
        NatsOptions::plain()
            .require_client_cert()
            .auth(NatsAuth::Token),
    );
    let tls = server.tls().unwrap();
    let with_cert = ConnectOptions::with_token(server.token().to_owned())
        .require_tls(true)
        .add_root_certificates(tls.ca_path().to_owned())
        .add_client_certificate(
            tls.client_cert_path().to_owned(),
            tls.client_key_path().to_owned(),
        );
    let client = open(&server, with_cert).await;
    round_trip(&client, "mutual.subject").await;

    let without = ConnectOptions::with_token(server.token().to_owned())
        .require_tls(true)
        .tls_client_config(tls_config(server.ca_pem(), None));
    let err = refusal(&server, without).await;
    // The server ends the handshake with an alert once it sees no certificate.
    assert_eq!(err.kind(), ConnectErrorKind::Io, "{err}");
    assert!(err.to_string().contains("BadCertificate"), "{err}");
}

#[tokio::test]
async fn jetstream_pull_consumer_fetches_and_acks_and_the_store_survives_a_restart() {
    let mut server = NatsServer::start(NatsOptions::plain().jetstream());
    let store = server.store_dir().unwrap().to_owned();
    let client = open(&server, ConnectOptions::new()).await;
    let js = jetstream::new(client);
    let orders = within(
        "create the stream",
        js.create_stream(stream::Config {
            name: "ORDERS".to_owned(),
            subjects: vec!["orders.>".to_owned()],
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    let consumer = within(
        "create the consumer",
        orders.create_consumer(consumer::pull::Config {
            durable_name: Some("billing".to_owned()),
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        }),
    )
    .await
    .unwrap();

    let ack = within("publish", async {
        js.publish("orders.new", "order 42".into())
            .await
            .unwrap()
            .await
    })
    .await
    .unwrap();
    assert_eq!((ack.stream.as_str(), ack.sequence), ("ORDERS", 1));

    let mut batch = within(
        "fetch",
        consumer
            .fetch()
            .max_messages(1)
            .expires(Duration::from_secs(5))
            .messages(),
    )
    .await
    .unwrap();
    let message = within("the fetched message", batch.next())
        .await
        .expect("one message fetched")
        .unwrap();
    assert_eq!(message.subject.as_str(), "orders.new");
    assert_eq!(message.payload, "order 42");
    within("the server confirms the ack", message.double_ack())
        .await
        .unwrap();

    server.restart();
    assert!(store.join("jetstream").is_dir(), "the store is kept");
    let client = open(&server, ConnectOptions::new()).await;
    let js = jetstream::new(client);
    let mut orders = within("the stream after the restart", js.get_stream("ORDERS"))
        .await
        .unwrap();
    assert_eq!(orders.info().await.unwrap().state.messages, 1);
    let mut consumer: consumer::PullConsumer = orders.get_consumer("billing").await.unwrap();
    let info = consumer.info().await.unwrap();
    assert_eq!(info.ack_floor.stream_sequence, 1, "the ack was kept");
    assert_eq!(info.num_ack_pending, 0);
    assert_eq!(info.num_pending, 0);
}

#[tokio::test]
async fn a_killed_server_is_restarted_on_the_same_port_and_url() {
    let mut server = NatsServer::start(NatsOptions::plain().auth(NatsAuth::Jwt));
    let url = server.url();
    server.kill();
    assert_eq!(server.pid(), None);
    let options = ConnectOptions::with_credentials_file(server.creds_file())
        .await
        .unwrap();
    let err = refusal(&server, options).await;
    assert_eq!(err.kind(), ConnectErrorKind::Io, "{err}");

    server.restart();
    assert_eq!(server.url(), url);
    let options = ConnectOptions::with_credentials_file(server.creds_file())
        .await
        .unwrap();
    let client = open(&server, options).await;
    round_trip(&client, "after.restart").await;
    assert!(server.log().contains("Server is ready"));
}

#[tokio::test]
async fn a_jwt_account_may_use_jetstream() {
    let server = NatsServer::start(NatsOptions::plain().auth(NatsAuth::Jwt).jetstream());
    let options = ConnectOptions::with_credentials_file(server.creds_file())
        .await
        .unwrap();
    let js = jetstream::new(open(&server, options).await);
    let stream = within(
        "create a stream in the account",
        js.create_stream(stream::Config {
            name: "EVENTS".to_owned(),
            subjects: vec!["events.>".to_owned()],
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    let ack = within("publish", async {
        js.publish("events.one", "one".into()).await.unwrap().await
    })
    .await
    .unwrap();
    assert_eq!((ack.stream.as_str(), ack.sequence), ("EVENTS", 1));
    assert_eq!(stream.cached_info().config.name, "EVENTS");
}
