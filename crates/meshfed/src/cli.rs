//! The command line: one subcommand per action, each with its own argument struct.
//!
//! Every value that has a type is parsed into it here (mesh ids, node names, socket addresses),
//! so a bad value is a usage error (exit status 2) naming the value and the rule it breaks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::{PathBufValueParser, PossibleValuesParser, TypedValueParser as _};
use clap::{Args, Parser, Subcommand};
use meshfed_node::api::models::Format;
use meshfed_node::config::{DEFAULT_API_LISTEN, DEFAULT_FEDERATION_LISTEN, SignatureMode};
use meshfed_proto::envelope::{ContentType, Qos};
use meshfed_proto::{FederationId, MeshId, NodeName, Topic, TopicPattern};

/// Federates independently operated messaging meshes.
#[derive(Debug, Parser)]
#[command(name = "meshfed", version, propagate_version = true)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: GlobalArgs,

    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Arguments every subcommand takes.
#[derive(Debug, Args)]
pub(crate) struct GlobalArgs {
    /// The node directory: identity, configuration and store.
    #[arg(
        long,
        global = true,
        env = "MESHFED_DIR",
        default_value = "meshfed",
        value_name = "DIR"
    )]
    pub(crate) dir: PathBuf,
    /// How a command that prints data prints it: `table` (aligned columns for a list, key and
    /// value for one object; the default), `json` or `yaml`.
    #[arg(long, global = true, value_name = "FORMAT", value_enum)]
    pub(crate) output: Option<OutputFormat>,
    /// The same as `--output json`.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

/// The values of `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub(crate) enum OutputFormat {
    /// For people: aligned columns for a list, key and value for one object.
    #[default]
    Table,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

impl GlobalArgs {
    /// The format asked for: `--output`, `--json` (the same as `--output json`), or the
    /// table. `--json` with another `--output` is a usage error.
    pub(crate) fn output(&self) -> Result<OutputFormat, clap::Error> {
        match (self.output, self.json) {
            (None, false) => Ok(OutputFormat::Table),
            (None | Some(OutputFormat::Json), true) => Ok(OutputFormat::Json),
            (Some(format), false) => Ok(format),
            (Some(other), true) => {
                let name = clap::ValueEnum::to_possible_value(&other)
                    .map_or_else(String::new, |v| v.get_name().to_owned());
                Err(<Cli as clap::CommandFactory>::command().error(
                    clap::error::ErrorKind::ArgumentConflict,
                    format!("--json means --output json; it cannot be used with --output {name}"),
                ))
            }
        }
    }
}

/// What to do.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create a mesh identity in DIR: the mesh CA, this node's certificate and key, an admin
    /// token and meshfed.toml.
    Init(InitArgs),
    /// Run this node's gateway in the foreground until SIGTERM or Ctrl-C.
    Gateway(GatewayArgs),
    /// Run this node's broker in the foreground (a directory made by `init --role broker`): it
    /// relays end-to-end tunnels between meshes that do not link directly, by destination
    /// mesh, and never holds their content keys.
    Broker(GatewayArgs),
    /// Manage federations with other meshes (through the running gateway).
    #[command(subcommand)]
    Federation(FederationCommand),
    /// Follow the changes of federations, their links and their partners' breakers as they
    /// happen (through the running gateway): one line per change (`--output json`: one JSON
    /// object per line; `yaml`: one document each).
    Events(EventsArgs),
    /// Send a message to a federated mesh; prints each envelope id.
    Send(SendArgs),
    /// Print envelopes delivered to this mesh, one spec-layout JSON envelope per line.
    Subscribe(SubscribeArgs),
    /// Run three meshes and a broker on this machine: two federate directly, the third end to
    /// end through the broker, goes offline for a while and catches up.
    Demo(DemoArgs),
    /// Measure end to end, from one mesh's publish API to another mesh's subscriber: throughput
    /// at the highest rate the path takes, then latency at a fixed rate. Both meshes run in
    /// this process on loopback, in a temporary directory, unless --publisher and --subscriber
    /// name two running gateways.
    Bench(BenchArgs),
    /// Work with wire-format envelopes.
    #[command(subcommand)]
    Envelope(EnvelopeCommand),
    /// Manage the admin token of the running gateway, and the tokens it issues to components.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Roll the mesh CA over: partners receive the new trust bundle, signed by the old CA, over
    /// their links.
    #[command(subcommand)]
    Ca(CaCommand),
    /// The routing table: the meshes this node reaches through brokers (path vector).
    #[command(subcommand)]
    Route(RouteCommand),
    /// The connectors to the mesh's own MQTT or NATS bus (`[[connector]]` in meshfed.toml):
    /// their state and what they carried.
    #[command(subcommand)]
    Connector(ConnectorCommand),
    /// The audit trail (DIR's audit file, read whether the gateway runs or not): verify it,
    /// export or report what it holds, prove one message crossed, check such a proof.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// This mesh's policy (DIR/policy.toml): what it offers and requires of partners, and the
    /// agreement in force with each.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Delegations: letting a partner mesh relay this mesh's messages to meshes it federates
    /// with (the trusted intermediary), and those partners let this mesh relay.
    #[command(subcommand)]
    Delegation(DelegationCommand),
}

