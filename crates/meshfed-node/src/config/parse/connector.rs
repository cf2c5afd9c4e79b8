//! `[[connector]]` as serde sees it, and its conversion into [`ConnectorConfig`].

use serde::Deserialize;
use toml::Spanned;

use meshfed_proto::dialect::{Dialect, LocalPattern, Mapping};
use meshfed_proto::envelope::{Priority, Qos};

use super::{ConfigError, Fields, Integer, Text};
use crate::config::DirPath;
use crate::config::connector::{
    Bus, ConnectorConfig, DEFAULT_RECONNECT_MAX, DEFAULT_REQUEST_TIMEOUT, ExportRule, ImportRule,
    JetStreamSource, MqttBus, MqttVersion, NatsAuth, NatsBus, TlsFiles,
};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawConnector {
    name: Text,
    kind: Text,
    url: Text,
    mqtt_version: Text,
    client_id: Text,
    username: Text,
    password_file: Text,
    token_file: Text,
    nkey_file: Text,
    creds_file: Text,
    ca_file: Text,
    cert_file: Text,
    key_file: Text,
    reconnect_max: Text,
    request_timeout: Text,
    export: Vec<RawExport>,
    import: Vec<RawImport>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawExport {
    local: Text,
    topic: Text,
    to: Text,
    qos: Integer,
    priority: Integer,
    retained: Text,
    jetstream_stream: Text,
    jetstream_durable: Text,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawImport {
    topic: Text,
    from: Text,
    local: Text,
    qos: Integer,
    retain: Option<Spanned<bool>>,
    jetstream: Option<Spanned<bool>>,
}

impl Fields<'_> {
    pub(super) fn connectors(
        &self,
        raw: Vec<RawConnector>,
    ) -> Result<Vec<ConnectorConfig>, ConfigError> {
        let mut out: Vec<ConnectorConfig> = Vec::with_capacity(raw.len());
        for c in raw {
            let span = c.name.as_ref().map(Spanned::span);
            let connector = self.connector(c)?;
            if let Some(span) = span
                && out.iter().any(|o| o.name == connector.name)
            {
                return Err(self.invalid(
                    "connector.name",
                    span,
                    format!("{:?}", connector.name.as_str()),
                    "another connector has this name".to_owned(),
                ));
            }
            out.push(connector);
        }
        Ok(out)
    }

    fn connector(&self, raw: RawConnector) -> Result<ConnectorConfig, ConfigError> {
        let name = self.required("connector.name", raw.name)?;
        let kind_span = raw.kind.as_ref().map(Spanned::span);
        let kind: String = self.required("connector.kind", raw.kind)?;
        let tls_files = TlsFiles {
            ca_file: self.path("connector.ca_file", raw.ca_file)?,
            cert_file: self.path("connector.cert_file", raw.cert_file)?,
            key_file: self.path("connector.key_file", raw.key_file)?,
        };
        if tls_files.cert_file.is_some() != tls_files.key_file.is_some() {
            return Err(ConfigError::Missing {
                file: self.file.to_path_buf(),
                key: if tls_files.cert_file.is_some() {
                    "connector.key_file"
                } else {
                    "connector.cert_file"
                },
            });
        }
        let url_span = raw.url.as_ref().map(Spanned::span).unwrap_or_default();
        let url: String = self.required("connector.url", raw.url)?;
        let bus = match kind.as_str() {
            "mqtt" => {
                for (key, v) in [
                    ("connector.token_file", &raw.token_file),
                    ("connector.nkey_file", &raw.nkey_file),
                    ("connector.creds_file", &raw.creds_file),
                ] {
                    self.only_for(key, v, "a NATS connector")?;
                }
                let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtts://") {
                    (true, rest)
                } else if let Some(rest) = url.strip_prefix("mqtt://") {
                    (false, rest)
                } else {
                    return Err(self.invalid(
                        "connector.url",
                        url_span,
                        format!("{url:?}"),
                        "an MQTT broker's url is mqtt://host:port or mqtts://host:port".into(),
                    ));
                };
                let Some((host, port)) = rest
                    .rsplit_once(':')
                    .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
                    .filter(|(h, _)| !h.is_empty())
                else {
                    return Err(self.invalid(
                        "connector.url",
                        url_span,
                        format!("{url:?}"),
                        "must name host:port after the scheme".into(),
                    ));
                };
                let version = match raw.mqtt_version {
                    None => MqttVersion::V5,
                    Some(v) => self.convert("connector.mqtt_version", v, |s| match s {
                        "5" => Ok(MqttVersion::V5),
                        "3.1.1" => Ok(MqttVersion::V311),
                        _ => Err("must be \"5\" or \"3.1.1\"".to_owned()),
                    })?,
                };
                let username: Option<String> = self.optional("connector.username", raw.username)?;
                let password_file = self.path("connector.password_file", raw.password_file)?;
                if password_file.is_some() && username.is_none() {
                    return Err(ConfigError::Missing {
                        file: self.file.to_path_buf(),
                        key: "connector.username",
                    });
                }
                Bus::Mqtt(MqttBus {
                    host: host.to_owned(),
                    port,
                    tls: (tls || tls_files != TlsFiles::default()).then_some(tls_files),
                    version,
                    client_id: self.optional("connector.client_id", raw.client_id)?,
                    username,
                    password_file,
                })
            }
            "nats" => {
                self.only_for(
                    "connector.mqtt_version",
                    &raw.mqtt_version,
                    "an MQTT connector",
                )?;
                self.only_for("connector.client_id", &raw.client_id, "an MQTT connector")?;
                let tls = url.starts_with("tls://");
                if !tls && !url.starts_with("nats://") {
                    return Err(self.invalid(
                        "connector.url",
                        url_span,
                        format!("{url:?}"),
                        "a NATS server's url is nats://host:port or tls://host:port".into(),
                    ));
                }
                let username: Option<String> = self.optional("connector.username", raw.username)?;
                let password_file = self.path("connector.password_file", raw.password_file)?;
                let mut auths = Vec::new();
                if let Some(f) = self.path("connector.token_file", raw.token_file)? {
                    auths.push(NatsAuth::Token(f));
                }
                if let Some(f) = self.path("connector.nkey_file", raw.nkey_file)? {
                    auths.push(NatsAuth::NKey(f));
                }
                if let Some(f) = self.path("connector.creds_file", raw.creds_file)? {
                    auths.push(NatsAuth::Creds(f));
                }
                match (username, password_file) {
                    (Some(username), Some(file)) => {
                        auths.push(NatsAuth::Password { username, file })
                    }
                    (None, None) => {}
                    (Some(_), None) => {
                        return Err(ConfigError::Missing {
                            file: self.file.to_path_buf(),
                            key: "connector.password_file",
                        });
                    }
                    (None, Some(_)) => {
                        return Err(ConfigError::Missing {
                            file: self.file.to_path_buf(),
                            key: "connector.username",
                        });
                    }
                }
                if auths.len() > 1 {
                    return Err(self.invalid(
                        "connector.url",
                        url_span,
                        format!("{url:?}"),
                        "give one way to authenticate to the server: token_file, \
                         username with password_file, nkey_file or creds_file"
                            .into(),
                    ));
                }
                Bus::Nats(NatsBus {
                    url,
                    tls: (tls || tls_files != TlsFiles::default()).then_some(tls_files),
                    auth: auths.pop().unwrap_or_default(),
                })
            }
            _ => {
                return Err(self.invalid(
                    "connector.kind",
                    kind_span.unwrap_or_default(),
                    format!("{kind:?}"),
                    "must be \"mqtt\" or \"nats\"".into(),
                ));
            }
        };
        let dialect = match bus {
            Bus::Mqtt(_) => Dialect::Mqtt,
            Bus::Nats(_) => Dialect::Nats,
        };
        let exports = raw
            .export
            .into_iter()
            .map(|r| self.export(r, &bus, dialect))
            .collect::<Result<_, _>>()?;
        let imports = raw
            .import
            .into_iter()
            .map(|r| self.import(r, &bus, dialect))
            .collect::<Result<_, _>>()?;
        Ok(ConnectorConfig {
            name,
            bus,
            exports,
            imports,
            reconnect_max: self.duration(
                "connector.reconnect_max",
                raw.reconnect_max,
                DEFAULT_RECONNECT_MAX,
                None,
            )?,
            request_timeout: self.duration(
                "connector.request_timeout",
                raw.request_timeout,
                DEFAULT_REQUEST_TIMEOUT,
                None,
            )?,
        })
    }

    fn export(
        &self,
        raw: RawExport,
        bus: &Bus,
        dialect: Dialect,
    ) -> Result<ExportRule, ConfigError> {
        let qos_span = raw.qos.as_ref().map(Spanned::span).unwrap_or_default();
        let mapping = self.mapping(
            ("connector.export.local", "connector.export.topic"),
            raw.local,
            raw.topic,
            dialect,
        )?;
        let qos = self.qos("connector.export.qos", raw.qos)?;
        let retained = match raw.retained {
            None => false,
            Some(v) => self.convert("connector.export.retained", v, |s| match s {
                "forward" => Ok(true),
                "skip" => Ok(false),
                _ => Err("must be \"forward\" or \"skip\"".to_owned()),
            })?,
        };
        let jetstream = match (raw.jetstream_stream, raw.jetstream_durable) {
            (None, None) => None,
            (Some(stream), durable) => {
                if let Bus::Mqtt(_) = bus {
                    return Err(self.invalid(
                        "connector.export.jetstream_stream",
                        stream.span(),
                        format!("{:?}", stream.get_ref()),
                        "only a NATS connector consumes through JetStream".into(),
                    ));
                }
                let stream: String =
                    self.required("connector.export.jetstream_stream", Some(stream))?;
                let durable: String = match durable {
                    Some(d) => self.required("connector.export.jetstream_durable", Some(d))?,
                    None => format!("meshfed-{}", stream.to_lowercase()),
                };
                Some(JetStreamSource { stream, durable })
            }
            (None, Some(_)) => {
                return Err(ConfigError::Missing {
                    file: self.file.to_path_buf(),
                    key: "connector.export.jetstream_stream",
                });
            }
        };
        if qos == Qos::ExactlyOnce && matches!(bus, Bus::Nats(_)) && jetstream.is_none() {
            return Err(self.invalid(
                "connector.export.qos",
                qos_span,
                "2".into(),
                "plain NATS core carries at most qos 1; consume through JetStream \
                 (jetstream_stream) for qos 2"
                    .into(),
            ));
        }
        Ok(ExportRule {
            mapping,
            to: self.required("connector.export.to", raw.to)?,
            qos,
            priority: match raw.priority {
                None => Priority::default(),
                Some(p) => {
                    let span = p.span();
                    let n = p.into_inner();
                    u8::try_from(n)
                        .ok()
                        .and_then(|n| Priority::try_from(n).ok())
                        .ok_or_else(|| {
                            self.invalid(
                                "connector.export.priority",
                                span,
                                n.to_string(),
                                "must be between 0 and 7".into(),
                            )
                        })?
                }
            },
            retained,
            jetstream,
        })
    }

    fn import(
        &self,
        raw: RawImport,
        bus: &Bus,
        dialect: Dialect,
    ) -> Result<ImportRule, ConfigError> {
        let qos_span = raw.qos.as_ref().map(Spanned::span).unwrap_or_default();
        let mapping = self.mapping(
            ("connector.import.local", "connector.import.topic"),
            raw.local,
            raw.topic,
            dialect,
        )?;
        let qos = self.qos("connector.import.qos", raw.qos)?;
        let span_of = |v: &Option<Spanned<bool>>| v.as_ref().map(Spanned::span).unwrap_or_default();
        let (retain_span, jetstream_span) = (span_of(&raw.retain), span_of(&raw.jetstream));
        let retain = raw.retain.is_some_and(Spanned::into_inner);
        let jetstream = raw.jetstream.is_some_and(Spanned::into_inner);
        match bus {
            Bus::Mqtt(_) if jetstream => {
                return Err(self.invalid(
                    "connector.import.jetstream",
                    jetstream_span,
                    "true".into(),
                    "only a NATS connector publishes through JetStream".into(),
                ));
            }
            Bus::Nats(_) if retain => {
                return Err(self.invalid(
                    "connector.import.retain",
                    retain_span,
                    "true".into(),
                    "NATS has no retained messages (publish through JetStream instead)".into(),
                ));
            }
            Bus::Nats(_) if qos == Qos::ExactlyOnce && !jetstream => {
                return Err(self.invalid(
                    "connector.import.qos",
                    qos_span,
                    "2".into(),
                    "plain NATS core carries at most qos 1; set jetstream = true (deduplicated \
                     on the envelope id) for qos 2"
                        .into(),
                ));
            }
            _ => {}
        }
        Ok(ImportRule {
            mapping,
            from: self.optional("connector.import.from", raw.from)?,
            qos,
            retain,
            jetstream,
        })
    }

    /// `local` (in `dialect`) ↔ `topic`, both required, with the same wildcards.
    fn mapping(
        &self,
        (local_key, topic_key): (&'static str, &'static str),
        local: Text,
        topic: Text,
        dialect: Dialect,
    ) -> Result<Mapping, ConfigError> {
        let Some(local) = local else {
            return Err(ConfigError::Missing {
                file: self.file.to_path_buf(),
                key: local_key,
            });
        };
        let pattern = self.convert(local_key, local.clone(), |s| {
            LocalPattern::parse(dialect, s).map_err(|e| e.to_string())
        })?;
        let topic_span = topic.as_ref().map(Spanned::span).unwrap_or_default();
        let federation = self.required(topic_key, topic)?;
        Mapping::new(pattern, federation).map_err(|e| {
            self.invalid(
                topic_key,
                topic_span,
                format!("{:?}", local.get_ref()),
                e.to_string(),
            )
        })
    }

    fn qos(&self, key: &'static str, raw: Integer) -> Result<Qos, ConfigError> {
        let Some(raw) = raw else {
            return Ok(Qos::AtLeastOnce);
        };
        let span = raw.span();
        let n = raw.into_inner();
        u8::try_from(n)
            .ok()
            .and_then(|n| Qos::try_from(n).ok())
            .ok_or_else(|| self.invalid(key, span, n.to_string(), "must be 0, 1 or 2".into()))
    }

    fn path(&self, key: &'static str, raw: Text) -> Result<Option<DirPath>, ConfigError> {
        self.optional(key, raw)
    }

    fn optional<T>(&self, key: &'static str, raw: Text) -> Result<Option<T>, ConfigError>
    where
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
    {
        raw.map(|r| self.required(key, Some(r))).transpose()
    }

    /// Refuses `value` when present: `key` is only for `what`.
    fn only_for(&self, key: &'static str, value: &Text, what: &str) -> Result<(), ConfigError> {
        match value {
            None => Ok(()),
            Some(v) => Err(self.invalid(
                key,
                v.span(),
                format!("{:?}", v.get_ref()),
                format!("only {what} takes this key"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::NodeConfig;
    use crate::config::connector::{Bus, MqttVersion, NatsAuth};

    fn parse(connectors: &str) -> Result<NodeConfig, String> {
        let text = format!("[node]\nmesh = \"plant-a\"\nname = \"gw\"\n{connectors}");
        NodeConfig::parse(&text, Path::new("m.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn a_connector_is_read_into_its_types() {
        let c = parse(
            r#"
[[connector]]
name = "plant-bus"
kind = "mqtt"
url = "mqtts://broker.local:8883"
mqtt_version = "3.1.1"
username = "gw"
password_file = "bus.password"
ca_file = "ca.pem"

[[connector.export]]
local = "plant/+/temp"
topic = "readings/+/temp"
to = "supplier-b"
qos = 2
priority = 6
retained = "forward"

[[connector.import]]
topic = "orders/#"
from = "supplier-b"
local = "plant/orders/#"
qos = 0
retain = true
"#,
        )
        .unwrap();
        let c = &c.connectors[0];
        let Bus::Mqtt(m) = &c.bus else {
            panic!("{:?}", c.bus)
        };
        assert_eq!((m.host.as_str(), m.port), ("broker.local", 8883));
        assert_eq!(m.version, MqttVersion::V311);
        assert!(m.tls.is_some());
        assert_eq!(c.exports[0].priority.get(), 6);
        assert!(c.exports[0].retained);
        assert!(c.imports[0].retain);
        assert_eq!(c.imports[0].from.as_ref().unwrap().as_str(), "supplier-b");
        let n = parse(
            "[[connector]]\nname = \"b\"\nkind = \"nats\"\nurl = \"tls://n:4222\"\ncreds_file = \"b.creds\"\n",
        )
        .unwrap();
        let Bus::Nats(n) = &n.connectors[0].bus else {
            panic!()
        };
        assert!(matches!(n.auth, NatsAuth::Creds(_)));
        assert!(n.tls.is_some());
    }

    #[test]
    fn a_bad_connector_is_refused_naming_the_key_and_why() {
        let mqtt = "[[connector]]\nname = \"m\"\nkind = \"mqtt\"\nurl = \"mqtt://h:1883\"\n";
        let nats = "[[connector]]\nname = \"n\"\nkind = \"nats\"\nurl = \"nats://h:4222\"\n";
        for (text, needle) in [
            (
                "[[connector]]\nname = \"m\"\nkind = \"amqp\"\nurl = \"x\"\n".to_owned(),
                "connector.kind = \"amqp\": must be \"mqtt\" or \"nats\"",
            ),
            (
                "[[connector]]\nname = \"m\"\nkind = \"mqtt\"\nurl = \"tcp://h:1\"\n".to_owned(),
                "mqtt://host:port or mqtts://host:port",
            ),
            (
                format!(
                    "{mqtt}[[connector.export]]\nlocal = \"a/+/b\"\ntopic = \"a/#\"\nto = \"x\"\n"
                ),
                "same wildcards in the same order",
            ),
            (
                format!(
                    "{mqtt}[[connector.export]]\nlocal = \"a/#/b\"\ntopic = \"a/#\"\nto = \"x\"\n"
                ),
                "only as its last level",
            ),
            (
                format!(
                    "{nats}[[connector.export]]\nlocal = \"a.>\"\ntopic = \"a/#\"\nto = \"x\"\nqos = 2\n"
                ),
                "plain NATS core carries at most qos 1",
            ),
            (
                format!("{nats}[[connector.import]]\ntopic = \"a/#\"\nlocal = \"a.>\"\nqos = 2\n"),
                "plain NATS core carries at most qos 1",
            ),
            (
                format!(
                    "{mqtt}[[connector.export]]\nlocal = \"a/#\"\ntopic = \"a/#\"\nto = \"x\"\njetstream_stream = \"S\"\n"
                ),
                "only a NATS connector consumes through JetStream",
            ),
            (
                format!(
                    "{nats}[[connector.import]]\ntopic = \"a/#\"\nlocal = \"a.>\"\nretain = true\n"
                ),
                "NATS has no retained messages",
            ),
            (
                format!("{mqtt}mqtt_version = \"4\"\n"),
                "must be \"5\" or \"3.1.1\"",
            ),
            (format!("{mqtt}{mqtt}"), "another connector has this name"),
            (
                format!("{nats}token_file = \"t\"\nnkey_file = \"k\"\n"),
                "give one way to authenticate",
            ),
            (
                format!("{mqtt}password_file = \"p\"\n"),
                "missing required key connector.username",
            ),
            (
                format!("{mqtt}cert_file = \"c\"\n"),
                "missing required key connector.key_file",
            ),
            (
                format!("{mqtt}[[connector.export]]\nlocal = \"a\"\ntopic = \"b\"\n"),
                "missing required key connector.export.to",
            ),
        ] {
            let e = parse(&text).unwrap_err();
            assert!(e.contains(needle), "{text}\n→ {e}");
        }
    }
}
