//! `trucctl registry`: the unit registry file.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use truc_edxml::OrgCode;
use truc_relay::sample_transport_ministry;

use crate::Outcome;

/// `trucctl registry ...`
#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Write a realistic registry of the Ministry of Transport (57 level-2 and 226 level-3
    /// units), for tests, the demo and trials.
    Sample {
        /// The ministry's code.
        #[arg(long, default_value = "000.00.00.G04", value_parser = parse_org)]
        ministry: OrgCode,
        /// Write to this file instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

fn parse_org(s: &str) -> Result<OrgCode, String> {
    OrgCode::parse(s).map_err(|e| format!("{s:?} is not a unit code: {e}"))
}

/// Runs a `registry` command.
pub fn run(cmd: RegistryCommand) -> Outcome {
    let RegistryCommand::Sample { ministry, output } = cmd;
    let text = sample_transport_ministry(&ministry).to_toml();
    let written = match output {
        Some(path) => {
            std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
        }
        None => {
            print!("{text}");
            Ok(())
        }
    };
    match written {
        Ok(()) => Outcome::Success,
        Err(e) => Outcome::Failed(e),
    }
}