/// `meshfed delegation ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum DelegationCommand {
    /// Delegate to partner mesh MESH the relaying of this mesh's messages on some topics to
    /// some meshes. Prints the delegation (a signed JWT) for `meshfed delegation add` there.
    Issue {
        /// The relay: a mesh this mesh federates with.
        #[arg(value_name = "MESH")]
        delegate: MeshId,
        /// A mesh the relay may hand the messages to (repeat, or separate with commas).
        #[arg(
            long = "audience",
            value_name = "MESH",
            value_delimiter = ',',
            required = true
        )]
        audience: Vec<MeshId>,
        /// Topic patterns it covers (repeat, or separate with commas), e.g. `parts/#`.
        #[arg(long, value_name = "P", value_delimiter = ',', required = true)]
        topics: Vec<TopicPattern>,
        /// How many further delegations may hang below it (0: the relay cannot pass it on).
        #[arg(long, value_name = "N", default_value_t = 0)]
        depth: u8,
        /// How long it lives, at most 365 days.
        #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
    /// Take a delegation a partner issued to this mesh (checked against that partner's trust
    /// bundle).
    Add {
        /// The delegation, as `meshfed delegation issue` printed it; `-` reads it from stdin.
        #[arg(value_name = "TOKEN")]
        token: String,
    },
    /// The delegations this mesh issued or holds, each valid, revoked or expired.
    List,
    /// Withdraw a delegation this mesh issued: every partner learns it within a heartbeat
    /// interval, and transit on it stops.
    Revoke {
        /// The delegation's id, as `meshfed delegation list` shows it.
        #[arg(value_name = "ID")]
        id: String,
    },
}

/// `meshfed policy ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCommand {
    /// Print the policy in force and each federation's agreed terms (through the running
    /// gateway).
    Show {
        /// Only this federation's agreement.
        #[arg(long, value_name = "FED")]
        federation: Option<FederationId>,
    },
    /// Check a policy file without a gateway: every problem with its line and column (exit
    /// status 2), else what it offers.
    Check {
        /// The policy file.
        #[arg(value_name = "FILE", value_parser = PathBufValueParser::new())]
        file: PathBuf,
    },
    /// Make FILE this mesh's policy on the running gateway and propose it to every live
    /// partner: prints what each said. A partner that does not agree keeps the agreement in
    /// force; the changed policy is proposed again when its link comes up.
    Apply {
        /// The policy file.
        #[arg(value_name = "FILE", value_parser = PathBufValueParser::new())]
        file: PathBuf,
    },
}

/// `meshfed route ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum RouteCommand {
    /// Each mesh reached, its next hop, path, hops and round trip.
    List,
}

/// `meshfed audit ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Check the whole trail: every record against its MAC and hash, their order, every
    /// signed tree head, every partner's countersignature, and what partners reported. Exits 1
    /// naming each record or head that failed.
    Verify,
    /// Every record (JSON lines, or CSV), oldest first.
    Export {
        /// `json` (one record per line) or `csv`.
        #[arg(long, value_name = "FORMAT", default_value = "json")]
        format: ExportFormat,
        /// Records from this time on (RFC 3339).
        #[arg(long, value_name = "TIME")]
        from: Option<String>,
        /// Records before this time (RFC 3339).
        #[arg(long, value_name = "TIME")]
        to: Option<String>,
        /// One federation's log only.
        #[arg(long, value_name = "ID")]
        federation: Option<String>,
        /// One kind of record only (`handshake`, `lifecycle`, `refused`, `messages`, …).
        #[arg(long)]
        kind: Option<String>,
    },
    /// Per federation: agreements and policy versions, volumes, refusals by reason, lifecycle,
    /// compliance in force, anomalies, countersigned heads and discrepancies.
    Report {
        /// From this time (RFC 3339).
        #[arg(long, value_name = "TIME")]
        from: Option<String>,
        /// To this time (RFC 3339).
        #[arg(long, value_name = "TIME")]
        to: Option<String>,
        /// One federation only.
        #[arg(long, value_name = "ID")]
        federation: Option<String>,
    },
    /// The proof that envelope ENVELOPE_ID crossed: its digest record, the record's inclusion
    /// in a tree head the partner countersigned, and the envelope's batch signature — a JSON
    /// file for `meshfed audit check-proof`.
    Prove {
        /// The envelope (`env_…`).
        #[arg(value_name = "ENVELOPE_ID")]
        envelope: String,
        /// Write the proof here instead of to standard output.
        #[arg(long = "out", short = 'o', value_name = "FILE")]
        out: Option<std::path::PathBuf>,
    },
    /// Check a proof file with the CAs of the meshes that signed it (at least the
    /// countersigning partner's). Exits 1 naming the link that fails.
    CheckProof {
        /// The proof file.
        #[arg(value_name = "FILE")]
        file: std::path::PathBuf,
        /// A mesh CA certificate (PEM) to trust: repeat for each mesh.
        #[arg(long = "ca", value_name = "PEM", required = true)]
        cas: Vec<std::path::PathBuf>,
    },
}

