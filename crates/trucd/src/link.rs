//! The link to the national axis: an outbound worker that sends what leaves the ministry,
//! and an inbound poller that brings in what arrives for it.

use std::sync::Arc;
use std::time::Duration;

use truc_edxml::PackageKind;
use truc_relay::{Relay, RelayError, Submitter};
use truc_store::{Completion, Destination, PayloadInput, Timestamp};
use truc_upstream::{Upload, Upstream, UpstreamError};

use crate::intake::Incoming;
use crate::metrics::{Metrics, NATIONAL_AXIS};

/// How many received packages are fetched, stored and acknowledged at once.
const RECEIVING_WINDOW: usize = 64;

/// Lease on deliveries being sent upward (each send extends it to its own allowance).
const SEND_LEASE: Duration = Duration::from_secs(300);

/// Beyond a send's transfer allowance, how long its claims stay held.
const LEASE_MARGIN: Duration = Duration::from_secs(60);

/// Sends the national-axis outbox: one `sendEdoc` per message (the axis fans out to its
/// recipients), recording the axis's transport id; failures wait for the store's retry
/// policy, refusals are dead-lettered with the reason.
pub async fn outbound(relay: Arc<Relay>, upstream: Arc<dyn Upstream>, state: Arc<LinkState>) {
    let store = relay.store().clone();
    let mut doorbell = relay.hub().doorbell(&Destination::NationalAxis);
    loop {
        let claims = match store
            .claim(&Destination::NationalAxis, 32, SEND_LEASE, Timestamp::now())
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "claiming the national-axis outbox failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if claims.is_empty() {
            tokio::select! {
                Ok(()) = doorbell.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        }
        // One send per message, to all of its claimed recipients.
        let mut by_message: Vec<(truc_store::MessageRecord, Vec<truc_store::Claim>)> = Vec::new();
        for claim in claims {
            match by_message
                .iter_mut()
                .find(|(m, _)| m.id == claim.message.id)
            {
                Some((_, list)) => list.push(claim),
                None => by_message.push((claim.message.clone(), vec![claim])),
            }
        }
        // Messages go up concurrently (the axis answers each call in a round trip), except
        // that those about one document (its statuses 01, 03, 04...) go one after another,
        // in queue order, so the axis lists them in that order.
        let mut chains: Vec<Vec<(truc_store::MessageRecord, Vec<truc_store::Claim>)>> = Vec::new();
        for (message, claims) in by_message {
            let about = |m: &truc_store::MessageRecord| {
                m.summary.answers.clone().or_else(|| m.document_id.clone())
            };
            let key = about(&message);
            match chains
                .iter_mut()
                .find(|chain| key.is_some() && about(&chain[0].0) == key)
            {
                Some(chain) => chain.push((message, claims)),
                None => chains.push(vec![(message, claims)]),
            }
        }
        let mut sends = tokio::task::JoinSet::new();
        for chain in chains {
            let (store, upstream, state) = (store.clone(), upstream.clone(), state.clone());
            sends.spawn(async move {
                let mut results = Vec::with_capacity(chain.len());
                for (message, claims) in chain {
                    let result =
                        send_message(store.as_ref(), upstream.as_ref(), &state, &message, &claims)
                            .await;
                    // Documents only: a status sent up has no recipient to hear from.
                    if let (Ok(doc_id), PackageKind::Document) = (&result, message.kind) {
                        state.reports.follow(message.id, doc_id.clone());
                    }
                    results.push((message.id, result));
                }
                results
            });
        }
        let mut pause = Duration::ZERO;
        while let Some(joined) = sends.join_next().await {
            let Ok(results) = joined else { continue };
            for (id, result) in results {
                match result {
                    Ok(doc_id) => {
                        tracing::debug!(message = %id, %doc_id, "sent to the national axis")
                    }
                    Err(e @ UpstreamError::Credentials { .. }) => {
                        credentials_rejected(&relay, &state, &e).await;
                        pause = pause.max(Duration::from_secs(30));
                    }
                    Err(UpstreamError::CircuitOpen(wait)) => {
                        pause = pause.max(wait.max(Duration::from_millis(200)));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, message = %id, "sending to the national axis failed")
                    }
                }
            }
        }
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
}

