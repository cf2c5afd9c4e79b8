//! Applying one [`Write`] inside the writer's open SQLite transaction (the writes kept in
//! SQLite; see `log/mod.rs`).

use meshfed_proto::envelope::export::Form;
use rusqlite::{Connection, params};

use crate::error::{Doing, StoreError};
use crate::journal::records::{DeadLetter, DeliveredId, InboundMessage, Subscription, Write};
use crate::time_fmt::to_sql;

/// Applies `write` to `conn`, which is inside a transaction (and a savepoint for its request).
pub(crate) fn apply(conn: &Connection, write: &Write) -> Result<(), StoreError> {
    match write {
        // Queued messages live in the segment log (`batch.rs` sends neither here).
        Write::AppendOutbound(m) => Err(StoreError::OutboundBesideSqliteWrites { id: m.id }),
        Write::RemoveOutbound(_) => Ok(()),
        Write::RememberDelivered(d) => remember(conn, d),
        Write::ForgetDelivered(ids) => {
            let mut stmt = conn
                .prepare_cached("DELETE FROM delivered WHERE id = ?1")
                .doing(|| "prepare forgetting delivered ids".into())?;
            for id in ids {
                stmt.execute([&id.0[..]])
                    .doing(|| format!("delete delivered id {id}"))?;
            }
            Ok(())
        }
        Write::ForgetExpired { now } => {
            let now = to_sql("now", *now)?;
            conn.prepare_cached("DELETE FROM delivered WHERE until <= ?1")
                .and_then(|mut s| s.execute([now]))
                .doing(|| format!("delete delivered ids expired at {now} ms"))?;
            Ok(())
        }
        Write::AppendInbound(m) => append_inbound(conn, m),
        Write::SaveCursor {
            subscription,
            delivered,
        } => {
            conn.prepare_cached(
                "INSERT INTO cursors (subscription, delivered) VALUES (?1, ?2)
                 ON CONFLICT (subscription) DO UPDATE
                 SET delivered = max(delivered, excluded.delivered)",
            )
            .and_then(|mut s| s.execute(params![subscription.as_str(), delivered.0]))
            .doing(|| format!("save cursor {delivered} of subscription {subscription}"))?;
            conn.prepare_cached("DELETE FROM inbound WHERE subscription = ?1 AND seq <= ?2")
                .and_then(|mut s| s.execute(params![subscription.as_str(), delivered.0]))
                .doing(|| format!("delete inbound messages of {subscription} up to {delivered}"))?;
            Ok(())
        }
        Write::PutSubscription(sub) => put_subscription(conn, sub),
        Write::DeadLetter(d) => dead_letter(conn, d),
    }
}

fn put_subscription(conn: &Connection, sub: &Subscription) -> Result<(), StoreError> {
    let created = to_sql("created", sub.created)?;
    conn.prepare_cached(
        "INSERT INTO subscriptions (name, topic, from_mesh, proof, created)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (name) DO UPDATE SET topic = excluded.topic, from_mesh = excluded.from_mesh,
         proof = excluded.proof",
    )
    .and_then(|mut s| {
        s.execute(params![
            sub.name.as_str(),
            sub.topic.as_str(),
            sub.from.as_ref().map(|m| m.as_str()),
            form_to_sql(sub.form),
            created
        ])
    })
    .doing(|| format!("store durable subscription {}", sub.name))?;
    Ok(())
}

/// The `subscriptions.proof` value of `form`.
pub(crate) fn form_to_sql(form: Form) -> i64 {
    match form {
        Form::Spec => 0,
        Form::Export => 1,
    }
}

fn dead_letter(conn: &Connection, d: &DeadLetter) -> Result<(), StoreError> {
    let at = to_sql("at", d.at)?;
    conn.prepare_cached(
        "INSERT INTO dead_letters (id, destination, topic, priority, qos, reason, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (id) DO NOTHING",
    )
    .and_then(|mut s| {
        s.execute(params![
            &d.id.0[..],
            d.destination.as_str(),
            d.topic.as_str(),
            d.priority.get(),
            d.qos.level(),
            d.reason,
            at
        ])
    })
    .doing(|| format!("record dead letter {}", d.id))?;
    Ok(())
}

fn remember(conn: &Connection, d: &DeliveredId) -> Result<(), StoreError> {
    let until = to_sql("until", d.until)?;
    conn.prepare_cached(
        "INSERT INTO delivered (id, until) VALUES (?1, ?2)
         ON CONFLICT (id) DO UPDATE SET until = max(until, excluded.until)",
    )
    .and_then(|mut s| s.execute(params![&d.id.0[..], until]))
    .doing(|| format!("insert delivered id {}", d.id))?;
    Ok(())
}

fn append_inbound(conn: &Connection, m: &InboundMessage) -> Result<(), StoreError> {
    let received = to_sql("received", m.received)?;
    conn.prepare_cached(
        "INSERT INTO inbound (subscription, id, received, payload, source)
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (subscription, id) DO NOTHING",
    )
    .and_then(|mut s| {
        s.execute(params![
            m.subscription.as_str(),
            &m.id.0[..],
            received,
            &m.payload,
            m.source.as_ref().map(|s| s.as_str())
        ])
    })
    .doing(|| {
        format!(
            "insert inbound message {} for subscription {}",
            m.id, m.subscription
        )
    })?;
    Ok(())
}
