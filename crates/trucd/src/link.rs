//! The link to the national axis: an outbound worker that sends what leaves the ministry,
//! and an inbound poller that brings in what arrives for it.

use std::sync::Arc;
use std::time::Duration;

use truc_edxml::PackageKind;
use truc_relay::{Relay, RelayError, Submitter};
use truc_store::{Completion, Destination, PayloadInput, Timestamp};
use truc_upstream::{Upstream, UpstreamError};

use crate::metrics::{Metrics, NATIONAL_AXIS};

/// How many received packages are fetched, stored and acknowledged at once.
const RECEIVING_WINDOW: usize = 64;

/// Lease on deliveries being sent upward.
const SEND_LEASE: Duration = Duration::from_secs(300);

/// Sends the national-axis outbox: one `sendEdoc` per message (the axis fans out to its
/// recipients), recording the axis's transport id; failures wait for the store's retry
/// policy, refusals are dead-lettered with the reason.
pub async fn outbound(relay: Arc<Relay>, upstream: Arc<dyn Upstream>, state: Arc<LinkState>) {
    let store = relay.store().clone();
    let notifier = relay.hub().notifier(&Destination::NationalAxis);
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
                _ = notifier.notified() => {}
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
        // Messages go up concurrently (the axis answers each call in a round trip).
        let mut sends = tokio::task::JoinSet::new();
        for (message, claims) in by_message {
            let (store, upstream, metrics) =
                (store.clone(), upstream.clone(), state.metrics.clone());
            sends.spawn(async move {
                let result = send_message(
                    store.as_ref(),
                    upstream.as_ref(),
                    &metrics,
                    &message,
                    &claims,
                )
                .await;
                (message.id, result)
            });
        }
        let mut pause = Duration::ZERO;
        while let Some(joined) = sends.join_next().await {
            let Ok((id, result)) = joined else { continue };
            match result {
                Ok(doc_id) => tracing::debug!(message = %id, %doc_id, "sent to the national axis"),
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
    metrics: &Metrics,
    message: &truc_store::MessageRecord,
    claims: &[truc_store::Claim],
) -> Result<String, UpstreamError> {
    let to: Vec<String> = claims
        .iter()
        .map(|c| c.token.key.recipient.to_string())
        .collect();
    let result = match store.payload_of(message).await {
        Ok(p) => match p.read_all() {
            Ok(bytes) => {
                upstream
                    .send(
                        &bytes,
                        message.sender.as_str(),
                        &to,
                        message.kind == PackageKind::Status,
                    )
                    .await
            }
            Err(e) => Err(UpstreamError::Protocol(format!("reading the payload: {e}"))),
        },
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
            Err(e @ (UpstreamError::Credentials { .. } | UpstreamError::CircuitOpen(_))) => {
                // Not this package's fault: give it back without counting an attempt.
                tracing::debug!(error = %e, "national axis not usable now");
                store.release(&claim.token, now).await
            }
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
                    // Up to RECEIVING_WINDOW at a time, a new one starting as soon as one
                    // finishes. A failure on one item is retried at the next poll, at the
                    // normal pace: only a failing list means the axis is in trouble.
                    let mut ids = ids.into_iter();
                    let mut receiving = tokio::task::JoinSet::new();
                    loop {
                        while receiving.len() < RECEIVING_WINDOW {
                            let Some(id) = ids.next() else { break };
                            let (relay, upstream, metrics) =
                                (relay.clone(), upstream.clone(), state.metrics.clone());
                            receiving.spawn(async move {
                                let r = receive_one(&relay, upstream.as_ref(), &metrics, &id).await;
                                (id, r)
                            });
                        }
                        let Some(joined) = receiving.join_next().await else {
                            break;
                        };
                        match joined {
                            // Progress was made: poll again at once, there may be more.
                            Ok((_, Ok(()))) => busy = true,
                            Ok((id, Err(e))) => {
                                tracing::warn!(error = %e, doc_id = %id, "receiving from the national axis failed; retried at the next poll")
                            }
                            Err(_) => {}
                        }
                    }
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

async fn receive_one(
    relay: &Relay,
    upstream: &dyn Upstream,
    metrics: &Metrics,
    doc_id: &str,
) -> Result<(), UpstreamError> {
    let store = relay.store();
    // Already stored (the acknowledgement was lost): acknowledge again.
    if let Ok(Some(_)) = store.find_by_upstream_id(doc_id).await {
        return upstream.acknowledge(doc_id, true).await;
    }
    let bytes = upstream.fetch(doc_id).await?;
    let meta = match truc_edxml::parse(&bytes) {
        Ok(m) => m,
        Err(e) => {
            metrics.submitted("document", "national_axis", "refused");
            return refuse(relay, upstream, doc_id, &format!("{}: {e}", e.code())).await;
        }
    };
    let kind = match meta.kind() {
        PackageKind::Document => "document",
        PackageKind::Status => "status",
    };
    let who = Submitter::NationalAxis {
        doc_id: doc_id.to_owned(),
    };
    match relay
        .submit(&who, &meta, PayloadInput::Bytes(bytes.into()), None)
        .await
    {
        Ok(receipt) => {
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
}

impl LinkState {
    /// The workers' shared state, counting into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        LinkState {
            last_credentials_alert: std::sync::Mutex::new(None),
            metrics,
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
