//! `meshfed send` and `meshfed subscribe`, through the API.

use std::io::Write as _;
use std::path::Path;

use anyhow::anyhow;
use base64::Engine as _;
use futures_util::StreamExt as _;
use meshfed_node::api::models::{
    Acked, DurableAck, ErrorBody, MessageAccepted, MessageAcknowledged, MessageProperties,
    PublishReply, SendRequest, StreamReply,
};
use meshfed_proto::envelope::{
    ContentType, EnvelopeId, Priority, Properties, PropertiesError, Qos,
};
use serde::Deserialize;
use serde_json::Value;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::cli::{SendArgs, SubscribeArgs};
use crate::client::ApiClient;
use crate::failure::Failure;
use crate::gateway::runtime;
use crate::held::Held;
use crate::output::stdout_failure;

/// One payload with its media type, as the API takes it.
fn payload(data: &[u8], forced: Option<&ContentType>) -> Result<(Value, ContentType), Failure> {
    let usage = |m: String| Failure::Config(anyhow!(m));
    let as_text = std::str::from_utf8(data).ok();
    let ct = match forced {
        Some(ct) => ct.clone(),
        None => match as_text.map(serde_json::from_str::<Value>) {
            Some(Ok(_)) => ContentType::json(),
            _ if as_text.is_some() => "text/plain".parse().map_err(|e| usage(format!("{e}")))?,
            _ => ContentType::octet_stream(),
        },
    };
    let value = if ct.is_json() {
        let text =
            as_text.ok_or_else(|| usage(format!("DATA is not UTF-8, so it cannot be {ct}")))?;
        serde_json::from_str(text).map_err(|e| {
            usage(format!(
                "DATA is not JSON ({e}); pass --content-type text/plain to send it as text"
            ))
        })?
    } else if ct.is_text() {
        Value::String(
            as_text
                .ok_or_else(|| usage(format!("DATA is not UTF-8, so it cannot be {ct}")))?
                .to_owned(),
        )
    } else {
        Value::String(base64::engine::general_purpose::STANDARD.encode(data))
    };
    Ok((value, ct))
}

pub(crate) fn send(dir: &Path, args: SendArgs) -> Result<(), Failure> {
    if args.wait && args.qos == 0 {
        return Err(Failure::Config(anyhow!(
            "--wait needs an acknowledged delivery: pass --qos 1 or 2"
        )));
    }
    let usage = |e: String| Failure::Config(anyhow!(e));
    let qos = Qos::try_from(args.qos).map_err(|e| usage(format!("--qos: {e}")))?;
    let priority =
        Priority::try_from(args.priority).map_err(|e| usage(format!("--priority: {e}")))?;
    let properties = message_properties(&args)?;
    let body = |data: &[u8]| {
        let (payload, ct) = payload(data, args.content_type.as_ref())?;
        Ok(SendRequest {
            to: args.to.clone(),
            topic: args.topic.clone(),
            payload,
            content_type: Some(ct),
            qos,
            priority,
            max_latency: args
                .max_latency
                .map(|d| Value::from(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))),
            flags: if args.ordered {
                vec!["ordered".to_owned()]
            } else {
                Vec::new()
            },
            wait: args.wait,
            schema_id: args.schema_id.clone(),
            classification: args.classification.clone(),
            properties: properties.clone(),
        })
    };
    let single = match args.data.as_str() {
        "-" => None,
        data => Some(match data.strip_prefix('@') {
            Some(file) => std::fs::read(file)
                .map_err(|e| Failure::Config(anyhow!("cannot read {file}: {e}")))?,
            None => data.as_bytes().to_vec(),
        }),
    };
    let single = single.map(|data| body(&data)).transpose()?;
    let client = ApiClient::for_dir(dir)?;
    runtime()?.block_on(async move {
        let Some(body) = single else {
            return publish_lines(&client, body).await;
        };
        // Accepted or, with --wait, acknowledged: both answers carry the id.
        let sent: MessageAccepted = client.post("/v1/messages", &body).await?;
        let mut out = std::io::stdout();
        writeln!(out, "{}", sent.id).map_err(stdout_failure)?;
        // Message ids and federation ids both start `fed_`: the human line says which.
        let outcome = if body.wait {
            "acknowledged"
        } else {
            "accepted"
        };
        eprintln!("message {} to {}: {outcome}", sent.id, body.to);
        Ok(())
    })
}

