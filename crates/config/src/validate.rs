//! Start-up validation: refuse nonsense with one line that says what to fix.

use secrecy::ExposeSecret;
use url::Url;

use crate::{ConfigError, Settings};

/// The largest request body we accept anywhere (Stripe's largest events stay well under).
const MAX_BODY_LIMIT: usize = 16 * 1024 * 1024;

impl Settings {
    /// Checks values that parse but make no sense, or are unsafe outside a developer's
    /// machine.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the setting and the fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let local = self.env.is_local();
        check_public_url(&self.public_url, local)?;

        let server = &self.server;
        if server.body_limit_bytes < 1024 || server.body_limit_bytes > MAX_BODY_LIMIT {
            return invalid(format!(
                "server.body_limit_bytes is {}; expected 1024..={MAX_BODY_LIMIT}",
                server.body_limit_bytes
            ));
        }
        if server.webhook_body_limit_bytes < server.body_limit_bytes
            || server.webhook_body_limit_bytes > MAX_BODY_LIMIT
        {
            return invalid(format!(
                "server.webhook_body_limit_bytes must be between body_limit_bytes and {MAX_BODY_LIMIT}"
            ));
        }
        if self.worker.poll_secs == 0 {
            return invalid("worker.poll_secs must be at least 1".into());
        }
        if !(1..=600).contains(&server.request_timeout_secs) {
            return invalid("server.request_timeout_secs must be between 1 and 600".into());
        }
        if server.shutdown_grace_secs > 600 {
            return invalid("server.shutdown_grace_secs must be at most 600".into());
        }
        for origin in &server.cors_allowed_origins {
            check_origin(origin, local)?;
        }
        if let Some(token) = &server.metrics_token
            && token.expose_secret().len() < 16
        {
            return invalid("server.metrics_token must be at least 16 characters".into());
        }
        if server
            .admin_addr
            .is_some_and(|admin| admin == server.addr && admin.port() != 0)
        {
            return invalid("server.admin_addr must differ from server.addr".into());
        }
        check_client_ip(self)?;

        let db = &self.database;
        if db.max_connections == 0 {
            return invalid("database.max_connections must be at least 1".into());
        }
        if db.min_connections > db.max_connections {
            return invalid(format!(
                "database.min_connections ({}) exceeds database.max_connections ({})",
                db.min_connections, db.max_connections
            ));
        }
        if db.acquire_timeout_secs == 0 {
            return invalid("database.acquire_timeout_secs must be at least 1".into());
        }
        match &db.url {
            Some(url)
                if !url.expose_secret().starts_with("postgres://")
                    && !url.expose_secret().starts_with("postgresql://") =>
            {
                invalid("DATABASE_URL must start with postgres:// or postgresql://".into())
            }
            None if !local => invalid(format!(
                "DATABASE_URL is required when KOPILKA_ENV={} (only dev and test start a private Postgres)",
                self.env
            )),
            _ => Ok(()),
        }?;
        check_stripe(&self.stripe, self.env)?;
        self.btcpay.validate(local)?;
        self.passes.validate()?;
        self.experiments.validate()?;
        self.passes.validate_presets(&self.offer)?;
        self.rails.validate()?;
        self.accounts.validate(local)?;
        if self.smtp.url.is_none() && !local {
            return invalid(format!(
                "KOPILKA__SMTP__URL is required when KOPILKA_ENV={} (e.g. smtps://user:pass@smtp.example.org:465)",
                self.env
            ));
        }
        if let Some(url) = &self.smtp.url {
            check_smtp_url(url.expose_secret(), local)?;
        }
        if self.smtp.timeout_secs == 0 || self.smtp.max_connections == 0 {
            return invalid("smtp.timeout_secs and smtp.max_connections must be at least 1".into());
        }
        self.paywall.validate(local)?;
        self.retention.validate()?;
        self.limits.validate()?;
        self.abuse.validate()?;
        self.offer.validate()?;
        for origin in &self.offer.return_origins {
            check_origin(origin, local).map_err(|e| {
                ConfigError::Invalid(
                    e.to_string()
                        .replace("server.cors_allowed_origins", "offer.return_origins")
                        .replace("configuration: ", ""),
                )
            })?;
        }
        Ok(())
    }
}

