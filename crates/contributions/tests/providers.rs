//! The payment provider seam in the schema (issue #20, item 1): a ledger row is unique on
//! (provider, the provider's id), a contribution carries only its provider's ids, and rows
//! written before providers existed read as Stripe's.

use kopilka_contributions::ledger::{self, EntryKind, NewEntry};
use kopilka_domain::{Money, Provider};
use kopilka_test_support::{fresh_database, server_url};
use secrecy::ExposeSecret;
use sqlx::PgPool;
use time::OffsetDateTime;

/// The last migration before the provider seam.
const BEFORE_PROVIDERS: i64 = 20_261_208_100_000;

fn payment(provider: Provider, provider_id: &str) -> NewEntry<'_> {
    NewEntry {
        kind: EntryKind::Payment,
        provider,
        provider_id,
        payment_intent_id: None,
        contribution_id: None,
        plan_id: None,
        amount: Money::new(500, "eur".parse().unwrap()),
        occurred_at: OffsetDateTime::now_utc(),
    }
}

async fn ledger_rows(pool: &PgPool) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT provider, provider_id FROM ledger_entries ORDER BY provider, provider_id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .is_some_and(|e| e.code().as_deref() == Some("23505"))
}

fn is_check_violation(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .is_some_and(|e| e.code().as_deref() == Some("23514"))
}

#[tokio::test]
async fn the_same_id_from_two_providers_is_two_ledger_rows() {
    let db = fresh_database().await;
    let mut conn = db.pool.acquire().await.unwrap();
    for provider in Provider::ALL {
        assert!(
            ledger::record(&mut conn, &payment(provider, "shared_1"))
                .await
                .unwrap(),
            "{provider}'s payment is new"
        );
    }
    assert_eq!(
        ledger_rows(&db.pool).await,
        [
            ("btcpay".to_owned(), "shared_1".to_owned()),
            ("stripe".to_owned(), "shared_1".to_owned())
        ]
    );
    for provider in Provider::ALL {
        assert!(
            ledger::recorded(&mut conn, provider, "shared_1")
                .await
                .unwrap()
        );
    }
    assert!(
        !ledger::recorded(&mut conn, Provider::Btcpay, "shared_2")
            .await
            .unwrap()
    );
    // Each payment has its receipt, named by its provider; Stripe's fee is looked up only
    // for Stripe's.
    let jobs: Vec<(String, serde_json::Value)> =
        sqlx::query_as("SELECT kind, payload FROM jobs ORDER BY kind, dedup_key")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        jobs,
        [
            (
                ledger::FEE_JOB.to_owned(),
                serde_json::json!({"payment_intent": "shared_1"})
            ),
            (
                ledger::RECEIPT_JOB.to_owned(),
                serde_json::json!({"provider": "btcpay", "provider_id": "shared_1"})
            ),
            (
                ledger::RECEIPT_JOB.to_owned(),
                serde_json::json!({"provider": "stripe", "provider_id": "shared_1"})
            ),
        ]
    );
    for (_, payload) in jobs.iter().filter(|(kind, _)| kind == ledger::RECEIPT_JOB) {
        assert_eq!(
            ledger::receipt_job_payment(payload).map(|(_, id)| id),
            Some("shared_1")
        );
    }
    assert_eq!(
        ledger::receipt_job_payment(&serde_json::json!({"stripe_id": "pi_queued_before"})),
        Some((Provider::Stripe, "pi_queued_before")),
        "a receipt job queued before providers is Stripe's"
    );
}

