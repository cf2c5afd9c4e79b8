//! Component tokens (DESIGN.md §2, Tokens): a record of each JWT this gateway issued to a
//! component of its mesh — who it names and what it allows, never the token itself — and
//! whether it was revoked. The gateway loads the revoked ones at start and checks every
//! request against them; a record goes once its token has expired ([`Store::prune_tokens`]),
//! since an expired token is refused anyway.
//!
//! The store keeps roles and actions as the words the gateway gave; it parses topic patterns.

use meshfed_proto::TopicPattern;
use meshfed_proto::envelope::Timestamp;
use rusqlite::{OptionalExtension as _, params};

use crate::Store;
use crate::cells::{Cells, rows};
use crate::error::{Doing, StoreError};
use crate::time_fmt::to_sql;

/// A token this gateway issued, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentToken {
    /// Its id (`jti`).
    pub jti: String,
    /// The component it names (`sub`).
    pub subject: String,
    /// Its roles; words without spaces.
    pub roles: Vec<String>,
    /// Its attributes: names without `=`, values without control characters.
    pub attributes: std::collections::BTreeMap<String, String>,
    /// The topic patterns it may use.
    pub topics: Vec<TopicPattern>,
    /// What it may do (`publish`, `subscribe`, `request`); words without spaces.
    pub actions: Vec<String>,
    /// When it was issued.
    pub issued: Timestamp,
    /// When it expires.
    pub expires: Timestamp,
    /// When it was revoked, if it was.
    pub revoked: Option<Timestamp>,
}

impl ComponentToken {
    fn from_row(row: &rusqlite::Row<'_>) -> Result<Self, StoreError> {
        let c = Cells::keyed("component_tokens", "jti", row);
        let words = |column| Ok::<_, StoreError>(split(&c.text(column)?));
        let topics = words("topics")?
            .iter()
            .map(|t| t.parse().map_err(|e| c.corrupt("topics", e)))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            jti: c.text("jti")?,
            subject: c.text("subject")?,
            roles: words("roles")?,
            attributes: (c.text("attributes")?.lines())
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            topics,
            actions: words("actions")?,
            issued: c.time("issued")?,
            expires: c.time("expires")?,
            revoked: c.opt_time("revoked")?,
        })
    }
}

fn split(text: &str) -> Vec<String> {
    text.split(' ')
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

fn join<T: AsRef<str>>(words: &[T]) -> String {
    words
        .iter()
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join(" ")
}

const COLUMNS: &str = "jti, subject, roles, attributes, topics, actions, issued, expires, revoked";

impl Store {
    /// Records a token this gateway issued.
    pub fn record_token(&self, token: &ComponentToken) -> Result<(), StoreError> {
        let action = || format!("record token {} issued to {:?}", token.jti, token.subject);
        let topics: Vec<&str> = token.topics.iter().map(TopicPattern::as_str).collect();
        self.conn()
            .execute(
                "INSERT INTO component_tokens
                 (jti, subject, roles, topics, actions, issued, expires, attributes)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    token.jti,
                    token.subject,
                    join(&token.roles),
                    join(&topics),
                    join(&token.actions),
                    to_sql("issued", token.issued)?,
                    to_sql("expires", token.expires)?,
                    (token.attributes.iter())
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join("\n"),
                ],
            )
            .doing(action)?;
        Ok(())
    }

    /// Marks token `jti` revoked at `at` (a token revoked already keeps its first time).
    /// Returns the token as now recorded; `None` if no token of that id is recorded (never
    /// issued here, or expired and pruned).
    pub fn revoke_token(
        &self,
        jti: &str,
        at: Timestamp,
    ) -> Result<Option<ComponentToken>, StoreError> {
        let action = || format!("revoke token {jti}");
        let conn = self.conn();
        conn.execute(
            "UPDATE component_tokens SET revoked = ?2 WHERE jti = ?1 AND revoked IS NULL",
            params![jti, to_sql("revoked", at)?],
        )
        .doing(action)?;
        let sql = format!("SELECT {COLUMNS} FROM component_tokens WHERE jti = ?1");
        conn.query_row(&sql, [jti], |row| Ok(ComponentToken::from_row(row)))
            .optional()
            .doing(action)?
            .transpose()
    }

    /// Every recorded token, the latest issued first.
    pub fn tokens(&self) -> Result<Vec<ComponentToken>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM component_tokens ORDER BY issued DESC, jti");
        rows(
            &self.conn(),
            &sql,
            [],
            || "list the issued tokens".to_owned(),
            ComponentToken::from_row,
        )
    }

    /// The revoked tokens that have not been pruned, with when each expires.
    pub fn revoked_tokens(&self) -> Result<Vec<(String, Timestamp)>, StoreError> {
        rows(
            &self.conn(),
            "SELECT jti, expires FROM component_tokens WHERE revoked IS NOT NULL",
            [],
            || "list the revoked tokens".to_owned(),
            |row| {
                let c = Cells::keyed("component_tokens", "jti", row);
                Ok((c.text("jti")?, c.time("expires")?))
            },
        )
    }

    /// Forgets the tokens that expired before `before`; returns how many.
    pub fn prune_tokens(&self, before: Timestamp) -> Result<usize, StoreError> {
        self.conn()
            .execute(
                "DELETE FROM component_tokens WHERE expires < ?1",
                [to_sql("before", before)?],
            )
            .doing(|| "forget expired tokens".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(jti: &str, expires: u64) -> ComponentToken {
        ComponentToken {
            jti: jti.into(),
            subject: "erp".into(),
            roles: vec!["writer".into(), "ops".into()],
            attributes: [("site".to_owned(), "north = 3".to_owned())].into(),
            topics: vec!["orders/#".parse().unwrap(), "invoices/+".parse().unwrap()],
            actions: vec!["publish".into()],
            issued: Timestamp(1_000),
            expires: Timestamp(expires),
            revoked: None,
        }
    }

    #[test]
    fn a_recorded_token_reads_back_and_its_revocation_is_kept_until_it_expires() {
        let store = Store::open_in_memory().unwrap();
        store.record_token(&token("a", 10_000)).unwrap();
        store.record_token(&token("b", 20_000)).unwrap();
        assert_eq!(store.tokens().unwrap().len(), 2);
        assert!(store.revoked_tokens().unwrap().is_empty());

        let revoked = store.revoke_token("a", Timestamp(5_000)).unwrap().unwrap();
        assert_eq!(
            revoked,
            ComponentToken {
                revoked: Some(Timestamp(5_000)),
                ..token("a", 10_000)
            }
        );
        // A second revocation keeps the first time.
        let again = store.revoke_token("a", Timestamp(6_000)).unwrap().unwrap();
        assert_eq!(again.revoked, Some(Timestamp(5_000)));
        assert_eq!(
            store.revoked_tokens().unwrap(),
            vec![("a".to_owned(), Timestamp(10_000))]
        );
        assert_eq!(store.revoke_token("nope", Timestamp(5_000)).unwrap(), None);

        assert_eq!(store.prune_tokens(Timestamp(15_000)).unwrap(), 1);
        assert!(store.revoked_tokens().unwrap().is_empty());
        let left: Vec<String> = store.tokens().unwrap().into_iter().map(|t| t.jti).collect();
        assert_eq!(left, ["b"]);
    }

    #[test]
    fn a_token_id_is_recorded_once() {
        let store = Store::open_in_memory().unwrap();
        store.record_token(&token("a", 10_000)).unwrap();
        assert!(store.record_token(&token("a", 10_000)).is_err());
    }
}
