//! The CBOR form of [`RelayFrame`] (layout in the [parent module](super)'s doc).
//!
//! Encoding borrows every part through serde. Decoding reads the one CBOR value, then walks it
//! field by field, so that every refusal names the field (`route.path`, `body.tag`) and why.

use ciborium::Value;
use serde::Serialize;
use serde_bytes::Bytes;

use super::{
    Accept, Body, Finish, MAX_PATH, MAX_REASON, NONCE_LEN, Open, RelayError, RelayFrame, Route,
    Sealed, TAG_LEN, TunnelId, check_chain,
};
use crate::cbor::{self, CborFault};
use crate::crypto::{SIGNATURE_LEN, Signature};
use crate::handshake::KEY_SHARE_LEN;
use crate::id::MeshId;

const OPEN: u8 = 0;
const ACCEPT: u8 = 1;
const FINISH: u8 = 2;
const DATA: u8 = 3;
const UNREACHABLE: u8 = 4;
const CLOSE: u8 = 5;

#[derive(Serialize)]
struct FrameOut<'a>(&'a Bytes, RouteOut<'a>, BodyOut<'a>);

#[derive(Serialize)]
struct RouteOut<'a>(&'a MeshId, &'a MeshId, &'a [MeshId], u8, u8);

/// A body as written: each variant an array led by its kind.
#[derive(Serialize)]
#[serde(untagged)]
enum BodyOut<'a> {
    Open(u8, Vec<&'a Bytes>, &'a Bytes, &'a Bytes),
    Accept(u8, Vec<&'a Bytes>, &'a Bytes, &'a Bytes, &'a Bytes),
    Finish(u8, &'a Bytes),
    Data(u8, u64, u8, &'a Bytes, &'a Bytes),
    Reason(u8, &'a str),
}

fn chain_out(chain: &[Vec<u8>]) -> Vec<&Bytes> {
    chain.iter().map(|c| Bytes::new(c)).collect()
}

impl RelayFrame {
    /// The wire form (the `Relay` frame's body).
    pub fn encode(&self) -> Vec<u8> {
        let r = &self.route;
        let route = RouteOut(&r.source, &r.destination, &r.path, r.ttl, r.hops);
        let (body, size) = match &self.body {
            Body::Open(o) => (
                BodyOut::Open(
                    OPEN,
                    chain_out(&o.chain),
                    Bytes::new(&o.share),
                    Bytes::new(&o.nonce),
                ),
                o.chain.iter().map(Vec::len).sum(),
            ),
            Body::Accept(a) => (
                BodyOut::Accept(
                    ACCEPT,
                    chain_out(&a.chain),
                    Bytes::new(&a.share),
                    Bytes::new(&a.nonce),
                    Bytes::new(&a.signature.0),
                ),
                a.chain.iter().map(Vec::len).sum(),
            ),
            Body::Finish(f) => (BodyOut::Finish(FINISH, Bytes::new(&f.signature.0)), 0),
            Body::Data(s) => (
                BodyOut::Data(DATA, s.seq, s.ty, Bytes::new(&s.body), Bytes::new(&s.tag)),
                s.body.len(),
            ),
            Body::Unreachable { reason } => (BodyOut::Reason(UNREACHABLE, reason), reason.len()),
            Body::Close { reason } => (BodyOut::Reason(CLOSE, reason), reason.len()),
        };
        let out = FrameOut(Bytes::new(&self.tunnel.0), route, body);
        cbor::to_vec(&out, size + 512)
    }

    /// Parses a relay frame body; every field is checked. Nothing in it is trusted: the key
    /// exchange and [`Tunnel::open`](super::Tunnel::open) authenticate what needs it.
    pub fn decode(bytes: &[u8]) -> Result<Self, RelayError> {
        let value: Value = cbor::from_slice(bytes).map_err(|fault| match fault {
            CborFault::NotCbor(e) => RelayError::NotCbor(e),
            CborFault::Trailing(n) => RelayError::TrailingBytes(n),
        })?;
        let [tunnel, route, body] = exact(array(value, "frame")?, "frame")?;
        Ok(Self {
            tunnel: TunnelId(fixed(tunnel, "tunnel")?),
            route: route_in(route)?,
            body: body_in(body)?,
        })
    }
}

fn route_in(value: Value) -> Result<Route, RelayError> {
    let [source, destination, path, ttl, hops] = exact(array(value, "route")?, "route")?;
    let path = array(path, "route.path")?;
    if path.len() > MAX_PATH {
        return Err(invalid(
            "route.path",
            format!("{} meshes, at most {MAX_PATH}", path.len()),
        ));
    }
    let path = path
        .into_iter()
        .map(|m| mesh(m, "route.path"))
        .collect::<Result<Vec<_>, _>>()?;
    let hops: u8 = uint(hops, "route.hops")?;
    if usize::from(hops) != path.len() {
        return Err(invalid(
            "route.hops",
            format!("{hops}, but route.path names {} relays", path.len()),
        ));
    }
    Ok(Route {
        source: mesh(source, "route.source")?,
        destination: mesh(destination, "route.destination")?,
        path,
        ttl: uint(ttl, "route.ttl")?,
        hops,
    })
}

fn body_in(value: Value) -> Result<Body, RelayError> {
    let items = array(value, "body")?;
    let kind = items
        .first()
        .cloned()
        .ok_or_else(|| invalid("body", "an empty array, expected a kind first"))?;
    let kind: u8 = uint(kind, "body.kind")?;
    Ok(match kind {
        OPEN => {
            let [_, chain, share, nonce] = exact(items, "body (open)")?;
            Body::Open(Open {
                chain: chain_in(chain)?,
                share: share_in(share)?,
                nonce: fixed::<NONCE_LEN>(nonce, "body.nonce")?,
            })
        }
        ACCEPT => {
            let [_, chain, share, nonce, signature] = exact(items, "body (accept)")?;
            Body::Accept(Accept {
                chain: chain_in(chain)?,
                share: share_in(share)?,
                nonce: fixed::<NONCE_LEN>(nonce, "body.nonce")?,
                signature: Signature(fixed::<SIGNATURE_LEN>(signature, "body.signature")?),
            })
        }
        FINISH => {
            let [_, signature] = exact(items, "body (finish)")?;
            Body::Finish(Finish {
                signature: Signature(fixed::<SIGNATURE_LEN>(signature, "body.signature")?),
            })
        }
        DATA => {
            let [_, seq, ty, body, tag] = exact(items, "body (data)")?;
            Body::Data(Sealed {
                seq: uint(seq, "body.seq")?,
                ty: uint(ty, "body.ty")?,
                body: bytes(body, "body.body")?.into(),
                tag: fixed::<TAG_LEN>(tag, "body.tag")?,
            })
        }
        UNREACHABLE => {
            let [_, reason] = exact(items, "body (unreachable)")?;
            Body::Unreachable {
                reason: reason_in(reason)?,
            }
        }
        CLOSE => {
            let [_, reason] = exact(items, "body (close)")?;
            Body::Close {
                reason: reason_in(reason)?,
            }
        }
        other => {
            return Err(invalid(
                "body.kind",
                format!("{other} is not a relay frame kind (0 to {CLOSE})"),
            ));
        }
    })
}

fn chain_in(value: Value) -> Result<Vec<Vec<u8>>, RelayError> {
    let certs = array(value, "body.chain")?;
    if certs.len() > super::MAX_CHAIN {
        // Refused before the certificates are copied out.
        return Err(invalid(
            "body.chain",
            format!("{} certificates, at most {}", certs.len(), super::MAX_CHAIN),
        ));
    }
    let chain = certs
        .into_iter()
        .map(|c| bytes(c, "body.chain"))
        .collect::<Result<Vec<_>, _>>()?;
    check_chain(&chain).map_err(|reason| invalid("body.chain", reason))?;
    Ok(chain)
}

fn share_in(value: Value) -> Result<Vec<u8>, RelayError> {
    let share = bytes(value, "body.share")?;
    if share.len() != KEY_SHARE_LEN || share[0] != 0x04 {
        return Err(invalid(
            "body.share",
            format!(
                "{} bytes, not an uncompressed P-384 point ({KEY_SHARE_LEN} bytes from 0x04)",
                share.len()
            ),
        ));
    }
    Ok(share)
}

fn reason_in(value: Value) -> Result<String, RelayError> {
    let reason = text(value, "body.reason")?;
    if reason.len() > MAX_REASON {
        return Err(invalid(
            "body.reason",
            format!("{} bytes, at most {MAX_REASON}", reason.len()),
        ));
    }
    Ok(reason)
}

fn invalid(field: &'static str, reason: impl Into<String>) -> RelayError {
    RelayError::InvalidField {
        field,
        reason: reason.into(),
    }
}

/// What kind of CBOR item `value` is, for errors.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Integer(_) => "an integer",
        Value::Bytes(_) => "a byte string",
        Value::Float(_) => "a float",
        Value::Text(_) => "a text string",
        Value::Bool(_) => "a boolean",
        Value::Null => "null",
        Value::Tag(..) => "a tagged item",
        Value::Array(_) => "an array",
        Value::Map(_) => "a map",
        _ => "an unknown item",
    }
}