/// The properties `--property`, `--correlation-data` and `--reply-to` give, checked here against
/// the bounds the gateway applies (a usage error names the option); `None` when none is given.
fn message_properties(args: &SendArgs) -> Result<Option<MessageProperties>, Failure> {
    let correlation = args
        .correlation_data
        .as_ref()
        .map(|t| t.as_bytes().to_vec());
    let properties = Properties::new(args.properties.clone(), correlation, args.reply_to.clone())
        .map_err(|e| {
        let option = match &e {
            PropertiesError::EmptyCorrelation | PropertiesError::LongCorrelation { .. } => {
                "--correlation-data"
            }
            PropertiesError::ReplyTo(_) => "--reply-to",
            _ => "--property",
        };
        Failure::Config(anyhow!("{option}: {e}"))
    })?;
    Ok((!properties.is_empty()).then(|| MessageProperties::from(&properties)))
}

/// Sends each line of standard input as one message over the pipelined publish socket as soon
/// as it arrives (empty lines are skipped), and prints each id (or error) in order as it is
/// answered: a producer that runs for long (`tail -f log | meshfed send … -`) has its lines
/// sent while it runs, and what it wrote before it died has been sent.
async fn publish_lines(
    client: &ApiClient,
    body: impl Fn(&[u8]) -> Result<SendRequest, Failure>,
) -> Result<(), Failure> {
    use futures_util::SinkExt as _;
    use tokio::io::AsyncBufReadExt as _;
    let ws = client
        .websocket("/v1/messages/publish")
        .await
        .map_err(|e| refused(client, e))?;
    let (mut sink, mut replies) = ws.split();
    // How many messages went out, and whether the input has ended.
    let (sent_tx, mut sent_rx) = tokio::sync::watch::channel((0usize, false));
    let writer = async move {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        let mut sent = 0usize;
        let ended = loop {
            let line = match lines.next_line().await {
                Ok(Some(line)) => line,
                Ok(None) => break Ok(()),
                Err(e) => break Err(Failure::Runtime(anyhow!("reading standard input: {e}"))),
            };
            if line.is_empty() {
                continue;
            }
            let request = match body(line.as_bytes()) {
                Ok(r) => r,
                Err(e) => break Err(e),
            };
            if let Err(e) = sink.feed(text_frame(&request)).await {
                break Err(Failure::Runtime(anyhow!("the publish stream failed: {e}")));
            }
            sent += 1;
            // Lines already read go out together; the write waits for no more than that.
            if lines.get_ref().buffer().is_empty()
                && let Err(e) = sink.flush().await
            {
                break Err(Failure::Runtime(anyhow!("the publish stream failed: {e}")));
            }
            sent_tx.send_replace((sent, false));
        };
        let _ = sink.flush().await;
        sent_tx.send_replace((sent, true));
        ended.map(|()| sink)
    };
    let reader = async move {
        let mut out = std::io::stdout();
        let mut failed = 0usize;
        let mut answered = 0usize;
        loop {
            let (sent, ended) = *sent_rx.borrow_and_update();
            if ended && answered >= sent {
                return Ok((failed, answered));
            }
            let reply = if answered < sent {
                replies.next().await
            } else {
                // Nothing to wait for until the next line is sent or the input ends.
                let _ = sent_rx.changed().await;
                continue;
            };
            match reply {
                Some(Ok(Message::Text(t))) => {
                    answered += 1;
                    let refusal = match serde_json::from_str::<PublishReply>(t.as_str()) {
                        Ok(
                            PublishReply::Accepted(MessageAccepted { id })
                            | PublishReply::Acknowledged(MessageAcknowledged { id, .. }),
                        ) => {
                            writeln!(out, "{id}").map_err(stdout_failure)?;
                            continue;
                        }
                        Ok(PublishReply::Refused(ErrorBody { error })) => error.message,
                        Err(e) => format!("an answer this meshfed does not read ({e})"),
                    };
                    failed += 1;
                    eprintln!("error: message {answered}: {refusal}");
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    return Err(Failure::Runtime(anyhow!(
                        "the publish stream failed after {answered} answers: {e}"
                    )));
                }
                None => {
                    return Err(Failure::Runtime(anyhow!(
                        "the gateway closed the publish stream after {answered} answers"
                    )));
                }
            }
        }
    };
    let (sink, answers) = tokio::join!(writer, reader);
    let (failed, total) = answers?;
    let mut sink = sink?;
    let _ = sink.close().await;
    if failed > 0 {
        return Err(Failure::Runtime(anyhow!(
            "{failed} of {total} messages were not accepted"
        )));
    }
    Ok(())
}

