//! A link session driven by arbitrary input: frames of any type with any body (and some valid
//! control bodies, to reach deeper states), time steps and local commands. It must never panic,
//! always have a timer while open, and neither send nor report anything after `Closed`.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use meshfed_proto::Termination;
use meshfed_proto::frame::{Frame, FrameType};
use meshfed_proto::handshake::ErrorCode;
use meshfed_proto::session::{
    Control, FlowState, HeartbeatAck, LifecycleChange, LinkSession, SessionConfig, SessionEvent,
};

/// The next `n` bytes of `rest` (fewer at its end).
fn take<'a>(rest: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (head, tail) = rest.split_at(n.min(rest.len()));
    *rest = tail;
    head
}

fn byte(rest: &mut &[u8]) -> u8 {
    take(rest, 1).first().copied().unwrap_or(0)
}

fn flow(bit: bool) -> FlowState {
    if bit {
        FlowState::Suspended
    } else {
        FlowState::Active
    }
}

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    let t0 = Instant::now();
    let config = SessionConfig {
        heartbeat_interval: Duration::from_millis(100),
    };
    let mut session = LinkSession::new(config, t0, flow(byte(&mut rest) & 1 == 1));
    let mut now = t0;
    let mut closed = false;
    while !rest.is_empty() {
        let op = byte(&mut rest);
        match op % 8 {
            0 => {
                now += Duration::from_millis(u64::from(byte(&mut rest)) * 4);
                session.handle_timeout(now);
            }
            1 => {
                let _ = session.suspend();
            }
            2 => {
                let _ = session.resume();
            }
            3 => {
                let kind = if op & 0x80 == 0 {
                    Termination::Graceful
                } else {
                    Termination::Forced
                };
                let len = usize::from(byte(&mut rest) % 16);
                let reason = String::from_utf8_lossy(take(&mut rest, len)).into_owned();
                let _ = session.terminate(kind, &reason);
            }
            4 => {
                let code = u16::from_be_bytes([byte(&mut rest), byte(&mut rest)]);
                let _ = session.close_with_error(ErrorCode::from_u16(code), "fuzz");
            }
            5 => {
                let ack = Control::HeartbeatAck(HeartbeatAck {
                    seq: u64::from(byte(&mut rest) % 32),
                });
                let _ = session.handle_frame(&ack.to_frame(), now);
            }
            6 => {
                let change = Control::Lifecycle(LifecycleChange {
                    state: flow(op & 0x80 != 0),
                });
                let _ = session.handle_frame(&change.to_frame(), now);
            }
            _ => {
                let code = byte(&mut rest);
                let len = usize::from(byte(&mut rest) % 64);
                let body = take(&mut rest, len).to_vec();
                if let Some(ty) = FrameType::from_code(code) {
                    let _ = session.handle_frame(&Frame::new(ty, body), now);
                }
            }
        }
        while let Some(frame) = session.poll_transmit() {
            assert!(!closed, "{:?} sent after Closed", frame.ty);
        }
        while let Some(event) = session.poll_event() {
            assert!(!closed, "{event:?} after Closed");
            closed = matches!(event, SessionEvent::Closed(_));
        }
        assert_eq!(closed, session.is_closed());
        assert_eq!(closed, session.poll_timeout().is_none());
    }
});