/// How `meshfed audit export` writes records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ExportFormat {
    /// One JSON object per line.
    Json,
    /// Comma-separated values with a header line.
    Csv,
}

/// `meshfed connector ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum ConnectorCommand {
    /// Each connector: its broker, state, and messages exported, imported, unmapped, looped,
    /// refused, and errors.
    List,
    /// One connector, with its rules and its last error.
    Show {
        /// The connector's name.
        name: String,
    },
}

/// `meshfed ca ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum CaCommand {
    /// Start a CA rollover: make a new mesh CA and issuing CA, make the trust bundle the old
    /// CA and the new one, signed by the old CA, and have the running gateway send it to every
    /// partner. Run where the mesh CA key is.
    Rotate {
        /// The current mesh CA key, when it is not in the node directory.
        #[arg(long, value_name = "FILE", value_parser = PathBufValueParser::new())]
        root_key: Option<PathBuf>,
        /// Where to write the new mesh CA key (never over a file); required with --root-key.
        /// Default: DIR/ca/next/ca.key, which `retire-old` moves to DIR/ca/ca.key.
        #[arg(long, value_name = "FILE", value_parser = PathBufValueParser::new())]
        new_root_key_out: Option<PathBuf>,
    },
    /// End the rollover: the bundle becomes the new CA alone, the node's certificate comes from
    /// the new issuing CA, and partners verify this mesh against the new CA alone. Refused while
    /// a partner has not stored the new bundle, unless --force.
    RetireOld {
        /// The new mesh CA key, when `rotate` wrote it outside the node directory.
        #[arg(long, value_name = "FILE", value_parser = PathBufValueParser::new())]
        root_key: Option<PathBuf>,
        /// Retire the old CA even if a partner has not stored the new bundle (it will refuse
        /// this mesh until it is given the new CA another way).
        #[arg(long)]
        force: bool,
    },
    /// Show the mesh's trust bundle and which partners have stored it.
    Show,
}

/// `meshfed token ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Replace the admin token while the gateway runs: the new one is written to the token file
    /// (DIR/admin.token unless meshfed.toml says otherwise) and the old one stops working at
    /// once. Streams already open stay open.
    Rotate,
    /// Issue a token (a JWT signed by this gateway) to a component of this mesh: with it the
    /// component may publish and subscribe on the API within its topics and actions. Prints
    /// the token (only the token) on stdout.
    Issue {
        /// The component it is for.
        #[arg(long, value_name = "S")]
        subject: String,
        /// A role of the component (repeat for several); `admin` makes the token count as the
        /// admin token.
        #[arg(long = "role", value_name = "R")]
        roles: Vec<String>,
        /// An attribute of the component, NAME=VALUE (repeat for several), e.g. `site=north`:
        /// it crosses with what the component sends, for partners' identity mapping and access
        /// rules to match on.
        #[arg(long = "attr", value_name = "NAME=VALUE", value_parser = name_value)]
        attributes: Vec<(String, String)>,
        /// Topic patterns it may use (repeat, or separate with commas), e.g. `orders/#`.
        #[arg(long, value_name = "P", value_delimiter = ',')]
        topics: Vec<TopicPattern>,
        /// What it may do on them: publish, subscribe, request (comma-separated).
        #[arg(long, value_name = "A", value_delimiter = ',')]
        actions: Vec<String>,
        /// How long the token works, at most 30 days.
        #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
    /// List the component tokens this gateway issued that have not expired.
    List,
    /// Revoke a component token by its id (jti): refused from now on, also after restarts.
    Revoke {
        /// The token's id, as `token issue --json` and `token list` show it.
        jti: String,
    },
}

/// `meshfed gateway`.
#[derive(Debug, Args)]
pub(crate) struct GatewayArgs {
    /// Start over with a new, empty store (no federations, no queued messages); the existing
    /// store file, if any, is moved aside, not deleted.
    #[arg(long)]
    pub(crate) new_store: bool,
}