/// Sends one message to the axis (once, to all its claimed recipients) and records the
/// outcome on each delivery.
async fn send_message(
    store: &dyn truc_store::Store,
    upstream: &dyn Upstream,
    state: &LinkState,
    message: &truc_store::MessageRecord,
    claims: &[truc_store::Claim],
) -> Result<String, UpstreamError> {
    let metrics = &state.metrics;
    // The claims must outlive the send, which may take longer than the lease taken at claim
    // time (a large package on a slow link, or its turn after others about its document):
    // otherwise the sweeper would queue it again while it is being sent, and it would be
    // sent twice.
    let until = Timestamp::now()
        .plus(truc_upstream::transfer_allowance(state.call_timeout, message.size) + LEASE_MARGIN);
    let mut held = Vec::with_capacity(claims.len());
    for claim in claims {
        match store.extend_lease(&claim.token, until).await {
            Ok(()) => held.push(claim.clone()),
            Err(e) => {
                tracing::debug!(error = %e, delivery = %claim.token.key, "claim ran out before its turn; it is sent later")
            }
        }
    }
    let claims = held.as_slice();
    if claims.is_empty() {
        return Err(UpstreamError::Unavailable(
            "its claims ran out before its turn".into(),
        ));
    }
    let to: Vec<String> = claims
        .iter()
        .map(|c| c.token.key.recipient.to_string())
        .collect();
    // A large package goes up from its blob file as it is sent, never whole in memory.
    let result = match store.payload_of(message).await {
        Ok(p) => {
            let upload = match p {
                truc_store::Payload::Inline(bytes) => Upload::Bytes(bytes),
                truc_store::Payload::File { path, size } => Upload::File { path, size },
            };
            upstream
                .send_upload(
                    upload,
                    &message.sha256.to_hex(),
                    message.sender.as_str(),
                    &to,
                    message.kind == PackageKind::Status,
                )
                .await
        }
        Err(e) => Err(UpstreamError::Protocol(format!("payload: {e}"))),
    };
    let now = Timestamp::now();
    for claim in claims {
        let outcome = match &result {
            Ok(doc_id) => store
                .ack(
                    &claim.token,
                    Completion::Delivered {
                        upstream_doc_id: Some(doc_id.clone()),
                    },
                    now,
                )
                .await
                .map(|_| {
                    metrics.delivered(&NATIONAL_AXIS);
                    metrics.acknowledged(&NATIONAL_AXIS);
                }),
            Err(e @ (UpstreamError::Credentials { .. } | UpstreamError::CircuitOpen(_)))
                if now < claim.delivery.queued_at.plus(state.max_age) =>
            {
                // Not this package's fault: give it back without counting an attempt.
                tracing::debug!(error = %e, "national axis not usable now");
                store
                    .release(
                        &claim.token,
                        &format!("the national axis is not usable now: {e}"),
                        now,
                    )
                    .await
            }
            // Past its age: given up like any other delivery that waited that long (the
            // store's policy dead-letters it), not kept for ever while the axis stays
            // unusable (a secret never fixed, an outage of days).
            Err(e @ (UpstreamError::Credentials { .. } | UpstreamError::CircuitOpen(_))) => store
                .nack(&claim.token, &format!("{}: {e}", e.code()), now)
                .await
                .map(|outcome| match outcome {
                    truc_store::NackOutcome::Dead(_) => metrics.dead_lettered(&NATIONAL_AXIS),
                    truc_store::NackOutcome::RetryAt(_) => metrics.retried(&NATIONAL_AXIS),
                }),
            Err(e) if e.is_transient() => store
                .nack(&claim.token, &format!("{}: {e}", e.code()), now)
                .await
                .map(|outcome| match outcome {
                    truc_store::NackOutcome::Dead(_) => metrics.dead_lettered(&NATIONAL_AXIS),
                    truc_store::NackOutcome::RetryAt(_) => metrics.retried(&NATIONAL_AXIS),
                }),
            Err(e) => store
                .fail(&claim.token, &format!("{}: {e}", e.code()), now)
                .await
                .map(|_| metrics.dead_lettered(&NATIONAL_AXIS)),
        };
        if let Err(e) = outcome {
            tracing::warn!(error = %e, delivery = %claim.token.key, "recording the send failed");
        }
    }
    result
}

