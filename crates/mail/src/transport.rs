use std::path::PathBuf;

use kopilka_config::SmtpSettings;
use kopilka_domain::Email;
use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;

use crate::{MailError, Rendered};

/// One email to send.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    /// The recipient.
    pub to: &'a Email,
    /// A stable id of this logical email (e.g. `reminder-<id>`); becomes the `Message-ID`.
    pub logical_id: &'a str,
    /// What it says.
    pub rendered: &'a Rendered,
    /// An https one-click unsubscribe URL (RFC 8058), if the email is an ask.
    pub unsubscribe_url: Option<&'a str>,
}

/// Where a message went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// Accepted by the SMTP server.
    Smtp,
    /// Written to this file (dev and tests without SMTP).
    File(PathBuf),
}

/// The transport: SMTP, or `.eml` files in a folder.
#[derive(Clone)]
pub struct Mailer {
    transport: Transport,
    from: Mailbox,
}

#[derive(Clone)]
enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Files(AsyncFileTransport<Tokio1Executor>, PathBuf),
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.transport {
            Transport::Smtp(_) => "smtp",
            Transport::Files(..) => "files",
        };
        f.debug_struct("Mailer")
            .field("transport", &kind)
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// The transport `settings` describe: SMTP when a URL is set, else the folder.
    ///
    /// # Errors
    /// [`MailError::Config`] for an unusable URL, sender or folder.
    pub fn from_settings(settings: &SmtpSettings) -> Result<Self, MailError> {
        let from: Mailbox = settings
            .from
            .parse()
            .map_err(|e| MailError::Config(format!("smtp.from: {e}")))?;
        let transport = match &settings.url {
            Some(url) => Transport::Smtp(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret())
                    .map_err(|e| MailError::Config(format!("KOPILKA__SMTP__URL: {e}")))?
                    .timeout(Some(settings.timeout()))
                    .pool_config(PoolConfig::new().max_size(settings.max_connections))
                    .build(),
            ),
            None => {
                std::fs::create_dir_all(&settings.file_dir).map_err(|e| {
                    MailError::Config(format!(
                        "smtp.file_dir {}: {e}",
                        settings.file_dir.display()
                    ))
                })?;
                Transport::Files(
                    AsyncFileTransport::<Tokio1Executor>::new(&settings.file_dir),
                    settings.file_dir.clone(),
                )
            }
        };
        Ok(Self { transport, from })
    }

    /// Builds the message: multipart text + HTML, the stable `Message-ID`, and for asks the
    /// `List-Unsubscribe` and `List-Unsubscribe-Post: List-Unsubscribe=One-Click` headers.
    ///
    /// # Errors
    /// [`MailError::Message`].
    pub fn compose(&self, outgoing: &Outgoing<'_>) -> Result<Message, MailError> {
        let to: Mailbox = outgoing
            .to
            .expose()
            .parse()
            .map_err(|_| MailError::Message("the recipient's address is unusable".into()))?;
        let domain = self.from.email.domain().to_owned();
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(outgoing.rendered.subject.clone())
            .message_id(Some(format!("<{}@{domain}>", outgoing.logical_id)));
        if let Some(url) = outgoing.unsubscribe_url {
            builder = builder
                .header(ListUnsubscribe(format!("<{url}>")))
                .header(ListUnsubscribePost);
        }
        builder
            .multipart(
                MultiPart::alternative()
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_PLAIN)
                            .body(outgoing.rendered.text.clone()),
                    )
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_HTML)
                            .body(outgoing.rendered.html.clone()),
                    ),
            )
            .map_err(|e| MailError::Message(e.to_string()))
    }

    /// Sends `outgoing`.
    ///
    /// # Errors
    /// [`MailError::Transient`] (retry later) or [`MailError::Permanent`] (the server
    /// refused for good).
    pub async fn send(&self, outgoing: &Outgoing<'_>) -> Result<Sent, MailError> {
        let message = self.compose(outgoing)?;
        match &self.transport {
            Transport::Smtp(smtp) => match smtp.send(message).await {
                Ok(_) => Ok(Sent::Smtp),
                Err(e) if e.is_permanent() => Err(MailError::Permanent(reason(&e))),
                Err(e) => Err(MailError::Transient(reason(&e))),
            },
            Transport::Files(files, dir) => {
                let id = files
                    .send(message)
                    .await
                    .map_err(|e| MailError::Transient(e.to_string()))?;
                let path = dir.join(format!("{id}.eml"));
                tracing::info!(path = %path.display(), "email written");
                Ok(Sent::File(path))
            }
        }
    }
}

/// Why sending failed, without the server's text (which may echo the address): the reply
/// code, or the kind of failure.
fn reason(error: &lettre::transport::smtp::Error) -> String {
    if let Some(code) = error.status() {
        format!("smtp reply {code}")
    } else if error.is_timeout() {
        "smtp timed out".to_owned()
    } else if error.is_tls() {
        "smtp TLS failed".to_owned()
    } else if error.is_client() {
        "smtp client error".to_owned()
    } else {
        "smtp connection failed".to_owned()
    }
}

/// `List-Unsubscribe: <https://…>` (RFC 2369).
#[derive(Debug, Clone)]
struct ListUnsubscribe(String);

impl Header for ListUnsubscribe {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(s.to_owned()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058).
#[derive(Debug, Clone)]
struct ListUnsubscribePost;

impl Header for ListUnsubscribePost {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe-Post")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "List-Unsubscribe=One-Click".to_owned())
    }
}
