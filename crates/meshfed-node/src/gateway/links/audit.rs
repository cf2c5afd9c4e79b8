//! The audit exchange on a federation's link (DESIGN §3.9): each side offers the signed heads
//! of its log of this federation, and the other countersigns them once it has checked that each
//! extends the one it countersigned before — so neither can rewrite or roll back its history
//! unnoticed.
//!
//! On every new link each side first tells the other what it last countersigned of the other's
//! log (`sync`): the other checks that its log still holds that head (a log restored from an
//! old copy does not, and says so in its own log), and offers its heads from that size on
//! (`offer`, with a consistency proof). The partner checks the offer against the head it
//! countersigned last (`meshfed_audit::head::Cosigner`): a head that is smaller (rollback), does
//! not extend it (history rewritten), or is not the partner's is not countersigned, and the
//! discrepancy is recorded and logged. A countersignature that verifies is kept beside the head
//! (`countersigned`).

use std::sync::Arc;
use std::time::Duration;

use meshfed_audit::head::{Cosigner, Countersignature, HeadOffer, TreeHead};
use meshfed_audit::record::{Event, Scope, Text};
use meshfed_proto::frame::{Frame, FrameType};
use meshfed_store::audit::PartnerHead;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::Links;
use crate::audit::chain_key;
use crate::gateway::port::LinkPort;

/// The body of an `Audit` frame.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Body {
    /// What the sender last countersigned of the receiver's log of this federation: the
    /// receiver's offer as the sender took it, and the sender's countersignature.
    Sync { last: Option<(ByteBuf, ByteBuf)> },
    /// The sender's newest signed head, with the certificate chain it was signed under.
    Offer { offer: ByteBuf, chain: Vec<ByteBuf> },
    /// The sender's countersignature of the receiver's head of `size`, with the certificate
    /// chain it was made under.
    Countersigned {
        size: u64,
        countersignature: ByteBuf,
        chain: Vec<ByteBuf>,
    },
}

impl Body {
    fn frame(&self) -> Frame {
        let mut out = Vec::new();
        // Invariant: encoding plain structs into a Vec cannot fail.
        ciborium::into_writer(self, &mut out).unwrap_or_else(|e| unreachable!("CBOR: {e}"));
        Frame::new(FrameType::Audit, out)
    }
}

/// Starts the exchange on a new link: tells the peer what this node last countersigned of its
/// log.
pub(crate) async fn start(links: &Links, port: &Arc<LinkPort>) {
    let last = links
        .ctx
        .audit
        .partner_head(&port.federation_id)
        .await
        .map(|h| (ByteBuf::from(h.offer), ByteBuf::from(h.countersignature)));
    let _ = port.send(Body::Sync { last }.frame()).await;
}

/// An `Audit` frame from the peer.
pub(crate) async fn received(links: &Arc<Links>, port: &Arc<LinkPort>, body: &[u8]) {
    let ctx = &links.ctx;
    let body: Body = match ciborium::from_reader(body) {
        Ok(b) => b,
        Err(e) => {
            discrepancy(
                links,
                port,
                format!(
                    "an audit frame that does not decode: {}",
                    meshfed_proto::cbor::reason(e)
                ),
            );
            return;
        }
    };
    match body {
        Body::Sync { last } => {
            if let Some((offer, countersignature)) = last {
                match claimed(&offer, &countersignature) {
                    Ok(head) => ctx
                        .audit
                        .partner_claims(&port.federation_id, port.mesh(), head),
                    Err(e) => discrepancy(links, port, format!("an unreadable sync: {e}")),
                }
            }
            // Heads go to the partner from now on, starting with the newest.
            ctx.tracker.spawn(offer_heads(links.clone(), port.clone()));
        }
        Body::Offer { offer, chain } => countersign(links, port, &offer, &ders(chain)).await,
        Body::Countersigned {
            size,
            countersignature,
            chain,
        } => {
            let chain = ders(chain);
            let checked = async {
                let c =
                    Countersignature::from_bytes(&countersignature).map_err(|e| e.to_string())?;
                let key = chain_key(&port.trust.bundle(), &chain, ctx.clock.wall())?;
                let head = ctx
                    .audit
                    .head(&port.federation_id, size)
                    .await
                    .ok_or_else(|| {
                        format!(
                            "a countersignature of a head of {size} records this node never signed"
                        )
                    })?;
                if c.by != *port.mesh() {
                    return Err(format!("a countersignature by {}, not the partner", c.by));
                }
                c.verify(&head, &key).map_err(|e| e.to_string())?;
                Ok(())
            }
            .await;
            match checked {
                Ok(()) => ctx.audit.countersigned(
                    &port.federation_id,
                    size,
                    port.mesh().clone(),
                    countersignature.into_vec(),
                    chain,
                ),
                Err(e) => discrepancy(links, port, e),
            }
        }
    }
}