fn check_stripe(
    stripe: &crate::StripeSettings,
    env: crate::Environment,
) -> Result<(), ConfigError> {
    let local = env.is_local();
    match &stripe.secret_key {
        Some(key) => {
            let key = key.expose_secret();
            if !["sk_test_", "sk_live_", "rk_test_", "rk_live_"]
                .iter()
                .any(|p| key.starts_with(p))
            {
                return invalid("KOPILKA__STRIPE__SECRET_KEY must be a Stripe secret key (sk_test_…, sk_live_…, rk_…)".into());
            }
        }
        None if !local => {
            return invalid(format!(
                "KOPILKA__STRIPE__SECRET_KEY is required when KOPILKA_ENV={env}"
            ));
        }
        None => {}
    }
    if stripe
        .webhook_secret
        .iter()
        .any(|s| !s.expose_secret().starts_with("whsec_"))
    {
        return invalid(
            "KOPILKA__STRIPE__WEBHOOK_SECRET: every secret must start with whsec_".into(),
        );
    }
    if stripe.webhook_secret.is_empty() && !local {
        return invalid(format!(
            "KOPILKA__STRIPE__WEBHOOK_SECRET is required when KOPILKA_ENV={env} (the endpoint's whsec_… secret)"
        ));
    }
    if !(1..=120).contains(&stripe.timeout_secs) {
        return invalid("stripe.timeout_secs must be between 1 and 120".into());
    }
    if !(1..=3600).contains(&stripe.webhook_tolerance_secs) {
        return invalid("stripe.webhook_tolerance_secs must be between 1 and 3600".into());
    }
    if let Some(base) = &stripe.api_base {
        let plain_http_ok = local && base.scheme() == "http";
        if base.host_str().is_none() || !(base.scheme() == "https" || plain_http_ok) {
            return invalid(format!(
                "KOPILKA__STRIPE__API_BASE {base} must be an https URL (http only in dev and test)"
            ));
        }
    }
    Ok(())
}

/// Whose word the client's IP is: a forwarded header only from trusted proxies, and in
/// production on a reachable address the operator must say which (per-client limits keyed
/// on a proxy's address would lump every reader together; a header believed from anyone
/// would give each guess a fresh address).
fn check_client_ip(settings: &Settings) -> Result<(), ConfigError> {
    let server = &settings.server;
    if let Some(name) = &server.client_ip_header
        && (name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    {
        return invalid(format!(
            "server.client_ip_header {name:?} is not a header name (e.g. x-forwarded-for, cf-connecting-ip)"
        ));
    }
    if server
        .trusted_proxies
        .iter()
        .any(|net| net.prefix_len() == 0)
    {
        return invalid(
            "server.trusted_proxies may not contain a /0: it would believe every client's forwarded header; list the proxies' CIDRs".into(),
        );
    }
    match (
        server.client_ip,
        server.client_ip_header.is_some(),
        server.trusted_proxies.is_empty(),
    ) {
        (Some(crate::ClientIpSource::Peer), header, no_proxies) if header || !no_proxies => {
            return invalid(
                "server.client_ip = \"peer\" uses the TCP peer: unset server.client_ip_header and server.trusted_proxies, or unset server.client_ip".into(),
            );
        }
        (_, true, true) => {
            return invalid(
                "server.client_ip_header is believed only from server.trusted_proxies: list the proxies' CIDRs (KOPILKA__SERVER__TRUSTED_PROXIES) or unset the header".into(),
            );
        }
        (_, false, false) => {
            return invalid(
                "server.trusted_proxies needs server.client_ip_header, the header they put the client's IP in (KOPILKA__SERVER__CLIENT_IP_HEADER, e.g. x-forwarded-for or cf-connecting-ip)".into(),
            );
        }
        _ => {}
    }
    let explicit = server.client_ip.is_some() || !server.trusted_proxies.is_empty();
    if settings.env == crate::Environment::Production
        && !server.addr.ip().is_loopback()
        && !explicit
    {
        return invalid(format!(
            "server.addr {} is reachable from other machines: say where client IPs come from, KOPILKA__SERVER__TRUSTED_PROXIES (the proxies' CIDRs, with KOPILKA__SERVER__CLIENT_IP_HEADER) behind a proxy or CDN, or KOPILKA__SERVER__CLIENT_IP=peer when clients connect directly",
            server.addr
        ));
    }
    Ok(())
}

fn invalid(message: String) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid(message))
}

