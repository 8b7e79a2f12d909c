//! Throughput through the national axis, each way: relay A's unit submits 10 KiB documents
//! for ministry B and relay A sends them to the simulator on loopback (sending); then relay B
//! starts, polls, fetches, stores and hands them to its adapter (receiving).
//!
//! `cargo bench -p truc-tests --bench axis_throughput -- [DOCS]` (default 2000).

use std::time::{Duration, Instant};

use truc_axis_sim::SystemConfig;
use truc_edxml::{AttachmentSource, CalendarDate, DocumentBuilder};
use truc_tests::{code, TestRelay};

/// The allocator `trucd` ships with, so the in-process relays cost what the daemon does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn upstream(base: &str, system: &str, secret: &str) -> String {
    format!("[upstream]\nbase_url = \"{base}\"\nsystem_id = \"{system}\"\nsecret = \"{secret}\"\npoll_secs = 1\n")
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let local = truc_axis_sim::LocalSimulator::start(vec![
            SystemConfig::new("a", "sa", "000.00.00.G04"),
            SystemConfig::new("b", "sb", "000.00.00.G12"),
        ])
        .await
        .expect("simulator");
        let (sim, base) = (local.sim.clone(), local.base_url.clone());
        // One adapter submits everything: lift its per-unit rate limit (500/s by default),
        // which this benchmark would otherwise measure instead of the axis.
        let limits = "submits_per_second = 1000000\nsubmit_burst = 1000000\n";
        let relay_a = TestRelay::start_ministry_with("000.00.00.G04", &["000.00.05.G04"], &upstream(&base, "a", "sa"), limits).await.expect("A");
        let date = CalendarDate::new(2026, 11, 21).expect("date");
        let docs: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                DocumentBuilder::new(code("000.00.05.G04"), vec![code("000.01.07.G12")], date, &i.to_string(), "BENCH")
                    .attachment(AttachmentSource::new("a.pdf", vec![(i % 251) as u8; 5 * 1024]))
                    .build()
            })
            .collect();
        let size = docs[0].len();

        // Phase 1, sending: relay A's unit submits, relay A sends everything to the axis.
        // Ministry B's relay is not running yet, so the packages wait on the axis.
        let counter = |name: &str| sim.counters().get(name).copied().unwrap_or(0);
        let cpu0 = cpu_seconds();
        let start = Instant::now();
        let chunks: Vec<Vec<Vec<u8>>> = docs.chunks(n.div_ceil(16)).map(|c| c.to_vec()).collect();
        let mut submitters = Vec::new();
        for chunk in chunks {
            let mut a = relay_a.adapter("000.00.05.G04").await.expect("A");
            submitters.push(tokio::spawn(async move {
                for d in chunk {
                    a.submit_document(&d, None).await.expect("submit");
                }
            }));
        }
        for s in submitters {
            s.await.expect("submitter");
        }
        let submitted = start.elapsed();
        while (counter("sendEdoc.ok") as usize) < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let sent = start.elapsed();
        let send_cpu = cpu_seconds() - cpu0;
        let send_connections = counter("connections.accepted");

        // Phase 2, receiving: relay B starts, polls the axis, fetches, stores and delivers
        // every package to its adapter (which acknowledges it), and sends the `01` arrival
        // statuses back up.
        let cpu0 = cpu_seconds();
        let start = Instant::now();
        let relay_b = TestRelay::start_ministry_with("000.00.00.G12", &["000.00.07.G12"], &upstream(&base, "b", "sb"), limits).await.expect("B");
        let mut b = relay_b.adapter("000.00.07.G12").await.expect("B");
        let mut inbox = b.inbox(256).await.expect("inbox");
        let mut got = 0;
        while got < n {
            let d = inbox.next().await.expect("next").expect("delivery");
            inbox.ack(&d.delivery_id).await.expect("ack");
            if d.kind == "document" {
                got += 1;
            }
        }
        inbox.close().await.expect("close");
        let received = start.elapsed();
        let receive_cpu = cpu_seconds() - cpu0;
        let receive_connections = counter("connections.accepted") - send_connections;
        let rate = |d: Duration| n as f64 / d.as_secs_f64();
        println!("{n} documents of {size} bytes; one process holds both relays, the simulator and the adapters (2 cores)");
        println!("sending (relay B not running):");
        println!("  submitted to relay A:     {:>6.2} s  ({:>6.0}/s)", submitted.as_secs_f64(), rate(submitted));
        println!("  sent to the axis by A:    {:>6.2} s  ({:>6.0}/s)  CPU {send_cpu:.2} s ({:.2} ms per package), {send_connections} TCP connections to the axis", sent.as_secs_f64(), rate(sent), 1000.0 * send_cpu / n as f64);
        println!("receiving (from relay B's start):");
        println!("  received, stored, delivered and acknowledged by B's adapter:");
        println!("                            {:>6.2} s  ({:>6.0}/s)  CPU {receive_cpu:.2} s ({:.2} ms per package), {receive_connections} new TCP connections to the axis (both relays)", received.as_secs_f64(), rate(received), 1000.0 * receive_cpu / n as f64);
        println!("  simulator: {:?}", sim.counters());
    });
}
