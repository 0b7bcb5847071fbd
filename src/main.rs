//! `driftwood`: the one binary. It parses the command line and hands it to the library
//! (`src/lib.rs`); no pipeline logic lives here.

use clap::Parser;

fn main() -> std::process::ExitCode {
    ingest::alloc::tune();
    driftwood::main(driftwood::cli::Cli::parse())
}