/// `meshfed federation ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum FederationCommand {
    /// Issue a one-time invitation for mesh ID; prints the token (only the token) on stdout.
    Invite {
        /// The mesh invited.
        #[arg(long, value_name = "ID")]
        peer: MeshId,
        /// How long the token works.
        #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
    /// Join the federation an invitation token offers.
    Join {
        /// The token printed by `meshfed federation invite` on the other mesh.
        token: String,
        /// Reach the inviting mesh through this broker (a mesh this node is federated with),
        /// end to end through a tunnel the broker relays without reading it.
        #[arg(long, value_name = "BROKER")]
        via: Option<MeshId>,
    },
    /// List federations with their status and link health.
    List,
    /// Show one federation in detail.
    Show {
        /// The federation id.
        id: FederationId,
    },
    /// Pause message flow on a federation.
    Suspend {
        /// The federation id.
        id: FederationId,
    },
    /// Resume message flow on a suspended federation.
    Resume {
        /// The federation id.
        id: FederationId,
    },
    /// List the meshes a broker's discovery directory holds. The directory is no trust anchor:
    /// join a mesh found there with an invitation from it, or check its CA fingerprint out of
    /// band first.
    Discover {
        /// The broker's API address (`host:port`); default: this node's, if it is a broker.
        #[arg(long, value_name = "ADDR")]
        broker: Option<std::net::SocketAddr>,
    },
    /// Propose the next agreement version with this node's current offer; prints the version
    /// both sides switched to, or the peer's reason for refusing (the old agreement stays).
    Renegotiate {
        /// The federation id.
        id: FederationId,
    },
    /// End a federation: gracefully (in-flight messages drain) or, with --force, at once.
    Terminate {
        /// The federation id.
        id: FederationId,
        /// Revoke immediately.
        #[arg(long)]
        force: bool,
    },
    /// Revoke a node of this mesh (a stolen gateway): every certificate naming MESH/NODE is
    /// refused from now on by every partner, which gets the signed revocation list at once (or
    /// when it next connects) and closes links using them. Prints the list's new version.
    RevokeNode {
        /// The node, as MESH/NODE; MESH must be this node's own mesh.
        #[arg(value_name = "MESH/NODE")]
        node: String,
    },
    /// Show this mesh's revocation list and those received from partner meshes.
    Revocations,
}

/// `meshfed send`.
#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    /// Destination mesh.
    #[arg(long, value_name = "MESH")]
    pub(crate) to: MeshId,
    /// Federation topic, e.g. line-3/temperature.
    #[arg(long, value_name = "TOPIC")]
    pub(crate) topic: Topic,
    /// Delivery guarantee: 0 at most once, 1 at least once, 2 exactly once.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub(crate) qos: u8,
    /// Priority 0 (lowest) to 7 (highest).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=7))]
    pub(crate) priority: u8,
    /// Deadline for delivery, e.g. 5s.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) max_latency: Option<Duration>,
    /// Media type of the payload; default: application/json when DATA is JSON, else text/plain.
    #[arg(long, value_name = "TYPE")]
    pub(crate) content_type: Option<ContentType>,
    /// Return only when the destination has acknowledged (needs qos 1 or 2).
    #[arg(long)]
    pub(crate) wait: bool,
    /// Keep order with the other ordered messages from this mesh to MESH on TOPIC.
    #[arg(long)]
    pub(crate) ordered: bool,
    /// The payload's schema id, checked against the schemas the agreement lists.
    #[arg(long, value_name = "ID")]
    pub(crate) schema_id: Option<String>,
    /// The data's classification label, checked against the labels the agreement lets cross.
    #[arg(long, value_name = "LABEL")]
    pub(crate) classification: Option<String>,
    /// A message property, NAME=VALUE (repeat for several, in order; a name may repeat), e.g.
    /// `traceparent=00-4bf9-01`: sealed with the payload, so that only the destination reads
    /// it; its subscribers see it in the envelope's `metadata.properties.user`.
    #[arg(long = "property", value_name = "NAME=VALUE", value_parser = name_value)]
    pub(crate) properties: Vec<(String, String)>,
    /// Correlation data for a reply, sent as the bytes of TEXT (1 to 256), sealed.
    #[arg(long, value_name = "TEXT")]
    pub(crate) correlation_data: Option<String>,
    /// The federation topic a reply is expected on, sealed.
    #[arg(long, value_name = "TOPIC")]
    pub(crate) reply_to: Option<Topic>,
    /// The payload: DATA, @FILE, or - for one message per line of standard input.
    #[arg(value_name = "DATA")]
    pub(crate) data: String,
}

/// `meshfed events`.
#[derive(Debug, Args)]
pub(crate) struct EventsArgs {
    /// Stop after this many changes.
    #[arg(long, value_name = "N")]
    pub(crate) count: Option<u64>,
}