fn array(value: Value, field: &'static str) -> Result<Vec<Value>, RelayError> {
    match value {
        Value::Array(items) => Ok(items),
        other => Err(invalid(
            field,
            format!("{}, expected an array", kind(&other)),
        )),
    }
}

/// The items of an array that must hold exactly `N`.
fn exact<const N: usize>(items: Vec<Value>, field: &'static str) -> Result<[Value; N], RelayError> {
    items.try_into().map_err(|items: Vec<Value>| {
        invalid(
            field,
            format!("an array of {} items, expected {N}", items.len()),
        )
    })
}

fn bytes(value: Value, field: &'static str) -> Result<Vec<u8>, RelayError> {
    match value {
        Value::Bytes(b) => Ok(b),
        other => Err(invalid(
            field,
            format!("{}, expected a byte string", kind(&other)),
        )),
    }
}

fn fixed<const N: usize>(value: Value, field: &'static str) -> Result<[u8; N], RelayError> {
    let b = bytes(value, field)?;
    b.try_into()
        .map_err(|b: Vec<u8>| invalid(field, format!("{} bytes, expected {N}", b.len())))
}

fn text(value: Value, field: &'static str) -> Result<String, RelayError> {
    match value {
        Value::Text(t) => Ok(t),
        other => Err(invalid(
            field,
            format!("{}, expected a text string", kind(&other)),
        )),
    }
}

fn uint<T: TryFrom<u64> + Bounded>(value: Value, field: &'static str) -> Result<T, RelayError> {
    let Value::Integer(i) = value else {
        return Err(invalid(
            field,
            format!("{}, expected an unsigned integer", kind(&value)),
        ));
    };
    u64::try_from(i)
        .ok()
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| {
            invalid(
                field,
                format!(
                    "{}, expected an unsigned integer up to {}",
                    i128::from(i),
                    T::MAX
                ),
            )
        })
}

/// The largest value of an unsigned integer type, for errors.
trait Bounded {
    const MAX: u64;
}

impl Bounded for u8 {
    const MAX: u64 = u8::MAX as u64;
}

impl Bounded for u64 {
    const MAX: u64 = u64::MAX;
}

fn mesh(value: Value, field: &'static str) -> Result<MeshId, RelayError> {
    text(value, field)?
        .try_into()
        .map_err(|e: crate::InvalidId| invalid(field, e.to_string()))
}
