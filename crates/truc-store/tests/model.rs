//! A model-based test: random sequences of submit / claim / ack / nack / time passing /
//! lease expiry / requeue / restart, checked step by step against an in-memory model.
//!
//! Invariants: no acknowledged submission is lost (record and bytes intact after every step
//! and every restart); every delivery's state is what the model predicts; dedupe returns
//! the original id; and once time runs out every delivery ends acknowledged or dead.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::*;
use proptest::prelude::*;
use truc_store::{
    ClaimToken, Completion, DeliveryKey, DeliveryState, Destination, MessageId, NackOutcome,
    SledStore, Store, StoreError, Timestamp,
};

const UNITS: [&str; 3] = ["000.00.07.G04", "000.00.09.G04", "000.00.11.G04"];
const LEASE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
enum Op {
    /// Submit document `n` (same `n` again: a duplicate) to the units in the mask.
    Submit {
        n: u8,
        mask: u8,
    },
    Claim {
        unit: usize,
        max: usize,
    },
    Ack {
        pick: prop::sample::Index,
    },
    Nack {
        pick: prop::sample::Index,
    },
    Advance {
        ms: u64,
    },
    ReleaseExpired,
    Requeue {
        pick: prop::sample::Index,
    },
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..12, 1u8..8).prop_map(|(n, mask)| Op::Submit { n, mask }),
        4 => (0usize..3, 1usize..4).prop_map(|(unit, max)| Op::Claim { unit, max }),
        3 => any::<prop::sample::Index>().prop_map(|pick| Op::Ack { pick }),
        3 => any::<prop::sample::Index>().prop_map(|pick| Op::Nack { pick }),
        2 => (1u64..4000).prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::ReleaseExpired),
        1 => any::<prop::sample::Index>().prop_map(|pick| Op::Requeue { pick }),
        1 => Just(Op::Restart),
    ]
}

#[derive(Debug, Clone, PartialEq)]
enum ModelState {
    Queued {
        ready_at: Timestamp,
    },
    /// `ready_before`: where it stood in its queue before the claim, and returns to when the
    /// lease ends without an answer (expiry, restart).
    Claimed {
        lease: u64,
        until: Timestamp,
        ready_before: Timestamp,
    },
    Acknowledged,
    Dead,
}

#[derive(Debug, Clone)]
struct ModelDelivery {
    unit: usize,
    state: ModelState,
    queued_at: Timestamp,
}

#[derive(Default)]
struct Model {
    now: Timestamp,
    /// Document number → its id and bytes.
    messages: BTreeMap<u8, (MessageId, Vec<u8>)>,
    deliveries: BTreeMap<DeliveryKey, ModelDelivery>,
    /// Tokens handed out, including stale ones (to check they are refused).
    tokens: Vec<ClaimToken>,
}

fn bytes_of(n: u8) -> Vec<u8> {
    format!(
        "<edXML>document {n} {}</edXML>",
        "x".repeat(usize::from(n) * 97)
    )
    .into_bytes()
}

async fn check_invariants(store: &SledStore, model: &Model) -> Result<(), TestCaseError> {
    for (n, (id, bytes)) in &model.messages {
        let record = store.message(*id).await.map_err(fail)?;
        prop_assert!(record.is_some(), "document {n} ({id}) lost");
        let payload = store
            .payload(*id)
            .await
            .map_err(fail)?
            .read_all()
            .map_err(|e| fail(StoreError::Io(e)))?;
        prop_assert_eq!(payload.as_ref(), bytes.as_slice(), "document {} bytes", n);
    }
    let mut by_message: HashMap<MessageId, Vec<(DeliveryKey, ModelDelivery)>> = HashMap::new();
    for (k, d) in &model.deliveries {
        by_message
            .entry(k.message_id)
            .or_default()
            .push((k.clone(), d.clone()));
    }
    for (id, expected) in by_message {
        let actual = store.deliveries(id).await.map_err(fail)?;
        prop_assert_eq!(actual.len(), expected.len());
        for (k, m) in expected {
            let a = actual
                .iter()
                .find(|d| d.key == k)
                .ok_or_else(|| fail(StoreError::NotFound(k.to_string())))?;
            let ok = match &m.state {
                ModelState::Queued { ready_at } => {
                    a.state == DeliveryState::Queued && a.ready_at == *ready_at
                }
                ModelState::Claimed { lease, .. } => {
                    a.state == DeliveryState::Claimed && a.lease == Some(*lease)
                }
                ModelState::Acknowledged => a.state == DeliveryState::Acknowledged,
                ModelState::Dead => a.state == DeliveryState::Dead,
            };
            prop_assert!(ok, "{}: model {:?}, store {:?}", k, m.state, a);
        }
    }
    Ok(())
}

