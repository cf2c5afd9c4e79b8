//! `GET /v1/events`: the changes of federations, their links and their partners' breakers as
//! Server-Sent Events, so that a script reacts without polling. Each event is `event: KIND`
//! and `data:` one [`Change`] as JSON; a follower too slow for the gateway loses the oldest
//! changes and gets `event: lagged` with `data: {"missed": N}` in their place. The gateway
//! never waits for a follower (see `gateway/events.rs`).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use tokio::sync::broadcast::{Receiver, error::RecvError};
use tokio_util::sync::CancellationToken;

use super::Node;
use super::models::{Change, ErrorBody};

/// How often an idle stream sends a comment, so that proxies and clients keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[utoipa::path(
    get,
    path = "/events",
    tag = "federations",
    security(("bearer" = [])),
    description = "Server-Sent Events (`text/event-stream`) of what changes from the moment of the \
        request: `event:` names the kind (`established`, `reestablished`, `suspended`, `resumed`, \
        `terminated`, `state_changed`, `renegotiated`, `link_up`, `link_down`, `breaker`) and \
        `data:` is the `Change` as JSON (federation, peer, state, previous state, reason, time). \
        A client that reads too slowly loses the oldest changes: it gets `event: lagged` with \
        `data: {\"missed\": N}` instead, and the stream goes on. Idle streams get a comment every \
        15 s. The stream ends when the gateway stops.",
    responses(
        (status = 200, description = "The stream of changes", body = Change, content_type = "text/event-stream"),
        (status = 401, description = "No or a wrong bearer token", body = ErrorBody),
        (status = 403, description = "A component token (`forbidden`): the stream is the operator's", body = ErrorBody),
    )
)]
pub(super) async fn events(
    State(node): State<Node>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = changes(node.follow_changes(), node.stopping());
    Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

/// The events of `follower` until the gateway stops (`stopping`) or the channel closes.
fn changes(
    follower: Receiver<Change>,
    stopping: CancellationToken,
) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold(
        (follower, stopping),
        |(mut follower, stopping)| async move {
            let received = tokio::select! {
                () = stopping.cancelled() => return None,
                received = follower.recv() => received,
            };
            let event = match received {
                Ok(change) => Event::default()
                    .event(change.kind.as_str())
                    .json_data(&change)
                    // A `Change` is plain data: serialising it cannot fail.
                    .unwrap_or_else(|e| Event::default().event("error").data(e.to_string())),
                Err(RecvError::Lagged(missed)) => Event::default()
                    .event("lagged")
                    .data(serde_json::json!({ "missed": missed }).to_string()),
                Err(RecvError::Closed) => return None,
            };
            Some((Ok(event), (follower, stopping)))
        },
    )
}

#[cfg(test)]
mod tests {
    use axum::response::IntoResponse as _;
    use tokio::sync::broadcast;

    use super::*;
    use crate::gateway::events::ChangeKind;

    fn change(n: u32) -> Change {
        Change {
            kind: ChangeKind::Renegotiated,
            federation: Some("fed_0123456789abcdef0123456789abcdef".parse().unwrap()),
            peer: "plant-a".parse().unwrap(),
            state: format!("v{n}"),
            previous: Some(format!("v{}", n - 1)),
            reason: None,
            time: "2026-01-01T00:00:00.000Z".to_owned(),
        }
    }

    /// The whole text of the stream of `follower` once its sender is gone.
    async fn text(follower: Receiver<Change>) -> String {
        let sse = Sse::new(changes(follower, CancellationToken::new()));
        let body = sse.into_response().into_body();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn each_change_is_an_event_named_for_its_kind_with_its_json() {
        let (sender, follower) = broadcast::channel(8);
        sender.send(change(2)).unwrap();
        drop(sender);
        let text = text(follower).await;
        let want = format!(
            "event: renegotiated\ndata: {}\n\n",
            serde_json::to_string(&change(2)).unwrap()
        );
        assert_eq!(text, want);
    }

    #[tokio::test]
    async fn a_follower_that_lags_is_told_how_many_it_missed_and_goes_on() {
        let (sender, follower) = broadcast::channel(4);
        // Nobody reads: the first six of ten are overwritten.
        for n in 1..=10 {
            sender.send(change(n)).unwrap();
        }
        drop(sender);
        let text = text(follower).await;
        let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
        assert_eq!(events[0], "event: lagged\ndata: {\"missed\":6}", "{text}");
        let states: Vec<String> = events[1..]
            .iter()
            .map(|e| {
                let data = e.split_once("data: ").unwrap().1;
                serde_json::from_str::<Change>(data).unwrap().state
            })
            .collect();
        assert_eq!(states, ["v7", "v8", "v9", "v10"], "{text}");
    }

    #[tokio::test]
    async fn the_stream_ends_when_the_gateway_stops() {
        let (_sender, follower) = broadcast::channel::<Change>(4);
        let stopping = CancellationToken::new();
        stopping.cancel();
        let sse = Sse::new(changes(follower, stopping));
        let body = sse.into_response().into_body();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        assert!(bytes.is_empty());
    }
}
