//! Metadata extraction speed on realistic packages of 8 KiB, 1 MiB and 50 MiB, beside
//! libxml2's streaming reader (`xmllint --stream --noout`) on the same 50 MiB file when
//! `xmllint` is installed. Run with `scripts/bench-edxml.sh`.

use std::hint::black_box;
use std::io::Write;
use std::process::Command;

use criterion::{criterion_main, BenchmarkId, Criterion, Throughput};
use truc_edxml::{
    parse, AttachmentSource, CalendarDate, DocumentBuilder, Layout, Limits, OrgCode, PackageReader,
};

/// Deterministic incompressible bytes, like a scanned PDF.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A package of about `total` bytes: a realistic header and one attachment.
fn package(total: usize, wrapped: bool) -> Vec<u8> {
    let code = |s: &str| OrgCode::parse(s).expect("code");
    let mut b = DocumentBuilder::new(
        code("000.00.05.G04"),
        vec![
            code("000.00.07.G04"),
            code("000.03.05.G04"),
            code("000.00.00.G12"),
        ],
        CalendarDate::new(2026, 11, 20).expect("date"),
        "1234",
        "TCĐBVN-VP",
    )
    .subject("Về việc triển khai liên thông văn bản điện tử giữa các đơn vị thuộc Bộ");
    b.layout = Layout {
        base64_line: wrapped.then_some(76),
        crlf: wrapped,
        ..Layout::default()
    };
    let header = b.build().len();
    let payload = total.saturating_sub(header) / 4 * 3;
    b.attachment(AttachmentSource::new("scan.pdf", noise(payload)))
        .build()
}

fn extraction(c: &mut Criterion) {
    let mut group = c.benchmark_group("edxml_extract");
    let cases = [
        ("8KiB", package(8 * 1024, false)),
        ("1MiB", package(1024 * 1024, false)),
        ("50MiB", package(50 * 1024 * 1024, false)),
        ("50MiB_wrapped76", package(50 * 1024 * 1024, true)),
    ];
    for (name, bytes) in &cases {
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        if bytes.len() > 4 * 1024 * 1024 {
            group.sample_size(10);
        }
        group.bench_with_input(BenchmarkId::new("parse", name), bytes, |b, bytes| {
            b.iter(|| parse(black_box(bytes)).expect("valid"))
        });
        group.bench_with_input(
            BenchmarkId::new("stream_64KiB_chunks", name),
            bytes,
            |b, bytes| {
                b.iter(|| {
                    let mut r = PackageReader::new(Limits::default());
                    for chunk in bytes.chunks(64 * 1024) {
                        r.feed(black_box(chunk)).expect("valid");
                    }
                    r.finish().expect("valid")
                })
            },
        );
        // What the relay does with each submission: attachments checked, not hashed.
        group.bench_with_input(
            BenchmarkId::new("relay_stream_64KiB_chunks", name),
            bytes,
            |b, bytes| {
                b.iter(|| {
                    let mut r = PackageReader::new(Limits::default()).without_attachment_digests();
                    for chunk in bytes.chunks(64 * 1024) {
                        r.feed(black_box(chunk)).expect("valid");
                    }
                    r.finish().expect("valid")
                })
            },
        );
    }

    // libxml2's streaming reader on the same 50 MiB file, when installed. It only checks
    // well-formedness (no base64 decoding, no hashing), so it does strictly less work.
    let xmllint_ok = Command::new("xmllint").arg("--version").output().is_ok();
    if xmllint_ok {
        let (name, bytes) = &cases[2];
        let mut file = tempfile_in_target(name);
        file.1.write_all(bytes).expect("write");
        let path = file.0.clone();
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(BenchmarkId::new("xmllint_stream_noout", name), |b| {
            b.iter(|| {
                let status = Command::new("xmllint")
                    .args(["--stream", "--noout", "--huge"])
                    .arg(&path)
                    .status()
                    .expect("xmllint");
                assert!(status.success());
            })
        });
        let _ = std::fs::remove_file(&path);
    } else {
        eprintln!("xmllint not found: install libxml2-utils to compare with libxml2");
    }
    group.finish();
}

fn tempfile_in_target(name: &str) -> (std::path::PathBuf, std::fs::File) {
    let path = std::env::temp_dir().join(format!("truc-bench-{name}-{}.edxml", std::process::id()));
    let file = std::fs::File::create(&path).expect("create");
    (path, file)
}

// The macro generates an undocumented function.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::extraction);
}
criterion_main!(group::benches);