/// Polls the axis for packages addressed to this ministry, stores each durably (deduplicated
/// by transport id and content), routes it, and only then acknowledges it to the axis.
pub async fn inbound(
    relay: Arc<Relay>,
    upstream: Arc<dyn Upstream>,
    state: Arc<LinkState>,
    every: Duration,
) {
    // The first poll at once: packages may have waited on the axis while the relay was down.
    let mut wait = Duration::ZERO;
    loop {
        tokio::time::sleep(wait).await;
        let mut failed = false;
        let mut pause = Duration::ZERO;
        let mut busy = false;
        for status in [false, true] {
            match upstream.list_received(status).await {
                Ok(items) => {
                    let mut seen = std::collections::HashSet::new();
                    let ids: Vec<String> = items
                        .into_iter()
                        .map(|i| i.doc_id)
                        .filter(|id| seen.insert(id.clone())) // listed twice
                        .collect();
                    // Progress was made: poll again at once, there may be more.
                    busy |= if status {
                        receive_statuses(&relay, &upstream, &state, ids).await
                    } else {
                        receive_documents(&relay, &upstream, &state, ids).await
                    };
                }
                Err(e @ UpstreamError::Credentials { .. }) => {
                    credentials_rejected(&relay, &state, &e).await;
                    failed = true;
                }
                // The circuit breaker paces calls to an axis that keeps failing.
                Err(UpstreamError::CircuitOpen(until)) => {
                    pause = pause.max(until);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "polling the national axis failed");
                }
            }
        }
        // Credentials refused: nothing will change soon, poll slowly. Circuit open: wait for
        // the next probe. Otherwise the normal pace.
        wait = if failed {
            Duration::from_secs(30).max(every)
        } else if busy && pause.is_zero() {
            // Packages came in: look again at once, there may be more.
            Duration::ZERO
        } else {
            every.max(pause)
        };
    }
}

/// A package the axis listed, once fetched and read.
enum Fetched {
    /// Nothing left to do (stored before and acknowledged again, or refused for good).
    Settled,
    /// Read, to be stored and acknowledged.
    Read {
        payload: PayloadInput,
        meta: truc_edxml::PackageMeta,
    },
}

/// A fetch on its own task, stopped with the poller (at shutdown) like the stores in its
/// `JoinSet`.
struct FetchTask(tokio::task::JoinHandle<Result<Fetched, UpstreamError>>);

impl Drop for FetchTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Logs a package that could not be received this time; whether any was.
fn settled(received: &mut bool, id: &str, r: Result<(), UpstreamError>) {
    match r {
        Ok(()) => *received = true,
        Err(e) => {
            tracing::warn!(error = %e, doc_id = %id, "receiving from the national axis failed; retried at the next poll")
        }
    }
}

/// Fetches, reads, stores and acknowledges the documents the axis listed, up to
/// [`RECEIVING_WINDOW`] at a time, each as it comes: a large one (minutes on a slow link)
/// does not hold up the others. A failure on one is retried at the next poll, at the
/// normal pace: only a failing list means the axis is in trouble. Returns whether any was
/// received.
async fn receive_documents(
    relay: &Arc<Relay>,
    upstream: &Arc<dyn Upstream>,
    state: &LinkState,
    ids: Vec<String>,
) -> bool {
    let (metrics, intake) = (&state.metrics, state.intake);
    let mut ids = ids.into_iter();
    let mut receiving = tokio::task::JoinSet::new();
    let mut received = false;
    loop {
        while receiving.len() < RECEIVING_WINDOW {
            let Some(id) = ids.next() else { break };
            let (relay, upstream, metrics) = (relay.clone(), upstream.clone(), metrics.clone());
            receiving.spawn(async move {
                let fetched =
                    fetch_one(&relay, upstream.as_ref(), &metrics, intake, "document", &id).await;
                let r = match fetched {
                    Ok(Fetched::Settled) => Ok(()),
                    Ok(Fetched::Read { payload, meta }) => {
                        let package = (payload, meta);
                        store_one(&relay, upstream.as_ref(), &metrics, &id, package, None).await
                    }
                    Err(e) => Err(e),
                };
                (id, r)
            });
        }
        match receiving.join_next().await {
            Some(Ok((id, r))) => settled(&mut received, &id, r),
            Some(Err(_)) => {}
            None => break,
        }
    }
    received
}