/// Percent-encodes what a query value may not carry as is (`#`, `+`, `&`, `%`, `=`, space).
fn query_value(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '#' | '+' | '&' | '%' | '=' | ' ' | '?' => format!("%{:02X}", c as u32),
            c => c.to_string(),
        })
        .collect()
}

/// Longest pause between attempts to reach a gateway that went away.
const MAX_RECONNECT_DELAY: std::time::Duration = std::time::Duration::from_secs(10);

pub(crate) fn subscribe(dir: &Path, args: SubscribeArgs) -> Result<(), Failure> {
    // The first connection must work: a gateway that is not running is an error.
    let client = ApiClient::for_dir(dir)?;
    runtime()?.block_on(async move {
        let mut stream = connect(&client, &args).await?;
        // The gateway registers the subscription before it completes the upgrade: from here on
        // nothing delivered is missed, so this line tells scripts the subscriber is ready.
        eprintln!("subscribed at {} ({})", client.addr(), describe(&args));
        let mut seen = 0u64;
        let held = args.durable.as_deref().map(|name| Held::new(dir, name));
        loop {
            match receive(&mut stream, &args, &mut seen, held.as_ref()).await {
                Ok(()) => {
                    let _ = stream.ws.close(None).await;
                    return Ok(());
                }
                Err(Ended::Failed(f)) => return Err(f),
                Err(Ended::Lost(why)) => {
                    eprintln!("lost the gateway: {why}; reconnecting");
                    match reconnect(dir, &args).await {
                        Some(s) => stream = s,
                        // Stopped (Ctrl-C, SIGTERM) while waiting for the gateway.
                        None => return Ok(()),
                    }
                }
            }
        }
    })
}

/// How a subscription ended before its count: its connection was lost (it reconnects), or it
/// failed for good.
enum Ended {
    Lost(String),
    Failed(Failure),
}

impl From<Failure> for Ended {
    fn from(f: Failure) -> Self {
        Self::Failed(f)
    }
}

/// Opens the stream of `args` at the gateway `client` reaches.
async fn connect(client: &ApiClient, args: &SubscribeArgs) -> Result<Envelopes, Failure> {
    let mut query = Vec::new();
    if let Some(t) = &args.topic {
        query.push(format!("topic={}", query_value(t.as_str())));
    }
    if let Some(m) = &args.from {
        query.push(format!("from={m}"));
    }
    if let Some(d) = &args.durable {
        query.push(format!("durable={}", query_value(d)));
    }
    if args.proof {
        query.push("proof=required".to_owned());
    }
    let ws = client
        .websocket(&format!("/v1/messages/stream?{}", query.join("&")))
        .await
        .map_err(|e| refused(client, e))?;
    Ok(Envelopes {
        ws,
        buffered: std::collections::VecDeque::new(),
    })
}

/// Connects again, with jittered exponential backoff (at most [`MAX_RECONNECT_DELAY`] between
/// attempts), reading the gateway's address afresh each time (a restarted gateway may listen
/// elsewhere). `None` once the subscriber is told to stop.
async fn reconnect(dir: &Path, args: &SubscribeArgs) -> Option<Envelopes> {
    let mut delay = std::time::Duration::from_millis(200);
    loop {
        tokio::select! {
            () = crate::gateway::shutdown_signal() => return None,
            () = tokio::time::sleep(delay) => {}
        }
        let attempt = async {
            let client = ApiClient::for_dir(dir)?;
            let stream = connect(&client, args).await?;
            Ok::<_, Failure>((client.addr(), stream))
        };
        match attempt.await {
            Ok((addr, stream)) => {
                eprintln!("subscribed again at {addr} ({})", describe(args));
                return Some(stream);
            }
            Err(e) => {
                delay = (delay * 2).min(MAX_RECONNECT_DELAY);
                eprintln!(
                    "cannot reach the gateway yet ({}); retrying in {}",
                    e.summary(),
                    humantime::format_duration(std::time::Duration::from_millis(
                        u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)
                    ))
                );
            }
        }
    }
}

