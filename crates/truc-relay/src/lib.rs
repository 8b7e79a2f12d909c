#![forbid(unsafe_code)]
//! The relay engine: what happens to a package between an adapter (or the national axis)
//! and the store, and between the store and the recipients.
//!
//! It decides who may send what ([`Registry::may_send_as`]), where each recipient's copy
//! goes ([`Registry::route`]), where a status goes back to (the sender of the document it
//! answers), and it wakes the inboxes that have something new. Transport (gRPC, HTTP) lives
//! in `trucd`; storage behind [`truc_store::Store`].

mod error;
mod registry;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use truc_edxml::{KnownStatus, OrgCode, PackageKind, PackageMeta, StatusCode};
use truc_store::{
    Completion, Delivery, Destination, MessageRecord, NewMessage, PayloadInput, Route, Source,
    Store, Summary, Timestamp,
};

pub use error::RelayError;
pub use registry::{
    sample_transport_ministry, Registry, RegistryFile, RemoteBody, RouteDecision, Unit, UnitState,
};

/// Who is submitting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitter {
    /// The adapter of a level-2 unit, identified by its client certificate.
    Adapter {
        /// The unit the certificate maps to.
        unit: OrgCode,
        /// The certificate's SHA-256 fingerprint (hex).
        certificate: String,
    },
    /// The national axis (inbound packages).
    NationalAxis {
        /// The axis's transport id.
        doc_id: String,
    },
    /// An operator or tool.
    Operator {
        /// Who.
        actor: String,
    },
}

/// Where one recipient's copy went, for the receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedRecipient {
    /// The recipient.
    pub recipient: OrgCode,
    /// The decision.
    pub decision: RouteDecision,
}

/// The relay's answer to a submission: the package is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The stored message (new, or the original for a duplicate).
    pub message: MessageRecord,
    /// One route per recipient.
    pub routes: Vec<RoutedRecipient>,
    /// The package was already stored.
    pub duplicate: bool,
    /// Recipients of a package from the national axis that are not units here: it went to
    /// the others, and these are recorded in the audit log (`inbound_recipients_unknown`).
    pub unknown_recipients: Vec<OrgCode>,
}

/// Wakes the tasks serving an inbox when a delivery is queued for it.
///
/// Each destination has a doorbell: a counter every wake moves on. A task serving the
/// destination keeps a receiver, and hears every ring since it last looked, even one that
/// came while it was busy claiming and sending; so does every other task serving the same
/// destination (several connections of one unit), none of them left to a periodic look.
#[derive(Debug, Default)]
pub struct InboxHub {
    inboxes: Mutex<HashMap<Destination, watch::Sender<u64>>>,
}

impl InboxHub {
    /// A doorbell of `destination` (created on first use): `changed()` resolves once a
    /// delivery was queued for it since the receiver last looked.
    pub fn doorbell(&self, destination: &Destination) -> watch::Receiver<u64> {
        self.with_bell(destination, watch::Sender::subscribe)
    }

    /// Wakes whoever serves `destination`.
    pub fn wake(&self, destination: &Destination) {
        self.with_bell(destination, |bell| {
            bell.send_modify(|rings| *rings = rings.wrapping_add(1))
        });
    }

    /// Runs `f` on the doorbell of `destination`, made on first use.
    fn with_bell<R>(
        &self,
        destination: &Destination,
        f: impl FnOnce(&watch::Sender<u64>) -> R,
    ) -> R {
        f(self
            .inboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(destination.clone())
            .or_insert_with(|| watch::channel(0).0))
    }
}

/// The engine shared by the relay's servers and workers.
pub struct Relay {
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    hub: InboxHub,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("ministry", self.registry.ministry())
            .finish()
    }
}