fn fail(e: StoreError) -> TestCaseError {
    TestCaseError::fail(format!("{}: {e}", e.code()))
}

async fn run_ops(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().map_err(|e| fail(StoreError::Io(e)))?;
    let config = fast_config();
    let max_age = config.retry.max_age;
    let mut store = SledStore::open(dir.path(), config.clone()).map_err(fail)?;
    let mut model = Model {
        now: T0,
        ..Model::default()
    };
    for op in ops {
        let now = model.now;
        match op {
            Op::Submit { n, mask } => {
                let routes: Vec<(&str, Destination)> = UNITS
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .map(|(_, u)| (*u, inbox(u)))
                    .collect();
                let mut m = document("000.00.05.G04", &routes, u32::from(n), &bytes_of(n));
                m.received_at = now;
                let outcome = store.submit(m).await.map_err(fail)?;
                match model.messages.get(&n) {
                    Some((id, _)) => {
                        prop_assert!(outcome.is_duplicate());
                        prop_assert_eq!(outcome.record().id, *id);
                    }
                    None => {
                        prop_assert!(!outcome.is_duplicate());
                        let id = outcome.record().id;
                        model.messages.insert(n, (id, bytes_of(n)));
                        for (i, u) in UNITS.iter().enumerate() {
                            if mask & (1 << i) != 0 {
                                model.deliveries.insert(
                                    DeliveryKey {
                                        message_id: id,
                                        recipient: code(u),
                                    },
                                    ModelDelivery {
                                        unit: i,
                                        state: ModelState::Queued { ready_at: now },
                                        queued_at: now,
                                    },
                                );
                            }
                        }
                    }
                }
            }
            Op::Claim { unit, max } => {
                let claims = store
                    .claim(&inbox(UNITS[unit]), max, LEASE, now)
                    .await
                    .map_err(fail)?;
                let ready: Vec<&DeliveryKey> = model
                    .deliveries
                    .iter()
                    .filter(|(_, d)| {
                        d.unit == unit
                            && matches!(d.state, ModelState::Queued { ready_at } if ready_at <= now)
                    })
                    .map(|(k, _)| k)
                    .collect();
                prop_assert_eq!(claims.len(), ready.len().min(max));
                for c in claims {
                    let d = model
                        .deliveries
                        .get_mut(&c.token.key)
                        .ok_or_else(|| fail(StoreError::NotFound(c.token.key.to_string())))?;
                    let ModelState::Queued { ready_at } = d.state else {
                        prop_assert!(false, "claimed {:?}", d.state);
                        continue;
                    };
                    prop_assert!(ready_at <= now, "claimed before {:?}", ready_at);
                    d.state = ModelState::Claimed {
                        lease: c.token.lease,
                        until: now.plus(LEASE),
                        ready_before: ready_at,
                    };
                    model.tokens.push(c.token);
                }
            }
            Op::Ack { pick } | Op::Nack { pick } if !model.tokens.is_empty() => {
                let token = model.tokens[pick.index(model.tokens.len())].clone();
                let d = model
                    .deliveries
                    .get_mut(&token.key)
                    .ok_or_else(|| fail(StoreError::NotFound(token.key.to_string())))?;
                let valid =
                    matches!(d.state, ModelState::Claimed { lease, .. } if lease == token.lease);
                if matches!(op, Op::Ack { .. }) {
                    let r = store.ack(&token, Completion::Acknowledged, now).await;
                    if valid {
                        r.map_err(fail)?;
                        d.state = ModelState::Acknowledged;
                    } else {
                        prop_assert!(matches!(r, Err(StoreError::LeaseLost(_))), "{:?}", r);
                    }
                } else {
                    let r = store.nack(&token, "refused", now).await;
                    if valid {
                        let deadline = d.queued_at.plus(max_age);
                        match r.map_err(fail)? {
                            NackOutcome::RetryAt(at) => {
                                prop_assert!(now < deadline && at > now && at <= deadline);
                                d.state = ModelState::Queued { ready_at: at };
                            }
                            NackOutcome::Dead(_) => {
                                prop_assert!(now >= deadline);
                                d.state = ModelState::Dead;
                            }
                        }
                    } else {
                        prop_assert!(matches!(r, Err(StoreError::LeaseLost(_))), "{:?}", r);
                    }
                }
            }
            Op::Ack { .. } | Op::Nack { .. } => {}
            Op::Advance { ms } => model.now = now.plus(Duration::from_millis(ms)),
            Op::ReleaseExpired => {
                let released = store.release_expired(now).await.map_err(fail)?;
                let mut expected = 0;
                for d in model.deliveries.values_mut() {
                    if let ModelState::Claimed {
                        until,
                        ready_before,
                        ..
                    } = d.state
                    {
                        if until <= now {
                            d.state = ModelState::Queued {
                                ready_at: ready_before,
                            };
                            expected += 1;
                        }
                    }
                }
                prop_assert_eq!(released, expected);
            }
            Op::Requeue { pick } => {
                let dead: Vec<DeliveryKey> = model
                    .deliveries
                    .iter()
                    .filter(|(_, d)| d.state == ModelState::Dead)
                    .map(|(k, _)| k.clone())
                    .collect();
                if !dead.is_empty() {
                    let k = &dead[pick.index(dead.len())];
                    store.requeue(k, "operator:test", now).await.map_err(fail)?;
                    if let Some(d) = model.deliveries.get_mut(k) {
                        d.state = ModelState::Queued { ready_at: now };
                        d.queued_at = now;
                    }
                }
            }
            Op::Restart => {
                drop(store);
                store = SledStore::open(dir.path(), config.clone()).map_err(fail)?;
                for d in model.deliveries.values_mut() {
                    if let ModelState::Claimed { ready_before, .. } = d.state {
                        d.state = ModelState::Queued {
                            ready_at: ready_before,
                        };
                    }
                }
            }
        }
        check_invariants(&store, &model).await?;
    }

    // Drain: time runs out; every delivery must end acknowledged or dead.
    for round in 0..200 {
        model.now = model.now.plus(Duration::from_secs(3));
        let now = model.now;
        store.release_expired(now).await.map_err(fail)?;
        let mut any = false;
        for unit in UNITS {
            for (i, c) in store
                .claim(&inbox(unit), 100, LEASE, now)
                .await
                .map_err(fail)?
                .into_iter()
                .enumerate()
            {
                any = true;
                if (i + round) % 3 == 0 {
                    store
                        .ack(&c.token, Completion::Acknowledged, now)
                        .await
                        .map_err(fail)?;
                } else {
                    store
                        .nack(&c.token, "still failing", now)
                        .await
                        .map_err(fail)?;
                }
            }
        }
        if !any && round > 10 {
            break;
        }
    }
    for (n, (id, _)) in &model.messages {
        for d in store.deliveries(*id).await.map_err(fail)? {
            prop_assert!(
                matches!(d.state, DeliveryState::Acknowledged | DeliveryState::Dead),
                "document {} ended {:?}",
                n,
                d.state
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn the_store_behaves_like_its_model(ops in prop::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| fail(StoreError::Io(e)))?;
        rt.block_on(run_ops(ops))?;
    }
}
