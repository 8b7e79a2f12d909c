//! Throughput through the national axis: relay A's units send 8 KiB documents to ministry B
//! through the simulator on loopback; relay B receives them and hands them to its adapter.
//!
//! `cargo bench -p truc-tests --bench axis_throughput -- [DOCS]` (default 2000).

use std::time::{Duration, Instant};

use truc_axis_sim::SystemConfig;
use truc_edxml::{AttachmentSource, CalendarDate, DocumentBuilder};
use truc_tests::{code, TestRelay};

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
        let relay_b = TestRelay::start_ministry_with("000.00.00.G12", &["000.00.07.G12"], &upstream(&base, "b", "sb"), limits).await.expect("B");
        let date = CalendarDate::new(2026, 11, 21).expect("date");
        let docs: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                DocumentBuilder::new(code("000.00.05.G04"), vec![code("000.01.07.G12")], date, &i.to_string(), "BENCH")
                    .attachment(AttachmentSource::new("a.pdf", vec![(i % 251) as u8; 5 * 1024]))
                    .build()
            })
            .collect();
        let size = docs[0].len();
        let mut b = relay_b.adapter("000.00.07.G12").await.expect("B");
        let receiver = tokio::spawn(async move {
            let mut inbox = b.inbox(256).await.expect("inbox");
            let mut got = 0;
            while got < n {
                let d = inbox.next().await.expect("next").expect("delivery");
                inbox.ack(&d.delivery_id).await.expect("ack");
                if d.kind == "document" {
                    got += 1;
                }
            }
            Instant::now()
        });
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
        loop {
            if sim.counters().get("sendEdoc.ok").copied().unwrap_or(0) as usize >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let sent = start.elapsed();
        let received = receiver.await.expect("receiver").duration_since(start);
        let cpu = cpu_seconds() - cpu0;
        println!("{n} documents of {size} bytes, one process holding both relays, the simulator and the adapters (2 cores):");
        println!("  submitted to relay A:        {:>6.2} s  ({:>6.0}/s)", submitted.as_secs_f64(), n as f64 / submitted.as_secs_f64());
        println!("  sent to the axis by A:       {:>6.2} s  ({:>6.0}/s)", sent.as_secs_f64(), n as f64 / sent.as_secs_f64());
        println!("  received and delivered by B: {:>6.2} s  ({:>6.0}/s end to end)", received.as_secs_f64(), n as f64 / received.as_secs_f64());
        println!("  CPU used by the process:     {cpu:.1} s ({:.0} % of one core over the run)", 100.0 * cpu / received.as_secs_f64());
        println!("  simulator: {:?}", sim.counters());
    });
}