#[tokio::test]
async fn a_duplicate_within_one_provider_changes_nothing() {
    let db = fresh_database().await;
    let mut conn = db.pool.acquire().await.unwrap();
    for provider in Provider::ALL {
        let entry = payment(provider, "dup_1");
        assert!(ledger::record(&mut conn, &entry).await.unwrap());
        assert!(
            !ledger::record(&mut conn, &entry).await.unwrap(),
            "{provider}'s duplicate is not new"
        );
    }
    assert_eq!(ledger_rows(&db.pool).await.len(), 2);
    let receipts: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE kind = $1")
        .bind(ledger::RECEIPT_JOB)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(receipts, 2, "one receipt per payment, none for a duplicate");
    // The constraint itself refuses a second row of one provider's id.
    let refused = sqlx::query(
        "INSERT INTO ledger_entries (id, kind, provider, provider_id, amount_minor, currency, occurred_at)
         VALUES (gen_random_uuid(), 'payment', 'btcpay', 'dup_1', 500, 'eur', now())",
    )
    .execute(&db.pool)
    .await
    .unwrap_err();
    assert!(is_unique_violation(&refused), "{refused}");
}

#[tokio::test]
async fn a_contribution_carries_only_its_providers_ids() {
    let db = fresh_database().await;
    let insert = |provider: &'static str,
                  invoice: Option<&'static str>,
                  intent: Option<&'static str>| {
        let pool = db.pool.clone();
        async move {
            sqlx::query(
                "INSERT INTO contributions
                     (id, provider, interval, amount_minor, currency, btcpay_invoice_id, stripe_payment_intent_id)
                 VALUES (gen_random_uuid(), $1, 'once', 500, 'eur', $2, $3)",
            )
            .bind(provider)
            .bind(invoice)
            .bind(intent)
            .execute(&pool)
            .await
        }
    };
    insert("btcpay", Some("inv_1"), None).await.unwrap();
    insert("stripe", None, Some("pi_1")).await.unwrap();
    let err = insert("btcpay", Some("inv_2"), Some("pi_2"))
        .await
        .unwrap_err();
    assert!(is_check_violation(&err), "{err}");
    let err = insert("stripe", Some("inv_3"), None).await.unwrap_err();
    assert!(is_check_violation(&err), "{err}");
    let err = insert("btcpay", Some("inv_1"), None).await.unwrap_err();
    assert!(is_unique_violation(&err), "{err}");
    let err = insert("paypal", None, None).await.unwrap_err();
    assert!(is_check_violation(&err), "{err}");
}

/// An empty database of its own (named like every test database, so a shared server's
/// sweep of stale ones leaves it alone).
async fn empty_database() -> PgPool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let name = format!("kt_{}_providers_{}", now.as_secs(), now.as_nanos());
    assert!(
        kopilka_store::create_database(&server_url("postgres"), &name, None)
            .await
            .unwrap()
    );
    PgPool::connect(server_url(&name).expose_secret())
        .await
        .unwrap()
}

