//! `kopilka admin …`: one file per command.

mod config;

use crate::output::Format;

/// Administration commands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print the effective configuration (every layer applied), secrets redacted.
    Config {
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}

pub fn run(command: &Command) -> anyhow::Result<()> {
    match command {
        Command::Config { format } => config::run(*format),
    }
}