fn check_public_url(url: &Url, local: bool) -> Result<(), ConfigError> {
    if url.host_str().is_none() || url.query().is_some() || url.fragment().is_some() {
        return invalid(format!(
            "public_url {url} must be a plain base URL such as https://support.example.org"
        ));
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" if local => Ok(()),
        "http" => invalid(format!(
            "public_url {url} must be https outside dev and test (set KOPILKA__PUBLIC_URL)"
        )),
        other => invalid(format!("public_url has scheme {other}; expected https")),
    }
}

/// Outside dev and test, mail leaves over TLS (`smtps://`) or STARTTLS (`?tls=required`),
/// except to a relay on this machine (loopback).
fn check_smtp_url(raw: &str, local: bool) -> Result<(), ConfigError> {
    let Ok(url) = Url::parse(raw) else {
        return invalid("KOPILKA__SMTP__URL is not a URL".into());
    };
    if !matches!(url.scheme(), "smtp" | "smtps") {
        return invalid("KOPILKA__SMTP__URL must start with smtp:// or smtps://".into());
    }
    // Non-special schemes keep hosts as text: an IP address arrives as a domain.
    let host = url
        .host_str()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let encrypted = url.scheme() == "smtps"
        || url
            .query_pairs()
            .any(|(key, value)| key == "tls" && value == "required");
    if local || loopback || encrypted {
        Ok(())
    } else {
        invalid(
            "KOPILKA__SMTP__URL must use TLS outside dev and test: smtps://…:465, or smtp://…:587?tls=required (plain smtp:// only to a loopback relay)"
                .into(),
        )
    }
}

fn check_origin(origin: &str, local: bool) -> Result<(), ConfigError> {
    if origin == "*" {
        return invalid(
            "server.cors_allowed_origins may not be \"*\": list the newsroom's sites".into(),
        );
    }
    let parsed = Url::parse(origin).map_err(|_| {
        ConfigError::Invalid(format!(
            "server.cors_allowed_origins: {origin:?} is not an origin"
        ))
    })?;
    let bare = parsed.host_str().is_some()
        && parsed.path() == "/"
        && !origin.ends_with('/')
        && parsed.query().is_none()
        && parsed.username().is_empty();
    if !bare {
        return invalid(format!(
            "server.cors_allowed_origins: {origin:?} must be scheme://host[:port] with no path"
        ));
    }
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if local => Ok(()),
        _ => invalid(format!(
            "server.cors_allowed_origins: {origin:?} must be https outside dev and test"
        )),
    }
}

#[cfg(test)]
#[allow(
    clippy::result_large_err,
    reason = "figment::Jail closures return figment::Error"
)]
mod tests {
    #[test]
    fn production_mail_leaves_encrypted_or_through_a_loopback_relay() {
        use super::check_smtp_url;
        assert!(check_smtp_url("smtps://u:p@smtp.example.org:465", false).is_ok());
        assert!(check_smtp_url("smtp://u:p@smtp.example.org:587?tls=required", false).is_ok());
        assert!(check_smtp_url("smtp://127.0.0.1:25", false).is_ok());
        assert!(check_smtp_url("smtp://localhost:25", false).is_ok());
        let plain = check_smtp_url("smtp://u:p@smtp.example.org:25", false).unwrap_err();
        assert!(plain.to_string().contains("must use TLS"), "{plain}");
        assert!(
            check_smtp_url("smtp://u:p@smtp.example.org:587?tls=opportunistic", false).is_err()
        );
        assert!(
            check_smtp_url("smtp://smtp.example.org:25", true).is_ok(),
            "dev and test may"
        );
        assert!(check_smtp_url("http://smtp.example.org", true).is_err());
    }

    use std::path::PathBuf;

    use figment::Jail;

    use crate::{Environment, LogFormat, Settings, figment};

