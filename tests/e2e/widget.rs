//! The donation widget in a real browser: Debian's Chromium, headless, driven through
//! ChromeDriver against `kopilka dev` (its private Postgres, the Stripe simulator and the
//! in-process worker), as a reader would use the demo article page.
//! `scripts/prerequisites` installs `chromium` and `chromium-driver` when they are missing.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use kopilka_test_support::ReceivedEmail;
use kopilka_tests::{Running, free_port, kopilka};
use serde_json::json;
use sqlx::PgPool;
use tokio::process::Command;

/// `KOPILKA_CHROMIUM` / `KOPILKA_CHROMEDRIVER`, else Debian's paths.
fn program(variable: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(variable).map_or_else(|| PathBuf::from(default), PathBuf::from);
    assert!(
        path.is_file(),
        "{} not found: run scripts/prerequisites (installs Debian's chromium and chromium-driver) or set {variable}",
        path.display()
    );
    path
}

/// ChromeDriver on a free port, ready for sessions; killed when dropped.
async fn chromedriver() -> (tokio::process::Child, String) {
    let port = free_port();
    let child = Command::new(program("KOPILKA_CHROMEDRIVER", "/usr/bin/chromedriver"))
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver starts");
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if let Ok(status) = reqwest::get(format!("{url}/status")).await
            && status.status().is_success()
        {
            return (child, url);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not answer on {url}");
}

/// A fresh headless Chromium (its own profile: no cookies).
async fn browser(driver: &str) -> Client {
    let chromium = program("KOPILKA_CHROMIUM", "/usr/bin/chromium");
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-background-networking", "--disable-dev-shm-usage",
                     "--window-size=1000,1400", "--lang=en-US"],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(driver)
        .await
        .expect("a Chromium session")
}

