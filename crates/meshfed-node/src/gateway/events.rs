//! The changes of federations, their links and their partners' breakers, broadcast to whoever
//! follows them (the API's `GET /v1/events`), so that scripts react without polling.
//!
//! Telling never waits: the channel keeps the last [`KEPT`] changes, and a follower that falls
//! further behind loses the oldest and learns how many it missed (`Receiver::recv` answers
//! `Lagged`). With no follower a change costs a clone and is dropped.

use meshfed_proto::{FederationId, FederationState, MeshId};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use utoipa::ToSchema;

use crate::clock::Clock;

/// Changes kept for followers that are behind.
pub(crate) const KEPT: usize = 1024;

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// A new federation was agreed (its first handshake).
    Established,
    /// Its link came back after it was lost: messages flow again.
    Reestablished,
    /// It was suspended (here, by the partner, or by the anomaly policy).
    Suspended,
    /// It was resumed after a suspension.
    Resumed,
    /// It ended.
    Terminated,
    /// Another lifecycle move (re-establishing, negotiating, renegotiating).
    StateChanged,
    /// A new agreement version is in force.
    Renegotiated,
    /// A link session with the partner came up.
    LinkUp,
    /// The link session with the partner went down.
    LinkDown,
    /// The partner's circuit breaker changed state.
    Breaker,
}

impl ChangeKind {
    /// The kind as the event stream names it (`event: suspended`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Established => "established",
            Self::Reestablished => "reestablished",
            Self::Suspended => "suspended",
            Self::Resumed => "resumed",
            Self::Terminated => "terminated",
            Self::StateChanged => "state_changed",
            Self::Renegotiated => "renegotiated",
            Self::LinkUp => "link_up",
            Self::LinkDown => "link_down",
            Self::Breaker => "breaker",
        }
    }
}

/// One change, as `GET /v1/events` sends it (`data:`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Change {
    /// What changed.
    pub kind: ChangeKind,
    /// The federation; `null` for a breaker of a partner no federation runs with.
    #[schema(value_type = Option<String>)]
    pub federation: Option<FederationId>,
    /// The partner mesh.
    #[schema(value_type = String)]
    pub peer: MeshId,
    /// The new state: the federation's (`active`, `suspended`, …), the link's (`up`, `down`),
    /// the breaker's (`closed`, `open`, `half-open`), or `v2` for an agreement version.
    pub state: String,
    /// The state before, when there was one.
    pub previous: Option<String>,
    /// Why, when known.
    pub reason: Option<String>,
    /// When (RFC 3339, UTC).
    pub time: String,
}

/// The sending end, in the gateway's context.
pub(crate) struct Changes {
    sender: broadcast::Sender<Change>,
    clock: Clock,
}

impl Changes {
    pub(crate) fn new(clock: Clock) -> Self {
        Self {
            sender: broadcast::channel(KEPT).0,
            clock,
        }
    }

    /// A follower: every change from now on.
    pub(crate) fn follow(&self) -> broadcast::Receiver<Change> {
        self.sender.subscribe()
    }

    fn tell(
        &self,
        kind: ChangeKind,
        federation: Option<&FederationId>,
        peer: &MeshId,
        (previous, state): (Option<String>, String),
        reason: Option<&str>,
    ) {
        let change = Change {
            kind,
            federation: federation.cloned(),
            peer: peer.clone(),
            state,
            previous,
            reason: reason.map(str::to_owned),
            time: humantime::format_rfc3339_millis(self.clock.wall()).to_string(),
        };
        // No follower: nobody to tell.
        let _ = self.sender.send(change);
    }

