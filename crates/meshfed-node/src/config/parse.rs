//! The file edge: `meshfed.toml` as serde sees it, and its conversion into [`NodeConfig`].

use std::fmt::Display;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{
    ApiConfig, FederationConfig, IdentityConfig, MAX_MAX_FRAME_SIZE, MAX_NODE_CERT_VALIDITY,
    MIN_MAX_FRAME_SIZE, NodeConfig, NodeSection, StoreConfig,
};

/// The configuration file cannot be used. Every variant names the file; those about a value
/// name its line and key too.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {}", file.display())]
    Read {
        /// The configuration file.
        file: PathBuf,
        /// What the file system said.
        #[source]
        source: io::Error,
    },
    /// The file is not TOML of the expected shape (syntax, unknown key, wrong type).
    #[error("{}:{line}:{column}: {message}", file.display())]
    Syntax {
        /// The configuration file.
        file: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// What the TOML reader said.
        message: String,
    },
    /// A required key is absent.
    #[error("{}: missing required key {key}", file.display())]
    Missing {
        /// The configuration file.
        file: PathBuf,
        /// The key, `section.name`.
        key: &'static str,
    },
    /// A value does not parse into its type or is out of range.
    #[error("{}:{line}: {key} = {value}: {reason}", file.display())]
    Invalid {
        /// The configuration file.
        file: PathBuf,
        /// 1-based line of the value.
        line: usize,
        /// The key, `section.name`.
        key: &'static str,
        /// The value as written.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawFile {
    node: RawNode,
    federation: RawFederation,
    api: RawApi,
    identity: RawIdentity,
    store: RawStore,
}