/// Prints what `stream` delivers until `args.count` envelopes (counted in `seen` across
/// connections) have been printed, the subscriber is told to stop, or the stream ends.
///
/// A durable subscription's qos 2 groups are kept in `held` from their acknowledgement until
/// they are printed (see [`crate::held`]); one held when this connection starts is printed, or
/// dropped, once the first qos 2 envelope shows whether its acknowledgement was committed.
async fn receive(
    stream: &mut Envelopes,
    args: &SubscribeArgs,
    seen: &mut u64,
    held: Option<&Held>,
) -> Result<(), Ended> {
    let durable = args.durable.is_some();
    let mut out = std::io::stdout();
    let mut undecided = match held {
        Some(h) => h.load()?,
        None => Vec::new(),
    };
    while args.count.is_none_or(|n| *seen < n) {
        let first = tokio::select! {
            () = crate::gateway::shutdown_signal() => return Ok(()),
            e = stream.next() => e?,
        };
        if let Some(h) = held
            && !undecided.is_empty()
            && first.qos == Qos::ExactlyOnce
        {
            // Its first envelope again: the acknowledgement was not committed, and the
            // gateway is sending the group again. Anything else: it was; print it now.
            if undecided[0].0 == first.id {
                eprintln!(
                    "the gateway sends again the {} envelopes acknowledged before it was lost: their acknowledgement was not committed",
                    undecided.len()
                );
            } else {
                for (_, text) in &undecided {
                    writeln!(out, "{text}").map_err(stdout_failure)?;
                }
                out.flush().map_err(stdout_failure)?;
                *seen += undecided.len() as u64;
                eprintln!(
                    "printed the {} envelopes acknowledged before the gateway was lost: it had committed their acknowledgement",
                    undecided.len()
                );
            }
            h.clear()?;
            undecided.clear();
            if args.count.is_some_and(|n| *seen >= n) {
                stream.buffered.push_front(first);
                break;
            }
        }
        // The envelopes already here are handled together: one acknowledgement for all.
        // Exactly once (qos 2 on a durable subscription): acknowledge first and print once
        // the gateway has committed the acknowledgement, so a gateway crash repeats
        // nothing. Otherwise print, then acknowledge (at least once).
        let confirm_first = durable && first.qos == Qos::ExactlyOnce;
        let room = args.count.map_or(usize::MAX, |n| {
            usize::try_from(n - *seen).unwrap_or(usize::MAX)
        });
        let mut group = vec![first];
        while group.len() < room {
            match stream.ready() {
                Some(e) if (durable && e.qos == Qos::ExactlyOnce) == confirm_first => {
                    group.push(e);
                }
                Some(e) => {
                    stream.buffered.push_front(e);
                    break;
                }
                None => break,
            }
        }
        let last = group.last().map(|e| e.id.to_string()).unwrap_or_default();
        if confirm_first {
            if let Some(h) = held {
                h.save(group.iter().map(|e| (e.id, e.text.as_str())))?;
            }
            stream.ack(&last, true).await?;
            tokio::select! {
                () = crate::gateway::shutdown_signal() => return Ok(()),
                r = stream.confirmed(&last) => r?,
            }
        }
        // A reader that has gone (`| head -1`) ends the subscription; what it did not
        // get is not acknowledged.
        for e in &group {
            writeln!(out, "{}", e.text).map_err(stdout_failure)?;
        }
        out.flush().map_err(stdout_failure)?;
        *seen += group.len() as u64;
        if confirm_first && let Some(h) = held {
            h.clear()?;
        }
        if durable && !confirm_first {
            stream.ack(&last, false).await?;
        }
    }
    Ok(())
}

/// One envelope as the stream delivered it.
struct Received {
    text: String,
    id: EnvelopeId,
    qos: Qos,
}

/// The fields of a delivered envelope (spec layout) the subscriber reads; it prints the
/// envelope as the text it came in.
#[derive(Deserialize)]
struct EnvelopeHead {
    federation: HeadFields,
}

/// `federation` of [`EnvelopeHead`].
#[derive(Deserialize)]
struct HeadFields {
    id: EnvelopeId,
    policy: HeadPolicy,
}

/// `federation.policy` of [`EnvelopeHead`].
#[derive(Deserialize)]
struct HeadPolicy {
    qos: Qos,
}

/// A frame of the stream as it arrives: the gateway's answer to an acknowledgement, or an
/// envelope.
#[derive(Deserialize)]
#[serde(untagged)]
enum StreamFrame {
    Reply(StreamReply),
    Envelope(EnvelopeHead),
}

