//! The `driftwood` command line as a library: the binary (`src/main.rs`) only parses and
//! calls [`main`]; the integration tests start services through [`services`] as it does.
//!
//! ```text
//!  main.rs ─► cli (clap types) ─► commands (one fn per command) ─┬─► crates: ingest, stream,
//!                                         │                        │   trainer, serving, drift
//!                                         ├─► services (serve, snapshot, drift, retrainer, flight, up)
//!                                         └─► report (what is printed)
//!  open: the configured plan, keyring, stores, control producer and authenticator
//! ```
//!
//! Architecture invariant: no pipeline logic here — cleaning, training, scoring, drift and
//! storage live in their crates; this crate opens what the configuration names, wires
//! services together and prints. Nothing in the workspace depends on it but the tests.

pub mod cli;
pub mod commands;
pub mod open;
pub mod report;
pub mod runtime;
pub mod services;

use std::process::ExitCode;

/// Runs a parsed command line: configuration (exit 2 when invalid), logging, the runtime, the
/// command (exit 1 with the error's chain on failure).
pub fn main(cli: cli::Cli) -> ExitCode {
    let config = match cli.load_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    runtime::init_logging(config.log_format);
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(commands::run(cli.command, config)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
