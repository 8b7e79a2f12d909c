#![forbid(unsafe_code)]
//! `trucctl`: the operator's command line for the truc relay.
//!
//! Exit codes scripts can rely on: 0 success, 1 a package (or request) was refused,
//! 2 bad usage, 3 a file or network error.

mod api;
mod doc;
mod ops;
mod registry;
mod store;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sha2::Digest;

/// Command line of the truc relay (trục liên thông văn bản).
#[derive(Debug, Parser)]
#[command(name = "trucctl", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    api: api::ApiArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect and build edXML packages (gói tin edXML).
    #[command(subcommand)]
    Doc(doc::DocCommand),
    /// The unit registry file.
    #[command(subcommand)]
    Registry(registry::RegistryCommand),
    /// Offline operations on a store directory: restore a backup, check it.
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// Admin API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Commands to a running relay, through its admin API.
    #[command(flatten)]
    Ops(ops::OpsCommand),
}

/// `trucctl token ...`
#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Make a new random token; prints it once, with the lines for trucd's configuration
    /// (which keeps only its SHA-256).
    New {
        /// Who will hold it (written in the audit log as admin:NAME).
        #[arg(long)]
        name: String,
    },
}

/// How a command ended, mapped to the documented exit codes.
#[derive(Debug)]
pub enum Outcome {
    /// Everything worked.
    Success,
    /// Something was refused (an invalid package); details already printed.
    Refused,
    /// A file or network error; the message says what to do.
    Failed(anyhow::Error),
    /// The command line or the settings are wrong.
    Usage(anyhow::Error),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One crypto provider for rustls (an https:// admin URL), chosen here.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let outcome = match cli.command {
        Command::Doc(cmd) => doc::run(cmd),
        Command::Store(cmd) => store::run(cmd),
        Command::Registry(cmd) => registry::run(cmd),
        Command::Token(TokenCommand::New { name }) => new_token(&name),
        Command::Ops(cmd) => ops::run(&cli.api, cmd),
    };
    match outcome {
        Outcome::Success => ExitCode::SUCCESS,
        Outcome::Refused => ExitCode::from(1),
        Outcome::Usage(e) => {
            eprintln!("trucctl: {e:#}");
            ExitCode::from(2)
        }
        Outcome::Failed(e) => {
            eprintln!("trucctl: {e:#}");
            ExitCode::from(3)
        }
    }
}

fn new_token(name: &str) -> Outcome {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
    {
        return Outcome::Usage(anyhow::anyhow!(
            "--name {name:?}: use letters, digits and - _ . @"
        ));
    }
    let mut bytes = [0u8; 32];
    if let Err(e) = getrandom::fill(&mut bytes) {
        return Outcome::Failed(anyhow::anyhow!("no randomness from the system: {e}"));
    }
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let sha: String = sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    println!("token (shown once; give it to {name}, e.g. as TRUC_ADMIN_TOKEN):");
    println!("  {token}");
    println!();
    println!("add to trucd's configuration, then restart it:");
    println!("[[admin.tokens]]");
    println!("name = \"{name}\"");
    println!("sha256 = \"{sha}\"");
    Outcome::Success
}
