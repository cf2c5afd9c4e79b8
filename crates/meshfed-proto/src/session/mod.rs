//! The federation link session: what runs on a link once the handshake has established it.
//! So far its control frames' bodies, typed, in [`bodies`].

pub mod bodies;

pub use bodies::{
    BodyError, BodyFault, Control, FlowState, Heartbeat, HeartbeatAck, LifecycleChange,
    MAX_REASON_LEN, TerminationBody,
};
