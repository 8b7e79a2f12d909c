//! Fuzz the relay's protobuf-facing handlers: any bytes are decoded as the request message
//! of a unary gRPC method (the first byte picks the method) and, when they decode, handed to
//! the real service over a real store, as an adapter of the transport ministry would. The
//! handlers must answer (a result or a status with a code), never panic or hang.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use prost::Message;
use truc_proto::v1 as pb;
use truc_proto::v1::relay_server::Relay as _;
use trucd::grpc::{Identity, RelayService};

struct World {
    runtime: tokio::runtime::Runtime,
    service: RelayService,
    _dir: tempfile::TempDir,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let service = runtime.block_on(async {
            let ministry = truc_edxml::OrgCode::parse("000.00.00.G04").expect("code");
            let store: Arc<dyn truc_store::Store> = Arc::new(
                truc_store::SledStore::open(dir.path(), truc_store::StoreConfig::default())
                    .expect("store"),
            );
            let registry = Arc::new(truc_relay::Registry::new(ministry.clone()));
            registry
                .import(
                    store.as_ref(),
                    &truc_relay::sample_transport_ministry(&ministry),
                    "fuzz",
                )
                .await
                .expect("registry");
            let relay = Arc::new(truc_relay::Relay::new(store, registry));
            let (_closing_tx, closing) = tokio::sync::watch::channel(false);
            std::mem::forget(_closing_tx);
            RelayService::new(
                relay,
                trucd::config::LimitsConfig::default(),
                Identity::Insecure(truc_edxml::OrgCode::parse("000.00.05.G04").expect("code")),
                closing,
                Arc::new(trucd::metrics::Metrics::new()),
            )
        });
        World {
            runtime,
            service,
            _dir: dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&method, body)) = data.split_first() else {
        return;
    };
    let w = world();
    w.runtime.block_on(async {
        let s = &w.service;
        match method % 5 {
            0 => {
                if let Ok(m) = pb::SubmitStatusRequest::decode(body) {
                    let _ = s.submit_status(tonic::Request::new(m)).await;
                }
            }
            1 => {
                if let Ok(m) = pb::GetTraceRequest::decode(body) {
                    let _ = s.get_trace(tonic::Request::new(m)).await;
                }
            }
            2 => {
                if let Ok(m) = pb::ListUnitsRequest::decode(body) {
                    let _ = s.list_units(tonic::Request::new(m)).await;
                }
            }
            3 => {
                if let Ok(m) = pb::LookupUnitRequest::decode(body) {
                    let _ = s.lookup_unit(tonic::Request::new(m)).await;
                }
            }
            _ => {
                if let Ok(m) = pb::FetchPayloadRequest::decode(body) {
                    let _ = s.fetch_payload(tonic::Request::new(m)).await;
                }
            }
        }
    });
});