/// `meshfed subscribe`.
#[derive(Debug, Args)]
pub(crate) struct SubscribeArgs {
    /// Topic pattern: + matches one segment, # the rest.
    #[arg(long, value_name = "PATTERN")]
    pub(crate) topic: Option<TopicPattern>,
    /// Only envelopes from this mesh.
    #[arg(long, value_name = "MESH")]
    pub(crate) from: Option<MeshId>,
    /// Resume where a subscription of this name left off (qos 1 and 2). Qos 2 envelopes are
    /// printed exactly once: each group is kept in DIR/subscribers from its acknowledgement
    /// until it is printed, so that neither a gateway nor a subscriber stopping in between
    /// loses it.
    #[arg(long, value_name = "NAME")]
    pub(crate) durable: Option<String>,
    /// Exit after N envelopes.
    #[arg(long, value_name = "N")]
    pub(crate) count: Option<u64>,
    /// Print each envelope in the export form: its JSON plus "proof", the envelope exactly as
    /// it crossed (base64 CBOR: signer certificate, signature or batch head and inclusion
    /// proof), so that `meshfed envelope inspect FILE --ca SOURCE-CA` can check who sent it.
    /// With --durable, the subscription keeps its messages in that form from now on.
    #[arg(long)]
    pub(crate) proof: bool,
}

/// `meshfed demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Stop by itself after this long (default: run until Ctrl-C).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) duration: Option<Duration>,
    /// Not an option of the demo, which makes its meshes in a temporary directory: this
    /// hidden argument stands in for the global `--dir` (clap propagates a global argument into
    /// a subcommand that has one of the same id, without showing it twice), so that the
    /// demo's help does not offer an option the demo does not use.
    #[arg(id = "dir", long = "dir", hide = true, value_name = "DIR")]
    _dir: Option<PathBuf>,
}

/// `meshfed bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Payload size of every message, e.g. 1KiB, 512B, 64KiB (at least 32 B: the first 32 carry
    /// the sequence number and send time).
    #[arg(long, value_name = "SIZE", default_value = "1KiB")]
    pub(crate) payload: ByteSize,
    /// Messages per phase (instead of --duration).
    #[arg(long, value_name = "N", conflicts_with = "duration", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) count: Option<u64>,
    /// How long each phase sends [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) duration: Option<Duration>,
    /// Messages per second in the latency phase.
    #[arg(long, value_name = "MSG_PER_S", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub(crate) rate: u32,
    /// Delivery guarantee to measure: 0 at most once, 1 at least once, 2 exactly once. At 1 and 2
    /// each publish is answered once the publishing gateway has persisted the message, so the
    /// measured path includes that write.
    #[arg(
        long,
        default_value = "0",
        value_parser = clap::value_parser!(u8).range(0..=2).try_map(Qos::try_from),
    )]
    pub(crate) qos: Qos,
    /// How both gateways sign envelopes on the link: batch (one signature per batch) or message
    /// (one per envelope); sets [delivery] signatures.
    #[arg(
        long,
        value_name = "MODE",
        default_value = "batch",
        conflicts_with = "compare",
        value_parser = PossibleValuesParser::new(["batch", "message"])
            .try_map(|s| s.parse::<SignatureMode>()),
    )]
    pub(crate) signatures: SignatureMode,
    /// With batch signatures, how long a streamed batch stays open before its head is signed
    /// (sets [delivery] sign_window on both gateways; "0ms" signs before sending). Default: the
    /// gateways' default, 2ms.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) sign_window: Option<Duration>,
    /// Measure with batch and then with message signatures and print both side by side, with
    /// the ratio batch/message.
    #[arg(long)]
    pub(crate) compare: bool,
    /// The audit level both meshes bench starts agree on (their policy's
    /// `compliance.audit_level`): `full` records a digest of every envelope on both sides.
    /// Default: the policy default, `refusals`.
    #[arg(long, value_name = "LEVEL", value_parser = PossibleValuesParser::new(["lifecycle", "refusals", "full"]), conflicts_with_all = ["publisher", "subscriber"])]
    pub(crate) audit: Option<String>,
    /// The frames of the publish and subscriber sockets: binary (raw payloads, no JSON or
    /// base64 per message) or json (text frames, as `send` and `subscribe` use).
    #[arg(long, value_name = "FORMAT", default_value = "binary", value_parser = PossibleValuesParser::new(["json", "binary"]).map(|s| if s == "json" { Format::Json } else { Format::Binary }))]
    pub(crate) format: Format,
    /// Node directory of a running gateway to publish on (with --subscriber): measure two
    /// running gateways instead of starting two meshes. The publisher needs an active
    /// federation with the subscriber's mesh that lets topic bench/load flow; the gateways sign
    /// as their meshfed.toml says, so --signatures and --compare do not apply.
    #[arg(
        long,
        value_name = "DIR",
        requires = "subscriber",
        conflicts_with_all = ["signatures", "compare", "sign_window"],
    )]
    pub(crate) publisher: Option<PathBuf>,
    /// Node directory of the running gateway whose live stream receives (with --publisher).
    #[arg(long, value_name = "DIR", requires = "publisher")]
    pub(crate) subscriber: Option<PathBuf>,
    /// Also start a broker mesh (bench-hub): each gateway federates with it, and the two
    /// gateways federate with each other through it (`federation join --via`), so every message
    /// crosses the broker in an end-to-end tunnel it relays.
    #[arg(long, conflicts_with_all = ["publisher", "subscriber"])]
    pub(crate) via_broker: bool,
    /// Measure the path through both meshes' own buses instead of the API: MQTT client →
    /// mosquitto → gateway A (MQTT connector) → gateway B (NATS connector) → nats-server → NATS
    /// client, with the machine's mosquitto and nats-server on free loopback ports (qos 0 or 1).
    /// The throughput phase sends --count messages (50000 by default), the latency phase
    /// --count or --rate × --duration.
    /// (--sign-window applies to both gateways.)
    #[arg(long, conflicts_with_all = ["publisher", "subscriber", "via_broker", "compare"])]
    pub(crate) buses: bool,
}

