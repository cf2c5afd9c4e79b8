//! Reading one row's columns into typed values: every failure names table, row and column.

use std::fmt::Display;
use std::str::FromStr;

use meshfed_proto::envelope::{EnvelopeId, Timestamp};
use rusqlite::types::FromSql;
use rusqlite::{Connection, Params, Row};

use crate::error::{Doing, StoreError};

/// Runs `sql` and parses every row it returns with `parse`; `action` names the read in errors.
pub(crate) fn rows<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    action: impl Fn() -> String,
    parse: impl Fn(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).doing(&action)?;
    let found = stmt
        .query_map(params, |row| Ok(parse(row)))
        .doing(&action)?;
    found.map(|r| r.doing(&action)?).collect()
}

/// Like [`rows`], for a query that returns at most one row.
pub(crate) fn row<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    action: impl Fn() -> String,
    parse: impl Fn(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    Ok(rows(conn, sql, params, action, parse)?.into_iter().next())
}

/// One row of `table`, known by `key` in error messages.
pub(crate) struct Cells<'a, 'r> {
    table: &'static str,
    key: String,
    row: &'a Row<'r>,
}

impl<'a, 'r> Cells<'a, 'r> {
    /// Wraps `row`; `key` is how errors name it (a primary key, or `id#position`).
    pub(crate) fn new(table: &'static str, key: String, row: &'a Row<'r>) -> Self {
        Self { table, key, row }
    }

    /// Wraps `row`, naming it by its `key_column` as stored.
    pub(crate) fn keyed(table: &'static str, key_column: &str, row: &'a Row<'r>) -> Self {
        let key = match row.get::<_, String>(key_column) {
            Ok(key) => key,
            Err(_) => format!("with unreadable {key_column}"),
        };
        Self::new(table, key, row)
    }

    /// The row's name in error messages.
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// The error for a bad value in `column` of this row.
    pub(crate) fn corrupt(&self, column: &'static str, problem: impl ToString) -> StoreError {
        StoreError::corrupt(self.table, self.key.clone(), column, problem)
    }

    fn raw<T: FromSql>(&self, column: &'static str) -> Result<T, StoreError> {
        self.row
            .get::<_, T>(column)
            .map_err(|e| self.corrupt(column, e))
    }

    /// A non-null text column.
    pub(crate) fn text(&self, column: &'static str) -> Result<String, StoreError> {
        self.raw(column)
    }

    /// A nullable text column.
    pub(crate) fn opt_text(&self, column: &'static str) -> Result<Option<String>, StoreError> {
        self.raw(column)
    }

    /// A text column parsed into `T`.
    pub(crate) fn parse<T>(&self, column: &'static str) -> Result<T, StoreError>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.text(column)?
            .parse()
            .map_err(|e| self.corrupt(column, e))
    }

    /// A nullable text column parsed into `T`.
    pub(crate) fn opt_parse<T>(&self, column: &'static str) -> Result<Option<T>, StoreError>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.opt_text(column)?
            .map(|s| s.parse().map_err(|e| self.corrupt(column, e)))
            .transpose()
    }

    /// A non-null blob column.
    pub(crate) fn blob(&self, column: &'static str) -> Result<Vec<u8>, StoreError> {
        self.raw(column)
    }

    /// A blob column that must hold exactly 48 bytes (a SHA-384 digest).
    pub(crate) fn digest(&self, column: &'static str) -> Result<[u8; 48], StoreError> {
        let bytes = self.blob(column)?;
        <[u8; 48]>::try_from(bytes.as_slice()).map_err(|_| {
            self.corrupt(
                column,
                format!("a SHA-384 digest has 48 bytes, found {}", bytes.len()),
            )
        })
    }

    /// A non-null integer column.
    pub(crate) fn int(&self, column: &'static str) -> Result<i64, StoreError> {
        self.raw(column)
    }

    /// A non-null integer column that must not be negative (a count, a version, a serial).
    pub(crate) fn uint(&self, column: &'static str) -> Result<u64, StoreError> {
        let n = self.int(column)?;
        u64::try_from(n).map_err(|_| self.corrupt(column, format!("{n} is negative")))
    }

    /// A non-null integer column that must fit a `u8` and parse into `T` (priority, qos).
    pub(crate) fn small<T>(&self, column: &'static str) -> Result<T, StoreError>
    where
        T: TryFrom<u8>,
        T::Error: Display,
    {
        let n = self.int(column)?;
        let n =
            u8::try_from(n).map_err(|_| self.corrupt(column, format!("{n} is out of range")))?;
        T::try_from(n).map_err(|e| self.corrupt(column, e))
    }

    /// A blob column that must hold an envelope id (16 bytes).
    pub(crate) fn envelope_id(&self, column: &'static str) -> Result<EnvelopeId, StoreError> {
        let bytes = self.blob(column)?;
        <[u8; 16]>::try_from(bytes.as_slice())
            .map(EnvelopeId)
            .map_err(|_| {
                self.corrupt(
                    column,
                    format!("an envelope id has 16 bytes, found {}", bytes.len()),
                )
            })
    }

    /// A non-null timestamp column.
    pub(crate) fn time(&self, column: &'static str) -> Result<Timestamp, StoreError> {
        let ms: i64 = self.raw(column)?;
        self.time_from(column, ms)
    }

    /// A nullable timestamp column.
    pub(crate) fn opt_time(&self, column: &'static str) -> Result<Option<Timestamp>, StoreError> {
        let ms: Option<i64> = self.raw(column)?;
        ms.map(|ms| self.time_from(column, ms)).transpose()
    }

    fn time_from(&self, column: &'static str, ms: i64) -> Result<Timestamp, StoreError> {
        u64::try_from(ms)
            .map(Timestamp)
            .map_err(|_| self.corrupt(column, format!("timestamp {ms} is before the Unix epoch")))
    }
}
