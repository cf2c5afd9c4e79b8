//! Policy negotiation (handshake step 4): each side's offer, the terms they agree on, and how a
//! proposal is evaluated. The full policy language (access rules, redaction, the policy file)
//! builds on these terms; negotiation itself stays here, in the sans-IO core.
//!
//! Evaluation combines a proposal with the local offer into the most restrictive terms both can
//! live with. If that is the proposal itself, it is accepted; otherwise the combination is the
//! counterproposal. Requirements that no combination satisfies end the negotiation, naming every
//! conflicting clause.

use serde::{Deserialize, Serialize};

/// How envelopes are signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureMode {
    /// One signature per envelope.
    PerMessage,
    /// One signature over the Merkle root of a batch; each envelope keeps an inclusion proof.
    Batch,
}

/// What one side allows and requires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyOffer {
    /// Largest payload this side accepts, in bytes.
    pub max_message_size: u32,
    /// Most messages per second this side accepts from the partner; `None`: no limit.
    pub max_rate: Option<u32>,
    /// Whether payloads must be encrypted end to end.
    pub require_encryption: bool,
    /// Signature modes this side accepts.
    pub signature_modes: Vec<SignatureMode>,
    /// Regions where this side's data may be kept; empty means anywhere.
    pub residency: Vec<String>,
    /// Longest time, in days, either side may keep records of exchanged messages.
    pub retention_days: u32,
}

impl Default for PolicyOffer {
    fn default() -> Self {
        Self {
            max_message_size: 1 << 20,
            max_rate: None,
            require_encryption: true,
            signature_modes: vec![SignatureMode::Batch, SignatureMode::PerMessage],
            residency: Vec::new(),
            retention_days: 365,
        }
    }
}

/// Agreed terms: a proposal, a counterproposal, or the final terms of an agreement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyTerms {
    /// Largest payload, in bytes.
    pub max_message_size: u32,
    /// Most messages per second in each direction; `None`: no limit.
    pub max_rate: Option<u32>,
    /// Payloads are encrypted end to end.
    pub encryption_required: bool,
    /// Signature modes either side may use.
    pub signature_modes: Vec<SignatureMode>,
    /// Regions where exchanged data may be kept; empty means anywhere.
    pub residency: Vec<String>,
    /// Retention limit for records of exchanged messages, in days.
    pub retention_days: u32,
}

/// Clauses no combination of the two offers satisfies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy cannot be agreed: {}", .0.join("; "))]
pub struct Unsatisfiable(pub Vec<String>);

/// The outcome of evaluating a proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evaluation {
    /// The proposal is acceptable as it stands.
    Accept,
    /// These more restrictive terms are acceptable instead.
    Counter(PolicyTerms),
}

impl PolicyOffer {
    /// The terms this side proposes: its own offer.
    pub fn proposal(&self) -> PolicyTerms {
        let mut modes = self.signature_modes.clone();
        modes.sort();
        modes.dedup();
        let mut residency = self.residency.clone();
        residency.sort();
        residency.dedup();
        PolicyTerms {
            max_message_size: self.max_message_size,
            max_rate: self.max_rate,
            encryption_required: self.require_encryption,
            signature_modes: modes,
            residency,
            retention_days: self.retention_days,
        }
    }

    /// The most restrictive terms satisfying both this offer and `terms`.
    pub fn combine(&self, terms: &PolicyTerms) -> Result<PolicyTerms, Unsatisfiable> {
        let own = self.proposal();
        let mut conflicts = Vec::new();
        let signature_modes: Vec<SignatureMode> = own
            .signature_modes
            .iter()
            .filter(|m| terms.signature_modes.contains(m))
            .copied()
            .collect();
        if signature_modes.is_empty() {
            conflicts.push(format!(
                "security.signature_modes: we accept {:?}, the proposal {:?}",
                own.signature_modes, terms.signature_modes
            ));
        }
        let residency = match (own.residency.is_empty(), terms.residency.is_empty()) {
            (true, _) => terms.residency.clone(),
            (false, true) => own.residency.clone(),
            (false, false) => {
                let common: Vec<String> = own
                    .residency
                    .iter()
                    .filter(|r| terms.residency.contains(r))
                    .cloned()
                    .collect();
                if common.is_empty() {
                    conflicts.push(format!(
                        "compliance.residency: we keep data in {:?}, the proposal in {:?}",
                        own.residency, terms.residency
                    ));
                }
                common
            }
        };
        if !conflicts.is_empty() {
            return Err(Unsatisfiable(conflicts));
        }
        let max_rate = match (own.max_rate, terms.max_rate) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok(PolicyTerms {
            max_message_size: own.max_message_size.min(terms.max_message_size),
            max_rate,
            encryption_required: own.encryption_required || terms.encryption_required,
            signature_modes,
            residency,
            retention_days: own.retention_days.min(terms.retention_days),
        })
    }

    /// Evaluates a proposal against this offer.
    pub fn evaluate(&self, proposal: &PolicyTerms) -> Result<Evaluation, Unsatisfiable> {
        let combined = self.combine(proposal)?;
        Ok(if &combined == proposal {
            Evaluation::Accept
        } else {
            Evaluation::Counter(combined)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_offers_accept() {
        let o = PolicyOffer::default();
        assert_eq!(o.evaluate(&o.proposal()).unwrap(), Evaluation::Accept);
    }

    #[test]
    fn counterproposal_is_the_most_restrictive_combination() {
        let a = PolicyOffer {
            max_rate: Some(500),
            require_encryption: false,
            ..PolicyOffer::default()
        };
        let b = PolicyOffer {
            max_message_size: 4096,
            retention_days: 30,
            ..PolicyOffer::default()
        };
        let Evaluation::Counter(t) = b.evaluate(&a.proposal()).unwrap() else {
            panic!("expected a counter")
        };
        assert_eq!(
            (
                t.max_message_size,
                t.max_rate,
                t.encryption_required,
                t.retention_days
            ),
            (4096, Some(500), true, 30)
        );
        // The counterproposal satisfies the proposer too: it accepts it as is.
        assert_eq!(a.evaluate(&t).unwrap(), Evaluation::Accept);
    }

    #[test]
    fn unsatisfiable_names_every_conflicting_clause() {
        let a = PolicyOffer {
            residency: vec!["eu".into()],
            signature_modes: vec![SignatureMode::Batch],
            ..PolicyOffer::default()
        };
        let b = PolicyOffer {
            residency: vec!["us".into()],
            signature_modes: vec![SignatureMode::PerMessage],
            ..PolicyOffer::default()
        };
        let err = b.evaluate(&a.proposal()).unwrap_err().to_string();
        assert!(
            err.contains("compliance.residency") && err.contains("security.signature_modes"),
            "{err}"
        );
    }
}