/// The head `offer` claims, if `countersignature` countersigns it (the signer's key is not
/// checked here: it is this node's own log the claim is about).
fn claimed(offer: &[u8], countersignature: &[u8]) -> Result<TreeHead, String> {
    let offer = HeadOffer::from_bytes(offer).map_err(|e| e.to_string())?;
    Countersignature::from_bytes(countersignature).map_err(|e| e.to_string())?;
    Ok(offer.head.head)
}

/// Checks the partner's offer against what this node countersigned last, and countersigns it.
async fn countersign(links: &Links, port: &LinkPort, offer: &[u8], chain: &[Vec<u8>]) {
    let ctx = &links.ctx;
    let result = async {
        let parsed = HeadOffer::from_bytes(offer).map_err(|e| e.to_string())?;
        let key = chain_key(&port.trust.bundle(), chain, ctx.clock.wall())?;
        let last = ctx.audit.partner_head(&port.federation_id).await;
        let last = match &last {
            Some(h) => Some(
                HeadOffer::from_bytes(&h.offer)
                    .map_err(|e| format!("the stored partner head is damaged: {e}"))?
                    .head
                    .head,
            ),
            None => None,
        };
        let cosigner = Cosigner {
            mesh: port.mesh().clone(),
            scope: Scope::Federation(port.federation_id.clone()),
        };
        cosigner
            .check(last.as_ref(), &parsed, &key)
            .map_err(|e| e.to_string())?;
        let cert = ctx.id.cert();
        let countersignature =
            Countersignature::sign(&parsed.head.head, ctx.id.mesh.clone(), ctx.now(), &cert.key)
                .map_err(|e| e.to_string())?;
        Ok::<_, String>((parsed, countersignature, cert))
    }
    .await;
    match result {
        Ok((parsed, countersignature, cert)) => {
            let head = &parsed.head.head;
            let bytes = countersignature.to_bytes();
            ctx.audit.keep_partner_head(
                PartnerHead {
                    scope: port.federation_id.to_string(),
                    size: head.size,
                    offer: offer.to_vec(),
                    countersignature: bytes.clone(),
                },
                Event::Countersigned {
                    peer: port.mesh().clone(),
                    size: head.size,
                    root: head.root,
                },
            );
            let _ = port
                .send(
                    Body::Countersigned {
                        size: head.size,
                        countersignature: ByteBuf::from(bytes),
                        chain: ctx.id.chain(&cert).into_iter().map(ByteBuf::from).collect(),
                    }
                    .frame(),
                )
                .await;
        }
        Err(what) => discrepancy(links, port, what),
    }
}

fn ders(chain: Vec<ByteBuf>) -> Vec<Vec<u8>> {
    chain.into_iter().map(ByteBuf::into_vec).collect()
}

/// Records, counts and logs what the partner sent that does not hold.
fn discrepancy(links: &Links, port: &LinkPort, what: String) {
    tracing::error!(federation = %port.federation_id, peer = %port.peer, %what, "the partner's audit exchange does not hold");
    links.ctx.metrics.audit_discrepancy(port.mesh());
    links.ctx.audit.federation(
        &port.federation_id,
        Event::Discrepancy {
            peer: port.mesh().clone(),
            what: Text::new(what),
        },
    );
}

/// How long an offer waits for its countersignature before the newest head is offered again.
const ANSWER_WAIT: Duration = Duration::from_secs(10);

/// Offers each new head of this federation's log to the partner while the link is up, one at
/// a time: the next offer's consistency proof starts where the partner's countersignature of
/// the last one left it.
async fn offer_heads(links: Arc<Links>, port: Arc<LinkPort>) {
    let ctx = &links.ctx;
    let mut heads = ctx.audit.heads(&port.federation_id);
    let mut countersigned = ctx.audit.countersigned_sizes(&port.federation_id);
    loop {
        heads.borrow_and_update();
        if let Some((offer, chain)) = ctx.audit.offer(&port.federation_id).await {
            let size = HeadOffer::from_bytes(&offer).map_or(0, |o| o.head.head.size);
            let frame = Body::Offer {
                offer: ByteBuf::from(offer),
                chain: chain.into_iter().map(ByteBuf::from).collect(),
            }
            .frame();
            if port.send(frame).await.is_err() {
                return;
            }
            // Its answer (or a refusal, which is recorded) comes before the next offer.
            let answered =
                tokio::time::timeout(ANSWER_WAIT, countersigned.wait_for(|&done| done >= size));
            tokio::select! {
                () = port.closed() => return,
                () = ctx.cancel.cancelled() => return,
                _ = answered => {}
            }
        }
        tokio::select! {
            () = port.closed() => return,
            () = ctx.cancel.cancelled() => return,
            changed = heads.changed() => if changed.is_err() { return },
        }
    }
}