impl Relay {
    /// A relay over a store and a registry.
    pub fn new(store: Arc<dyn Store>, registry: Arc<Registry>) -> Self {
        Relay {
            store,
            registry,
            hub: InboxHub::default(),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The registry.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The inbox notifiers.
    pub fn hub(&self) -> &InboxHub {
        &self.hub
    }

    /// The unit an adapter's certificate maps to (by its fingerprint, else by one of its DNS
    /// names), refusing unknown and suspended ones.
    pub fn authenticate(&self, fingerprint: &str, names: &[String]) -> Result<Unit, RelayError> {
        let unit = self
            .registry
            .unit_for_certificate(fingerprint)
            .or_else(|| self.registry.unit_for_name(names))
            .ok_or_else(|| RelayError::UnknownCertificate(fingerprint.to_owned()))?;
        if unit.state == UnitState::Suspended {
            return Err(RelayError::Suspended(unit.code.to_string()));
        }
        Ok(unit)
    }

    /// Checks, routes and stores a package that has been read (`meta`) and whose bytes are
    /// in `payload`. Returns once it is durable.
    pub async fn submit(
        &self,
        who: &Submitter,
        meta: &PackageMeta,
        payload: PayloadInput,
        idempotency_key: Option<String>,
    ) -> Result<Receipt, RelayError> {
        let now = Timestamp::now();
        if let Submitter::Adapter { unit, certificate } = who {
            if !self.registry.may_send_as(unit, meta.from()) {
                let err = RelayError::ForgedSender {
                    adapter: unit.to_string(),
                    from: meta.from().to_string(),
                    certificate: certificate.clone(),
                };
                self.store
                    .audit(
                        &format!("adapter:{unit}"),
                        "permission_denied",
                        meta.from().as_str(),
                        &err.to_string(),
                        now,
                    )
                    .await?;
                return Err(err);
            }
            // The adapter's own unit was checked when it connected; a level-3 unit it
            // sends for may be suspended on its own.
            if let Some(sender) = self.registry.unit(meta.from()) {
                if sender.state == UnitState::Suspended {
                    return Err(RelayError::Suspended(sender.code.to_string()));
                }
            }
        }
        if let Submitter::NationalAxis { doc_id } = who {
            if self.registry.is_ministry_code(meta.from()) {
                let err = RelayError::ForgedFromAxis {
                    from: meta.from().to_string(),
                    doc_id: doc_id.clone(),
                };
                self.store
                    .audit(
                        "system:national-axis",
                        "permission_denied",
                        meta.from().as_str(),
                        &err.to_string(),
                        now,
                    )
                    .await?;
                return Err(err);
            }
        }
        let (mut routes, summary, unknown_recipients) = match meta.kind() {
            PackageKind::Document => {
                self.route_document(meta, matches!(who, Submitter::NationalAxis { .. }))?
            }
            PackageKind::Status => {
                let (routes, summary) = self.route_status(who, meta).await?;
                (routes, summary, Vec::new())
            }
        };
        if matches!(who, Submitter::NationalAxis { .. }) {
            // From the axis, only this ministry's recipients concern us: the axis delivers
            // the other copies itself.
            routes.retain(|r| r.decision != RouteDecision::NationalAxis);
            if routes.is_empty() {
                return Err(RelayError::UnknownUnit(format!(
                    "none of the recipients ({}) is a unit of {}",
                    meta.recipients()
                        .map(|c| c.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    self.registry.ministry()
                )));
            }
        }
        let source = match who {
            Submitter::Adapter { unit, certificate } => Source::Adapter {
                unit: unit.clone(),
                certificate: Some(certificate.clone()),
            },
            Submitter::NationalAxis { doc_id } => Source::NationalAxis {
                doc_id: doc_id.clone(),
            },
            Submitter::Operator { actor } => Source::Operator {
                actor: actor.clone(),
            },
        };
        let message = NewMessage {
            kind: meta.kind(),
            sender: meta.from().clone(),
            document_id: meta.document_id().cloned(),
            business_doc_type: meta.business_doc_type(),
            sha256: meta.sha256,
            source,
            received_at: now,
            routes: routes
                .iter()
                .map(|r| Route {
                    recipient: r.recipient.clone(),
                    destination: destination_of(&r.decision),
                    held: matches!(r.decision, RouteDecision::Held { .. }),
                })
                .collect(),
            summary,
            idempotency_key,
            payload,
        };
        let outcome = self.store.submit(message).await?;
        for r in &routes {
            if !matches!(r.decision, RouteDecision::Held { .. }) {
                self.hub.wake(&destination_of(&r.decision));
            }
        }
        if let (Submitter::NationalAxis { doc_id }, false) = (who, outcome.is_duplicate()) {
            if !unknown_recipients.is_empty() {
                let codes = unknown_recipients
                    .iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(", ");
                tracing::warn!(doc_id, recipients = %codes, message = %outcome.record().id, "a package from the national axis names units this ministry does not have; it went to the others");
                let detail = format!(
                    "{}: not units of {} (delivered to the other recipients)",
                    codes,
                    self.registry.ministry()
                );
                if let Err(e) = self
                    .store
                    .audit(
                        "system:national-axis",
                        "inbound_recipients_unknown",
                        doc_id,
                        &detail,
                        now,
                    )
                    .await
                {
                    tracing::warn!(doc_id, error = %e, "the unknown recipients could not be recorded in the audit log");
                }
            }
        }
        Ok(Receipt {
            duplicate: outcome.is_duplicate(),
            message: outcome.record().clone(),
            routes,
            unknown_recipients,
        })
    }

    /// Routes every recipient of a document; for one from the national axis (`inbound`),
    /// only the ministry's own recipients (the axis delivers the other copies), and those
    /// that are not units here are returned apart: the axis handed the package over
    /// already, so refusing it would take it from every other recipient too.
    fn route_document(
        &self,
        meta: &PackageMeta,
        inbound: bool,
    ) -> Result<(Vec<RoutedRecipient>, Summary, Vec<OrgCode>), RelayError> {
        let mut routes = Vec::new();
        let mut unknown = Vec::new();
        for recipient in meta.recipients() {
            if inbound && !self.registry.is_ministry_code(recipient) {
                continue;
            }
            if routes
                .iter()
                .any(|r: &RoutedRecipient| &r.recipient == recipient)
            {
                continue;
            }
            let decision = match self.registry.route(recipient) {
                Ok(d) => d,
                Err(RelayError::UnknownUnit(_)) if inbound => {
                    if !unknown.contains(recipient) {
                        unknown.push(recipient.clone());
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            routes.push(RoutedRecipient {
                recipient: recipient.clone(),
                decision,
            });
        }
        let doc = meta.document();
        let summary = Summary {
            subject: doc.map(|d| d.subject.clone()).unwrap_or_default(),
            due_date: doc.and_then(|d| d.due_date),
            priority: doc.and_then(|d| d.priority),
            status_code: None,
            answers: doc
                .filter(|d| d.business.doc_type != truc_edxml::BusinessDocType::New)
                .and_then(|d| d.affected_document_id().cloned()),
            reported_at: None,
        };
        Ok((routes, summary, unknown))
    }

    /// A status goes back to the sender of the document it answers. Only a party to that
    /// document may report on it: the reporter must be one of its recipients (for an
    /// adapter: a unit it serves; from the national axis: the recipient body or one within
    /// or above it). A document with that DocumentId the reporter is not party to is
    /// answered as unknown, so statuses can neither be forged into another unit's timeline
    /// nor tell whether a document exists. Of several documents sharing a DocumentId, the
    /// one its issuer sent is preferred. A recall request (13) is the exception: it comes
    /// from the document's sender and goes to its recipients.
    async fn route_status(
        &self,
        who: &Submitter,
        meta: &PackageMeta,
    ) -> Result<(Vec<RoutedRecipient>, Summary), RelayError> {
        let status = meta
            .status()
            .ok_or_else(|| RelayError::Config("not a status".into()))?;
        let answered = status
            .response_for
            .document_id
            .clone()
            .ok_or_else(|| RelayError::UnknownDocument(String::new()))?;
        let issuer = answered.issuer();
        let from_issuer =
            |m: &MessageRecord| issuer.as_ref().is_some_and(|i| m.sender.is_within(i));
        let summary = Summary {
            status_code: Some(status.status_code.clone()),
            answers: Some(answered.clone()),
            reported_at: truc_edxml::VietnamTime::parse(&status.timestamp)
                .and_then(Timestamp::from_vietnam_time),
            ..Summary::default()
        };
        // A recall request goes the other way: from the document's sender to its recipients.
        let recall = status.status_code.known() == Some(KnownStatus::RecallRequested);
        // The first the reporter is party to, unless a later one is the issuer's.
        let mut original: Option<MessageRecord> = None;
        for m in self.store.find_by_document(&answered).await? {
            let party = if recall {
                self.sent(who, meta.from(), &m)
            } else {
                self.reports_on(who, meta.from(), &m)
            };
            if m.kind != PackageKind::Document || !party {
                continue;
            }
            if original
                .as_ref()
                .is_none_or(|o| from_issuer(&m) && !from_issuer(o))
            {
                original = Some(m);
            }
        }
        if recall {
            let document =
                original.ok_or_else(|| RelayError::UnknownDocument(answered.to_string()))?;
            return Ok((self.route_recall(&document)?, summary));
        }
        let (back_to, from_the_axis) = match original {
            Some(m) => (m.sender, matches!(m.source, Source::NationalAxis { .. })),
            None => {
                // A document the relay never carried: if its issuer is outside the ministry,
                // the status goes up to the national axis; inside, nobody is waiting for it.
                let issuer = answered
                    .issuer()
                    .or_else(|| OrgCode::parse(&status.response_for.organ_id).ok())
                    .ok_or_else(|| RelayError::UnknownDocument(answered.to_string()))?;
                if self.registry.is_ministry_code(&issuer) {
                    return Err(RelayError::UnknownDocument(answered.to_string()));
                }
                (issuer, false)
            }
        };
        // A document that came across the national axis answers back the same way, whether
        // or not the national directory lists its sender yet (it is refreshed hourly, and a
        // body that just sent a document is evidently connected).
        let decision = if from_the_axis && !self.registry.is_ministry_code(&back_to) {
            RouteDecision::NationalAxis
        } else {
            self.registry.route(&back_to)?
        };
        let routes = vec![RoutedRecipient {
            decision,
            recipient: back_to,
        }];
        Ok((routes, summary))
    }

    /// Where a recall request (13) for `document` goes: to each of its recipients, only the
    /// ministry's own for a document that came across the national axis (the axis carries
    /// the request to the others itself), and up the axis for the others (which it carried
    /// the document to). Units the registry no longer has are left out; none left is an
    /// error.
    fn route_recall(&self, document: &MessageRecord) -> Result<Vec<RoutedRecipient>, RelayError> {
        let inbound = matches!(document.source, Source::NationalAxis { .. });
        let mut routes: Vec<RoutedRecipient> = Vec::new();
        for recipient in &document.recipients {
            let ours = self.registry.is_ministry_code(recipient);
            if (inbound && !ours) || routes.iter().any(|r| &r.recipient == recipient) {
                continue;
            }
            if !ours {
                // The axis carried the document there, listed in the directory or not.
                routes.push(RoutedRecipient {
                    recipient: recipient.clone(),
                    decision: RouteDecision::NationalAxis,
                });
                continue;
            }
            match self.registry.route(recipient) {
                Ok(decision) => routes.push(RoutedRecipient {
                    recipient: recipient.clone(),
                    decision,
                }),
                Err(RelayError::UnknownUnit(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        if routes.is_empty() {
            return Err(RelayError::UnknownUnit(format!(
                "none of the recipients of the recalled document ({}) is reachable",
                document
                    .recipients
                    .iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(routes)
    }

    /// Whether `who`, reporting as `from`, sent `document` (a recall request must come from
    /// its sender): for an adapter, a unit it serves; from the national axis, the sending
    /// body of a document that came from the axis, or one within or above it.
    fn sent(&self, who: &Submitter, from: &OrgCode, document: &MessageRecord) -> bool {
        match who {
            Submitter::Operator { .. } => true,
            Submitter::Adapter { unit, .. } => self.registry.may_send_as(unit, &document.sender),
            // Only a document that came from the axis can be recalled from it.
            Submitter::NationalAxis { .. } => {
                matches!(document.source, Source::NationalAxis { .. })
                    && (from.is_within(&document.sender) || document.sender.is_within(from))
            }
        }
    }

    /// Whether `who`, reporting as `from`, is a party to `document`: one of its recipients.
    fn reports_on(&self, who: &Submitter, from: &OrgCode, document: &MessageRecord) -> bool {
        let mut recipients = document.recipients.iter();
        match who {
            // The relay's own reports (the arrival it records for a recipient).
            Submitter::Operator { .. } => true,
            Submitter::Adapter { unit, .. } => {
                recipients.any(|r| self.registry.may_send_as(unit, r))
            }
            Submitter::NationalAxis { .. } => {
                recipients.any(|r| from.is_within(r) || r.is_within(from))
            }
        }
    }

    async fn send_arrived(
        &self,
        delivery: &truc_store::DeliveryKey,
        at: Timestamp,
        doc: &truc_edxml::DocumentId,
    ) -> Result<(), RelayError> {
        // Stamped like the recipients' own systems stamp theirs: Vietnam's wall clock.
        let timestamp = at.in_vietnam().to_string();
        let mut builder = truc_edxml::StatusBuilder::new(
            delivery.recipient.clone(),
            doc.clone(),
            StatusCode::new("01"),
            &timestamp,
        );
        if let Some(unit) = self.registry.unit(&delivery.recipient) {
            builder.from.organ_name = unit.name;
        }
        builder.description =
            "Đã đến (recorded by the relay when the recipient's system acknowledged it)".into();
        let package = builder.build();
        let meta = truc_edxml::parse(&package)?;
        let who = Submitter::Operator {
            actor: "system:arrival".into(),
        };
        let key = Some(format!("arrived:{delivery}"));
        self.submit(&who, &meta, PayloadInput::Bytes(package.into()), key)
            .await?;
        Ok(())
    }

    /// Acknowledges a claimed delivery. For a document, that is its arrival (status 01) in
    /// the document's timeline, which the store derives from the acknowledged delivery; a
    /// sender in another ministry hears of it through a status package the relay sends on
    /// the recipient's behalf.
    ///
    /// That package is stored before the acknowledgement: if storing it fails, or the relay
    /// stops in between, the delivery is not acknowledged, is offered again, and its next
    /// acknowledgement sends the status (once: its idempotency key names the delivery).
    /// The other way round, a status could be lost for a delivery already acknowledged.
    ///
    /// An acknowledgement that cannot be stored puts the delivery back for a retry soon (the
    /// store's backoff: within seconds at first), so that it is offered again when the
    /// adapter comes back rather than when its lease runs out, and a failure that lasts
    /// (a full disk) is retried ever more slowly, not in a tight loop of offers and acks,
    /// until the retry policy's age dead-letters it.
    pub async fn ack(
        &self,
        token: &truc_store::ClaimToken,
        message: &MessageRecord,
    ) -> Result<Delivery, RelayError> {
        let acknowledged = self.store_ack(token, message).await;
        match &acknowledged {
            Ok(_) | Err(RelayError::Store(truc_store::StoreError::LeaseLost(_))) => {}
            Err(e) => {
                let reason = format!("its acknowledgement could not be stored: {e}");
                if let Err(re) = self
                    .store
                    .retry_later(token, &reason, Timestamp::now())
                    .await
                {
                    tracing::warn!(delivery = %token.key, error = %re, "a delivery whose acknowledgement failed could not be put back; its lease will run out");
                }
            }
        }
        acknowledged
    }

    /// The arrival status of a document from the national axis, then the acknowledgement.
    async fn store_ack(
        &self,
        token: &truc_store::ClaimToken,
        message: &MessageRecord,
    ) -> Result<Delivery, RelayError> {
        let now = Timestamp::now();
        if let (PackageKind::Document, Some(doc), Source::NationalAxis { .. }) =
            (&message.kind, &message.document_id, &message.source)
        {
            self.send_arrived(&token.key, now, doc).await?;
        }
        Ok(self.store.ack(token, Completion::Acknowledged, now).await?)
    }
}

/// The queue a route decision puts a copy in.
pub fn destination_of(decision: &RouteDecision) -> Destination {
    match decision {
        RouteDecision::Local { inbox }
        | RouteDecision::ViaParent { inbox }
        | RouteDecision::Held { inbox } => Destination::Inbox(inbox.clone()),
        RouteDecision::NationalAxis => Destination::NationalAxis,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_task_serving_a_destination_hears_a_ring_it_was_busy_for() {
        let hub = InboxHub::default();
        let b = Destination::Inbox(OrgCode::parse("000.00.07.G04").expect("code"));
        let other = Destination::NationalAxis;
        let mut first = hub.doorbell(&b);
        let mut second = hub.doorbell(&b);
        let elsewhere = hub.doorbell(&other);
        // Rung while nobody waits (both busy claiming): each hears it when it next looks.
        hub.wake(&b);
        for bell in [&mut first, &mut second] {
            tokio::time::timeout(std::time::Duration::from_secs(5), bell.changed())
                .await
                .expect("heard")
                .expect("open");
        }
        // Heard once: nothing more until the next ring, and nothing for another destination.
        assert!(!first.has_changed().expect("open"));
        assert!(!elsewhere.has_changed().expect("open"));
        hub.wake(&b);
        hub.wake(&b);
        assert!(first.has_changed().expect("open"));
        first.mark_unchanged();
        assert!(!first.has_changed().expect("open"), "two rings, one look");
        hub.wake(&other);
        assert!(elsewhere.has_changed().expect("open"));
    }
}
