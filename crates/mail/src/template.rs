use kopilka_config::PublisherSettings;
use kopilka_domain::Locale;
use minijinja::Environment;
use serde::Serialize;

use crate::MailError;

/// Every template, embedded in the binary: `<kind>.<locale>.txt` (blocks `subject` and
/// `text`) and `<kind>.<locale>.html` (HTML, auto-escaped, extending `layout.html`).
const TEMPLATES: &[(&str, &str)] = &[
    ("layout.html", include_str!("../templates/layout.html")),
    (
        "sign_in.en.txt",
        include_str!("../templates/sign_in.en.txt"),
    ),
    (
        "sign_in.ru.txt",
        include_str!("../templates/sign_in.ru.txt"),
    ),
    (
        "sign_in.en.html",
        include_str!("../templates/sign_in.en.html"),
    ),
    (
        "sign_in.ru.html",
        include_str!("../templates/sign_in.ru.html"),
    ),
    ("verify.en.txt", include_str!("../templates/verify.en.txt")),
    ("verify.ru.txt", include_str!("../templates/verify.ru.txt")),
    (
        "verify.en.html",
        include_str!("../templates/verify.en.html"),
    ),
    (
        "verify.ru.html",
        include_str!("../templates/verify.ru.html"),
    ),
    (
        "already_registered.en.txt",
        include_str!("../templates/already_registered.en.txt"),
    ),
    (
        "already_registered.ru.txt",
        include_str!("../templates/already_registered.ru.txt"),
    ),
    (
        "already_registered.en.html",
        include_str!("../templates/already_registered.en.html"),
    ),
    (
        "already_registered.ru.html",
        include_str!("../templates/already_registered.ru.html"),
    ),
    (
        "reminder.en.txt",
        include_str!("../templates/reminder.en.txt"),
    ),
    (
        "reminder.en.html",
        include_str!("../templates/reminder.en.html"),
    ),
    (
        "reminder.ru.txt",
        include_str!("../templates/reminder.ru.txt"),
    ),
    (
        "reminder.ru.html",
        include_str!("../templates/reminder.ru.html"),
    ),
    (
        "receipt.en.txt",
        include_str!("../templates/receipt.en.txt"),
    ),
    (
        "receipt.en.html",
        include_str!("../templates/receipt.en.html"),
    ),
    (
        "receipt.ru.txt",
        include_str!("../templates/receipt.ru.txt"),
    ),
    (
        "receipt.ru.html",
        include_str!("../templates/receipt.ru.html"),
    ),
    (
        "payment_failed.en.txt",
        include_str!("../templates/payment_failed.en.txt"),
    ),
    (
        "payment_failed.en.html",
        include_str!("../templates/payment_failed.en.html"),
    ),
    (
        "payment_failed.ru.txt",
        include_str!("../templates/payment_failed.ru.txt"),
    ),
    (
        "payment_failed.ru.html",
        include_str!("../templates/payment_failed.ru.html"),
    ),
    (
        "payment_action_required.en.txt",
        include_str!("../templates/payment_action_required.en.txt"),
    ),
    (
        "payment_action_required.en.html",
        include_str!("../templates/payment_action_required.en.html"),
    ),
    (
        "payment_action_required.ru.txt",
        include_str!("../templates/payment_action_required.ru.txt"),
    ),
    (
        "payment_action_required.ru.html",
        include_str!("../templates/payment_action_required.ru.html"),
    ),
    (
        "payment_last_notice.en.txt",
        include_str!("../templates/payment_last_notice.en.txt"),
    ),
    (
        "payment_last_notice.en.html",
        include_str!("../templates/payment_last_notice.en.html"),
    ),
    (
        "payment_last_notice.ru.txt",
        include_str!("../templates/payment_last_notice.ru.txt"),
    ),
    (
        "payment_last_notice.ru.html",
        include_str!("../templates/payment_last_notice.ru.html"),
    ),
    (
        "renewal_notice.en.txt",
        include_str!("../templates/renewal_notice.en.txt"),
    ),
    (
        "renewal_notice.en.html",
        include_str!("../templates/renewal_notice.en.html"),
    ),
    (
        "renewal_notice.ru.txt",
        include_str!("../templates/renewal_notice.ru.txt"),
    ),
    (
        "renewal_notice.ru.html",
        include_str!("../templates/renewal_notice.ru.html"),
    ),
    (
        "pass_ending.en.txt",
        include_str!("../templates/pass_ending.en.txt"),
    ),
    (
        "pass_ending.en.html",
        include_str!("../templates/pass_ending.en.html"),
    ),
    (
        "pass_ending.ru.txt",
        include_str!("../templates/pass_ending.ru.txt"),
    ),
    (
        "pass_ending.ru.html",
        include_str!("../templates/pass_ending.ru.html"),
    ),
    (
        "statement.en.txt",
        include_str!("../templates/statement.en.txt"),
    ),
    (
        "statement.en.html",
        include_str!("../templates/statement.en.html"),
    ),
    (
        "statement.ru.txt",
        include_str!("../templates/statement.ru.txt"),
    ),
    (
        "statement.ru.html",
        include_str!("../templates/statement.ru.html"),
    ),
];

/// A rendered email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// One line.
    pub subject: String,
    /// The plain-text part.
    pub text: String,
    /// The HTML part.
    pub html: String,
}

/// The template set, with the publisher's details every email carries.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
    publisher: PublisherSettings,
}

impl Templates {
    /// The embedded templates.
    ///
    /// # Errors
    /// [`MailError::Template`] when one does not parse (a bug caught by the tests).
    pub fn new(publisher: &PublisherSettings) -> Result<Self, MailError> {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .map_err(|e| MailError::Template(format!("{name}: {e}")))?;
        }
        Ok(Self {
            env,
            publisher: publisher.clone(),
        })
    }

    /// Renders email `kind` (e.g. `sign_in`) in `locale` with `context` (plus `publisher`
    /// and `locale`).
    ///
    /// # Errors
    /// [`MailError::Template`] for an unknown kind or a rendering failure.
    pub fn render(
        &self,
        kind: &str,
        locale: Locale,
        context: &impl Serialize,
    ) -> Result<Rendered, MailError> {
        let fail = |e: minijinja::Error| MailError::Template(format!("{kind}.{locale}: {e:#}"));
        let ctx = minijinja::context! {
            publisher => minijinja::Value::from_serialize(&self.publisher),
            locale => locale.as_str(),
            ..minijinja::Value::from_serialize(context)
        };
        let text = self
            .env
            .get_template(&format!("{kind}.{locale}.txt"))
            .map_err(fail)?;
        let mut captured = text.render_captured(&ctx).map_err(fail)?;
        let (subject, body) = captured
            .with_state_mut(|state| {
                Ok::<_, minijinja::Error>((
                    state.render_block("subject")?,
                    state.render_block("text")?,
                ))
            })
            .map_err(fail)?;
        let html = self
            .env
            .get_template(&format!("{kind}.{locale}.html"))
            .map_err(fail)?
            .render(&ctx)
            .map_err(fail)?;
        Ok(Rendered {
            subject: subject.split_whitespace().collect::<Vec<_>>().join(" "),
            text: body.trim_start().to_owned(),
            html,
        })
    }
}