/// Fetches, reads, stores and acknowledges the statuses the axis listed, up to
/// [`RECEIVING_WINDOW`] at a time. Those about one document are stored in the order the
/// axis lists them, each after the previous one is stored: the sender then gets them in
/// that order, not 06 before 01 because their fetches raced. If one fails to be stored,
/// the later ones about its document wait for the next poll with it; if one fails to be
/// fetched (its document unknown), the later ones go on: order is kept as well as the
/// faults allow, and the timeline does not depend on it. Returns whether any was received.
async fn receive_statuses(
    relay: &Arc<Relay>,
    upstream: &Arc<dyn Upstream>,
    state: &LinkState,
    ids: Vec<String>,
) -> bool {
    let (metrics, intake) = (&state.metrics, state.intake);
    let mut ids = ids.into_iter();
    // Fetches in the order listed (each running on its own), then stores.
    let mut fetching = std::collections::VecDeque::new();
    let mut storing: tokio::task::JoinSet<(String, Result<(), UpstreamError>)> =
        tokio::task::JoinSet::new();
    // Per document, whether the last package about it taken so far got stored.
    let mut last_stored: std::collections::HashMap<
        truc_edxml::DocumentId,
        tokio::sync::oneshot::Receiver<bool>,
    > = std::collections::HashMap::new();
    let mut received = false;
    let mut settle = |id: &str, r| settled(&mut received, id, r);
    loop {
        while fetching.len() + storing.len() < RECEIVING_WINDOW {
            let Some(id) = ids.next() else { break };
            let (relay, upstream, metrics) = (relay.clone(), upstream.clone(), metrics.clone());
            let fetch = tokio::spawn({
                let id = id.clone();
                async move {
                    fetch_one(&relay, upstream.as_ref(), &metrics, intake, "status", &id).await
                }
            });
            fetching.push_back((id, FetchTask(fetch)));
        }
        let Some((id, mut fetch)) = fetching.pop_front() else {
            // Nothing being fetched: wait for a store (room for more, or the end).
            match storing.join_next().await {
                Some(Ok((id, r))) => settle(&id, r),
                Some(Err(_)) => {}
                None => break,
            }
            continue;
        };
        match (&mut fetch.0).await {
            Ok(Ok(Fetched::Settled)) => settle(&id, Ok(())),
            Ok(Ok(Fetched::Read { payload, meta })) => {
                let (stored, stored_rx) = tokio::sync::oneshot::channel();
                // A status's document is the one it answers.
                let previous = meta
                    .document_id()
                    .and_then(|doc| last_stored.insert(doc.clone(), stored_rx));
                let (relay, upstream, metrics) = (relay.clone(), upstream.clone(), metrics.clone());
                storing.spawn(async move {
                    // A failed or panicked predecessor: keep the order, try again later.
                    let go = match previous {
                        Some(previous) => previous.await.unwrap_or(false),
                        None => true,
                    };
                    let r = if go {
                        let package = (payload, meta);
                        let stored = Some(stored);
                        store_one(&relay, upstream.as_ref(), &metrics, &id, package, stored).await
                    } else {
                        Err(UpstreamError::Unavailable(
                            "an earlier package about the same document is not stored yet".into(),
                        ))
                    };
                    (id, r)
                });
            }
            Ok(Err(e)) => settle(&id, Err(e)),
            Err(_) => {}
        }
        while let Some(joined) = storing.try_join_next() {
            if let Ok((id, r)) = joined {
                settle(&id, r);
            }
        }
    }
    received
}

