//! The federation lifecycle: which states a federation can be in and which moves are legal.
//!
//! ```text
//! negotiating ─► active ⇄ suspended
//!                  │  ▲
//!                  ▼  │
//!              renegotiating
//! any live state ─► terminated (graceful | forced) ─► reestablishing ─► active
//! ```
//! `reestablishing` is also where a federation stands while its link is re-dialled after a
//! restart or a drop; it returns to `active` once the peer is verified against the stored bundle.

use std::fmt;
use std::str::FromStr;

/// How a federation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Termination {
    /// Planned: in-flight messages were drained first.
    Graceful,
    /// Immediate, for security reasons: credentials are revoked at once.
    Forced,
}

/// A federation's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FederationState {
    /// The handshake is under way.
    Negotiating,
    /// Messages flow.
    Active,
    /// Paused by an operator or by policy; the agreement stands, no messages flow.
    Suspended,
    /// A live federation is agreeing new terms; messages keep flowing under the old ones.
    Renegotiating,
    /// Ended.
    Terminated(Termination),
    /// The link is being re-established against the stored agreement and trust bundle.
    Reestablishing,
}

/// A move the lifecycle does not allow. Its text says what the federation already is when
/// that is the reason (a second `terminate`, resuming what is active).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct IllegalTransition {
    /// The current state.
    pub from: FederationState,
    /// The requested state.
    pub to: FederationState,
}

impl IllegalTransition {
    fn describe(&self) -> String {
        let (from, to) = (self.from, self.to);
        match from {
            FederationState::Terminated(_) => format!(
                "it is already terminated ({from}); a terminated federation stays so (invite the mesh again to federate anew)"
            ),
            _ if from == to => format!("it is already {from}"),
            _ => format!("a federation that is {from} cannot become {to}"),
        }
    }
}

impl FederationState {
    /// Moves to `to` if the lifecycle allows it.
    pub fn transition(self, to: Self) -> Result<Self, IllegalTransition> {
        use FederationState::*;
        let ok = matches!(
            (self, to),
            (Negotiating, Active)
                | (Active, Suspended | Renegotiating | Reestablishing)
                | (Suspended, Active | Reestablishing)
                | (Renegotiating | Reestablishing, Active)
                | (
                    Negotiating | Active | Suspended | Renegotiating | Reestablishing,
                    Terminated(_)
                )
                | (Terminated(_), Reestablishing)
        );
        if ok {
            Ok(to)
        } else {
            Err(IllegalTransition { from: self, to })
        }
    }

    /// Whether the federation still exists (anything but terminated).
    pub fn is_live(self) -> bool {
        !matches!(self, Self::Terminated(_))
    }

    /// The state's name as shown by the API and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Self::Negotiating => "negotiating",
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Renegotiating => "renegotiating",
            Self::Terminated(Termination::Graceful) => "terminated-graceful",
            Self::Terminated(Termination::Forced) => "terminated-forced",
            Self::Reestablishing => "reestablishing",
        }
    }
}

impl fmt::Display for FederationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A state name that is not one of the lifecycle's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown federation state {0:?}")]
pub struct UnknownState(pub String);

impl FromStr for FederationState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, UnknownState> {
        Ok(match s {
            "negotiating" => Self::Negotiating,
            "active" => Self::Active,
            "suspended" => Self::Suspended,
            "renegotiating" => Self::Renegotiating,
            "terminated-graceful" => Self::Terminated(Termination::Graceful),
            "terminated-forced" => Self::Terminated(Termination::Forced),
            "reestablishing" => Self::Reestablishing,
            other => return Err(UnknownState(other.to_owned())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::FederationState::*;
    use super::*;

    const ALL: [FederationState; 7] = [
        Negotiating,
        Active,
        Suspended,
        Renegotiating,
        Terminated(Termination::Graceful),
        Terminated(Termination::Forced),
        Reestablishing,
    ];

    #[test]
    fn names_round_trip() {
        for s in ALL {
            assert_eq!(s.name().parse::<FederationState>().unwrap(), s);
        }
        assert!("paused".parse::<FederationState>().is_err());
    }

    #[test]
    fn suspended_resumes_and_terminated_only_reestablishes() {
        assert_eq!(Active.transition(Suspended).unwrap(), Suspended);
        assert_eq!(Suspended.transition(Active).unwrap(), Active);
        let done = Terminated(Termination::Forced);
        assert_eq!(done.transition(Reestablishing).unwrap(), Reestablishing);
        let err = done.transition(Active).unwrap_err();
        assert_eq!(
            err.to_string(),
            "it is already terminated (terminated-forced); a terminated federation stays so (invite the mesh again to federate anew)"
        );
        let again = Terminated(Termination::Graceful)
            .transition(Terminated(Termination::Graceful))
            .unwrap_err();
        assert!(
            again
                .to_string()
                .starts_with("it is already terminated (terminated-graceful)"),
            "{again}"
        );
        assert_eq!(
            Active.transition(Active).unwrap_err().to_string(),
            "it is already active"
        );
        assert_eq!(
            Negotiating.transition(Suspended).unwrap_err().to_string(),
            "a federation that is negotiating cannot become suspended"
        );
    }

    #[test]
    fn negotiating_cannot_be_suspended() {
        assert!(Negotiating.transition(Suspended).is_err());
        assert!(Suspended.transition(Renegotiating).is_err());
    }

    #[test]
    fn every_live_state_can_terminate() {
        for s in ALL.into_iter().filter(|s| s.is_live()) {
            assert!(
                s.transition(Terminated(Termination::Graceful)).is_ok(),
                "{s}"
            );
        }
    }
}
