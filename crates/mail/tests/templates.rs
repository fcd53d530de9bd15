//! Every email template in both languages, rendered with the same context and compared to
//! its reviewed snapshot (`tests/snapshots/`; `cargo insta review` after a deliberate change).
//! The reader's name carries markup, so the snapshots also show it escaped in HTML.

use kopilka_config::PublisherSettings;
use kopilka_domain::Locale;
use kopilka_mail::Templates;

fn publisher() -> PublisherSettings {
    PublisherSettings {
        name: "The Newsroom".into(),
        postal_address: "1 Example Street, Example City".into(),
        website: "https://news.example.org".parse().unwrap(),
        support_email: "support@example.org".into(),
    }
}

/// One context with every variable any template reads.
fn context() -> serde_json::Value {
    serde_json::json!({
        "name": "Ann <script>alert(1)</script> & \"Bob\"",
        "link_url": "https://support.example.org/v1/sessions/magic-link?token=TOKEN",
        "expires_minutes": 15,
        "expires_hours": 24,
        "give_url": "https://news.example.org",
        "unsubscribe_url": "https://support.example.org/v1/reminders/unsubscribe?token=TOKEN",
        "remind_on": "2026-12-24",
        "amount": "10.00 USD",
        "date": "2026-11-29",
        "interval": "month",
        "renewal": true,
        "reference": "pi_123",
        "manage_url": "https://support.example.org/",
        "card_url": "https://support.example.org/v1/plan-links/TOKEN",
        "next_attempt": "2026-12-02",
        "last": false,
        "renews_on": "2027-01-15",
        "year": 2026,
        "from": "2026-01-01",
        "to": "2026-12-31",
        "totals": [{"amount": "120.00 USD", "payments": 12}, {"amount": "5000 JPY", "payments": 1}],
        "cancel_url": "https://support.example.org/v1/plan-links/TOKEN",
        "pay_url": "https://support.example.org/v1/plan-links/TOKEN",
        "ends_on": "2027-12-07",
        "renew_url": "https://news.example.org/support",
    })
}

const KINDS: &[&str] = &[
    "sign_in",
    "verify",
    "already_registered",
    "reminder",
    "receipt",
    "payment_failed",
    "payment_action_required",
    "payment_last_notice",
    "renewal_notice",
    "pass_ending",
    "statement",
];

#[test]
fn every_template_in_both_languages_matches_its_snapshot() {
    let templates = Templates::new(&publisher()).unwrap();
    for kind in KINDS {
        for locale in [Locale::En, Locale::Ru] {
            let rendered = templates.render(kind, locale, &context()).unwrap();
            insta::assert_snapshot!(
                format!("{kind}.{}", locale.as_str()),
                format!(
                    "Subject: {}\n\n--- text ---\n{}\n--- html ---\n{}",
                    rendered.subject, rendered.text, rendered.html
                )
            );
        }
    }
}

#[test]
fn what_a_reader_typed_is_escaped_in_html_and_kept_in_text() {
    let templates = Templates::new(&publisher()).unwrap();
    for kind in KINDS {
        for locale in [Locale::En, Locale::Ru] {
            let rendered = templates.render(kind, locale, &context()).unwrap();
            assert!(!rendered.html.contains("<script>"), "{kind}.{locale}");
            if rendered.text.contains("Ann") {
                assert!(
                    rendered.html.contains("Ann &lt;script&gt;"),
                    "{kind}.{locale}: {}",
                    rendered.html
                );
            }
            assert!(!rendered.subject.contains('\n'));
        }
    }
}
