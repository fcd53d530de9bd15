//! Kopilka's emails: templates (HTML + plain text, English and Russian, rendered with
//! minijinja; every value a reader supplied is escaped in HTML) and the transports — lettre
//! SMTP (pooled, with timeouts; TLS outside loopback) or, in dev and tests without SMTP, a
//! folder of `.eml` files. Each logical email has a stable `Message-ID`, so a rare resend
//! after a crash is recognisable.

mod error;
mod template;
mod transport;

pub use error::MailError;
pub use template::{Rendered, Templates};
pub use transport::{Mailer, Outgoing, Sent};