#[tokio::test]
async fn rows_written_before_providers_read_as_stripes() {
    let pool = empty_database().await;
    assert!(
        kopilka_store::MIGRATOR
            .iter()
            .any(|m| m.version == BEFORE_PROVIDERS),
        "the migration before the seam is still {BEFORE_PROVIDERS}"
    );
    kopilka_store::MIGRATOR
        .run_to(BEFORE_PROVIDERS, &pool)
        .await
        .unwrap();
    // As a Kopilka before providers wrote them.
    sqlx::raw_sql(
        "INSERT INTO contributions (id, interval, amount_minor, currency, stripe_payment_intent_id, stripe_subscription_id)
             VALUES ('00000000-0000-7000-8000-000000000001', 'month', 900, 'eur', 'pi_old', 'sub_old');
         INSERT INTO recurring_plans (id, contribution_id, stripe_subscription_id, status, interval, amount_minor, currency)
             VALUES ('00000000-0000-7000-8000-000000000002', '00000000-0000-7000-8000-000000000001',
                     'sub_old', 'active', 'month', 900, 'eur');
         INSERT INTO ledger_entries (id, kind, stripe_id, payment_intent_id, contribution_id, plan_id, amount_minor, currency, occurred_at)
             VALUES (gen_random_uuid(), 'payment', 'in_old', 'in_old', '00000000-0000-7000-8000-000000000001',
                     '00000000-0000-7000-8000-000000000002', 900, 'eur', '2026-12-01T10:00:00Z'),
                    (gen_random_uuid(), 'refund', 're_old', 'pi_old', '00000000-0000-7000-8000-000000000001',
                     NULL, -300, 'eur', '2026-12-02T10:00:00Z');
         INSERT INTO ledger_settlements (balance_transaction, stripe_id, amount_minor, currency)
             VALUES ('txn_old', 're_old', -330, 'usd');
         INSERT INTO ledger_payment_aliases (payment_intent, stripe_id) VALUES ('pi_old', 'in_old');
         INSERT INTO stripe_events (id, type, created, livemode, payload)
             VALUES ('evt_old', 'invoice.paid', 1764583200, false, '{}');",
    )
    .execute(&pool)
    .await
    .unwrap();

    let report = kopilka_store::migrate(&pool).await.unwrap();
    assert!(
        report
            .applied
            .iter()
            .any(|m| m.description == "payment provider"),
        "{report:?}"
    );

    let providers: Vec<(String, String)> = sqlx::query_as(
        "SELECT 'contribution', provider FROM contributions
         UNION ALL SELECT 'plan', provider FROM recurring_plans
         UNION ALL SELECT 'ledger ' || provider_id, provider FROM ledger_entries
         UNION ALL SELECT 'settlement', provider FROM ledger_settlements
         UNION ALL SELECT 'alias', provider FROM ledger_payment_aliases
         UNION ALL SELECT 'event ' || id, provider FROM provider_events
         ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let stripe = |what: &str| (what.to_owned(), "stripe".to_owned());
    assert_eq!(
        providers,
        [
            stripe("alias"),
            stripe("contribution"),
            stripe("event evt_old"),
            stripe("ledger in_old"),
            stripe("ledger re_old"),
            stripe("plan"),
            stripe("settlement"),
        ]
    );
    // The old rows are found where Stripe's are looked for: the payment through its alias,
    // the refund with its settlement.
    let mut conn = pool.acquire().await.unwrap();
    assert!(
        ledger::recorded(&mut conn, Provider::Stripe, "in_old")
            .await
            .unwrap()
    );
    assert!(
        !ledger::recorded(&mut conn, Provider::Btcpay, "in_old")
            .await
            .unwrap()
    );
    assert_eq!(
        ledger::remaining_of_payment(&mut conn, "pi_old")
            .await
            .unwrap(),
        600
    );
    let totals = ledger::totals(
        &mut conn,
        time::macros::datetime!(2026-12-01 0:00 UTC),
        time::macros::datetime!(2027-01-01 0:00 UTC),
    )
    .await
    .unwrap();
    let usd = totals.iter().find(|t| t.currency == "usd").unwrap();
    assert_eq!(
        usd.stripe_net_minor, -330,
        "the refund settled in usd: {totals:?}"
    );

    // Old-style SQL that names no provider still writes Stripe's rows.
    sqlx::query(
        "INSERT INTO ledger_entries (id, kind, provider_id, amount_minor, currency, occurred_at)
         VALUES (gen_random_uuid(), 'payment', 'pi_later', 100, 'eur', now())",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert!(
        ledger::recorded(&mut conn, Provider::Stripe, "pi_later")
            .await
            .unwrap()
    );
    // Settlements and aliases are Stripe's alone.
    let err = sqlx::query(
        "INSERT INTO ledger_settlements (balance_transaction, provider, stripe_id, amount_minor, currency)
         VALUES ('txn_x', 'btcpay', 'pi_later', 100, 'eur')",
    )
    .execute(&pool)
    .await
    .unwrap_err();
    assert!(is_check_violation(&err), "{err}");
    let err = sqlx::query("UPDATE recurring_plans SET provider = 'btcpay'")
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(is_check_violation(&err), "{err}");
}