/// A number of bytes, written `1024`, `512B`, `1KiB`, `4MiB` or `1kB`/`1MB` (powers of ten).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ByteSize(pub(crate) u64);

impl std::str::FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(split);
        let n: u64 = digits.parse().map_err(|_| {
            format!("{s:?} is not a size: write a whole number with a unit, like 1KiB or 512B")
        })?;
        let scale: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "kB" | "KB" => 1_000,
            "MB" => 1_000_000,
            other => {
                return Err(format!(
                    "unknown size unit {other:?}: use B, KiB, MiB, kB or MB"
                ));
            }
        };
        n.checked_mul(scale)
            .map(Self)
            .ok_or_else(|| format!("{s:?} is too large"))
    }
}

impl std::fmt::Display for ByteSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            n if n >= 1 << 20 && n % (1 << 20) == 0 => write!(f, "{} MiB", n >> 20),
            n if n >= 1 << 10 && n % (1 << 10) == 0 => write!(f, "{} KiB", n >> 10),
            n => write!(f, "{n} B"),
        }
    }
}

/// `meshfed init`.
#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// The new mesh's id (`[a-z0-9][a-z0-9-]{0,62}`).
    #[arg(
        long,
        value_name = "ID",
        help = "The new mesh's id: [a-z0-9][a-z0-9-]{0,62}"
    )]
    pub(crate) mesh: MeshId,

    /// This node's name within the mesh (same rule as the mesh id).
    #[arg(long, value_name = "NAME", default_value = "gw1")]
    pub(crate) node: NodeName,

    /// Address the federation side listens on.
    #[arg(long, value_name = "ADDR", default_value_t = DEFAULT_FEDERATION_LISTEN)]
    pub(crate) listen: SocketAddr,

    /// Address the admin API listens on.
    #[arg(long, value_name = "ADDR", default_value_t = DEFAULT_API_LISTEN)]
    pub(crate) api: SocketAddr,

    /// What the node runs: `gateway` (`meshfed gateway`, the mesh's own messages) or `broker`
    /// (`meshfed broker`, a relay for meshes that do not link directly).
    #[arg(long, value_name = "ROLE", default_value = "gateway")]
    pub(crate) role: meshfed_node::config::Role,

    /// Replace an existing identity in DIR (its CA, keys, token and configuration).
    #[arg(long)]
    pub(crate) force: bool,

    /// Write the mesh CA (root) key to FILE (mode 0600; an existing FILE is never overwritten)
    /// instead of DIR/ca/ca.key, so that it can be kept offline: the gateway renews its
    /// certificate from the issuing CA key in DIR/ca/issuing.key.
    #[arg(long, value_name = "FILE")]
    pub(crate) root_key_out: Option<std::path::PathBuf>,

    /// Lifetime of node certificates: the first one, issued now, and those the gateway renews
    /// itself while it runs (written as `[identity] node_cert_validity`; at most 365 days).
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "24h",
        value_parser = node_cert_validity
    )]
    pub(crate) node_cert_validity: Duration,
}

/// A node certificate lifetime: a duration of at least one second and at most
/// [`meshfed_node::config::MAX_NODE_CERT_VALIDITY`].
fn node_cert_validity(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    let max = meshfed_node::config::MAX_NODE_CERT_VALIDITY;
    if d < Duration::from_secs(1) || d > max {
        return Err(format!(
            "must be from 1s to {} days",
            max.as_secs() / 86_400
        ));
    }
    Ok(d)
}

