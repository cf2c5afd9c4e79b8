//! The store's tables and their migrations, versioned by `PRAGMA user_version`.
//!
//! Migration `i` (0-based) takes the file from version `i` to `i + 1`. Migrations are only ever
//! appended; a shipped one is never edited.

use rusqlite::{Connection, TransactionBehavior};

use crate::error::{Doing, StoreError};

/// One entry per schema version.
const MIGRATIONS: &[&str] = &[
    // 1: the registry — invitations and federations.
    "
    CREATE TABLE invitations (
        token_id    TEXT NOT NULL PRIMARY KEY,
        peer_mesh   TEXT NOT NULL,
        secret_hash BLOB NOT NULL,   -- SHA-384 of the one-time secret; the secret is never stored
        created     INTEGER NOT NULL, -- ms since the Unix epoch
        expires     INTEGER NOT NULL,
        used        INTEGER           -- NULL until consumed
    ) STRICT;

    CREATE TABLE federations (
        id               TEXT NOT NULL PRIMARY KEY,
        peer_mesh        TEXT NOT NULL,
        peer_node        TEXT,
        role             TEXT NOT NULL, -- 'initiator' | 'responder'
        state            TEXT NOT NULL, -- FederationState::name()
        state_reason     TEXT,
        agreement        BLOB NOT NULL, -- signed agreement, CBOR
        agreement_digest BLOB NOT NULL, -- SHA-384
        created          INTEGER NOT NULL,
        updated          INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX federations_by_created ON federations (created);
    -- At most one live federation per peer mesh; the store checks first to name the existing one.
    CREATE UNIQUE INDEX federations_one_live_per_peer ON federations (peer_mesh)
        WHERE state NOT IN ('terminated-graceful', 'terminated-forced');

    CREATE TABLE federation_addrs (
        federation_id TEXT NOT NULL REFERENCES federations (id) ON DELETE CASCADE,
        position      INTEGER NOT NULL,
        addr          TEXT NOT NULL, -- host:port
        PRIMARY KEY (federation_id, position)
    ) STRICT;

    CREATE TABLE federation_bundle (
        federation_id TEXT NOT NULL REFERENCES federations (id) ON DELETE CASCADE,
        position      INTEGER NOT NULL,
        cert_der      BLOB NOT NULL, -- a CA certificate of the peer's trust bundle
        PRIMARY KEY (federation_id, position)
    ) STRICT;
    ",
    // 2: the journal — outbound messages, the dedup window, durable subscribers.
    "
    CREATE TABLE outbound (
        seq               INTEGER PRIMARY KEY, -- acceptance order among the stored rows
        id                BLOB NOT NULL UNIQUE, -- EnvelopeId, 16 bytes
        destination       TEXT NOT NULL,        -- MeshId whose queue holds it
        priority          INTEGER NOT NULL,     -- 0..7
        qos               INTEGER NOT NULL,     -- 0..2
        deadline          INTEGER,              -- ms since the Unix epoch
        order_source      TEXT,                 -- order scope, all three or none
        order_destination TEXT,
        order_topic       TEXT,
        enqueued          INTEGER NOT NULL,
        size              INTEGER NOT NULL,     -- length(payload), for cheap backlog sums
        payload           BLOB NOT NULL
    ) STRICT;
    CREATE INDEX outbound_by_destination ON outbound (destination, priority DESC, seq);

    CREATE TABLE delivered (
        id    BLOB NOT NULL PRIMARY KEY, -- EnvelopeId of a delivered exactly-once message
        until INTEGER NOT NULL           -- the entry goes once now >= until
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX delivered_by_until ON delivered (until);

    CREATE TABLE inbound (
        seq          INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused: cursors stay valid
        subscription TEXT NOT NULL,
        id           BLOB NOT NULL,
        received     INTEGER NOT NULL,
        payload      BLOB NOT NULL,
        UNIQUE (subscription, id)
    ) STRICT;
    CREATE INDEX inbound_by_subscription ON inbound (subscription, seq);

    CREATE TABLE cursors (
        subscription TEXT NOT NULL PRIMARY KEY,
        delivered    INTEGER NOT NULL -- inbound.seq of the last message delivered
    ) STRICT;
    ",
    // 3: durable subscriptions (kept while their subscriber is away) and dead letters.
    "
    CREATE TABLE subscriptions (
        name      TEXT NOT NULL PRIMARY KEY,
        topic     TEXT NOT NULL, -- TopicPattern
        from_mesh TEXT,          -- MeshId, or NULL for any
        created   INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE dead_letters (
        id          BLOB NOT NULL PRIMARY KEY, -- EnvelopeId
        destination TEXT NOT NULL,
        topic       TEXT NOT NULL,
        priority    INTEGER NOT NULL,
        qos         INTEGER NOT NULL,
        reason      TEXT NOT NULL,
        at          INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX dead_letters_by_at ON dead_letters (at);
    ",
    // 4: the form a durable subscription's messages are kept in: 0 the spec JSON, 1 the export
    // form (the JSON with the envelope as it crossed, `proof=required`).
    "
    ALTER TABLE subscriptions ADD COLUMN proof INTEGER NOT NULL DEFAULT 0;
    ",
    // 5: agreements a federation had before it was re-established: its history.
    "
    CREATE TABLE federation_history (
        federation_id    TEXT NOT NULL REFERENCES federations (id) ON DELETE CASCADE,
        replaced         INTEGER NOT NULL, -- ms since the Unix epoch
        state            TEXT NOT NULL,    -- the state it left (FederationState::name())
        state_reason     TEXT,
        role             TEXT NOT NULL,
        agreement        BLOB NOT NULL,
        agreement_digest BLOB NOT NULL
    ) STRICT;
    CREATE INDEX federation_history_by_id ON federation_history (federation_id, replaced);
    ",
    // 6: trust bundle serials (CA rollover): the serial of the peer's bundle stored (0: the
    // handshake's), and the serial of this mesh's bundle the peer acknowledged.
    "
    CREATE TABLE federation_trust (
        federation_id       TEXT NOT NULL PRIMARY KEY REFERENCES federations (id) ON DELETE CASCADE,
        peer_bundle_serial  INTEGER NOT NULL DEFAULT 0,
        acked_bundle_serial INTEGER NOT NULL DEFAULT 0
    ) STRICT;
    ",
    // 7: revocation lists (this mesh's own and each partner's, as signed) and the node
    // certificates this node issued to itself, so that revoking a node can name their serials.
    "
    CREATE TABLE revocation_lists (
        mesh      TEXT NOT NULL PRIMARY KEY, -- whose list
        version   INTEGER NOT NULL,          -- only ever increases
        statement BLOB NOT NULL,             -- SignedStatement wire form, exactly as signed
        stored    INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE issued_certs (
        serial    BLOB NOT NULL PRIMARY KEY, -- big-endian, no leading zeros
        node      TEXT NOT NULL,
        not_after INTEGER NOT NULL,
        issued    INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX issued_certs_by_node ON issued_certs (node, issued);
    ",
    // 8: agreements a federation replaced by renegotiating in place, by version, and the offer
    // (capabilities and policy, CBOR) this side made for the agreement in force.
    "
    CREATE TABLE federation_agreements (
        federation_id    TEXT NOT NULL REFERENCES federations (id) ON DELETE CASCADE,
        version          INTEGER NOT NULL, -- the replaced agreement's version
        agreement        BLOB NOT NULL,    -- signed agreement, CBOR
        agreement_digest BLOB NOT NULL,    -- SHA-384
        replaced         INTEGER NOT NULL, -- ms since the Unix epoch
        PRIMARY KEY (federation_id, version)
    ) STRICT;

    CREATE TABLE federation_offers (
        federation_id TEXT NOT NULL PRIMARY KEY REFERENCES federations (id) ON DELETE CASCADE,
        offer         BLOB NOT NULL
    ) STRICT;
    ",
    // 9: from this version on, outbound messages and the delivered ids of log-only requests
    // are in the journal's segment log (`<store file>-segments/`), and the `outbound` table is
    // emptied into it at open. The version keeps an older meshfed, which would not see them,
    // from opening the file; the row the journal puts here once it has created the log makes
    // a store file that lost its log (copied alone, say) fail to open instead of starting
    // with an empty queue.
    "
    CREATE TABLE journal_log (
        created INTEGER NOT NULL -- 1: the segment log was created beside this file
    ) STRICT;
    ",
    // 10: custody — the custody secrets a relayed federation's ends keep, and what a broker
    // holds for destinations that are away (ciphertext only).
    "
    CREATE TABLE custody_secrets (
        federation_id TEXT NOT NULL REFERENCES federations (id) ON DELETE CASCADE,
        secret_id     TEXT NOT NULL,
        secret        BLOB NOT NULL,    -- 32 bytes
        created       INTEGER NOT NULL, -- ms since the Unix epoch
        PRIMARY KEY (federation_id, secret_id)
    ) STRICT;

    CREATE TABLE custody (
        id          BLOB NOT NULL PRIMARY KEY, -- EnvelopeId, 16 bytes
        destination TEXT NOT NULL,
        origin      TEXT NOT NULL,
        priority    INTEGER NOT NULL,          -- 0..7
        deadline    INTEGER,                   -- ms since the Unix epoch; NULL: none
        received    INTEGER NOT NULL,
        item        BLOB NOT NULL              -- the custody item as it travels (sealed)
    ) STRICT;
    CREATE INDEX custody_by_order ON custody (destination, priority DESC, deadline, received);
    ",
    // 11: component tokens — the JWTs this gateway issued to its mesh's components (never the
    // token itself), and when one was revoked; a row goes once its token has expired.
    "
    CREATE TABLE component_tokens (
        jti     TEXT NOT NULL PRIMARY KEY,
        subject TEXT NOT NULL,
        roles   TEXT NOT NULL,    -- space-separated
        topics  TEXT NOT NULL,    -- space-separated topic patterns
        actions TEXT NOT NULL,    -- space-separated
        issued  INTEGER NOT NULL, -- ms since the Unix epoch
        expires INTEGER NOT NULL,
        revoked INTEGER           -- NULL until revoked
    ) STRICT;
    CREATE INDEX component_tokens_by_expires ON component_tokens (expires);
    ",
    // 12: delegations — those this mesh issued and those issued to it, each as the signed JWT
    // (a delegation is useless without the delegate's own identity, so it is no secret); a
    // row goes once it has expired. Whether one was withdrawn is its issuer's revocation list.
    "
    CREATE TABLE delegations (
        id       TEXT NOT NULL PRIMARY KEY, -- the JWT's jti
        issuer   TEXT NOT NULL,             -- mesh
        delegate TEXT NOT NULL,             -- mesh
        token    TEXT NOT NULL,
        issued   INTEGER NOT NULL,          -- ms since the Unix epoch
        expires  INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX delegations_by_expires ON delegations (expires);
    ",
    // 13: retention — the mesh a durable subscription's message came from, so that it goes
    // once the agreement with that mesh no longer lets it be kept (NULL: kept before this).
    "
    ALTER TABLE inbound ADD COLUMN source TEXT;
    CREATE INDEX inbound_by_source ON inbound (source, received);
    CREATE INDEX dead_letters_by_destination ON dead_letters (destination, at);
    ",
    // 14: a component token's attributes (a line `name=value` each; names hold no `=`, values
    // no control character), and the CAs of each mesh whose messages a trusted intermediary
    // relayed here, as last accepted (so that the revocation lists relays pass on verify after
    // a restart too).
    "
    ALTER TABLE component_tokens ADD COLUMN attributes TEXT NOT NULL DEFAULT '';
    CREATE TABLE origin_cas (
        mesh    TEXT NOT NULL PRIMARY KEY,
        cas     BLOB NOT NULL, -- CBOR array of DER certificates
        updated INTEGER NOT NULL
    ) STRICT;
    ",
];

/// The schema version this build writes.
pub(crate) const VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the file up to [`VERSION`]. Runs in one IMMEDIATE transaction so that two processes
/// opening a fresh file at once do not both migrate it.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .doing(|| "begin the schema migration".into())?;
    let found: i64 = tx
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .doing(|| "read the schema version".into())?;
    let done = match usize::try_from(found) {
        Ok(done) if found <= VERSION => done,
        _ => {
            return Err(StoreError::UnknownSchema {
                found,
                supported: VERSION,
            });
        }
    };
    for (from, sql) in (found..).zip(&MIGRATIONS[done..]) {
        let to = from + 1;
        tx.execute_batch(sql)
            .doing(|| format!("migrate the schema to version {to}"))?;
        tx.pragma_update(None, "user_version", to)
            .doing(|| format!("record schema version {to}"))?;
    }
    tx.commit().doing(|| "commit the schema migration".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_stored_before_version_4_keep_the_spec_json_form() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..3] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 3).unwrap();
        conn.execute(
            "INSERT INTO subscriptions (name, topic, from_mesh, created) VALUES ('erp', '#', NULL, 1)",
            [],
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let proof: i64 = conn
            .query_row(
                "SELECT proof FROM subscriptions WHERE name = 'erp'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(proof, 0);
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, VERSION);
    }
}
