//! Reading the journal back: for restart and recovery, metrics and `federation show`.

use meshfed_proto::envelope::export::Form;
use rusqlite::{Connection, Row, params};

use crate::cells::{Cells, row, rows};
use crate::error::StoreError;
use crate::journal::records::{
    Cursor, DeadLetter, DeliveredId, InboundMessage, InboundSeq, OrderScope, OutboundMessage,
    QueuePosition, StoredInbound, StoredOutbound, Subscription, SubscriptionName,
};

/// Up to `limit` outbound messages an older meshfed stored in SQLite, in acceptance order:
/// `Journal::open` moves them into the segment log.
pub(crate) fn legacy_outbound(
    conn: &Connection,
    limit: usize,
) -> Result<Vec<StoredOutbound>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    rows(
        conn,
        "SELECT seq, id, destination, priority, qos, deadline, order_source, order_destination,
                order_topic, enqueued, payload
         FROM outbound ORDER BY seq LIMIT ?1",
        [limit],
        || "read the outbound messages stored in SQLite".into(),
        outbound,
    )
}

fn outbound(r: &Row<'_>) -> Result<StoredOutbound, StoreError> {
    let seq: i64 = r.get("seq").unwrap_or(-1);
    let c = Cells::new("outbound", format!("seq {seq}"), r);
    let order = match (
        c.opt_parse("order_source")?,
        c.opt_parse("order_destination")?,
        c.opt_parse("order_topic")?,
    ) {
        (Some(source), Some(destination), Some(topic)) => Some(OrderScope {
            source,
            destination,
            topic,
        }),
        (None, None, None) => None,
        _ => return Err(c.corrupt("order_source", "order scope is partly missing")),
    };
    Ok(StoredOutbound {
        position: QueuePosition(c.int("seq")?),
        message: OutboundMessage {
            id: c.envelope_id("id")?,
            destination: c.parse("destination")?,
            priority: c.small("priority")?,
            qos: c.small("qos")?,
            deadline: c.opt_time("deadline")?,
            order,
            enqueued: c.time("enqueued")?,
            payload: c.blob("payload")?,
        },
    })
}

/// Every delivered id SQLite holds (expired ones too, until they are forgotten).
pub(crate) fn delivered_rows(conn: &Connection) -> Result<Vec<DeliveredId>, StoreError> {
    rows(
        conn,
        "SELECT id, until FROM delivered",
        [],
        || "read the delivered ids".into(),
        |r| {
            let c = Cells::new("delivered", "id".into(), r);
            let id = c.envelope_id("id")?;
            let c = Cells::new("delivered", id.to_string(), r);
            Ok(DeliveredId {
                id,
                until: c.time("until")?,
            })
        },
    )
}

/// The cursor of `subscription`, if one was saved.
pub(crate) fn cursor(
    conn: &Connection,
    subscription: &SubscriptionName,
) -> Result<Option<InboundSeq>, StoreError> {
    let found = row(
        conn,
        "SELECT subscription, delivered FROM cursors WHERE subscription = ?1",
        [subscription.as_str()],
        || format!("read the cursor of subscription {subscription}"),
        cursor_row,
    )?;
    Ok(found.map(|c| c.delivered))
}

/// Every saved cursor, by subscription name.
pub(crate) fn cursors(conn: &Connection) -> Result<Vec<Cursor>, StoreError> {
    rows(
        conn,
        "SELECT subscription, delivered FROM cursors ORDER BY subscription",
        [],
        || "read the subscription cursors".into(),
        cursor_row,
    )
}

fn cursor_row(r: &Row<'_>) -> Result<Cursor, StoreError> {
    let c = Cells::keyed("cursors", "subscription", r);
    Ok(Cursor {
        subscription: c.parse("subscription")?,
        delivered: InboundSeq(c.int("delivered")?),
    })
}

/// Up to `limit` messages of `subscription` after `after` (from the first if `None`), in order.
pub(crate) fn inbound_after(
    conn: &Connection,
    subscription: &SubscriptionName,
    after: Option<InboundSeq>,
    limit: usize,
) -> Result<Vec<StoredInbound>, StoreError> {
    let after = after.map_or(0, |s| s.0);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    rows(
        conn,
        "SELECT seq, subscription, id, received, payload, source FROM inbound
         WHERE subscription = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        params![subscription.as_str(), after, limit],
        || format!("read the inbound messages of subscription {subscription}"),
        |r| {
            let seq: i64 = r.get("seq").unwrap_or(-1);
            let c = Cells::new("inbound", format!("seq {seq}"), r);
            Ok(StoredInbound {
                seq: InboundSeq(c.int("seq")?),
                message: InboundMessage {
                    subscription: c.parse("subscription")?,
                    id: c.envelope_id("id")?,
                    received: c.time("received")?,
                    source: c.opt_parse("source")?,
                    payload: c.blob("payload")?,
                },
            })
        },
    )
}

/// Every durable subscription, by name.
pub(crate) fn subscriptions(conn: &Connection) -> Result<Vec<Subscription>, StoreError> {
    rows(
        conn,
        "SELECT name, topic, from_mesh, proof, created FROM subscriptions ORDER BY name",
        [],
        || "read the durable subscriptions".into(),
        |r| {
            let c = Cells::keyed("subscriptions", "name", r);
            Ok(Subscription {
                name: c.parse("name")?,
                topic: c.parse("topic")?,
                from: c.opt_parse("from_mesh")?,
                form: form_from_sql(&c, "proof")?,
                created: c.time("created")?,
            })
        },
    )
}

/// The form stored in `subscriptions.proof`: 0 the spec JSON, 1 the export form.
fn form_from_sql(c: &Cells<'_, '_>, column: &'static str) -> Result<Form, StoreError> {
    match c.int(column)? {
        0 => Ok(Form::Spec),
        1 => Ok(Form::Export),
        n => Err(c.corrupt(
            column,
            format!("{n} is neither 0 (spec JSON) nor 1 (export form)"),
        )),
    }
}

/// The `limit` latest dead letters, newest first.
pub(crate) fn dead_letters(conn: &Connection, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    rows(
        conn,
        "SELECT id, destination, topic, priority, qos, reason, at FROM dead_letters
         ORDER BY at DESC, id LIMIT ?1",
        [limit],
        || "read the dead letters".into(),
        |r| {
            let c = Cells::new("dead_letters", "id".into(), r);
            let id = c.envelope_id("id")?;
            let c = Cells::new("dead_letters", id.to_string(), r);
            Ok(DeadLetter {
                id,
                destination: c.parse("destination")?,
                topic: c.parse("topic")?,
                priority: c.small("priority")?,
                qos: c.small("qos")?,
                reason: c.text("reason")?,
                at: c.time("at")?,
            })
        },
    )
}