/// Fetches one listed package, reading it as it arrives, in memory while small and into a
/// staging file beyond (like an adapter's): whatever its size, it costs the relay one piece
/// of memory. One already stored is acknowledged again; one that breaks a rule (not edXML,
/// too large) is refused as soon as it does.
async fn fetch_one(
    relay: &Relay,
    upstream: &dyn Upstream,
    metrics: &Metrics,
    intake: Intake,
    kind: &'static str,
    doc_id: &str,
) -> Result<Fetched, UpstreamError> {
    let store = relay.store();
    // Already stored (the acknowledgement was lost): acknowledge again.
    if let Ok(Some(_)) = store.find_by_upstream_id(doc_id).await {
        return upstream
            .acknowledge(doc_id, true)
            .await
            .map(|()| Fetched::Settled);
    }
    let limits = truc_edxml::Limits {
        max_package_bytes: intake.max_package_bytes,
        ..truc_edxml::Limits::default()
    };
    // The relay forwards packages whole: the attachments' digests are not needed.
    let reader = truc_edxml::PackageReader::new(limits).without_attachment_digests();
    let mut incoming = Incoming::new(reader, intake.memory_package_bytes, 0);
    let mut download = upstream.fetch_stream(doc_id).await?;
    let refused = loop {
        let Some(piece) = download.next_piece().await? else {
            break None;
        };
        match incoming.chunk(relay, piece.into()).await {
            Ok(()) => {}
            Err(RelayError::Store(e)) => {
                return Err(UpstreamError::Unavailable(format!(
                    "staging it here failed: {e}"
                )))
            }
            // The package breaks a rule: stop reading it.
            Err(e) => break Some(e),
        }
    };
    drop(download);
    let outcome = match refused {
        Some(e) => Err(e),
        None => incoming.finish().await,
    };
    match outcome {
        Ok((meta, payload)) => Ok(Fetched::Read { payload, meta }),
        Err(RelayError::Store(e)) => Err(UpstreamError::Unavailable(format!(
            "staging it here failed: {e}"
        ))),
        Err(e) => {
            metrics.submitted(kind, "national_axis", "refused");
            refuse(relay, upstream, doc_id, &format!("{}: {e}", e.code()))
                .await
                .map(|()| Fetched::Settled)
        }
    }
}

/// Stores a fetched package durably (routed to its recipients), then acknowledges it to
/// the axis; one the relay can never deliver is refused. `settled`, if any, hears `true` once the
/// package is stored or refused, before the axis is told: the next package about the same
/// document may go then (dropped unsent, it means "not stored").
async fn store_one(
    relay: &Relay,
    upstream: &dyn Upstream,
    metrics: &Metrics,
    doc_id: &str,
    (payload, meta): (PayloadInput, truc_edxml::PackageMeta),
    settled: Option<tokio::sync::oneshot::Sender<bool>>,
) -> Result<(), UpstreamError> {
    let kind = match meta.kind() {
        PackageKind::Document => "document",
        PackageKind::Status => "status",
    };
    let who = Submitter::NationalAxis {
        doc_id: doc_id.to_owned(),
    };
    match relay.submit(&who, &meta, payload, None).await {
        Ok(receipt) => {
            if let Some(settled) = settled {
                let _ = settled.send(true);
            }
            let outcome = if receipt.duplicate {
                "duplicate"
            } else {
                "accepted"
            };
            metrics.submitted(kind, "national_axis", outcome);
            tracing::info!(doc_id, message = %receipt.message.id, duplicate = receipt.duplicate, "received from the national axis");
            upstream.acknowledge(doc_id, true).await
        }
        Err(e @ (RelayError::Store(_) | RelayError::Config(_))) => Err(UpstreamError::Unavailable(
            format!("storing it here failed: {e}"),
        )),
        Err(e) => {
            // Never deliverable here: nothing for later packages to wait for.
            if let Some(settled) = settled {
                let _ = settled.send(true);
            }
            metrics.submitted(kind, "national_axis", "refused");
            refuse(relay, upstream, doc_id, &format!("{}: {e}", e.code())).await
        }
    }
}

