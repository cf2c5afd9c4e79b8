//! `meshfed federation ...`: invitations, joining, listing and lifecycle, through the API.

use std::path::Path;

use meshfed_node::api::models::{
    DirectoryView, FederationList, FederationView, InviteRequest, InviteResponse, JoinRequest,
    OperationRequest, RevocationListView, RevocationsView, RevokeNodeRequest,
};

use crate::cli::{FederationCommand, OutputFormat};
use crate::client::ApiClient;
use crate::failure::Failure;
use crate::gateway::runtime;
use crate::output::{Layout, outln, print, table};

pub(crate) fn run(dir: &Path, cmd: FederationCommand, output: OutputFormat) -> Result<(), Failure> {
    let client = ApiClient::for_dir(dir)?;
    runtime()?.block_on(async move {
        match cmd {
            FederationCommand::Invite { peer, ttl } => {
                let request = InviteRequest {
                    peer,
                    ttl: Some(humantime::format_duration(ttl).to_string()),
                };
                let invite: InviteResponse = client.post("/v1/federations/invite", &request).await?;
                outln!("{}", invite.token)?;
                eprintln!(
                    "invitation {} for mesh {} — works once, until {}. On {}: meshfed federation join TOKEN",
                    invite.token_id, invite.peer, invite.expires, invite.peer
                );
            }
            FederationCommand::Join { token, via } => {
                let request = JoinRequest { token: token.trim().to_owned(), via };
                let f: FederationView = client.post("/v1/federations/join", &request).await?;
                outln!("joined federation {} with mesh {} ({})", f.id, f.peer, f.status)?;
            }
            FederationCommand::List => {
                let list: FederationList = client.get("/v1/federations").await?;
                print(output, &list.federations[..], Layout::Line, print_table)?;
            }
            FederationCommand::Show { id } => {
                let f: FederationView = client.get(&format!("/v1/federations/{id}")).await?;
                print(output, &f, Layout::Indented, print_detail)?;
            }
            FederationCommand::Suspend { id } => operate(&client, &id, "suspend", OperationRequest::default()).await?,
            FederationCommand::Resume { id } => operate(&client, &id, "resume", OperationRequest::default()).await?,
            FederationCommand::Discover { broker } => {
                let client = match broker {
                    Some(addr) => ApiClient::public(addr),
                    None => client,
                };
                let dir: DirectoryView = client.get("/directory").await?;
                print(output, &dir.descriptors[..], Layout::Line, |descriptors| {
                    let rows: Vec<[String; 4]> = (descriptors.iter())
                        .map(|d| {
                            [
                                d.mesh.to_string(),
                                d.addresses.join(","),
                                d.ca_fingerprint.clone(),
                                d.expires.clone(),
                            ]
                        })
                        .collect();
                    table(["MESH", "ADDRESSES", "CA FINGERPRINT (SHA-384)", "EXPIRES"], &rows)
                })?;
                eprintln!(
                    "The directory is not a trust anchor: anyone can make a CA that names any mesh. Join a mesh found here with an invitation from it (meshfed federation join TOKEN), or compare its CA fingerprint with one obtained out of band first."
                );
            }
            FederationCommand::Renegotiate { id } => {
                let f: FederationView = client
                    .post(&format!("/v1/federations/{id}/renegotiate"), &OperationRequest::default())
                    .await?;
                let version = f.agreement.as_ref().map_or_else(|| "?".to_owned(), |a| a.version.to_string());
                outln!("federation {} with {} renegotiated: agreement v{version} in force", f.id, f.peer)?;
            }
            FederationCommand::Terminate { id, force } => operate(&client, &id, "terminate", OperationRequest { force }).await?,
            FederationCommand::RevokeNode { node } => {
                let request = RevokeNodeRequest { node: node.clone() };
                let list: RevocationListView = client.post("/v1/revocations", &request).await?;
                outln!("revoked {node}: mesh {} revocation list version {}", list.mesh, list.version)?;
            }
            FederationCommand::Revocations => {
                let view: RevocationsView = client.get("/v1/revocations").await?;
                print(output, &view, Layout::Indented, print_revocations)?;
            }
        }
        Ok(())
    })
}

async fn operate(
    client: &ApiClient,
    id: &meshfed_proto::FederationId,
    op: &str,
    body: OperationRequest,
) -> Result<(), Failure> {
    let f: FederationView = client
        .post(&format!("/v1/federations/{id}/{op}"), &body)
        .await?;
    outln!("federation {} with {} is now {}", f.id, f.peer, f.state)?;
    Ok(())
}

/// Each list: its mesh and version, then one line per revoked node, serial and delegation.
fn print_revocations(view: &RevocationsView) -> Result<(), Failure> {
    let lists = view.own.iter().chain(&view.partners);
    let mut any = false;
    for list in lists {
        any = true;
        let whose = if list.mesh == view.mesh {
            "this mesh"
        } else if list.relayed {
            "relayed by a partner"
        } else {
            "partner"
        };
        outln!(
            "{} ({whose}) version {} issued {}",
            list.mesh,
            list.version,
            list.issued_at
        )?;
        for n in &list.nodes {
            outln!(
                "  node   {}/{}  revoked {}",
                list.mesh,
                n.node,
                n.revoked_at
            )?;
        }
        for s in &list.serials {
            outln!("  serial {}  revoked {}", s.serial, s.revoked_at)?;
        }
        for d in &list.delegations {
            outln!("  delegation {}  revoked {}", d.id, d.revoked_at)?;
        }
    }
    if !any {
        outln!("no revocation lists")?;
    }
    Ok(())
}

