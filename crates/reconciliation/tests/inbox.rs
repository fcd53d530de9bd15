//! The inbox holds every provider's events (issue #20, item 1): an event id is unique only
//! within its provider, and every lookup by id says whose.

use kopilka_domain::Provider;
use kopilka_reconciliation::inbox;
use kopilka_stripe::Event;
use kopilka_test_support::fresh_database;
use sqlx::PgPool;

fn stripe_event(id: &str) -> Event {
    let body = serde_json::json!({
        "id": id, "object": "event", "type": "charge.succeeded", "created": 1_764_583_200,
        "livemode": false, "api_version": kopilka_stripe::api_version(),
        "data": {"object": {"id": "ch_1", "object": "charge"}},
    });
    Event::parse(body.to_string().as_bytes()).unwrap()
}

/// A BTCPay delivery as BTCPay's webhooks will store it: no live mode.
async fn store_btcpay_delivery(pool: &PgPool, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO provider_events (provider, id, type, created, payload)
         VALUES ('btcpay', $1, 'InvoiceSettled', 1764583300, '{}')",
    )
    .bind(id)
    .execute(pool)
    .await
    .map(|_| ())
}

#[tokio::test]
async fn the_same_event_id_from_two_providers_is_two_inbox_rows() {
    let db = fresh_database().await;
    let event = stripe_event("evt_shared");
    assert!(inbox::receive(&db.pool, &event, None).await.unwrap());
    store_btcpay_delivery(&db.pool, "evt_shared").await.unwrap();

    let stored = inbox::list(&db.pool, None).await.unwrap();
    assert_eq!(
        stored
            .iter()
            .map(|e| (e.provider, e.id.as_str()))
            .collect::<Vec<_>>(),
        [
            (Provider::Stripe, "evt_shared"),
            (Provider::Btcpay, "evt_shared")
        ]
    );
    let livemode: Vec<(String, Option<bool>)> =
        sqlx::query_as("SELECT provider, livemode FROM provider_events ORDER BY provider")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        livemode,
        [
            ("btcpay".to_owned(), None),
            ("stripe".to_owned(), Some(false))
        ]
    );

    // A duplicate within one provider changes nothing, as before.
    assert!(!inbox::receive(&db.pool, &event, None).await.unwrap());
    let err = store_btcpay_delivery(&db.pool, "evt_shared")
        .await
        .unwrap_err();
    assert_eq!(
        err.as_database_error()
            .and_then(sqlx::error::DatabaseError::code)
            .as_deref(),
        Some("23505"),
        "{err}"
    );
    assert_eq!(inbox::list(&db.pool, None).await.unwrap().len(), 2);
    let applications: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE kind = $1")
        .bind(kopilka_reconciliation::APPLY_EVENT)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(applications, 1, "Stripe's event is applied once");

    // Lookups by id say whose event they mean.
    inbox::mark_failed(&db.pool, Provider::Btcpay, "evt_shared", "gave up")
        .await
        .unwrap();
    let failed = inbox::list(&db.pool, Some("failed")).await.unwrap();
    assert_eq!(
        failed
            .iter()
            .map(|e| (e.provider, e.id.as_str()))
            .collect::<Vec<_>>(),
        [(Provider::Btcpay, "evt_shared")]
    );
    assert_eq!(
        inbox::ids_of_type(&db.pool, Provider::Stripe, "*", 0)
            .await
            .unwrap(),
        ["evt_shared"]
    );
    assert_eq!(
        inbox::ids_of_type(&db.pool, Provider::Btcpay, "charge.*", 0)
            .await
            .unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(
        inbox::ids_of_type(&db.pool, Provider::Btcpay, "Invoice*", 0)
            .await
            .unwrap(),
        ["evt_shared"]
    );
}

#[tokio::test]
async fn a_btcpay_delivery_is_stored_and_processed_apart_from_stripes_event_of_the_same_id() {
    let db = fresh_database().await;
    assert!(
        inbox::receive(&db.pool, &stripe_event("Shared1"), None)
            .await
            .unwrap()
    );
    // No timestamp: the time it was received stands in for it.
    let first = kopilka_btcpay::Delivery::parse(
        br#"{"deliveryId":"Shared1","originalDeliveryId":"Shared1","type":"InvoiceSettled","invoiceId":"Inv1"}"#,
    )
    .unwrap();
    assert!(
        inbox::receive_btcpay(&db.pool, &first, 1_764_583_300)
            .await
            .unwrap()
    );
    let redelivery = kopilka_btcpay::Delivery::parse(
        br#"{"deliveryId":"Later2","originalDeliveryId":"Shared1","isRedelivery":true,"type":"InvoiceSettled","invoiceId":"Inv1","timestamp":1764583999}"#,
    )
    .unwrap();
    assert!(
        !inbox::receive_btcpay(&db.pool, &redelivery, 1_764_583_999)
            .await
            .unwrap()
    );
    let jobs: Vec<(String, serde_json::Value)> =
        sqlx::query_as("SELECT kind, payload FROM jobs ORDER BY kind")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        jobs,
        [
            (
                kopilka_reconciliation::APPLY_BTCPAY_EVENT.to_owned(),
                serde_json::json!({"event_id": "Shared1"})
            ),
            (
                kopilka_reconciliation::APPLY_EVENT.to_owned(),
                serde_json::json!({"event_id": "Shared1"})
            ),
        ]
    );

    assert_eq!(
        kopilka_reconciliation::apply_btcpay_event(&db.pool, None, "Shared1", 365)
            .await
            .unwrap(),
        kopilka_reconciliation::Outcome::Ignored
    );
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT provider, status, created FROM provider_events WHERE id = 'Shared1' ORDER BY provider",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            ("btcpay".to_owned(), "ignored".to_owned(), 1_764_583_300),
            ("stripe".to_owned(), "pending".to_owned(), 1_764_583_200)
        ]
    );
    assert!(matches!(
        kopilka_reconciliation::apply_btcpay_event(&db.pool, None, "Unknown1", 365).await,
        Err(kopilka_reconciliation::ReconciliationError::UnknownEvent(_))
    ));
}