/// `NAME=VALUE`, split at the first `=` (the gateway checks both parts).
fn name_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{text:?} is not NAME=VALUE"))
}

/// `meshfed envelope ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum EnvelopeCommand {
    /// Print a wire-format envelope as the spec's JSON (stdout) and say whether its signature
    /// verifies against the source mesh's CA (stderr).
    ///
    /// Exit status: 0 when the envelope decodes (and, with --ca, its signature is valid); 1 when
    /// it does not decode or its signature is invalid; 2 when the CA file is unusable.
    Inspect(InspectArgs),
}

/// `meshfed envelope inspect`.
#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// The wire-format envelope; `-` reads it from standard input.
    #[arg(value_name = "FILE", value_parser = PathBufValueParser::new().map(Input::from))]
    pub(crate) file: Input,

    /// The source mesh's CA certificate (PEM) to verify the signature against.
    #[arg(long, value_name = "CERT")]
    pub(crate) ca: Option<PathBuf>,
}

/// Where a command reads its input from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Input {
    /// Standard input (written `-`).
    Stdin,
    /// A file.
    File(PathBuf),
}

impl From<PathBuf> for Input {
    fn from(path: PathBuf) -> Self {
        if path.as_os_str() == "-" {
            Self::Stdin
        } else {
            Self::File(path)
        }
    }
}