/// A package that can never be delivered here: `fail` on the axis, and a record operators
/// can see.
async fn refuse(
    relay: &Relay,
    upstream: &dyn Upstream,
    doc_id: &str,
    reason: &str,
) -> Result<(), UpstreamError> {
    tracing::warn!(doc_id, reason, "refusing a package from the national axis");
    if let Err(e) = relay
        .store()
        .audit(
            "system:national-axis",
            "inbound_refused",
            doc_id,
            reason,
            Timestamp::now(),
        )
        .await
    {
        return Err(UpstreamError::Unavailable(format!(
            "recording the refusal failed: {e}"
        )));
    }
    upstream.acknowledge(doc_id, false).await
}

/// State shared by the link's workers.
#[derive(Debug)]
pub struct LinkState {
    last_credentials_alert: std::sync::Mutex<Option<std::time::Instant>>,
    metrics: Arc<Metrics>,
    intake: Intake,
    /// The upstream client's timeout for a call without a package.
    call_timeout: Duration,
    /// Where packages sent are handed to be followed in the axis's transport reports.
    reports: crate::transport_report::TransportReports,
    /// How long a delivery may wait before it is given up (the store's retry policy).
    max_age: Duration,
}

/// How packages from the axis are taken in: the same limits as an adapter's.
#[derive(Debug, Clone, Copy)]
pub struct Intake {
    /// Larger packages are refused (`EDXML_TOO_LARGE`) as soon as they pass it.
    pub max_package_bytes: u64,
    /// Larger packages go to a staging file while they arrive.
    pub memory_package_bytes: usize,
}

impl LinkState {
    /// The workers' shared state, counting into `metrics`, taking packages in with
    /// `intake`, for an upstream client whose calls time out after `call_timeout`, handing
    /// what it sends to `reports`; a delivery queued longer than `max_age` is given up
    /// even while the axis cannot be used.
    pub fn new(
        metrics: Arc<Metrics>,
        intake: Intake,
        call_timeout: Duration,
        reports: crate::transport_report::TransportReports,
        max_age: Duration,
    ) -> Self {
        LinkState {
            last_credentials_alert: std::sync::Mutex::new(None),
            metrics,
            intake,
            call_timeout,
            reports,
            max_age,
        }
    }
}

/// The axis refuses this relay's system id, secret or clock: no retry can fix that, so it is
/// logged as an error and written to the audit log (at most every 10 minutes) for operators.
async fn credentials_rejected(relay: &Relay, state: &LinkState, e: &UpstreamError) {
    tracing::error!(error = %e, "THE NATIONAL AXIS REJECTS THIS RELAY'S CREDENTIALS: check [upstream] system_id, secret and the clock");
    let due = {
        let mut last = state
            .last_credentials_alert
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let due = last.is_none_or(|t| t.elapsed() > Duration::from_secs(600));
        if due {
            *last = Some(std::time::Instant::now());
        }
        due
    };
    if due {
        let _ = relay
            .store()
            .audit(
                "system:national-axis",
                "credentials_rejected",
                "national axis",
                &format!("secret rejected by the national axis: {e}"),
                Timestamp::now(),
            )
            .await;
    }
}

/// Keeps the national directory (`getAgenciesList`) in the registry, refreshed every
/// `every`, so `ListUnits`/`LookupUnit` answer for national bodies and routing can tell a
/// remote code from an unknown one.
pub async fn directory(relay: Arc<Relay>, upstream: Arc<dyn Upstream>, every: Duration) {
    loop {
        match upstream.agencies().await {
            Ok(list) => {
                let bodies: Vec<truc_relay::RemoteBody> = list
                    .into_iter()
                    .filter_map(|a| {
                        Some(truc_relay::RemoteBody {
                            code: truc_edxml::OrgCode::parse(&a.code).ok()?,
                            name: a.name,
                            parent: None,
                        })
                    })
                    .collect();
                match relay
                    .registry()
                    .set_directory(relay.store().as_ref(), bodies)
                    .await
                {
                    Ok(n) => tracing::info!(bodies = n, "national directory synchronised"),
                    Err(e) => tracing::warn!(error = %e, "saving the national directory failed"),
                }
                tokio::time::sleep(every).await;
            }
            Err(e) => {
                tracing::debug!(error = %e, "fetching the national directory failed; retrying");
                tokio::time::sleep(Duration::from_secs(30).min(every)).await;
            }
        }
    }
}
