#![forbid(unsafe_code)]
//! `trucctl`: the operator's command line for the truc relay.
//!
//! Exit codes scripts can rely on: 0 success, 1 a package (or request) was refused,
//! 2 bad usage, 3 a file or network error.

mod doc;
mod registry;
mod store;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Command line of the truc relay (trục liên thông văn bản).
#[derive(Debug, Parser)]
#[command(name = "trucctl", version, about, long_about = None)]
struct Cli {
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Doc(cmd) => doc::run(cmd),
        Command::Store(cmd) => store::run(cmd),
        Command::Registry(cmd) => registry::run(cmd),
    };
    match outcome {
        Outcome::Success => ExitCode::SUCCESS,
        Outcome::Refused => ExitCode::from(1),
        Outcome::Failed(e) => {
            eprintln!("trucctl: {e:#}");
            ExitCode::from(3)
        }
    }
}
