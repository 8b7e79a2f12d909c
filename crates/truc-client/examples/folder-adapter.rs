//! A complete adapter for units without a document-management system: packages dropped in
//! `DIR/outbox/` are submitted (then moved to `sent/`), deliveries are written atomically to
//! `DIR/inbox/`. See `truc_client::folder`.
//!
//! ```text
//! cargo run -p truc-client --example folder-adapter -- \
//!     --relay https://relay.example:7443 --domain relay.example \
//!     --ca ca.pem --cert adapter.pem --key adapter.key --dir /srv/truc-folder
//! ```

use std::path::PathBuf;
use std::time::Duration;

use truc_client::folder::{run, FolderOptions};
use truc_client::{Client, ClientTls};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // One crypto provider for rustls, chosen explicitly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Packages not sent for now are logged (RUST_LOG=warn quiets them).
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().collect();
    let need = |name: &str| arg(&args, name).ok_or_else(|| format!("missing {name}"));
    let tls = ClientTls::from_pem_files(
        need("--ca")?,
        need("--cert")?,
        need("--key")?,
        &need("--domain")?,
    )?;
    let client = Client::connect(&need("--relay")?, Some(tls)).await?;
    let options = FolderOptions {
        dir: PathBuf::from(need("--dir")?),
        poll: Duration::from_millis(
            arg(&args, "--poll-ms")
                .and_then(|s| s.parse().ok())
                .unwrap_or(1000),
        ),
        credits: 16,
    };
    let stats = run(client, options, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    println!(
        "sent {}, failed {}, received {}",
        stats.sent, stats.failed, stats.received
    );
    Ok(())
}