    /// `federation` with `peer` moved from `from` to `to` (nothing when they are the same).
    pub(crate) fn lifecycle(
        &self,
        federation: &FederationId,
        peer: &MeshId,
        (from, to): (FederationState, FederationState),
        reason: &str,
    ) {
        use FederationState as S;
        let kind = match (from, to) {
            _ if from == to => return,
            (_, S::Suspended) => ChangeKind::Suspended,
            (_, S::Terminated(_)) => ChangeKind::Terminated,
            (S::Suspended, S::Active) => ChangeKind::Resumed,
            (S::Reestablishing, S::Active) => ChangeKind::Reestablished,
            (S::Negotiating, S::Active) => ChangeKind::Established,
            _ => ChangeKind::StateChanged,
        };
        let states = (Some(from.to_string()), to.to_string());
        self.tell(kind, Some(federation), peer, states, Some(reason));
    }

    /// A new federation with `peer` was agreed and stored, in `state`.
    pub(crate) fn established(
        &self,
        federation: &FederationId,
        peer: &MeshId,
        state: FederationState,
    ) {
        let states = (None, state.to_string());
        self.tell(
            ChangeKind::Established,
            Some(federation),
            peer,
            states,
            None,
        );
    }

    /// Agreement version `version` replaced `previous` on `federation`.
    pub(crate) fn renegotiated(
        &self,
        federation: &FederationId,
        peer: &MeshId,
        (previous, version): (u32, u32),
    ) {
        let states = (Some(format!("v{previous}")), format!("v{version}"));
        self.tell(
            ChangeKind::Renegotiated,
            Some(federation),
            peer,
            states,
            None,
        );
    }

    /// A link session of `federation` came up.
    pub(crate) fn link_up(&self, federation: &FederationId, peer: &MeshId) {
        let states = (Some("down".to_owned()), "up".to_owned());
        self.tell(ChangeKind::LinkUp, Some(federation), peer, states, None);
    }

    /// The link session of `federation` went down, for `reason`.
    pub(crate) fn link_down(&self, federation: &FederationId, peer: &MeshId, reason: &str) {
        let states = (Some("up".to_owned()), "down".to_owned());
        self.tell(
            ChangeKind::LinkDown,
            Some(federation),
            peer,
            states,
            Some(reason),
        );
    }

    /// `peer`'s breaker moved `from` → `to`.
    pub(crate) fn breaker(
        &self,
        federation: Option<&FederationId>,
        peer: &MeshId,
        (from, to): (&str, &str),
        reason: &str,
    ) {
        let states = (Some(from.to_owned()), to.to_owned());
        self.tell(ChangeKind::Breaker, federation, peer, states, Some(reason));
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use meshfed_proto::Termination;

    use super::*;

    #[test]
    fn a_lifecycle_move_is_named_for_what_it_means_and_a_standstill_is_not_told() {
        let changes = Changes::new(Clock::manual(SystemTime::now()).0);
        let mut follower = changes.follow();
        let id: FederationId = "fed_0123456789abcdef0123456789abcdef".parse().unwrap();
        let peer: MeshId = "plant-a".parse().unwrap();
        use FederationState as S;
        for (from, to) in [
            (S::Active, S::Active),
            (S::Active, S::Suspended),
            (S::Suspended, S::Active),
            (S::Active, S::Reestablishing),
            (S::Reestablishing, S::Active),
            (S::Active, S::Terminated(Termination::Forced)),
        ] {
            changes.lifecycle(&id, &peer, (from, to), "because");
        }
        let mut kinds = Vec::new();
        while let Ok(c) = follower.try_recv() {
            assert_eq!(c.federation.as_ref(), Some(&id));
            assert_eq!(c.reason.as_deref(), Some("because"));
            kinds.push((c.kind, c.previous.unwrap_or_default(), c.state));
        }
        let moved = |kind, from: &str, to: &str| (kind, from.to_owned(), to.to_owned());
        assert_eq!(
            kinds,
            [
                moved(ChangeKind::Suspended, "active", "suspended"),
                moved(ChangeKind::Resumed, "suspended", "active"),
                moved(ChangeKind::StateChanged, "active", "reestablishing"),
                moved(ChangeKind::Reestablished, "reestablishing", "active"),
                moved(ChangeKind::Terminated, "active", "terminated-forced"),
            ]
        );
    }
}
