//! The card-testing shield (issue #19, item 2), against a real Postgres, the Stripe
//! simulator declining cards, signed webhooks, and a stand-in for Cloudflare Turnstile
//! (`tests/support/fake_turnstile.py`, held to Cloudflare's documented `siteverify`).

use std::process::Stdio;
use std::time::Duration;

use kopilka_test_support::{ApiResponse, TestApp, eventually, pg_dump, send};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt as _;

const SITE_KEY: &str = "1x00000000000000000000AA";
const SECRET: &str = "1x0000000000000000000000000000000AA";

/// The Turnstile stand-in on a free port; killed when dropped.
struct FakeTurnstile {
    base: String,
    _child: tokio::process::Child,
}

impl FakeTurnstile {
    async fn start() -> Self {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/support/fake_turnstile.py"
        );
        let mut child = tokio::process::Command::new("python3")
            .args([script, "--secret", SECRET, "--site-key", SITE_KEY])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs the Turnstile stand-in");
        let stdout = child.stdout.take().expect("its stdout");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("the stand-in starts")
            .expect("its first line")
            .expect("a line");
        let port = line
            .strip_prefix("listening on ")
            .expect("listening on PORT");
        Self {
            base: format!("http://127.0.0.1:{port}"),
            _child: child,
        }
    }

    /// A token as a browser on `hostname` gets it by solving the challenge.
    async fn solve(&self, hostname: &str) -> String {
        let answer: Value = reqwest::Client::new()
            .post(format!("{}/_fake/token", self.base))
            .json(&json!({"hostname": hostname}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["token"].as_str().unwrap().to_owned()
    }

    async fn verifications(&self) -> i64 {
        let answer: Value = reqwest::get(format!("{}/_fake/verifications", self.base))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["verifications"].as_i64().unwrap()
    }
}

/// A checkout from client `ip` with `body`.
async fn checkout(app: &TestApp, ip: &str, body: Value) -> ApiResponse {
    send(
        app.api
            .request(Method::POST, "/v1/checkout")
            .header("x-forwarded-for", ip)
            .json(&body),
    )
    .await
}

fn session_of(started: &ApiResponse) -> String {
    started.json()["checkout_url"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned()
}

async fn failures(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM payment_failures")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

async fn spawn(
    turnstile: Option<&FakeTurnstile>,
    configure: impl FnOnce(&mut kopilka_config::Settings),
) -> TestApp {
    let verify = turnstile.map(|t| format!("{}/turnstile/v0/siteverify", t.base));
    let script = turnstile.map(|t| format!("{}/turnstile/v0/api.js", t.base));
    let app = TestApp::spawn_with(|s| {
        s.server.client_ip_header = Some("x-forwarded-for".into());
        s.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        s.abuse.attack_failures = 5;
        s.abuse.client_failures = 5;
        s.abuse.address_failures = 1000;
        s.abuse.card_failures = 1000;
        s.abuse.attack_minimum_factor = 5;
        if let (Some(verify), Some(script)) = (verify, script) {
            s.abuse.challenge = kopilka_config::ChallengeSettings {
                provider: Some(kopilka_config::ChallengeProvider::Turnstile),
                site_key: Some(SITE_KEY.into()),
                secret: Some(SECRET.into()),
                verify_url: Some(verify.parse().unwrap()),
                script_url: Some(script.parse().unwrap()),
            };
        }
        configure(s);
    })
    .await;
    app.deliver_webhooks_here(Some((0, false))).await;
    app
}

/// The simulated card-testing run the issue asks for: one client tries card after card at
/// speed, each declined; the shield trips (blocking that client, putting checkout under
/// attack), and a real donor from another client still pays — after solving the challenge,
/// at the raised minimum.
#[tokio::test]
async fn a_card_tester_is_blocked_and_a_real_donor_still_pays() {
    let turnstile = FakeTurnstile::start().await;
    let app = spawn(Some(&turnstile), |_| {}).await;
    let tester = "203.0.113.9";
    let host = app.settings.public_url.host_str().unwrap().to_owned();

    // Card after card from one client, each a different stolen number, all declined.
    let mut tried = 0;
    let blocked = loop {
        tried += 1;
        assert!(tried <= 40, "the tester was never blocked");
        let started = checkout(
            &app,
            tester,
            json!({"interval": "once", "amount_minor": 100, "currency": "usd"}),
        )
        .await;
        if started.status == StatusCode::FORBIDDEN {
            break started;
        }
        assert_eq!(
            started.status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&started.body)
        );
        let card = format!("40000000000{:05}", 100 + tried);
        app.sim_control(
            &format!("/_sim/checkout/{}/decline", session_of(&started)),
            &json!({"card": card}),
        )
        .await;
        // The tester does not wait; the shield learns from the webhooks as they arrive.
        if tried >= 5 {
            eventually("the declines counted", Duration::from_secs(20), || async {
                (failures(&app).await >= 5).then_some(())
            })
            .await;
            // What every serve does each refresh_ms, now: the state, not a sleep.
            app.state.shield.refresh(&app.pool).await.unwrap();
        }
    };
    assert_eq!(blocked.error_code(403), "blocked");
    assert!(
        blocked.headers.get("retry-after").is_some(),
        "a blocked client is told when to come back"
    );
    assert_eq!(tried, 6, "blocked at the first try after the fifth decline");
    // charge.failed and payment_intent.payment_failed of one decline count once.
    let counted = failures(&app).await;
    assert_eq!(
        counted,
        i64::from(tried - 1),
        "one row per declined attempt"
    );
    let before = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM contributions")
        .fetch_one(&app.pool)
        .await
        .unwrap();

    // Blocked even with a solved challenge.
    let token = turnstile.solve(&host).await;
    let again = checkout(
        &app,
        tester,
        json!({"interval": "once", "amount_minor": 5000, "currency": "usd", "challenge_token": token}),
    )
    .await;
    assert_eq!(again.error_code(403), "blocked");

    // A real donor from elsewhere: checkout is under attack, so a challenge first.
    let donor = "198.51.100.20";
    let asked = checkout(
        &app,
        donor,
        json!({"interval": "once", "amount_minor": 2500, "currency": "usd"}),
    )
    .await;
    assert_eq!(asked.error_code(403), "challenge_required");
    let challenge = &asked.json()["error"]["challenge"];
    assert_eq!(challenge["provider"], "turnstile");
    assert_eq!(challenge["site_key"], SITE_KEY);
    assert!(
        challenge["script_url"]
            .as_str()
            .unwrap()
            .ends_with("/turnstile/v0/api.js")
    );
    // A made-up token, and a real one solved on another site, are refused.
    let forged = checkout(
        &app,
        donor,
        json!({"interval": "once", "amount_minor": 2500, "currency": "usd", "challenge_token": "XXXX.DUMMY.TOKEN.forged"}),
    )
    .await;
    assert_eq!(forged.error_code(403), "challenge_failed");
    let elsewhere = turnstile.solve("attacker.example").await;
    let foreign = checkout(
        &app,
        donor,
        json!({"interval": "once", "amount_minor": 2500, "currency": "usd", "challenge_token": elsewhere}),
    )
    .await;
    assert_eq!(foreign.error_code(403), "challenge_failed");
    // Solved, but below the raised minimum (5 × $1).
    let token = turnstile.solve(&host).await;
    let small = checkout(
        &app,
        donor,
        json!({"interval": "once", "amount_minor": 300, "currency": "usd", "challenge_token": token}),
    )
    .await;
    assert_eq!(small.error_code(422), "amount_below_minimum");
    assert!(
        small.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("5.00 USD"),
        "{}",
        small.json()
    );
    // A token verifies once.
    let reused = checkout(
        &app,
        donor,
        json!({"interval": "once", "amount_minor": 2500, "currency": "usd", "challenge_token": token}),
    )
    .await;
    assert_eq!(reused.error_code(403), "challenge_failed");
    assert_eq!(
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM contributions")
            .fetch_one(&app.pool)
            .await
            .unwrap(),
        before,
        "no refused checkout created anything"
    );
    // Solved, at the raised minimum or more: the donor pays.
    let token = turnstile.solve(&host).await;
    let paid = checkout(
        &app,
        donor,
        json!({"interval": "once", "amount_minor": 2500, "currency": "usd", "challenge_token": token}),
    )
    .await;
    assert_eq!(
        paid.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&paid.body)
    );
    let contribution = paid.json()["contribution_id"].as_str().unwrap().to_owned();
    app.sim_control(
        &format!("/_sim/checkout/{}/pay", session_of(&paid)),
        &json!({}),
    )
    .await;
    eventually("the donor's gift paid", Duration::from_secs(20), || async {
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM contributions WHERE id = $1::uuid")
                .bind(&contribution)
                .fetch_optional(&app.pool)
                .await
                .unwrap();
        (status.as_deref() == Some("paid")).then_some(())
    })
    .await;
    assert!(
        turnstile.verifications().await >= 5,
        "every token was checked with the provider"
    );

    // Nothing of a card, a client or an address is kept as itself: Stripe's fingerprints
    // of the tried cards appear nowhere in the database.
    let attempts: Vec<String> = sqlx::query_scalar("SELECT attempt FROM payment_failures")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    let dump = pg_dump(&app.db.as_ref().unwrap().url);
    for attempt in attempts {
        let charge = app.sim_get(&format!("/v1/charges/{attempt}")).await;
        let fingerprint = charge["payment_method_details"]["card"]["fingerprint"]
            .as_str()
            .expect("Stripe gives the declined card's fingerprint")
            .to_owned();
        assert_eq!(fingerprint.len(), 16);
        assert!(
            !dump.contains(&fingerprint),
            "a card fingerprint was stored"
        );
    }
    assert!(!dump.contains(tester), "a client IP was stored");
}

/// The operator's steering: a forced attack requires the challenge at once, an unblocked
/// client checks out again (its old failures no longer count), declaring the attack over
/// ends it; each step is audited. A supporter's saved card failing (a renewal) is not card
/// testing and counts nowhere.
#[tokio::test]
async fn the_operator_steers_the_shield_and_a_renewal_failure_is_not_card_testing() {
    let turnstile = FakeTurnstile::start().await;
    let app = spawn(Some(&turnstile), |s| {
        s.abuse.attack_failures = 1000;
        s.abuse.client_failures = 2;
    })
    .await;
    let shield = &app.state.shield;
    let client = "203.0.113.77";

    // Two declines block the client.
    for n in 0..2 {
        let started = checkout(
            &app,
            client,
            json!({"interval": "once", "amount_minor": 100, "currency": "usd"}),
        )
        .await;
        assert_eq!(started.status, StatusCode::CREATED);
        app.sim_control(
            &format!("/_sim/checkout/{}/decline", session_of(&started)),
            &json!({"card": format!("400000000000{n:04}")}),
        )
        .await;
    }
    eventually("two failures counted", Duration::from_secs(20), || async {
        (failures(&app).await == 2).then_some(())
    })
    .await;
    shield.refresh(&app.pool).await.unwrap();
    let body = json!({"interval": "once", "amount_minor": 1000, "currency": "usd"});
    assert_eq!(
        checkout(&app, client, body.clone()).await.error_code(403),
        "blocked"
    );
    let status = kopilka_contributions::shield::status(&app.pool, &app.settings.abuse)
        .await
        .unwrap();
    assert!(!status.under_attack);
    assert_eq!(status.blocks.len(), 1);
    assert_eq!(status.blocks[0].reason, "client_failures");
    let key = status.blocks[0].key.clone();

    // The operator lifts it: the client checks out again, and one more decline does not
    // re-block it (its earlier failures no longer count).
    assert!(
        kopilka_contributions::shield::unblock(
            &app.pool,
            "admin:test",
            kopilka_contributions::shield::BlockKind::Client,
            &key
        )
        .await
        .unwrap()
    );
    shield.refresh(&app.pool).await.unwrap();
    let started = checkout(&app, client, body.clone()).await;
    assert_eq!(started.status, StatusCode::CREATED);
    app.sim_control(
        &format!("/_sim/checkout/{}/decline", session_of(&started)),
        &json!({"card": "4000000000009995"}),
    )
    .await;
    eventually(
        "the third failure counted",
        Duration::from_secs(20),
        || async { (failures(&app).await == 3).then_some(()) },
    )
    .await;
    shield.refresh(&app.pool).await.unwrap();
    assert_eq!(
        checkout(&app, client, body.clone()).await.status,
        StatusCode::CREATED
    );

    // A forced attack: the challenge at once, for everyone.
    kopilka_contributions::shield::force_attack(&app.pool, "admin:test", 600)
        .await
        .unwrap();
    shield.refresh(&app.pool).await.unwrap();
    assert!(shield.under_attack());
    assert_eq!(
        checkout(&app, "198.51.100.1", body.clone())
            .await
            .error_code(403),
        "challenge_required"
    );
    // Declared over: no challenge.
    kopilka_contributions::shield::calm(&app.pool, "admin:test")
        .await
        .unwrap();
    shield.refresh(&app.pool).await.unwrap();
    assert!(!shield.under_attack());
    assert_eq!(
        checkout(&app, "198.51.100.1", body.clone()).await.status,
        StatusCode::CREATED
    );
    let audited: Vec<String> =
        sqlx::query_scalar("SELECT action FROM audit_log WHERE action LIKE 'abuse.%' ORDER BY id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(audited, ["abuse.unblock", "abuse.attack", "abuse.calm"]);

    // A monthly supporter's saved card is declined at renewal: not card testing.
    let gift = app.give("supporter@example.org", "month", 500).await;
    let contribution = gift["contribution_id"].as_str().unwrap().to_owned();
    let subscription: String =
        sqlx::query_scalar("SELECT stripe_subscription_id FROM contributions WHERE id = $1::uuid")
            .bind(&contribution)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    app.sim_control(
        &format!("/_sim/subscriptions/{subscription}/card"),
        &json!({"outcome": "decline"}),
    )
    .await;
    let counted = failures(&app).await;
    app.sim_control("/_sim/clock/advance", &json!({"seconds": 32 * 86_400}))
        .await;
    eventually(
        "the renewal's failure applied",
        Duration::from_secs(20),
        || async {
            let past_due: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM recurring_plans WHERE status = 'past_due')",
            )
            .fetch_one(&app.pool)
            .await
            .unwrap();
            past_due.then_some(())
        },
    )
    .await;
    assert_eq!(
        failures(&app).await,
        counted,
        "a renewal's decline is not counted"
    );
}