type Text = Option<Spanned<String>>;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawNode {
    mesh: Text,
    name: Text,
    role: Text,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawFederation {
    listen: Text,
    heartbeat_interval: Text,
    handshake_timeout: Text,
    max_frame_size: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawApi {
    listen: Text,
    token_file: Text,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawIdentity {
    ca_cert: Text,
    ca_key: Text,
    node_cert: Text,
    node_key: Text,
    node_cert_validity: Text,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawStore {
    path: Text,
}

pub(super) fn parse(text: &str, file: &Path) -> Result<NodeConfig, ConfigError> {
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let (line, column) = e
            .span()
            .map_or((1, 1), |span| line_and_column(text, span.start));
        ConfigError::Syntax {
            file: file.to_path_buf(),
            line,
            column,
            message: e.message().trim_end().to_owned(),
        }
    })?;
    let f = Fields { file, text };
    Ok(NodeConfig {
        node: f.node(raw.node)?,
        federation: f.federation(raw.federation)?,
        api: f.api(raw.api)?,
        identity: f.identity(raw.identity)?,
        store: StoreConfig {
            path: f.value("store.path", raw.store.path, StoreConfig::default().path)?,
        },
    })
}

/// Turns raw values into typed ones, naming the file, line and key on failure.
struct Fields<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Fields<'_> {
    fn node(&self, raw: RawNode) -> Result<NodeSection, ConfigError> {
        Ok(NodeSection {
            mesh: self.required("node.mesh", raw.mesh)?,
            name: self.required("node.name", raw.name)?,
            role: self.value("node.role", raw.role, Default::default())?,
        })
    }

    fn federation(&self, raw: RawFederation) -> Result<FederationConfig, ConfigError> {
        let d = FederationConfig::default();
        Ok(FederationConfig {
            listen: self.value("federation.listen", raw.listen, d.listen)?,
            heartbeat_interval: self.duration(
                "federation.heartbeat_interval",
                raw.heartbeat_interval,
                d.heartbeat_interval,
                None,
            )?,
            handshake_timeout: self.duration(
                "federation.handshake_timeout",
                raw.handshake_timeout,
                d.handshake_timeout,
                None,
            )?,
            max_frame_size: self.frame_size(raw.max_frame_size, d.max_frame_size)?,
        })
    }

    fn api(&self, raw: RawApi) -> Result<ApiConfig, ConfigError> {
        let d = ApiConfig::default();
        Ok(ApiConfig {
            listen: self.value("api.listen", raw.listen, d.listen)?,
            token_file: self.value("api.token_file", raw.token_file, d.token_file)?,
        })
    }

    fn identity(&self, raw: RawIdentity) -> Result<IdentityConfig, ConfigError> {
        let d = IdentityConfig::default();
        Ok(IdentityConfig {
            ca_cert: self.value("identity.ca_cert", raw.ca_cert, d.ca_cert)?,
            ca_key: self.value("identity.ca_key", raw.ca_key, d.ca_key)?,
            node_cert: self.value("identity.node_cert", raw.node_cert, d.node_cert)?,
            node_key: self.value("identity.node_key", raw.node_key, d.node_key)?,
            node_cert_validity: self.duration(
                "identity.node_cert_validity",
                raw.node_cert_validity,
                d.node_cert_validity,
                Some(MAX_NODE_CERT_VALIDITY),
            )?,
        })
    }

    fn invalid(
        &self,
        key: &'static str,
        span: Range<usize>,
        value: String,
        reason: String,
    ) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_path_buf(),
            line: line_and_column(self.text, span.start).0,
            key,
            value,
            reason,
        }
    }

    fn required<T>(&self, key: &'static str, raw: Text) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        let raw = raw.ok_or_else(|| ConfigError::Missing {
            file: self.file.to_path_buf(),
            key,
        })?;
        self.convert(key, raw, |s| s.parse::<T>().map_err(|e| e.to_string()))
    }

    fn value<T>(&self, key: &'static str, raw: Text, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        match raw {
            None => Ok(default),
            Some(raw) => self.convert(key, raw, |s| s.parse::<T>().map_err(|e| e.to_string())),
        }
    }

    /// A humantime duration ("5s", "24h"): non-zero and at most `max` if given.
    fn duration(
        &self,
        key: &'static str,
        raw: Text,
        default: Duration,
        max: Option<Duration>,
    ) -> Result<Duration, ConfigError> {
        let Some(raw) = raw else {
            return Ok(default);
        };
        self.convert(key, raw, |s| {
            let d = humantime::parse_duration(s)
                .map_err(|e| format!("{e} (write durations like \"5s\", \"10m\", \"24h\")"))?;
            if d.is_zero() {
                return Err("must be longer than zero".to_owned());
            }
            match max {
                Some(max) if d > max => Err(format!(
                    "must be at most {}",
                    humantime::format_duration(max)
                )),
                _ => Ok(d),
            }
        })
    }

    fn frame_size(&self, raw: Option<Spanned<i64>>, default: u32) -> Result<u32, ConfigError> {
        let Some(raw) = raw else {
            return Ok(default);
        };
        let span = raw.span();
        let n = raw.into_inner();
        u32::try_from(n)
            .ok()
            .filter(|n| (MIN_MAX_FRAME_SIZE..=MAX_MAX_FRAME_SIZE).contains(n))
            .ok_or_else(|| {
                self.invalid(
                    "federation.max_frame_size",
                    span,
                    n.to_string(),
                    format!("must be between {MIN_MAX_FRAME_SIZE} and {MAX_MAX_FRAME_SIZE} bytes"),
                )
            })
    }

    fn convert<T>(
        &self,
        key: &'static str,
        raw: Spanned<String>,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        let span = raw.span();
        let value = raw.into_inner();
        f(&value).map_err(|reason| self.invalid(key, span, quoted(&value), reason))
    }
}