/// The subscriber's side of the stream: envelopes, acknowledgements and their confirmations.
struct Envelopes {
    ws: crate::client::WebSocket,
    /// Envelopes read while waiting for a confirmation.
    buffered: std::collections::VecDeque<Received>,
}

/// What one frame of the stream is.
enum Frame {
    Envelope(Received),
    Acked(String),
}

impl Envelopes {
    fn parse(&self, text: &str) -> Result<Frame, Failure> {
        let frame = serde_json::from_str::<StreamFrame>(text).map_err(|e| {
            Failure::Runtime(anyhow!(
                "the gateway sent a frame this meshfed does not read ({e}): {text}"
            ))
        })?;
        match frame {
            StreamFrame::Reply(StreamReply::Refused(ErrorBody { error })) => Err(Failure::Runtime(
                anyhow!("the gateway refused: {}", error.message),
            )),
            StreamFrame::Reply(StreamReply::Acked(Acked { acked })) => Ok(Frame::Acked(acked)),
            StreamFrame::Envelope(head) => Ok(Frame::Envelope(Received {
                id: head.federation.id,
                qos: head.federation.policy.qos,
                text: text.to_owned(),
            })),
        }
    }

    async fn frame(&mut self) -> Result<Frame, Ended> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(t))) => return Ok(self.parse(t.as_str())?),
                Some(Ok(Message::Close(_))) | None => {
                    return Err(Ended::Lost("the gateway closed the stream".to_owned()));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(Ended::Lost(format!("the stream failed: {e}"))),
            }
        }
    }

    /// The next envelope.
    async fn next(&mut self) -> Result<Received, Ended> {
        if let Some(e) = self.buffered.pop_front() {
            return Ok(e);
        }
        loop {
            if let Frame::Envelope(e) = self.frame().await? {
                return Ok(e);
            }
        }
    }

    /// The next envelope if one is already here.
    fn ready(&mut self) -> Option<Received> {
        if let Some(e) = self.buffered.pop_front() {
            return Some(e);
        }
        use futures_util::FutureExt as _;
        match self.ws.next().now_or_never()?? {
            Ok(Message::Text(t)) => match self.parse(t.as_str()) {
                Ok(Frame::Envelope(e)) => Some(e),
                _ => None,
            },
            _ => None,
        }
    }

    async fn ack(&mut self, id: &str, confirm: bool) -> Result<(), Ended> {
        let ack = DurableAck {
            ack: id.to_owned(),
            confirm,
        };
        futures_util::SinkExt::send(&mut self.ws, text_frame(&ack))
            .await
            .map_err(|e| Ended::Lost(format!("acknowledging message {id} failed: {e}")))
    }

    /// Waits until the gateway confirms the acknowledgement of `id`; envelopes arriving
    /// meanwhile are kept.
    async fn confirmed(&mut self, id: &str) -> Result<(), Ended> {
        loop {
            match self.frame().await? {
                Frame::Acked(a) if a == id => return Ok(()),
                Frame::Acked(_) => {}
                Frame::Envelope(e) => self.buffered.push_back(e),
            }
        }
    }
}

fn describe(args: &SubscribeArgs) -> String {
    let topic = args.topic.as_ref().map_or("#", |t| t.as_str());
    let proof = if args.proof { ", with proof" } else { "" };
    match &args.from {
        Some(m) => format!("topic {topic} from {m}{proof}"),
        None => format!("topic {topic}{proof}"),
    }
}

/// The gateway's own words when it refuses the stream (it answers with a JSON error body).
fn refused(client: &ApiClient, e: WsError) -> Failure {
    match e {
        WsError::Http(resp) => {
            let status = resp.status().as_u16();
            let message = resp
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice::<ErrorBody>(b).ok())
                .map_or_else(|| "no message".to_owned(), |b| b.error.message);
            Failure::Runtime(anyhow!("{message} (HTTP {status})"))
        }
        other => Failure::Runtime(anyhow!(
            "cannot open the message stream at {}: is `meshfed gateway` running for this directory? ({other})",
            client.addr()
        )),
    }
}

/// A text frame holding `message` as JSON.
pub(crate) fn text_frame(message: &impl serde::Serialize) -> Message {
    // Invariant: the API models serialize to JSON without fail (no maps with non-string keys).
    let text = serde_json::to_string(message)
        .unwrap_or_else(|e| unreachable!("an API model does not serialize: {e}"));
    Message::Text(text.into())
}
