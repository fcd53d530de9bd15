//! Structured logs on stderr: JSON when stderr is not a terminal (or when configured),
//! human-readable otherwise. Fields carry ids, never emails, names or tokens.

use std::io::IsTerminal;

use kopilka_config::{LogFormat, LogSettings};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `RUST_LOG` overrides the configured filter.
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match settings.format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    quiet_panics();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // A second init (never in the binary) is harmless: the first subscriber stays.
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init()
    } else {
        builder.try_init()
    };
}

/// Replaces the default panic hook (which prints the panic's message) with one that logs
/// where the panic happened and nothing else: a message can carry request data (an
/// address in a failed `expect`, a token in a formatted value).
fn quiet_panics() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(
            %location,
            "a task panicked (its message is not logged: it may hold request data)"
        );
    }));
}
