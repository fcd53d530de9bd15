//! Contributions and plans through the simulator: checkout, payment, renewals on the clock,
//! changes through Stripe's update, facts applied twice or out of order, supporter status
//! and the goal's arithmetic.

use kopilka_contributions::facts::{self as contribution_facts, Applied, CheckoutCompleted};
use kopilka_contributions::{CheckoutInput, start_checkout};
use kopilka_domain::id::{ContributionId, ReaderId};
use kopilka_domain::{Interval, Money};
use kopilka_recurring::facts::{self, InvoicePaid, SubscriptionFact};
use kopilka_recurring::{PlanChange, change_plan, goal, supporter_status};
use kopilka_test_support::TestApp;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::macros::datetime;

struct Sim<'a> {
    app: &'a TestApp,
    http: reqwest::Client,
}

impl<'a> Sim<'a> {
    fn new(app: &'a TestApp) -> Self {
        Self {
            app,
            http: reqwest::Client::new(),
        }
    }

    async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.app.stripe.simulator.base_url()))
            .bearer_auth(self.app.stripe.simulator.secret_key())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn control(&self, path: &str, body: Value) -> Value {
        self.http
            .post(format!("{}{path}", self.app.stripe.simulator.base_url()))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

fn money(minor: i64, currency: &str) -> Money {
    Money::new(minor, currency.parse().unwrap())
}

/// Starts a checkout through Kopilka and pays it on the simulator; returns the contribution
/// and the completed session.
async fn paid_checkout(
    app: &TestApp,
    sim: &Sim<'_>,
    interval: &str,
    amount: i64,
    currency: &str,
) -> (ContributionId, Value) {
    let input = CheckoutInput {
        interval: interval.into(),
        amount_minor: amount,
        currency: currency.into(),
        email: None,
        return_url: None,
        rail: None,
        pass_months: None,
        pass_codes: None,
        experiment: None,
    };
    let (_, started) = start_checkout(
        &app.pool,
        kopilka_contributions::Providers {
            stripe: app.state.stripe.as_ref(),
            btcpay: None,
        },
        &app.settings,
        &input,
        None,
        None,
        &kopilka_contributions::shield::Attribution::default(),
    )
    .await
    .unwrap();
    let contribution: ContributionId = started["contribution_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let session_id = started["checkout_url"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    sim.control(&format!("/_sim/checkout/{session_id}/pay"), json!({}))
        .await;
    (
        contribution,
        sim.get(&format!("/v1/checkout/sessions/{session_id}"))
            .await,
    )
}

/// The fact the webhook issue will read from `checkout.session.completed`.
fn completed(session: &Value) -> CheckoutCompleted {
    CheckoutCompleted {
        session_id: session["id"].as_str().unwrap().into(),
        contribution_id: session["client_reference_id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap(),
        paid: session["payment_status"] == "paid",
        customer: session["customer"].as_str().map(Into::into),
        payment_intent: session["payment_intent"].as_str().map(Into::into),
        subscription: session["subscription"].as_str().map(Into::into),
        amount: Some(money(
            session["amount_total"].as_i64().unwrap(),
            session["currency"].as_str().unwrap(),
        )),
        reader: None,
        occurred_at: session["created"].as_i64().unwrap() + 1,
    }
}

fn subscription_fact(sub: &Value, occurred_at: i64) -> SubscriptionFact {
    let price = &sub["items"]["data"][0]["price"];
    SubscriptionFact {
        subscription_id: sub["id"].as_str().unwrap().into(),
        customer: sub["customer"].as_str().map(Into::into),
        contribution_id: sub["metadata"]["contribution_id"]
            .as_str()
            .map(|c| c.parse().unwrap()),
        status: sub["status"].as_str().unwrap().into(),
        amount: money(
            price["unit_amount"].as_i64().unwrap(),
            price["currency"].as_str().unwrap(),
        ),
        interval: price["recurring"]["interval"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap(),
        current_period_end: sub["items"]["data"][0]["current_period_end"]
            .as_i64()
            .unwrap(),
        cancel_at_period_end: sub["cancel_at_period_end"].as_bool().unwrap(),
        occurred_at,
        answered: false,
    }
}

fn invoice_fact(invoice: &Value) -> InvoicePaid {
    InvoicePaid {
        invoice_id: invoice["id"].as_str().unwrap().into(),
        subscription_id: invoice["parent"]["subscription_details"]["subscription"]
            .as_str()
            .unwrap()
            .into(),
        payment_intent: invoice["payments"]["data"][0]["payment"]["payment_intent"]
            .as_str()
            .map(Into::into),
        amount: money(
            invoice["amount_paid"].as_i64().unwrap(),
            invoice["currency"].as_str().unwrap(),
        ),
        occurred_at: invoice["status_transitions"]["paid_at"].as_i64().unwrap(),
        interval: None,
    }
}

async fn status_of(app: &TestApp, id: ContributionId) -> String {
    sqlx::query_scalar("SELECT status FROM contributions WHERE id = $1")
        .bind(id.as_uuid())
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// The ledger's money movements, Stripe's fees apart (a job records them after each payment,
/// whenever the worker gets to it; `crates/api/tests/money.rs` checks them).
async fn ledger_rows(app: &TestApp) -> Vec<(String, i64, Option<uuid::Uuid>)> {
    sqlx::query_as(
        "SELECT kind, amount_minor, plan_id FROM ledger_entries WHERE kind <> 'fee'
         ORDER BY occurred_at, recorded_at",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_paid_one_off_enters_the_ledger_once_and_late_facts_do_not_undo_it() {
    let app = TestApp::spawn().await;
    let sim = Sim::new(&app);
    let (contribution, session) = paid_checkout(&app, &sim, "once", 2500, "usd").await;
    let fact = completed(&session);
    let mut conn = app.pool.acquire().await.unwrap();
    assert_eq!(
        contribution_facts::checkout_completed(&mut conn, &fact)
            .await
            .unwrap(),
        Applied::Changed
    );
    assert_eq!(
        contribution_facts::checkout_completed(&mut conn, &fact)
            .await
            .unwrap(),
        Applied::Unchanged,
        "a duplicate changes nothing"
    );
    assert_eq!(status_of(&app, contribution).await, "paid");
    assert_eq!(
        ledger_rows(&app).await,
        vec![("payment".into(), 2500, None)]
    );

    // An expiry or a decline reported late does not make the paid gift unpaid.
    contribution_facts::checkout_expired(&mut conn, contribution, fact.occurred_at + 60)
        .await
        .unwrap();
    contribution_facts::payment_failed(&mut conn, contribution, fact.occurred_at - 60)
        .await
        .unwrap();
    assert_eq!(status_of(&app, contribution).await, "paid");

    // A refund of part, then the rest: two ledger rows, and the contribution is refunded.
    let pi = fact.payment_intent.clone().unwrap();
    for (id, amount) in [("re_part", 1000), ("re_rest", 1500)] {
        let refund = contribution_facts::RefundFact {
            refund_id: id.into(),
            payment_intent: pi.clone(),
            amount: money(amount, "usd"),
            occurred_at: fact.occurred_at + 100,
            balance_transaction: None,
        };
        contribution_facts::refund_recorded(&mut conn, &refund)
            .await
            .unwrap();
        contribution_facts::refund_recorded(&mut conn, &refund)
            .await
            .unwrap();
    }
    assert_eq!(status_of(&app, contribution).await, "refunded");
    let kinds: Vec<(String, i64)> = ledger_rows(&app)
        .await
        .into_iter()
        .map(|(k, a, _)| (k, a))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("payment".into(), 2500),
            ("refund".into(), -1000),
            ("refund".into(), -1500)
        ]
    );
}

#[tokio::test]
async fn a_won_dispute_reported_out_of_order_leaves_the_gift_paid() {
    let app = TestApp::spawn().await;
    let sim = Sim::new(&app);
    let (contribution, session) = paid_checkout(&app, &sim, "once", 3000, "jpy").await;
    let fact = completed(&session);
    let mut conn = app.pool.acquire().await.unwrap();
    contribution_facts::checkout_completed(&mut conn, &fact)
        .await
        .unwrap();
    // `Some(true)`: funds reinstated (the dispute then lists both balance transactions);
    // `None`: just opened (none yet).
    let dispute = |won: Option<bool>, at| contribution_facts::DisputeFact {
        dispute_id: "dp_1".into(),
        payment_intent: fact.payment_intent.clone().unwrap(),
        amount: money(3000, "jpy"),
        withdrawn: false,
        reinstated: won == Some(true),
        movements: if won == Some(true) {
            vec![
                contribution_facts::DisputeMovement {
                    id: "txn_out",
                    amount: -3000,
                    fee: 0,
                    currency: "jpy".parse().unwrap(),
                },
                contribution_facts::DisputeMovement {
                    id: "txn_back",
                    amount: 3000,
                    fee: 0,
                    currency: "jpy".parse().unwrap(),
                },
            ]
        } else {
            vec![]
        },
        occurred_at: at,
    };
    // "funds reinstated" arrives before "created".
    contribution_facts::dispute_changed(&mut conn, &dispute(Some(true), fact.occurred_at + 500))
        .await
        .unwrap();
    contribution_facts::dispute_changed(&mut conn, &dispute(None, fact.occurred_at + 100))
        .await
        .unwrap();
    assert_eq!(status_of(&app, contribution).await, "paid");
    // "funds withdrawn" of the same second as the reinstatement, applied after it (its
    // snapshot lists only the withdrawal): the gift stays paid.
    let withdrawn = contribution_facts::DisputeFact {
        withdrawn: true,
        reinstated: false,
        movements: vec![contribution_facts::DisputeMovement {
            id: "txn_out",
            amount: -3000,
            fee: 0,
            currency: "jpy".parse().unwrap(),
        }],
        ..dispute(None, fact.occurred_at + 500)
    };
    contribution_facts::dispute_changed(&mut conn, &withdrawn)
        .await
        .unwrap();
    assert_eq!(status_of(&app, contribution).await, "paid");
    let net: i64 = ledger_rows(&app).await.iter().map(|(_, a, _)| a).sum();
    assert_eq!(net, 3000, "withdrawn and reinstated");
}

#[tokio::test]
async fn a_monthly_plan_renews_on_the_clock_one_ledger_row_per_period() {
    let app = TestApp::spawn().await;
    let sim = Sim::new(&app);
    let (contribution, session) = paid_checkout(&app, &sim, "month", 500, "usd").await;
    let sub_id = session["subscription"].as_str().unwrap().to_owned();
    let mut conn = app.pool.acquire().await.unwrap();

    // The invoice first: the plan is not known yet, so the caller must retry later.
    let sub = sim.get(&format!("/v1/subscriptions/{sub_id}")).await;
    // Expanded: an invoice names its payment intent only in its (includable) payments.
    let first_invoice = sim
        .get(&format!(
            "/v1/invoices/{}?expand[]=payments",
            sub["latest_invoice"].as_str().unwrap()
        ))
        .await;
    assert_eq!(
        facts::invoice_paid(&mut conn, &invoice_fact(&first_invoice))
            .await
            .unwrap(),
        Applied::Unknown
    );

    contribution_facts::checkout_completed(&mut conn, &completed(&session))
        .await
        .unwrap();
    assert_eq!(
        facts::subscription_changed(
            &mut conn,
            &subscription_fact(&sub, sub["created"].as_i64().unwrap() + 1)
        )
        .await
        .unwrap(),
        Applied::Changed
    );
    assert_eq!(
        facts::invoice_paid(&mut conn, &invoice_fact(&first_invoice))
            .await
            .unwrap(),
        Applied::Changed
    );
    assert_eq!(
        facts::invoice_paid(&mut conn, &invoice_fact(&first_invoice))
            .await
            .unwrap(),
        Applied::Unchanged
    );
    assert_eq!(status_of(&app, contribution).await, "paid");

    // Three periods pass.
    for _ in 0..3 {
        let sub = sim.get(&format!("/v1/subscriptions/{sub_id}")).await;
        let end = sub["items"]["data"][0]["current_period_end"]
            .as_i64()
            .unwrap();
        let now = sim.get("/_sim/clock").await["now"].as_i64().unwrap();
        sim.control("/_sim/clock/advance", json!({"seconds": end - now + 1}))
            .await;
    }
    let invoices = sim
        .get(&format!("/v1/invoices?subscription={sub_id}&limit=100"))
        .await;
    for invoice in invoices["data"].as_array().unwrap().iter().rev() {
        let invoice = sim
            .get(&format!(
                "/v1/invoices/{}?expand[]=payments",
                invoice["id"].as_str().unwrap()
            ))
            .await;
        facts::invoice_paid(&mut conn, &invoice_fact(&invoice))
            .await
            .unwrap();
    }
    let rows = ledger_rows(&app).await;
    assert_eq!(
        rows.len(),
        4,
        "the first payment and three renewals: {rows:?}"
    );
    let plan = kopilka_recurring::plan_by_subscription(&mut conn, &sub_id)
        .await
        .unwrap()
        .unwrap();
    assert!(rows.iter().all(|(kind, amount, plan_id)| kind == "payment"
        && *amount == 500
        && *plan_id == Some(plan.id)));
}

#[tokio::test]
async fn changes_go_through_stripe_and_keep_one_plan() {
    let app = TestApp::spawn().await;
    let sim = Sim::new(&app);
    let (_, session) = paid_checkout(&app, &sim, "month", 500, "eur").await;
    let sub_id = session["subscription"].as_str().unwrap().to_owned();
    let mut conn = app.pool.acquire().await.unwrap();
    contribution_facts::checkout_completed(&mut conn, &completed(&session))
        .await
        .unwrap();
    let sub = sim.get(&format!("/v1/subscriptions/{sub_id}")).await;
    facts::subscription_changed(
        &mut conn,
        &subscription_fact(&sub, sub["created"].as_i64().unwrap()),
    )
    .await
    .unwrap();
    let plan = kopilka_recurring::plan_by_subscription(&mut conn, &sub_id)
        .await
        .unwrap()
        .unwrap();
    let stripe = app.state.stripe.as_ref().unwrap();

    let raised = change_plan(
        &app.pool,
        stripe,
        plan.id,
        PlanChange::Amount {
            amount: money(900, "eur"),
            interval: Interval::Month,
        },
        "c1",
    )
    .await
    .unwrap();
    assert_eq!(
        (raised.amount, raised.interval),
        (money(900, "eur"), Interval::Month)
    );
    let annual = change_plan(
        &app.pool,
        stripe,
        plan.id,
        PlanChange::Amount {
            amount: money(9000, "eur"),
            interval: Interval::Year,
        },
        "c2",
    )
    .await
    .unwrap();
    assert_eq!(annual.interval, Interval::Year);
    assert!(annual.current_period_end > raised.current_period_end);
    let ending = change_plan(
        &app.pool,
        stripe,
        plan.id,
        PlanChange::CancelAtPeriodEnd,
        "c3",
    )
    .await
    .unwrap();
    assert!(ending.cancel_at_period_end);
    assert_eq!(ending.status, "active");
    let resumed = change_plan(&app.pool, stripe, plan.id, PlanChange::Resume, "c4")
        .await
        .unwrap();
    assert!(!resumed.cancel_at_period_end);

    let plans: i64 = sqlx::query_scalar("SELECT count(*) FROM recurring_plans")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let subscriptions = sim.get("/v1/subscriptions?status=all").await;
    assert_eq!(plans, 1);
    assert_eq!(
        subscriptions["data"].as_array().unwrap().len(),
        1,
        "no cancel-and-recreate at Stripe"
    );
    assert_eq!(resumed.stripe_subscription_id, sub_id);

    let wrong_currency = change_plan(
        &app.pool,
        stripe,
        plan.id,
        PlanChange::Amount {
            amount: money(900, "usd"),
            interval: Interval::Month,
        },
        "c5",
    )
    .await;
    assert!(wrong_currency.is_err());
    let ended = change_plan(&app.pool, stripe, plan.id, PlanChange::CancelNow, "c6")
        .await
        .unwrap();
    assert_eq!(ended.status, "canceled");
    assert!(
        change_plan(&app.pool, stripe, plan.id, PlanChange::Resume, "c7")
            .await
            .is_err(),
        "an ended plan cannot resume"
    );
}

#[tokio::test]
async fn an_older_subscription_state_never_overwrites_a_newer_one() {
    let app = TestApp::spawn().await;
    let sim = Sim::new(&app);
    let (_, session) = paid_checkout(&app, &sim, "year", 5000, "usd").await;
    let mut conn = app.pool.acquire().await.unwrap();
    contribution_facts::checkout_completed(&mut conn, &completed(&session))
        .await
        .unwrap();
    let sub = sim
        .get(&format!(
            "/v1/subscriptions/{}",
            session["subscription"].as_str().unwrap()
        ))
        .await;
    let active = subscription_fact(&sub, 2_000);
    let incomplete = SubscriptionFact {
        status: "incomplete".into(),
        occurred_at: 1_000,
        ..active.clone()
    };
    let same_second_incomplete = SubscriptionFact {
        status: "incomplete".into(),
        occurred_at: 2_000,
        ..active.clone()
    };
    assert_eq!(
        facts::subscription_changed(&mut conn, &active)
            .await
            .unwrap(),
        Applied::Changed
    );
    assert_eq!(
        facts::subscription_changed(&mut conn, &incomplete)
            .await
            .unwrap(),
        Applied::Unchanged
    );
    assert_eq!(
        facts::subscription_changed(&mut conn, &same_second_incomplete)
            .await
            .unwrap(),
        Applied::Unchanged
    );
    let past_due = SubscriptionFact {
        status: "past_due".into(),
        occurred_at: 3_000,
        ..active.clone()
    };
    assert_eq!(
        facts::subscription_changed(&mut conn, &past_due)
            .await
            .unwrap(),
        Applied::Changed
    );
    assert_eq!(
        facts::subscription_changed(&mut conn, &active)
            .await
            .unwrap(),
        Applied::Unchanged,
        "a stale active"
    );
    let plan = kopilka_recurring::plan_by_subscription(&mut conn, &active.subscription_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(plan.status, "past_due");

    // A reader cancels, then resumes, within one second; the cancel's event (sent by Stripe
    // before the resume's answer) is applied after the answer: the answer stands.
    let cancel_answer = SubscriptionFact {
        cancel_at_period_end: true,
        occurred_at: 4_000,
        answered: true,
        ..past_due.clone()
    };
    let resume_answer = SubscriptionFact {
        cancel_at_period_end: false,
        ..cancel_answer.clone()
    };
    let cancel_event = SubscriptionFact {
        answered: false,
        ..cancel_answer.clone()
    };
    for (fact, applied) in [
        (&cancel_answer, Applied::Changed),
        (&resume_answer, Applied::Changed),
        (&cancel_event, Applied::Unchanged),
    ] {
        assert_eq!(
            facts::subscription_changed(&mut conn, fact).await.unwrap(),
            applied
        );
    }
    let plan = kopilka_recurring::plan_by_subscription(&mut conn, &active.subscription_id)
        .await
        .unwrap()
        .unwrap();
    assert!(!plan.cancel_at_period_end, "the resume stands");
    // A later second's event wins as always.
    let later = SubscriptionFact {
        occurred_at: 4_001,
        ..cancel_event
    };
    assert_eq!(
        facts::subscription_changed(&mut conn, &later)
            .await
            .unwrap(),
        Applied::Changed
    );
}

/// The reader row a contribution names (the ledger refers to readers by id).
async fn ensure_reader(app: &TestApp, reader: Option<ReaderId>) {
    if let Some(reader) = reader {
        sqlx::query("INSERT INTO readers (id, email) VALUES ($1, $1::text || '@example.org') ON CONFLICT DO NOTHING")
            .bind(reader.as_uuid())
            .execute(&app.pool)
            .await
            .unwrap();
    }
}
/// Inserts a contribution and its payment as if Stripe had confirmed them.
async fn gift(
    app: &TestApp,
    reader: Option<ReaderId>,
    amount: Money,
    at: OffsetDateTime,
) -> ContributionId {
    ensure_reader(app, reader).await;
    let id = ContributionId::new();
    sqlx::query("INSERT INTO contributions (id, interval, amount_minor, currency, reader_id) VALUES ($1, 'once', $2, $3, $4)")
        .bind(id.as_uuid())
        .bind(amount.minor())
        .bind(amount.currency().stripe_code())
        .bind(reader.map(ReaderId::as_uuid))
        .execute(&app.pool)
        .await
        .unwrap();
    let mut conn = app.pool.acquire().await.unwrap();
    let fact = CheckoutCompleted {
        session_id: format!("cs_{id}"),
        contribution_id: id,
        paid: true,
        customer: None,
        payment_intent: Some(format!("pi_{id}")),
        subscription: None,
        amount: Some(amount),
        reader: None,
        occurred_at: at.unix_timestamp(),
    };
    contribution_facts::checkout_completed(&mut conn, &fact)
        .await
        .unwrap();
    id
}

/// Inserts a plan as if Stripe had reported it.
async fn plan(
    app: &TestApp,
    reader: Option<ReaderId>,
    amount: Money,
    interval: Interval,
    status: &str,
) {
    ensure_reader(app, reader).await;
    let id = ContributionId::new();
    sqlx::query("INSERT INTO contributions (id, interval, amount_minor, currency, reader_id, status) VALUES ($1, $2, $3, $4, $5, 'paid')")
        .bind(id.as_uuid())
        .bind(interval.as_str())
        .bind(amount.minor())
        .bind(amount.currency().stripe_code())
        .bind(reader.map(ReaderId::as_uuid))
        .execute(&app.pool)
        .await
        .unwrap();
    let mut conn = app.pool.acquire().await.unwrap();
    let fact = SubscriptionFact {
        subscription_id: format!("sub_{id}"),
        customer: None,
        contribution_id: Some(id),
        status: status.into(),
        amount,
        interval,
        current_period_end: datetime!(2026-12-15 0:00 UTC).unix_timestamp(),
        cancel_at_period_end: false,
        occurred_at: 1,
        answered: false,
    };
    assert_eq!(
        facts::subscription_changed(&mut conn, &fact).await.unwrap(),
        Applied::Changed
    );
}

#[tokio::test]
async fn the_goal_counts_live_plans_monthly_and_this_months_gifts_in_its_currency() {
    let app = TestApp::spawn().await;
    plan(&app, None, money(500, "usd"), Interval::Month, "active").await;
    plan(&app, None, money(200, "usd"), Interval::Month, "past_due").await;
    plan(&app, None, money(6000, "usd"), Interval::Year, "active").await;
    plan(&app, None, money(1200, "eur"), Interval::Year, "active").await;
    plan(&app, None, money(9999, "usd"), Interval::Month, "canceled").await;
    plan(&app, None, money(300, "jpy"), Interval::Month, "active").await;
    gift(
        &app,
        None,
        money(2500, "usd"),
        datetime!(2026-11-30 23:59:59 UTC),
    )
    .await;
    gift(
        &app,
        None,
        money(1000, "eur"),
        datetime!(2026-11-01 0:00 UTC),
    )
    .await;
    gift(
        &app,
        None,
        money(7777, "usd"),
        datetime!(2026-10-31 23:59:59 UTC),
    )
    .await;
    gift(
        &app,
        None,
        money(4444, "usd"),
        datetime!(2026-12-01 0:00 UTC),
    )
    .await;

    let offer = &app.settings.offer;
    let mut conn = app.pool.acquire().await.unwrap();
    let november = goal::compute(&mut conn, offer, datetime!(2026-11-29 12:00 UTC))
        .await
        .unwrap();
    // Recurring, annualised: usd 500×12 + 200×12 + 6000 = 14 400; eur 1200 → 1296 usd;
    // jpy 300×12 = 3600 → 24.12 usd = 2412. (14 400 + 1296 + 2412) / 12 = 1509.
    // Gifts in November: 2500 usd + 1000 eur (1080 usd) = 3580.
    assert_eq!(november.current_minor, 1509 + 3580);
    assert_eq!(
        (november.currency.stripe_code(), november.target_minor),
        ("usd".to_owned(), 1_000_000)
    );

    let december = goal::compute(&mut conn, offer, datetime!(2026-12-01 0:00 UTC))
        .await
        .unwrap();
    assert_eq!(
        december.current_minor,
        1509 + 4444,
        "a new month starts with only its own gifts"
    );
    let october = goal::compute(&mut conn, offer, datetime!(2026-10-31 23:59:59 UTC))
        .await
        .unwrap();
    assert_eq!(october.current_minor, 1509 + 7777);
}

#[tokio::test]
async fn the_published_goal_is_rounded_and_moves_once_a_window() {
    let app = TestApp::spawn().await;
    // A plan from before the window, one from within it; gifts before and within it.
    plan(&app, None, money(1_500, "usd"), Interval::Month, "active").await;
    plan(&app, None, money(700, "usd"), Interval::Month, "active").await;
    sqlx::query(
        "UPDATE recurring_plans SET created_at = CASE amount_minor
           WHEN 1500 THEN '2026-11-28 10:00Z'::timestamptz ELSE '2026-11-29 09:00Z'::timestamptz END",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    gift(
        &app,
        None,
        money(12_345, "usd"),
        datetime!(2026-11-28 23:00 UTC),
    )
    .await;
    gift(
        &app,
        None,
        money(3_000, "usd"),
        datetime!(2026-11-29 08:00 UTC),
    )
    .await;

    let mut offer = app.settings.offer.clone();
    let now = datetime!(2026-11-29 12:00 UTC);
    let mut conn = app.pool.acquire().await.unwrap();
    let exact = goal::compute(&mut conn, &offer, now).await.unwrap();
    assert_eq!(exact.current_minor, 1_500 + 700 + 12_345 + 3_000);
    // Off (the default): the public figure is the exact one.
    assert_eq!(goal::publish(&mut conn, &offer, now).await.unwrap(), exact);

    offer.goal.round_minor = 1_000;
    offer.goal.publish_lag_secs = 86_400;
    let published = goal::publish(&mut conn, &offer, now).await.unwrap();
    // As of midnight: the first plan and yesterday's gift only, rounded down to 1 000.
    assert_eq!(published.current_minor, 13_000);
    assert_eq!(
        published.computed_at,
        datetime!(2026-11-29 0:00 UTC).unix_timestamp()
    );
    // A gift within the window does not move it; the next window counts the day at once.
    gift(
        &app,
        None,
        money(50_000, "usd"),
        datetime!(2026-11-29 12:30 UTC),
    )
    .await;
    let later = goal::publish(&mut conn, &offer, datetime!(2026-11-29 23:59 UTC))
        .await
        .unwrap();
    assert_eq!(
        later.current_minor, 13_000,
        "one gift is not a visible step"
    );
    let next_day = goal::publish(&mut conn, &offer, datetime!(2026-11-30 0:05 UTC))
        .await
        .unwrap();
    assert_eq!(
        next_day.current_minor,
        goal::round_down(1_500 + 700 + 12_345 + 3_000 + 50_000, 1_000)
    );
}

#[tokio::test]
async fn supporters_are_live_plans_or_recent_gifts() {
    let app = TestApp::spawn().await;
    let (monthly, recent, lapsed, stranger) = (
        ReaderId::new(),
        ReaderId::new(),
        ReaderId::new(),
        ReaderId::new(),
    );
    plan(
        &app,
        Some(monthly),
        money(500, "usd"),
        Interval::Month,
        "active",
    )
    .await;
    let now = datetime!(2026-11-29 12:00 UTC);
    gift(
        &app,
        Some(recent),
        money(2500, "usd"),
        now - time::Duration::days(30),
    )
    .await;
    gift(
        &app,
        Some(lapsed),
        money(2500, "usd"),
        now - time::Duration::days(91),
    )
    .await;
    let mut conn = app.pool.acquire().await.unwrap();
    let days = app.settings.offer.supporter_days;

    let status = supporter_status(&mut conn, monthly, now, days)
        .await
        .unwrap();
    assert!(status.supporter);
    assert_eq!(status.interval, Some(Interval::Month));
    assert_eq!(status.paid_through, Some(datetime!(2026-12-15 0:00 UTC)));

    let status = supporter_status(&mut conn, recent, now, days)
        .await
        .unwrap();
    assert!(status.supporter);
    assert_eq!(status.paid_through, Some(now + time::Duration::days(60)));

    assert!(
        !supporter_status(&mut conn, lapsed, now, days)
            .await
            .unwrap()
            .supporter
    );
    assert!(
        !supporter_status(&mut conn, stranger, now, days)
            .await
            .unwrap()
            .supporter
    );
}

#[tokio::test]
async fn an_expired_checkout_is_abandoned_unless_it_was_paid() {
    let app = TestApp::spawn().await;
    let sim = Sim::new(&app);
    let input = CheckoutInput {
        interval: "once".into(),
        amount_minor: 900,
        currency: "usd".into(),
        email: None,
        return_url: None,
        rail: None,
        pass_months: None,
        pass_codes: None,
        experiment: None,
    };
    let (_, started) = start_checkout(
        &app.pool,
        kopilka_contributions::Providers {
            stripe: app.state.stripe.as_ref(),
            btcpay: None,
        },
        &app.settings,
        &input,
        None,
        None,
        &kopilka_contributions::shield::Attribution::default(),
    )
    .await
    .unwrap();
    let contribution: ContributionId = started["contribution_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    // A day passes: the simulator expires the session, as Stripe does after 24 hours.
    sim.control("/_sim/clock/advance", json!({"seconds": 86_401}))
        .await;
    let session_id = started["checkout_url"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap();
    let session = sim
        .get(&format!("/v1/checkout/sessions/{session_id}"))
        .await;
    assert_eq!(session["status"], "expired");
    let mut conn = app.pool.acquire().await.unwrap();
    assert_eq!(
        contribution_facts::checkout_expired(
            &mut conn,
            contribution,
            session["expires_at"].as_i64().unwrap()
        )
        .await
        .unwrap(),
        Applied::Changed
    );
    assert_eq!(status_of(&app, contribution).await, "abandoned");
}

#[tokio::test]
async fn a_lost_dispute_ends_supporter_status_and_a_won_one_restores_it() {
    let app = TestApp::spawn().await;
    let reader = ReaderId::new();
    let now = OffsetDateTime::now_utc();
    let contribution = gift(
        &app,
        Some(reader),
        money(2500, "usd"),
        now - time::Duration::days(3),
    )
    .await;
    let days = app.settings.offer.supporter_days;
    let mut conn = app.pool.acquire().await.unwrap();
    assert!(
        supporter_status(&mut conn, reader, now, days)
            .await
            .unwrap()
            .supporter
    );

    // `None`: funds withdrawn; `Some(true)`: reinstated.
    let dispute = |won: Option<bool>, at: OffsetDateTime| contribution_facts::DisputeFact {
        dispute_id: "dp_reader".into(),
        payment_intent: format!("pi_{contribution}"),
        amount: money(2500, "usd"),
        withdrawn: won.is_none(),
        reinstated: won == Some(true),
        movements: vec![],
        occurred_at: at.unix_timestamp(),
    };
    contribution_facts::dispute_changed(&mut conn, &dispute(None, now - time::Duration::days(2)))
        .await
        .unwrap();
    assert_eq!(status_of(&app, contribution).await, "disputed");
    assert!(
        !supporter_status(&mut conn, reader, now, days)
            .await
            .unwrap()
            .supporter,
        "a disputed gift does not count"
    );

    contribution_facts::dispute_changed(
        &mut conn,
        &dispute(Some(true), now - time::Duration::days(1)),
    )
    .await
    .unwrap();
    assert_eq!(status_of(&app, contribution).await, "paid");
    assert!(
        supporter_status(&mut conn, reader, now, days)
            .await
            .unwrap()
            .supporter,
        "a won dispute restores it"
    );
    let net: i64 = sqlx::query_scalar(
        "SELECT sum(amount_minor)::bigint FROM ledger_entries WHERE kind <> 'fee'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(net, 2500);
}

/// Records a plan payment (an invoice paid) at `at`.
async fn plan_payment(app: &TestApp, sub: &str, amount: Money, at: OffsetDateTime) {
    plan_payment_for(app, sub, amount, at, None).await;
}

/// Records a plan payment at `at` of an invoice for `interval`.
async fn plan_payment_for(
    app: &TestApp,
    sub: &str,
    amount: Money,
    at: OffsetDateTime,
    interval: Option<kopilka_domain::Interval>,
) {
    let mut conn = app.pool.acquire().await.unwrap();
    let fact = InvoicePaid {
        invoice_id: format!("in_{sub}_{}", at.unix_timestamp()),
        subscription_id: sub.into(),
        payment_intent: Some(format!("pi_{sub}_{}", at.unix_timestamp())),
        amount,
        occurred_at: at.unix_timestamp(),
        interval,
    };
    assert_eq!(
        facts::invoice_paid(&mut conn, &fact).await.unwrap(),
        Applied::Changed
    );
}

#[tokio::test]
async fn mrr_and_churn_follow_payments_month_by_month() {
    let app = TestApp::spawn().await;
    plan(&app, None, money(500, "usd"), Interval::Month, "active").await;
    plan(&app, None, money(300, "usd"), Interval::Month, "canceled").await;
    plan(&app, None, money(1200, "eur"), Interval::Year, "active").await;
    let subs: Vec<(String, String)> = sqlx::query_as(
        "SELECT stripe_subscription_id, interval FROM recurring_plans ORDER BY amount_minor",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let (monthly_300, monthly_500, annual) = (&subs[0].0, &subs[1].0, &subs[2].0);
    // September to November: the 500 plan pays each month; the 300 plan pays in September
    // and October, then churns; the annual plan paid in August.
    for month in [9, 10, 11] {
        let at = OffsetDateTime::new_utc(
            time::Date::from_calendar_date(2026, time::Month::try_from(month).unwrap(), 5).unwrap(),
            time::Time::MIDNIGHT,
        );
        plan_payment(&app, monthly_500, money(500, "usd"), at).await;
        if month < 11 {
            plan_payment(&app, monthly_300, money(300, "usd"), at).await;
        }
    }
    plan_payment(
        &app,
        annual,
        money(1200, "eur"),
        datetime!(2026-08-20 0:00 UTC),
    )
    .await;

    let mut conn = app.pool.acquire().await.unwrap();
    let months = kopilka_recurring::mrr::mrr_by_month(
        &mut conn,
        &app.settings.offer,
        datetime!(2026-09-15 0:00 UTC),
        datetime!(2026-11-30 0:00 UTC),
    )
    .await
    .unwrap();
    let summary: Vec<(&str, i64, usize, usize, &str)> = months
        .iter()
        .map(|m| {
            (
                m.month.as_str(),
                m.mrr_minor,
                m.plans,
                m.churned,
                m.churn_rate.as_str(),
            )
        })
        .collect();
    // The annual €12.00 is 1296 US cents a year, 108 a month.
    assert_eq!(
        summary,
        vec![
            ("2026-09", 500 + 300 + 108, 3, 0, "0.0000"),
            ("2026-10", 500 + 300 + 108, 3, 0, "0.0000"),
            ("2026-11", 500 + 108, 2, 1, "0.3333"),
        ]
    );
}

#[tokio::test]
async fn mrr_counts_each_payment_for_the_interval_it_paid_for() {
    let app = TestApp::spawn().await;
    // Monthly in September and October, switched to annual in November: the plan row says
    // `year` now, its past payments were monthly.
    plan(&app, None, money(6000, "usd"), Interval::Year, "active").await;
    let sub: String = sqlx::query_scalar("SELECT stripe_subscription_id FROM recurring_plans")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    for month in [9, 10] {
        let at = OffsetDateTime::new_utc(
            time::Date::from_calendar_date(2026, time::Month::try_from(month).unwrap(), 5).unwrap(),
            time::Time::MIDNIGHT,
        );
        plan_payment_for(&app, &sub, money(500, "usd"), at, Some(Interval::Month)).await;
    }
    plan_payment_for(
        &app,
        &sub,
        money(6000, "usd"),
        datetime!(2026-11-05 0:00 UTC),
        Some(Interval::Year),
    )
    .await;
    let mut conn = app.pool.acquire().await.unwrap();
    let months = kopilka_recurring::mrr::mrr_by_month(
        &mut conn,
        &app.settings.offer,
        datetime!(2026-09-01 0:00 UTC),
        datetime!(2026-12-31 0:00 UTC),
    )
    .await
    .unwrap();
    let summary: Vec<(&str, i64, usize)> = months
        .iter()
        .map(|m| (m.month.as_str(), m.mrr_minor, m.plans))
        .collect();
    // With the plan's current interval for all: 41, 83, 583, 583.
    assert_eq!(
        summary,
        vec![
            ("2026-09", 500, 1),
            ("2026-10", 500, 1),
            ("2026-11", 500, 1),
            ("2026-12", 500, 1),
        ]
    );
}
