//! Field redaction (a data policy): JSON pointers (RFC 6901) whose fields a payload must not
//! carry across a federation. The sender removes them before sealing, so the signature and any
//! proof cover what is delivered; the receiver checks that none is present. Both read the bytes,
//! not the content type: a payload that parses as JSON is redacted and checked whatever it is
//! labelled, and one that does not has no fields to redact. Sans-IO.

use serde_json::Value;

/// One pointer's reference tokens, unescaped (`~1` is `/`, `~0` is `~`).
fn tokens(pointer: &str) -> Vec<String> {
    pointer
        .split('/')
        .skip(1)
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect()
}

/// Removes the field `pointer` names from `value`; whether it was there.
fn remove(value: &mut Value, pointer: &str) -> bool {
    let mut tokens = tokens(pointer);
    let Some(last) = tokens.pop() else {
        return false;
    };
    let mut at = value;
    for t in &tokens {
        at = match at {
            Value::Object(map) => match map.get_mut(t) {
                Some(v) => v,
                None => return false,
            },
            Value::Array(items) => match t.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match at {
        Value::Object(map) => map.remove(&last).is_some(),
        Value::Array(items) => match last.parse::<usize>() {
            Ok(i) if i < items.len() => {
                items.remove(i);
                true
            }
            _ => false,
        },
        _ => false,
    }
}

/// `payload` without the fields `pointers` name: `None` when it holds none of them (it crosses
/// as it is), else the JSON re-written without them.
pub fn redact(payload: &[u8], pointers: &[String]) -> Option<Vec<u8>> {
    if pointers.is_empty() {
        return None;
    }
    let mut value: Value = serde_json::from_slice(payload).ok()?;
    let mut removed = false;
    for p in pointers {
        removed |= remove(&mut value, p);
    }
    // Invariant: a `Value` always serializes.
    removed.then(|| serde_json::to_vec(&value).unwrap_or_else(|e| unreachable!("JSON value: {e}")))
}

/// The first of `pointers` that names a field of `payload`, if any.
pub fn present<'a>(payload: &[u8], pointers: &'a [String]) -> Option<&'a str> {
    if pointers.is_empty() {
        return None;
    }
    let value: Value = serde_json::from_slice(payload).ok()?;
    pointers
        .iter()
        .find(|p| value.pointer(p).is_some())
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pointers(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn named_fields_are_removed_and_the_rest_kept() {
        let payload = br#"{"customer":{"email":"a@b.c","name":"Ada"},"lines":[{"price":3},{"price":4}],"a/b":1}"#;
        let out = redact(
            payload,
            &pointers(&["/customer/email", "/lines/1", "/a~1b", "/absent/x"]),
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"customer":{"name":"Ada"},"lines":[{"price":3}]})
        );
        assert_eq!(
            present(&out, &pointers(&["/customer/email", "/a~1b"])),
            None
        );
        assert_eq!(
            present(payload, &pointers(&["/customer/email"])),
            Some("/customer/email")
        );
    }

    #[test]
    fn a_payload_without_the_fields_crosses_untouched_whatever_its_label() {
        assert_eq!(redact(br#"{"qty":1}"#, &pointers(&["/customer"])), None);
        assert_eq!(redact(b"\xff", &pointers(&["/x"])), None);
        assert_eq!(redact(b"not json", &pointers(&["/x"])), None);
        // JSON labelled as anything is still JSON.
        assert_eq!(present(br#"{"x":1}"#, &pointers(&["/x"])), Some("/x"));
    }
}