    fn config_dir() -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../config"))
    }

    fn load(env: Environment) -> Result<Settings, crate::ConfigError> {
        Settings::from_figment(&figment(env, &config_dir()))
    }

    #[test]
    fn the_shipped_files_are_valid_for_dev_and_test() {
        Jail::expect_with(|jail| {
            // Only the files: a developer's DATABASE_URL or KOPILKA__… must not leak in.
            jail.clear_env();
            let dev = load(Environment::Dev).expect("dev settings");
            assert_eq!(dev.server.addr.to_string(), "127.0.0.1:8080");
            assert_eq!(dev.log.format, LogFormat::Pretty);
            assert!(dev.database.url.is_none());
            let test = load(Environment::Test).expect("test settings");
            assert_eq!(test.server.addr.port(), 0);
            Ok(())
        });
    }

    #[test]
    fn production_refuses_http_and_a_missing_database() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            let err = load(Environment::Production).unwrap_err().to_string();
            assert!(err.contains("public_url") && err.contains("https"), "{err}");
            assert!(!err.contains('\n'));

            jail.set_env("KOPILKA__PUBLIC_URL", "https://support.example.org");
            let err = load(Environment::Production).unwrap_err().to_string();
            assert!(err.contains("DATABASE_URL is required"), "{err}");

            jail.set_env("DATABASE_URL", "postgres://kopilka:hunter2@db/kopilka");
            let err = load(Environment::Production).unwrap_err().to_string();
            assert!(
                err.contains("KOPILKA__STRIPE__SECRET_KEY is required"),
                "{err}"
            );

            jail.set_env("KOPILKA__STRIPE__SECRET_KEY", "sk_live_abc");
            let err = load(Environment::Production).unwrap_err().to_string();
            assert!(
                err.contains("KOPILKA__STRIPE__WEBHOOK_SECRET is required"),
                "{err}"
            );

            jail.set_env("KOPILKA__STRIPE__WEBHOOK_SECRET", "whsec_old,whsec_new");
            let err = load(Environment::Production).unwrap_err().to_string();
            assert!(err.contains("KOPILKA__ACCOUNTS__SECRET"), "{err}");

            jail.set_env("KOPILKA__ACCOUNTS__SECRET", "short");
            let err = load(Environment::Production).unwrap_err().to_string();
            assert!(err.contains("at least 32 bytes"), "{err}");

            jail.set_env("KOPILKA__ACCOUNTS__SECRET", crate::LOCAL_ACCOUNTS_SECRET);
            let err = load(Environment::Production).unwrap_err().to_string();
            assert!(err.contains("local-only"), "{err}");

            jail.set_env(
                "KOPILKA__ACCOUNTS__SECRET",
                "a-production-secret-of-more-than-32-bytes",
            );
            let err = load(Environment::Production).unwrap_err().to_string();
            assert!(err.contains("KOPILKA__SMTP__URL is required"), "{err}");

            jail.set_env(
                "KOPILKA__SMTP__URL",
                "smtps://mailer:sesame@smtp.example.org:465",
            );
            let err = load(Environment::Production).unwrap_err().to_string();
            assert!(err.contains("KOPILKA__PAYWALL__SIGNING_SECRET"), "{err}");

            jail.set_env(
                "KOPILKA__PAYWALL__SIGNING_SECRET",
                "a-production-paywall-secret-of-32-bytes+",
            );
            let settings = load(Environment::Production).expect("valid production settings");
            assert_eq!(settings.stripe.webhook_secret.len(), 2);
            assert_eq!(settings.public_url.as_str(), "https://support.example.org/");
            Ok(())
        });
    }

    #[test]
    fn the_environment_overrides_files() {
        Jail::expect_with(|jail| {
            jail.set_env("KOPILKA__SERVER__ADDR", "0.0.0.0:9999");
            jail.set_env("KOPILKA__DATABASE__MAX_CONNECTIONS", "42");
            jail.set_env(
                "KOPILKA__SERVER__CORS_ALLOWED_ORIGINS",
                "https://news.example.org, https://www.news.example.org",
            );
            jail.set_env("KOPILKA__RETENTION__UNVERIFIED_READER_DAYS", "3");
            let settings = load(Environment::Dev).expect("settings");
            assert_eq!(settings.server.addr.to_string(), "0.0.0.0:9999");
            assert_eq!(settings.retention.unverified_reader_days, 3);
            assert_eq!(settings.retention.session_days, 7, "the documented default");
            assert_eq!(settings.database.max_connections, 42);
            assert_eq!(
                settings.server.cors_allowed_origins,
                ["https://news.example.org", "https://www.news.example.org"]
            );
            Ok(())
        });
    }

    #[test]
    fn secrets_never_print() {
        Jail::expect_with(|jail| {
            jail.set_env("DATABASE_URL", "postgres://kopilka:hunter2@db/kopilka");
            jail.set_env("KOPILKA__STRIPE__SECRET_KEY", "sk_test_sesame");
            jail.set_env("KOPILKA__STRIPE__WEBHOOK_SECRET", "whsec_opensesame");
            jail.set_env(
                "KOPILKA__ACCOUNTS__SECRET",
                "an-accounts-sesame-of-32-bytes-or-more",
            );
            jail.set_env("KOPILKA__ACCOUNTS__PEPPER", "a-pepper-sesame");
            let settings = load(Environment::Dev).expect("settings");
            let debug = format!("{settings:?}");
            let json = serde_json::to_string(&settings).expect("serialisable");
            for secret in ["hunter2", "sesame"] {
                assert!(!debug.contains(secret), "{debug}");
                assert!(!json.contains(secret), "{json}");
            }
            assert!(json.contains("<redacted>"), "{json}");
            Ok(())
        });
    }

    #[test]
    fn nonsense_is_refused_with_one_line() {
        let cases = [
            ("KOPILKA__DATABASE__MAX_CONNECTIONS", "0", "max_connections"),
            (
                "KOPILKA__DATABASE__MIN_CONNECTIONS",
                "99",
                "min_connections",
            ),
            (
                "KOPILKA__SERVER__BODY_LIMIT_BYTES",
                "10",
                "body_limit_bytes",
            ),
            (
                "KOPILKA__SERVER__CORS_ALLOWED_ORIGINS",
                "*",
                "cors_allowed_origins",
            ),
            (
                "KOPILKA__SERVER__CORS_ALLOWED_ORIGINS",
                "https://a.org/path",
                "no path",
            ),
            ("KOPILKA__SERVER__ADDR", "not an address", "addr"),
            ("KOPILKA__PUBLIC_URL", "ftp://example.org", "scheme"),
            ("DATABASE_URL", "mysql://x", "postgres://"),
            ("KOPILKA__STRIPE__SECRET_KEY", "pk_test_123", "secret key"),
            ("KOPILKA__STRIPE__WEBHOOK_SECRET", "whsec_a,oops", "whsec_"),
            ("KOPILKA__STRIPE__API_BASE", "ftp://sim", "https"),
            (
                "KOPILKA__STRIPE__WEBHOOK_TOLERANCE_SECS",
                "0",
                "webhook_tolerance_secs",
            ),
            ("KOPILKA__STRIPE__TIMEOUT_SECS", "0", "timeout_secs"),
            (
                "KOPILKA__RETENTION__SESSION_DAYS",
                "0",
                "retention.session_days must be at least 1",
            ),
            (
                "KOPILKA__RETENTION__CHECKOUT_REQUEST_HOURS",
                "0",
                "retention.checkout_request_hours",
            ),
        ];
        for (key, value, expected) in cases {
            Jail::expect_with(|jail| {
                jail.set_env(key, value);
                let err = load(Environment::Dev).unwrap_err().to_string();
                assert!(err.contains(expected), "{key}={value}: {err}");
                assert!(!err.contains('\n'), "{err}");
                Ok(())
            });
        }
    }

    /// Production's settings, complete but for where client IPs come from.
    fn production_env(jail: &mut Jail) {
        jail.set_env("KOPILKA__PUBLIC_URL", "https://support.example.org");
        jail.set_env("DATABASE_URL", "postgres://kopilka@db/kopilka");
        jail.set_env("KOPILKA__STRIPE__SECRET_KEY", "sk_live_abc");
        jail.set_env("KOPILKA__STRIPE__WEBHOOK_SECRET", "whsec_abc");
        jail.set_env(
            "KOPILKA__ACCOUNTS__SECRET",
            "a-production-secret-of-more-than-32-bytes",
        );
        jail.set_env("KOPILKA__SMTP__URL", "smtps://m:s@smtp.example.org:465");
        jail.set_env(
            "KOPILKA__PAYWALL__SIGNING_SECRET",
            "a-production-paywall-secret-of-32-bytes+",
        );
    }

    #[test]
    fn production_on_a_reachable_address_says_where_client_ips_come_from() {
        Jail::expect_with(|jail| {
            production_env(jail);
            assert!(
                load(Environment::Production).is_ok(),
                "loopback needs nothing"
            );
            jail.set_env("KOPILKA__SERVER__ADDR", "0.0.0.0:8080");
            let err = load(Environment::Production).unwrap_err().to_string();
            assert!(
                err.contains("KOPILKA__SERVER__TRUSTED_PROXIES")
                    && err.contains("KOPILKA__SERVER__CLIENT_IP=peer"),
                "{err}"
            );
            assert!(!err.contains('\n'));
            assert!(
                load(Environment::Dev).is_ok(),
                "dev and test may listen anywhere"
            );

            jail.set_env("KOPILKA__SERVER__CLIENT_IP", "peer");
            let direct = load(Environment::Production).expect("an explicit peer");
            assert_eq!(direct.server.client_ip, Some(crate::ClientIpSource::Peer));

            Ok(())
        });
        Jail::expect_with(|jail| {
            production_env(jail);
            jail.set_env("KOPILKA__SERVER__ADDR", "[::]:8080");
            jail.set_env(
                "KOPILKA__SERVER__TRUSTED_PROXIES",
                "10.0.0.0/8, 2001:db8::/32,192.0.2.7",
            );
            jail.set_env("KOPILKA__SERVER__CLIENT_IP_HEADER", "x-forwarded-for");
            let proxied = load(Environment::Production).expect("trusted proxies");
            let server = &proxied.server;
            assert_eq!(server.trusted_proxies.len(), 3);
            assert!(server.is_trusted_proxy("10.200.0.1".parse().unwrap()));
            assert!(server.is_trusted_proxy("::ffff:10.200.0.1".parse().unwrap()));
            assert!(server.is_trusted_proxy("192.0.2.7".parse().unwrap()));
            assert!(!server.is_trusted_proxy("192.0.2.8".parse().unwrap()));
            assert!(server.is_trusted_proxy("2001:db8:ffff::1".parse().unwrap()));
            let shown = serde_json::to_value(&proxied).unwrap();
            assert_eq!(
                shown["server"]["trusted_proxies"],
                serde_json::json!(["10.0.0.0/8", "2001:db8::/32", "192.0.2.7/32"])
            );
            Ok(())
        });
    }

    #[test]
    fn a_forwarded_header_needs_trusted_proxies_and_they_need_it() {
        let cases: [&[(&str, &str)]; 6] = [
            (&[("KOPILKA__SERVER__CLIENT_IP_HEADER", "x-forwarded-for")]),
            (&[("KOPILKA__SERVER__TRUSTED_PROXIES", "10.0.0.0/8")]),
            (&[("KOPILKA__SERVER__TRUSTED_PROXIES", "10.0.0.0/33")]),
            (&[
                ("KOPILKA__SERVER__TRUSTED_PROXIES", "0.0.0.0/0"),
                ("KOPILKA__SERVER__CLIENT_IP_HEADER", "x-forwarded-for"),
            ]),
            (&[
                ("KOPILKA__SERVER__CLIENT_IP", "peer"),
                ("KOPILKA__SERVER__CLIENT_IP_HEADER", "x-forwarded-for"),
            ]),
            (&[
                ("KOPILKA__SERVER__TRUSTED_PROXIES", "10.0.0.0/8"),
                ("KOPILKA__SERVER__CLIENT_IP_HEADER", "x forwarded for"),
            ]),
        ];
        let expected = [
            "believed only from server.trusted_proxies",
            "needs server.client_ip_header",
            "is not a CIDR",
            "may not contain a /0",
            "client_ip = \"peer\"",
            "is not a header name",
        ];
        for (vars, expected) in cases.into_iter().zip(expected) {
            Jail::expect_with(|jail| {
                for (key, value) in vars {
                    jail.set_env(key, value);
                }
                let err = load(Environment::Dev).unwrap_err().to_string();
                assert!(err.contains(expected), "{vars:?}: {err}");
                assert!(!err.contains('\n'), "{err}");
                Ok(())
            });
        }
    }

    #[test]
    fn an_unknown_environment_name_is_refused() {
        let err = "staging".parse::<Environment>().unwrap_err().to_string();
        assert!(
            err.contains("KOPILKA_ENV") && err.contains("staging"),
            "{err}"
        );
    }
}