/// The widget's state marker on its host element (`data-kopilka`).
async fn widget_state(client: &Client) -> String {
    client
        .execute(
            "const host = document.querySelector('#support'); return host ? (host.dataset.kopilka || '') : '';",
            vec![],
        )
        .await
        .expect("the page runs scripts")
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Waits until the widget reaches one of `states`; returns it.
async fn wait_for_state(client: &Client, states: &[&str], within: Duration) -> String {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let state = widget_state(client).await;
        if states.contains(&state.as_str()) {
            return state;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the widget stayed {state:?}, not one of {states:?}; page:\n{}",
            client.source().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn click(client: &Client, css: &str) {
    client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("{css} not clickable: {e}"));
}

/// The visible text of the element at `css`.
async fn text_of(client: &Client, css: &str) -> String {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .text()
        .await
        .expect("its text")
}

async fn type_into(client: &Client, css: &str, text: &str) {
    let field = client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"));
    field.clear().await.expect("clears");
    field.send_keys(text).await.expect("types");
}

/// A JSON answer fetched by the page itself (its cookies, its origin).
async fn fetch_json(client: &Client, path: &str) -> serde_json::Value {
    client
        .execute_async(
            "const [path, done] = arguments; fetch(path, {credentials: 'same-origin'}).then(r => r.json()).then(done, e => done({failed: String(e)}));",
            vec![json!(path)],
        )
        .await
        .expect("the page fetches")
}

/// The sign-in link in an `.eml` to `to` in dev's mail folder, if one arrives `within`.
async fn sign_in_link(mail_dir: &Path, to: &str, within: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        let entries = std::fs::read_dir(mail_dir).into_iter().flatten().flatten();
        for entry in entries {
            let raw = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let email = ReceivedEmail::parse(&raw);
            if email.to.contains(to)
                && let Some(start) = email.text.find("http")
            {
                return email.text[start..]
                    .split_whitespace()
                    .next()
                    .map(str::to_owned);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// Where the screenshot goes: `<target>/artifacts/`, kept after the run.
fn artifact(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target folder")
        .join("artifacts");
    std::fs::create_dir_all(&dir).expect("an artifacts folder");
    dir.join(name)
}

/// A screenshot of the banner, kept as the artifact `name` (and checked to be a picture).
async fn save_banner(client: &Client, name: &str) {
    let png = client
        .find(Locator::Css(".kopilka-banner"))
        .await
        .expect("the banner")
        .screenshot()
        .await
        .expect("a screenshot of the banner");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 5_000,
        "a real picture"
    );
    let shot = artifact(name);
    std::fs::write(&shot, &png).unwrap();
    eprintln!("widget screenshot: {}", shot.display());
}

/// `kopilka dev` on a free port of `localhost` (a secure context: `__Host-` cookies work
/// over plain HTTP there), its mail in `mail_dir`; returns it with its address and a pool
/// on its private Postgres.
async fn dev(folder: &Path, mail_dir: &Path, env: &[(&str, String)]) -> (Running, String, PgPool) {
    let port = free_port();
    let site = format!("http://localhost:{port}");
    let data_dir = folder.join("pgdata");
    let mut command = kopilka(&["dev", "--addr", &format!("127.0.0.1:{port}"), "--data-dir"]);
    command
        .arg(&data_dir)
        .env("KOPILKA__PUBLIC_URL", &site)
        .env("KOPILKA__SMTP__FILE_DIR", mail_dir)
        .env("KOPILKA__SERVER__CORS_ALLOWED_ORIGINS", &site);
    for (key, value) in env {
        command.env(key, value);
    }
    let mut dev = Running::start(command);
    let line = dev.next_line(Duration::from_secs(90)).await;
    assert!(line.starts_with("kopilka dev: "), "{line}");
    let masked = line
        .split_whitespace()
        .find(|w| w.starts_with("postgres://"))
        .expect("dev says where Postgres is");
    let password = std::fs::read_to_string(data_dir.join("kopilka.password")).unwrap();
    let pool = PgPool::connect(&masked.replace("***", password.trim()))
        .await
        .expect("dev's Postgres");
    (dev, site, pool)
}

#[tokio::test]
async fn a_reader_gives_monthly_through_the_widget_and_stops_seeing_asks() {
    let folder = tempfile::tempdir().unwrap();
    // As root, the private cluster runs as `postgres`, who must reach the folder.
    std::fs::set_permissions(folder.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mail_dir = folder.path().join("mail");
    let (dev, site, pool) = dev(folder.path(), &mail_dir, &[]).await;
    let (_driver, driver_url) = chromedriver().await;

    // An anonymous reader sees the banner.
    let client = browser(&driver_url).await;
    client.goto(&format!("{site}/")).await.unwrap();
    assert_eq!(
        wait_for_state(&client, &["shown", "hidden"], Duration::from_secs(20)).await,
        "shown"
    );
    save_banner(&client, "widget-banner.png").await;

    // Accessible: every field has a label, every button a name, the intervals are a group.
    let unlabeled = client
        .execute(
            "return [...document.querySelectorAll('.kopilka input')].filter(i => !(i.labels && i.labels.length) && !i.getAttribute('aria-label')).length
               + [...document.querySelectorAll('.kopilka button')].filter(b => !(b.textContent.trim() || b.getAttribute('aria-label'))).length",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(unlabeled, json!(0), "unlabeled controls");
    let legend = client
        .find(Locator::Css(".kopilka-intervals legend"))
        .await
        .unwrap();
    assert_eq!(legend.text().await.unwrap(), "How often");

    // Monthly buttons say so, so nobody gives monthly by accident.
    click(&client, "[data-kopilka='interval-month']").await;
    let month_preset = text_of(&client, "[data-kopilka='amount-1000']").await;
    assert_eq!(month_preset, "$10/month");
    click(&client, "[data-kopilka='interval-once']").await;
    let once_preset = text_of(&client, "[data-kopilka='amount-1000']").await;
    assert_eq!(once_preset, "$10");

    // A custom amount below the minimum is refused before anything is sent.
    click(&client, "[data-kopilka='interval-month']").await;
    type_into(&client, ".kopilka-amounts input[type=text]", "1.50").await;
    click(&client, ".kopilka-give button[type=submit]").await;
    let error = text_of(&client, ".kopilka-give [role=alert]").await;
    assert_eq!(error, "The least we can accept is $2.");
    let started: i64 = sqlx::query_scalar("SELECT count(*) FROM contributions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(started, 0);

    // Remind me later: an address and a date; stored, and the banner sleeps until then.
    let reminded = "later@example.org";
    click(&client, ".kopilka-later button").await;
    type_into(&client, ".kopilka-remind input[type=email]", reminded).await;
    let remind_on = client
        .find(Locator::Css(".kopilka-remind input[type=date]"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .expect("a default date");
    click(&client, ".kopilka-remind button[type=submit]").await;
    wait_for_state(&client, &["reminded"], Duration::from_secs(10)).await;
    let stored: (String, String) = sqlx::query_as(
        "SELECT m.remind_on::text, m.status FROM reminders m JOIN readers r ON r.id = m.reader_id
         WHERE r.email = $1",
    )
    .bind(reminded)
    .fetch_one(&pool)
    .await
    .expect("the reminder is stored");
    assert_eq!(stored, (remind_on, "pending".to_owned()));
    client.goto(&format!("{site}/")).await.unwrap();
    assert_eq!(
        wait_for_state(&client, &["shown", "hidden"], Duration::from_secs(20)).await,
        "hidden",
        "snoozed until the reminder's day"
    );
    client.close().await.unwrap();

    // Another reader, in Russian, gives monthly, then signs in with an emailed link.
    let client = browser(&driver_url).await;
    let reader = "monthly@example.org";
    client.goto(&format!("{site}/?lang=ru")).await.unwrap();
    wait_for_state(&client, &["shown"], Duration::from_secs(20)).await;
    let heading = text_of(&client, ".kopilka-banner h2").await;
    assert_eq!(heading, "Поддержите нас");
    let preset = text_of(&client, "[data-kopilka='amount-500']").await;
    assert!(preset.ends_with("/мес."), "{preset}");

    // Monthly, 1 000 (minor units), Continue.
    click(&client, "[data-kopilka='interval-month']").await;
    click(&client, "[data-kopilka='amount-1000']").await;
    click(&client, ".kopilka-give button[type=submit]").await;

    // The simulator's hosted checkout page: it says monthly; the reader's address, Pay.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while client
        .current_url()
        .await
        .unwrap()
        .as_str()
        .starts_with(&site)
    {
        assert!(tokio::time::Instant::now() < deadline, "no checkout page");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let amount = client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("[data-amount]"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(amount.contains("every month"), "{amount}");
    type_into(&client, "input[name=email]", reader).await;
    click(&client, "button[value=pay]").await;

    // Back on the article, not signed in: thanks, and a way to sign in. The article's URL
    // is the one the reader left (through Kopilka's return route): no Stripe or
    // contribution id for the page's other scripts; the outcome came from Kopilka's cookie.
    wait_for_state(&client, &["thanks"], Duration::from_secs(20)).await;
    let back = client.current_url().await.unwrap();
    assert_eq!(back.as_str(), format!("{site}/?lang=ru"), "a clean URL");
    let referrer = client
        .execute("return document.referrer", vec![])
        .await
        .unwrap();
    assert!(
        !referrer.to_string().contains("ref=") && !referrer.to_string().contains("cs_"),
        "{referrer}"
    );
    click(&client, ".kopilka-thanks .kopilka-member button").await;
    type_into(
        &client,
        ".kopilka-thanks .kopilka-signin input[type=email]",
        reader,
    )
    .await;
    // The webhook makes the address a reader; until it lands, a link request sends nothing
    // (and says the same), so the reader asks again.
    let link = loop {
        click(
            &client,
            ".kopilka-thanks .kopilka-signin button[type=submit]",
        )
        .await;
        if let Some(link) = sign_in_link(&mail_dir, reader, Duration::from_secs(3)).await {
            break link;
        }
        assert!(
            tokio::time::Instant::now() < deadline + Duration::from_secs(60),
            "no sign-in email to {reader}"
        );
    };
    assert!(link.starts_with(&site), "{link}");
    client.goto(&link).await.unwrap();
    click(&client, "#go").await;
    let signed_in = client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::XPath(
            "//*[@id='result' and contains(., 'signed in')]",
        ))
        .await;
    assert!(signed_in.is_ok(), "the link signs in");

    // Signed in: the token says supporter, monthly.
    let entitlements = fetch_json(&client, "/v1/entitlements").await;
    assert_eq!(
        entitlements["claims"]["supporter"],
        json!(true),
        "{entitlements}"
    );
    assert_eq!(entitlements["claims"]["interval"], json!("month"));

    // The next article: no banner, because the reader is a supporter.
    client.goto(&format!("{site}/?lang=ru")).await.unwrap();
    assert_eq!(
        wait_for_state(&client, &["shown", "hidden"], Duration::from_secs(20)).await,
        "hidden"
    );
    assert!(
        client.find(Locator::Css(".kopilka-banner")).await.is_err(),
        "the banner is gone"
    );
    let offer = fetch_json(&client, "/v1/offer").await;
    assert_eq!(offer["reason"], json!("supporter"), "{offer}");
    // The page's scripts learn that the reader supports it, and nothing of the claims.
    let events = client
        .execute("return window.kopilkaSupporterEvents", vec![])
        .await
        .unwrap();
    assert_eq!(events, json!([{"supporter": true}]), "{events}");
    let gifts: (i64, i64) = sqlx::query_as(
        "SELECT count(*), coalesce(sum(amount_minor), 0)::bigint FROM contributions c
         JOIN readers r ON r.id = c.reader_id WHERE r.email = $1",
    )
    .bind(reader)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(gifts, (1, 1000));

    client.close().await.unwrap();
    pool.close().await;
    let log = dev.stderr();
    let status = dev.terminate(Duration::from_secs(60)).await;
    assert!(status.success(), "{status:?}; log:\n{log}");
}

/// The Turnstile stand-in (`tests/support/fake_turnstile.py`) on a free port.
async fn fake_turnstile() -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt as _;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/support/fake_turnstile.py");
    let mut child = Command::new("python3")
        .args([
            script,
            "--secret",
            "1x0000000000000000000000000000000AA",
            "--site-key",
            "1x00000000000000000000AA",
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs the Turnstile stand-in");
    let stdout = child.stdout.take().expect("its stdout");
    let line = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::io::BufReader::new(stdout).lines().next_line(),
    )
    .await
    .expect("the stand-in starts")
    .expect("a line")
    .expect("a line");
    let port = line
        .strip_prefix("listening on ")
        .expect("listening on PORT");
    (child, format!("http://127.0.0.1:{port}"))
}

/// Issue #19: checkout under attack. Continue gets 403 `challenge_required`; the widget
/// loads the provider's script, shows the check, and once the reader solves it sends the
/// token and goes on to the payment page; the token was verified with the provider.
#[tokio::test]
async fn under_attack_the_widget_asks_for_the_challenge_and_the_reader_goes_on() {
    let folder = tempfile::tempdir().unwrap();
    std::fs::set_permissions(folder.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mail_dir = folder.path().join("mail");
    let (_turnstile, turnstile) = fake_turnstile().await;
    let env = [
        (
            "KOPILKA__ABUSE__CHALLENGE__PROVIDER",
            "turnstile".to_owned(),
        ),
        (
            "KOPILKA__ABUSE__CHALLENGE__SITE_KEY",
            "1x00000000000000000000AA".to_owned(),
        ),
        (
            "KOPILKA__ABUSE__CHALLENGE__SECRET",
            "1x0000000000000000000000000000000AA".to_owned(),
        ),
        (
            "KOPILKA__ABUSE__CHALLENGE__VERIFY_URL",
            format!("{turnstile}/turnstile/v0/siteverify"),
        ),
        (
            "KOPILKA__ABUSE__CHALLENGE__SCRIPT_URL",
            format!("{turnstile}/turnstile/v0/api.js?render=explicit"),
        ),
        ("KOPILKA__ABUSE__REFRESH_MS", "100".to_owned()),
    ];
    let (dev, site, pool) = dev(folder.path(), &mail_dir, &env).await;
    // The operator holds checkout under attack (as `admin abuse block --under-attack` does).
    sqlx::query("UPDATE abuse_state SET forced_until = now() + interval '1 hour'")
        .execute(&pool)
        .await
        .unwrap();
    // Probed with an amount below the usual minimum: refused either way (422 in calm, 403
    // challenge_required under attack), so the probe itself starts nothing.
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let answer = http
            .post(format!("{site}/v1/checkout"))
            .json(&json!({"interval": "once", "amount_minor": 1, "currency": "usd"}))
            .send()
            .await
            .unwrap();
        if answer.status() == reqwest::StatusCode::FORBIDDEN {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never under attack");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_driver, driver_url) = chromedriver().await;
    let client = browser(&driver_url).await;
    client.goto(&format!("{site}/")).await.unwrap();
    wait_for_state(&client, &["shown"], Duration::from_secs(20)).await;
    click(&client, "[data-kopilka='interval-once']").await;
    type_into(&client, ".kopilka-amounts input[type=text]", "50").await;
    click(&client, ".kopilka-give button[type=submit]").await;
    // The check appears under Continue, with a line saying why.
    click(&client, ".kopilka-challenge input[type=checkbox]").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while client
        .current_url()
        .await
        .unwrap()
        .as_str()
        .starts_with(&site)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no checkout page after the challenge; page:\n{}",
            client.source().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let verified: serde_json::Value = reqwest::get(format!("{turnstile}/_fake/verifications"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        verified["verifications"],
        json!(1),
        "the token was verified once"
    );
    let started: (i64, i64) = sqlx::query_as(
        "SELECT count(*), coalesce(sum(amount_minor), 0)::bigint FROM contributions",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(started, (1, 5000));
    client.close().await.unwrap();
    pool.close().await;
    let log = dev.stderr();
    let status = dev.terminate(Duration::from_secs(60)).await;
    assert!(status.success(), "{status:?}; log:\n{log}");
}

/// Waits until the browser has left `site` (for a provider's hosted page).
async fn left(client: &Client, site: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while client
        .current_url()
        .await
        .unwrap()
        .as_str()
        .starts_with(site)
    {
        assert!(tokio::time::Instant::now() < deadline, "still on {site}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_reader_buys_a_pass_code_with_crypto_and_another_browser_redeems_it() {
    let folder = tempfile::tempdir().unwrap();
    std::fs::set_permissions(folder.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mail_dir = folder.path().join("mail");
    let (dev, site, pool) = dev(folder.path(), &mail_dir, &[]).await;
    let (_driver, driver_url) = chromedriver().await;

    // Crypto, a 12-month pass, as a gift code: no address anywhere.
    let client = browser(&driver_url).await;
    client.goto(&format!("{site}/")).await.unwrap();
    wait_for_state(&client, &["shown"], Duration::from_secs(20)).await;
    click(&client, "[data-kopilka='rail-crypto']").await;
    click(&client, "[data-kopilka='interval-pass']").await;
    let year = text_of(&client, "[data-kopilka='months-12']").await;
    assert_eq!(year, "12 months — $60", "the monthly default times twelve");
    click(&client, "[data-kopilka='months-12']").await;
    click(&client, ".kopilka-gift input[type=checkbox]").await;
    save_banner(&client, "widget-crypto-pass.png").await;
    click(&client, ".kopilka-give button[type=submit]").await;

    // The code is shown before paying (a buyer who closes BTCPay's tab keeps it).
    let shown = client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(".kopilka-codes code"))
        .await
        .expect("the code before paying")
        .text()
        .await
        .unwrap();
    click(&client, ".kopilka-codes button").await;

    // BTCPay's invoice page (the simulator's): pay, then back to the article.
    left(&client, &site).await;
    click(&client, "button[data-action=pay]").await;
    // The page posts and comes back to itself: wait for the new page, not the old one's link.
    client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::XPath("//span[@id='status' and .='Settled']"))
        .await
        .expect("the invoice page says Settled");
    click(&client, "#return").await;
    wait_for_state(&client, &["thanks", "confirmed"], Duration::from_secs(20)).await;
    assert_eq!(
        client.current_url().await.unwrap().as_str(),
        format!("{site}/"),
        "a clean URL"
    );
    let code = text_of(&client, ".kopilka-codes code").await;
    assert!(code.starts_with("KP-"), "{code}");
    assert_eq!(code, shown, "the same code after paying");
    // Shown once: a reload shows no code.
    client.goto(&format!("{site}/")).await.unwrap();
    wait_for_state(
        &client,
        &["shown", "hidden", "thanks"],
        Duration::from_secs(20),
    )
    .await;
    assert!(client.find(Locator::Css(".kopilka-codes")).await.is_err());
    client.close().await.unwrap();

    // The webhook settles the invoice; then the code works.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let active: i64 = sqlx::query_scalar("SELECT count(*) FROM passes WHERE status = 'active'")
            .fetch_one(&pool)
            .await
            .unwrap();
        if active == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pass was never paid"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Another browser (another device): "Have a pass code?", the code, a supporter.
    let client = browser(&driver_url).await;
    client.goto(&format!("{site}/")).await.unwrap();
    wait_for_state(&client, &["shown"], Duration::from_secs(20)).await;
    click(&client, ".kopilka-have-code button").await;
    type_into(
        &client,
        ".kopilka-redeem input[type=text]",
        &code.to_lowercase(),
    )
    .await;
    click(&client, ".kopilka-redeem button[type=submit]").await;
    wait_for_state(&client, &["confirmed"], Duration::from_secs(20)).await;
    let events = client
        .execute("return window.kopilkaSupporterEvents", vec![])
        .await
        .unwrap();
    assert_eq!(events, json!([{"supporter": true}]), "{events}");
    client.goto(&format!("{site}/")).await.unwrap();
    assert_eq!(
        wait_for_state(&client, &["shown", "hidden"], Duration::from_secs(20)).await,
        "hidden",
        "a pass holder sees no asks"
    );
    let holder = fetch_json(&client, "/v1/passes/entitlements").await;
    assert_eq!(holder["claims"]["tier"], json!("pass"), "{holder}");
    client.close().await.unwrap();
    pool.close().await;
    let log = dev.stderr();
    let status = dev.terminate(Duration::from_secs(60)).await;
    assert!(status.success(), "{status:?}; log:\n{log}");
}

/// `kopilka admin <args>` against dev's Postgres (its URL from the pool and the password
/// file dev keeps beside its data); stdout.
async fn dev_admin(pool: &PgPool, folder: &Path, args: &[&str]) -> String {
    let options = pool.connect_options();
    let password = std::fs::read_to_string(folder.join("pgdata").join("kopilka.password")).unwrap();
    let url = format!(
        "postgres://{}:{}@{}:{}/{}",
        options.get_username(),
        password.trim(),
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("postgres")
    );
    let mut command = kopilka(&[&["admin"], args].concat());
    command.env("KOPILKA_ENV", "dev").env("DATABASE_URL", url);
    let out = kopilka_tests::run(command).await;
    assert!(out.status.success(), "admin {args:?}: {}", out.stderr);
    out.stdout
}

#[tokio::test]
async fn an_experiments_variant_reaches_the_widget_and_checkout_and_its_report_opens_in_chromium() {
    let folder = tempfile::tempdir().unwrap();
    std::fs::set_permissions(folder.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mail_dir = folder.path().join("mail");
    let (dev, site, pool) = dev(
        folder.path(),
        &mail_dir,
        &[("KOPILKA__EXPERIMENTS__FLUSH_SECS", "1".into())],
    )
    .await;
    let (_driver, driver_url) = chromedriver().await;

    // A variant with its own presets, words and no goal line, served to nearly everyone.
    let spec = folder.path().join("spec.json");
    std::fs::write(
        &spec,
        json!({
            "name": "widget-words", "targeting": {"currencies": ["usd"]},
            "variants": [
                {"key": "control", "control": true, "weight": 1},
                {"key": "bold", "weight": 1000, "presets": {"usd": {"once": [1500, 3000, 6000]}},
                 "default_interval": "once", "goal_line": false,
                 "copy": {"en": {"headline": "Keep us independent", "body": "Readers fund every story we publish."},
                          "ru": {"headline": "Сохраните нас независимыми", "body": "Читатели оплачивают каждый наш текст."}}}
            ]
        })
        .to_string(),
    )
    .unwrap();
    let spec = spec.display().to_string();
    dev_admin(
        &pool,
        folder.path(),
        &["experiments", "create", "--file", &spec],
    )
    .await;
    dev_admin(
        &pool,
        folder.path(),
        &["experiments", "start", "widget-words"],
    )
    .await;

    // The reader is assigned (a visitor cookie); the one in a thousand in the control starts
    // again as a new visitor.
    let client = browser(&driver_url).await;
    let mut served = serde_json::Value::Null;
    for _ in 0..20 {
        client.goto(&format!("{site}/")).await.unwrap();
        wait_for_state(&client, &["shown"], Duration::from_secs(20)).await;
        served = fetch_json(&client, "/v1/offer?currency=usd").await;
        if served["experiment"]["variant"] == "bold" {
            break;
        }
        client.delete_all_cookies().await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(served["experiment"]["variant"], "bold", "{served}");
    client.goto(&format!("{site}/")).await.unwrap();
    wait_for_state(&client, &["shown"], Duration::from_secs(20)).await;
    assert_eq!(
        text_of(&client, ".kopilka-banner h2").await,
        "Keep us independent"
    );
    assert_eq!(
        text_of(&client, ".kopilka-lead").await,
        "Readers fund every story we publish."
    );
    assert_eq!(
        text_of(&client, "[data-kopilka='amount-1500']").await,
        "$15"
    );
    assert_eq!(
        text_of(&client, "[data-kopilka='amount-6000']").await,
        "$60"
    );
    let goal_shown = client
        .execute(
            "return document.querySelectorAll('.kopilka-banner progress').length",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(goal_shown, json!(0), "the variant hides the goal line");
    save_banner(&client, "experiment-variant-banner.png").await;

    // Continue with the variant's default ($30): the contribution is attributed to it.
    click(&client, ".kopilka-give button[type=submit]").await;
    let mut attributed = None;
    for _ in 0..100 {
        attributed = sqlx::query_as::<_, (i64, String)>(
            "SELECT amount_minor, experiment_variant FROM contributions WHERE experiment_id IS NOT NULL",
        )
        .fetch_optional(&pool)
        .await
        .unwrap();
        if attributed.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(attributed, Some((3000, "bold".to_owned())));

    // The report: its views arrive with the next flush; the page shows the JSON's figures.
    let mut report = serde_json::Value::Null;
    for _ in 0..50 {
        let out = dev_admin(
            &pool,
            folder.path(),
            &["experiments", "report", "widget-words", "--format", "json"],
        )
        .await;
        report = serde_json::from_str(out.trim()).unwrap();
        if report["variants"][1]["views"].as_i64().unwrap_or(0) >= 1
            && report["variants"][1]["clicks"] == 1
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(report["variants"][1]["key"], "bold");
    assert_eq!(report["variants"][1]["checkouts"], 1, "{report}");
    assert_eq!(report["variants"][1]["clicks"], 1, "{report}");
    let page = folder.path().join("report.html");
    let page_arg = page.display().to_string();
    dev_admin(
        &pool,
        folder.path(),
        &[
            "experiments",
            "report",
            "widget-words",
            "--format",
            "html",
            "--out",
            &page_arg,
        ],
    )
    .await;
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        !html.contains("<script") && !html.contains("http://") && !html.contains("https://"),
        "self-contained, no scripts"
    );
    client
        .goto(&format!("file://{}", page.display()))
        .await
        .unwrap();
    let seen = client
        .execute(
            "const row = (k) => document.querySelector(`#variants tr[data-variant='${k}']`);
             return {views: row('bold').children[1].textContent, checkouts: row('bold').children[3].textContent,
                     charts: document.querySelectorAll('svg').length,
                     resources: performance.getEntriesByType('resource').length,
                     winner: document.querySelector('[data-winner]').dataset.winner,
                     title: document.title};",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(seen["views"], report["variants"][1]["views"].to_string());
    assert_eq!(seen["checkouts"], "1");
    assert!(seen["charts"].as_u64().unwrap() >= 4, "{seen}");
    assert_eq!(seen["resources"], 0, "nothing loaded from anywhere: {seen}");
    assert_eq!(seen["winner"], "", "one checkout proves nothing");
    assert_eq!(seen["title"], "Experiment widget-words");
    let shot = client.screenshot().await.unwrap();
    assert!(shot.starts_with(b"\x89PNG") && shot.len() > 5_000);
    std::fs::write(artifact("experiment-report.png"), &shot).unwrap();
    drop(dev);
}