/// An optional value as shown in tables: `-` when absent.
fn or_dash(v: Option<impl std::fmt::Display>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn print_table(feds: &[FederationView]) -> Result<(), Failure> {
    if feds.is_empty() {
        outln!(
            "no federations (meshfed federation invite --peer MESH, then join on the other mesh)"
        )?;
        return Ok(());
    }
    let rows: Vec<[String; 6]> = feds
        .iter()
        .map(|f| {
            [
                f.id.to_string(),
                match &f.via {
                    Some(broker) => format!("{} via {broker}", f.peer),
                    None => f.peer.to_string(),
                },
                f.status.to_string(),
                f.role.to_string(),
                or_dash(f.last_heartbeat.as_ref()),
                or_dash(f.rtt_ms.map(|ms| format!("{ms:.1}ms"))),
            ]
        })
        .collect();
    // Message ids also start `fed_`: the column says which kind these are.
    let head = [
        "FEDERATION",
        "PEER",
        "STATUS",
        "ROLE",
        "LAST HEARTBEAT",
        "RTT",
    ];
    table(head, &rows)
}

/// `value` as one line of JSON, as the detail view shows lists and the policy.
fn compact(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| format!("({e})"))
}

fn print_detail(f: &FederationView) -> Result<(), Failure> {
    outln!("federation      {}", f.id)?;
    outln!(
        "peer            {} (node {})",
        f.peer,
        or_dash(f.peer_node.as_ref())
    )?;
    outln!(
        "status          {}  (state {}, link {})",
        f.status,
        f.state,
        f.health
    )?;
    outln!("role            {}", f.role)?;
    if let Some(broker) = &f.via {
        outln!(
            "path            through broker {broker} (end to end; the broker relays and cannot read)"
        )?;
    }
    outln!("last heartbeat  {}", or_dash(f.last_heartbeat.as_ref()))?;
    outln!("connected since {}", or_dash(f.connected_since.as_ref()))?;
    for ca in &f.peer_cas {
        outln!("peer CA         {ca}")?;
    }
    if let Some(reason) = &f.state_reason {
        outln!("state reason    {reason}")?;
    }
    if let Some(b) = &f.breaker {
        let since = (b.since.as_deref()).map_or_else(String::new, |at| format!(" since {at}"));
        let reason = (b.reason.as_deref()).map_or_else(String::new, |r| format!(": {r}"));
        outln!("breaker         {}{since}{reason}", b.state)?;
    }
    match &f.agreement {
        Some(a) => {
            outln!(
                "agreement       v{} valid {} .. {}",
                a.version,
                a.valid_from,
                a.valid_until
            )?;
            outln!("  digest        {}", a.digest)?;
            outln!("  suite         {}", a.security_suite)?;
            outln!(
                "  max qos       {}   max frame {} bytes",
                a.max_qos.level(),
                a.max_frame
            )?;
            outln!(
                "  topics        to responder {}  to initiator {}",
                compact(&a.topics_to_responder),
                compact(&a.topics_to_initiator)
            )?;
            outln!("  policy        {}", compact(&a.policy))?;
        }
        None => outln!("agreement       - (the stored agreement cannot be read)")?,
    }
    if let Some(history) = f.agreement_history.as_ref().filter(|h| !h.is_empty()) {
        for past in history {
            outln!(
                "  replaced      v{} at {} (digest {})",
                past.version,
                past.replaced,
                past.digest
            )?;
        }
    }
    if let (Some(b), Some(d)) = (&f.backlog, &f.delivery) {
        outln!(
            "backlog         {} messages, {} bytes ({} in flight, {} being stored); by priority 0..7 {}",
            b.messages,
            b.bytes,
            b.in_flight,
            b.awaiting_persistence,
            compact(&b.by_priority)
        )?;
        outln!(
            "delivery        sent {}, sent again {}, acknowledged {}, dead-lettered {} (qos 0 shed at the queue's limit {})",
            d.sent,
            d.retransmitted,
            d.acknowledged,
            or_dash(f.dead_lettered),
            d.shed
        )?;
    }
    if let Some(i) = &f.peer_interest {
        let patterns = match (i.known, i.patterns.as_slice()) {
            (false, _) => "unknown (every message is sent)".to_owned(),
            (true, []) => "none (no subscriber there)".to_owned(),
            (true, ps) => ps
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" "),
        };
        let unwanted = f.delivery.as_ref().map_or(0, |d| d.unwanted);
        outln!("peer interest   {patterns}; qos 0 messages not sent for want of it {unwanted}")?;
    }
    if let (Some(via), Some(d)) = (&f.via, &f.delivery)
        && (d.in_custody > 0 || d.custody_refused > 0)
    {
        let refusal = d
            .last_custody_refusal
            .as_deref()
            .map_or_else(String::new, |r| format!(" (last: {r})"));
        outln!(
            "custody         {} held by {via} while {} is away; refused {}{refusal}",
            d.in_custody,
            f.peer,
            d.custody_refused
        )?;
    }
    Ok(())
}