fn quoted(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// 1-based line and column of byte `offset` in `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(before.chars().count(), |nl| {
        before[nl + 1..].chars().count()
    }) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_err(text: &str) -> String {
        parse(text, Path::new("/x/meshfed.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn line_and_column_count_from_one() {
        assert_eq!(line_and_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_and_column("ab\ncd", 4), (2, 2));
    }

    #[test]
    fn minimal_file_gets_every_default() {
        let cfg = parse(
            "[node]\nmesh = \"plant-a\"\nname = \"gw1\"\n",
            Path::new("m.toml"),
        )
        .unwrap();
        let expected = NodeConfig::new("plant-a".parse().unwrap(), "gw1".parse().unwrap());
        assert_eq!(cfg, expected);
        assert_eq!(cfg.federation.listen.to_string(), "127.0.0.1:7443");
        assert_eq!(cfg.federation.heartbeat_interval, Duration::from_secs(5));
        assert_eq!(cfg.federation.handshake_timeout, Duration::from_secs(10));
        assert_eq!(cfg.federation.max_frame_size, 1_048_576);
        assert_eq!(cfg.api.listen.to_string(), "127.0.0.1:7080");
        assert_eq!(cfg.identity.node_cert_validity, Duration::from_secs(86_400));
        assert_eq!(cfg.store.path.as_str(), "store/meshfed.db");
    }

    #[test]
    fn bad_mesh_id_names_file_line_key_and_rule() {
        let err = parse_err("[node]\nmesh = \"Plant_A\"\nname = \"gw1\"\n");
        assert!(
            err.starts_with("/x/meshfed.toml:2: node.mesh = \"Plant_A\": invalid mesh id"),
            "{err}"
        );
        assert!(err.contains("[a-z0-9][a-z0-9-]{0,62}"), "{err}");
    }

    #[test]
    fn bad_duration_names_the_key_and_the_expected_form() {
        let err = parse_err(concat!(
            "[node]\nmesh = \"m\"\nname = \"n\"\n",
            "[federation]\nheartbeat_interval = \"5 parsecs\"\n",
        ));
        assert!(
            err.starts_with("/x/meshfed.toml:5: federation.heartbeat_interval = \"5 parsecs\": "),
            "{err}"
        );
        assert!(err.contains("\"24h\""), "{err}");
    }

    #[test]
    fn zero_timeout_is_rejected() {
        let err = parse_err(
            "[node]\nmesh = \"m\"\nname = \"n\"\n[federation]\nhandshake_timeout = \"0s\"\n",
        );
        assert!(
            err.ends_with("federation.handshake_timeout = \"0s\": must be longer than zero"),
            "{err}"
        );
    }

    #[test]
    fn node_cert_validity_beyond_a_year_is_rejected() {
        let err = parse_err(
            "[node]\nmesh = \"m\"\nname = \"n\"\n[identity]\nnode_cert_validity = \"400days\"\n",
        );
        assert!(
            err.contains("identity.node_cert_validity = \"400days\": must be at most"),
            "{err}"
        );
    }

    #[test]
    fn bad_address_names_the_value() {
        let err =
            parse_err("[node]\nmesh = \"m\"\nname = \"n\"\n[api]\nlisten = \"localhost:80\"\n");
        assert_eq!(
            err,
            "/x/meshfed.toml:5: api.listen = \"localhost:80\": invalid socket address syntax"
        );
    }

    #[test]
    fn frame_size_out_of_range_is_rejected() {
        let err =
            parse_err("[node]\nmesh = \"m\"\nname = \"n\"\n[federation]\nmax_frame_size = 0\n");
        assert!(
            err.contains("federation.max_frame_size = 0: must be between 1024 and 16777216"),
            "{err}"
        );
    }

    #[test]
    fn missing_mesh_is_named() {
        let err = parse_err("[node]\nname = \"n\"\n");
        assert_eq!(err, "/x/meshfed.toml: missing required key node.mesh");
    }

    #[test]
    fn unknown_key_is_a_syntax_error_with_its_position() {
        let err = parse_err("[node]\nmesh = \"m\"\nname = \"n\"\ncolour = \"blue\"\n");
        assert!(
            err.starts_with("/x/meshfed.toml:4:1: unknown field `colour`"),
            "{err}"
        );
    }

    #[test]
    fn wrong_type_is_a_syntax_error_with_its_position() {
        let err =
            parse_err("[node]\nmesh = \"m\"\nname = \"n\"\n[federation]\nheartbeat_interval = 5\n");
        assert!(
            err.starts_with("/x/meshfed.toml:5:22: invalid type: integer `5`"),
            "{err}"
        );
    }
}