impl std::fmt::Display for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Stdin => f.write_str("standard input"),
            Self::File(path) => write!(f, "{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn init_defaults_node_and_addresses() {
        let cli =
            Cli::try_parse_from(["meshfed", "init", "--mesh", "plant-a", "--dir", "d"]).unwrap();
        let Command::Init(args) = cli.command else {
            panic!("parsed as {:?}", cli.command)
        };
        assert_eq!(args.node.as_str(), "gw1");
        assert_eq!(args.listen.to_string(), "127.0.0.1:7443");
        assert_eq!(args.api.to_string(), "127.0.0.1:7080");
        assert!(!args.force);
        assert_eq!(cli.global.dir, PathBuf::from("d"));
    }

    #[test]
    fn output_is_global_json_is_output_json_and_the_two_may_not_disagree() {
        let output = |argv: &[&str]| Cli::try_parse_from(argv).unwrap().global.output();
        let list = ["meshfed", "federation", "list"];
        assert_eq!(output(&list).unwrap(), OutputFormat::Table);
        let yaml = ["meshfed", "--output", "yaml", "federation", "list"];
        assert_eq!(output(&yaml).unwrap(), OutputFormat::Yaml);
        for argv in [
            &["meshfed", "federation", "list", "--json"][..],
            &["meshfed", "--json", "route", "list"],
            &[
                "meshfed",
                "federation",
                "list",
                "--output",
                "json",
                "--json",
            ],
        ] {
            assert_eq!(output(argv).unwrap(), OutputFormat::Json, "{argv:?}");
        }
        let err = output(&["meshfed", "token", "list", "--json", "--output", "table"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--json means --output json; it cannot be used with --output table"),
            "{err}"
        );
        let err = Cli::try_parse_from(["meshfed", "federation", "list", "--output", "xml"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("[possible values: table, json, yaml]"),
            "{err}"
        );
    }

    #[test]
    fn dir_may_come_before_the_subcommand() {
        let cli = Cli::try_parse_from(["meshfed", "--dir", "x", "init", "--mesh", "m"]).unwrap();
        assert_eq!(cli.global.dir, PathBuf::from("x"));
    }

    #[test]
    fn envelope_inspect_reads_a_file_or_dash_for_stdin() {
        let parse = |args: &[&str]| {
            let cli = Cli::try_parse_from(args).unwrap();
            let Command::Envelope(EnvelopeCommand::Inspect(args)) = cli.command else {
                panic!("parsed as {:?}", cli.command)
            };
            args
        };
        let args = parse(&[
            "meshfed", "envelope", "inspect", "env.cbor", "--ca", "ca.pem",
        ]);
        assert_eq!(args.file, Input::File(PathBuf::from("env.cbor")));
        assert_eq!(args.ca, Some(PathBuf::from("ca.pem")));
        let args = parse(&["meshfed", "envelope", "inspect", "-", "--json"]);
        assert_eq!(args.file, Input::Stdin);
        assert_eq!(args.ca, None);
    }

    /// The `meshfed bench` arguments `argv` parses into.
    fn bench_args(argv: &[&str]) -> BenchArgs {
        let cli = Cli::try_parse_from(argv).unwrap();
        let Command::Bench(args) = cli.command else {
            panic!("parsed as {:?}", cli.command)
        };
        args
    }

    #[test]
    fn bench_parses_sizes_durations_and_defaults() {
        let args = bench_args(&["meshfed", "bench"]);
        assert_eq!(args.payload, ByteSize(1024));
        assert_eq!((args.count, args.duration), (None, None));
        assert_eq!((args.rate, args.qos), (1000, Qos::AtMostOnce));
        assert_eq!(
            (args.signatures, args.compare),
            (SignatureMode::Batch, false)
        );
        let args = bench_args(&[
            "meshfed",
            "bench",
            "--payload",
            "4KiB",
            "--duration",
            "2s",
            "--rate",
            "50",
            "--qos",
            "1",
            "--signatures",
            "message",
            "--json",
        ]);
        assert_eq!(args.payload, ByteSize(4096));
        assert_eq!(args.duration, Some(Duration::from_secs(2)));
        assert_eq!(args.rate, 50);
        assert_eq!(args.qos, Qos::AtLeastOnce);
        assert_eq!(args.signatures, SignatureMode::Message);
        let args = bench_args(&["meshfed", "bench", "--compare", "--qos", "2"]);
        assert!(args.compare);
        assert_eq!(args.qos, Qos::ExactlyOnce);
    }

    #[test]
    fn bench_takes_a_sign_window_but_not_with_running_gateways() {
        let Command::Bench(args) =
            Cli::try_parse_from(["meshfed", "bench", "--sign-window", "0ms"])
                .unwrap()
                .command
        else {
            panic!("not bench")
        };
        assert_eq!(args.sign_window, Some(Duration::ZERO));
        let err = Cli::try_parse_from([
            "meshfed",
            "bench",
            "--sign-window",
            "5ms",
            "--publisher",
            "a",
            "--subscriber",
            "b",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("--sign-window"), "{err}");
    }

    #[test]
    fn bench_names_the_signature_modes_and_compares_only_without_one() {
        let err = Cli::try_parse_from(["meshfed", "bench", "--signatures", "merkle"]).unwrap_err();
        assert!(
            err.to_string()
                .contains("invalid value 'merkle' for '--signatures <MODE>'")
                && err
                    .to_string()
                    .contains("[possible values: batch, message]"),
            "{err}"
        );
        let err = Cli::try_parse_from(["meshfed", "bench", "--compare", "--signatures", "batch"])
            .unwrap_err();
        assert!(
            err.to_string().contains("'--compare' cannot be used with"),
            "{err}"
        );
    }

    #[test]
    fn bench_targets_running_gateways_only_with_both_directories() {
        let args = bench_args(&[
            "meshfed",
            "bench",
            "--publisher",
            "a",
            "--subscriber",
            "b",
            "--qos",
            "1",
        ]);
        assert_eq!(args.publisher, Some(PathBuf::from("a")));
        assert_eq!(args.subscriber, Some(PathBuf::from("b")));
        let args = bench_args(&["meshfed", "bench"]);
        assert_eq!((args.publisher, args.subscriber), (None, None));
        for bad in [
            &["meshfed", "bench", "--publisher", "a"][..],
            &["meshfed", "bench", "--subscriber", "b"],
            &[
                "meshfed",
                "bench",
                "--publisher",
                "a",
                "--subscriber",
                "b",
                "--compare",
            ],
            &[
                "meshfed",
                "bench",
                "--publisher",
                "a",
                "--subscriber",
                "b",
                "--signatures",
                "batch",
            ],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn bench_refuses_bad_sizes_counts_and_both_limits() {
        for bad in [
            &["meshfed", "bench", "--payload", "1KiBi"][..],
            &["meshfed", "bench", "--payload", "lots"],
            &["meshfed", "bench", "--count", "0"],
            &["meshfed", "bench", "--rate", "0"],
            &["meshfed", "bench", "--qos", "3"],
            &["meshfed", "bench", "--count", "5", "--duration", "1s"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?} parsed");
        }
        let err = Cli::try_parse_from(["meshfed", "bench", "--payload", "2GB"]).unwrap_err();
        assert!(
            err.to_string().contains("unknown size unit \"GB\""),
            "{err}"
        );
    }

    #[test]
    fn byte_sizes_read_binary_and_decimal_units() {
        let parse = |s: &str| s.parse::<ByteSize>().map(|b| b.0);
        assert_eq!(parse("1024"), Ok(1024));
        assert_eq!(parse("512B"), Ok(512));
        assert_eq!(parse("1KiB"), Ok(1024));
        assert_eq!(parse("2MiB"), Ok(2 << 20));
        assert_eq!(parse("1kB"), Ok(1000));
        assert!(parse("KiB").is_err());
        assert_eq!(ByteSize(1024).to_string(), "1 KiB");
        assert_eq!(ByteSize(1000).to_string(), "1000 B");
    }

    #[test]
    fn envelope_inspect_needs_a_file() {
        let err = Cli::try_parse_from(["meshfed", "envelope", "inspect"]).unwrap_err();
        assert!(err.to_string().contains("FILE"), "{err}");
    }
}
