//! Experiments stored and moved through their lifecycle, on a real Postgres.

use kopilka_experiments::{ExperimentError, ExperimentSpec, Status, store};
use kopilka_test_support::fresh_database;

fn offer() -> kopilka_config::OfferSettings {
    let config = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../config"));
    kopilka_config::Settings::for_env(kopilka_config::Environment::Test, &config)
        .expect("the test settings")
        .offer
}

fn spec(name: &str) -> ExperimentSpec {
    serde_json::from_value(serde_json::json!({
        "name": name, "method": "bandit", "holdback_percent": 5,
        "targeting": {"currencies": ["usd"]},
        "variants": [
            {"key": "control", "control": true},
            {"key": "higher", "presets": {"usd": {"once": [1500, 3000, 6000]}}}
        ]
    }))
    .unwrap()
}

fn code(err: ExperimentError) -> &'static str {
    match err {
        ExperimentError::Refused(refusal) => refusal.code,
        other => panic!("not a refusal: {other}"),
    }
}

#[tokio::test]
async fn an_experiment_is_created_valid_and_lives_draft_running_paused_stopped() {
    let db = fresh_database().await;
    let offer = offer();
    let created = store::create(&db.pool, &offer, &spec("amounts-q1"))
        .await
        .unwrap();
    assert_eq!(created.status, Status::Draft);
    assert_eq!(created.spec, spec("amounts-q1"));
    let seed: Vec<u8> = sqlx::query_scalar("SELECT seed FROM experiments")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(seed.len(), 16);
    assert_eq!(
        code(
            store::create(&db.pool, &offer, &spec("amounts-q1"))
                .await
                .unwrap_err()
        ),
        "name_taken"
    );
    let mut invalid = spec("invalid-one");
    invalid.variants[1]
        .presets
        .values_mut()
        .for_each(|p| p.once = Some(vec![3000, 1500]));
    assert_eq!(
        code(store::create(&db.pool, &offer, &invalid).await.unwrap_err()),
        "presets_out_of_order"
    );
    assert_eq!(
        store::list(&db.pool).await.unwrap().len(),
        1,
        "nothing invalid stored"
    );

    // Each change is announced to every instance.
    let mut listener = sqlx::postgres::PgListener::connect_with(&db.pool)
        .await
        .unwrap();
    listener.listen(kopilka_experiments::CHANNEL).await.unwrap();
    let running = store::transition(&db.pool, &offer, "amounts-q1", Status::Running)
        .await
        .unwrap();
    assert_eq!(running.status, Status::Running);
    assert!(running.started_at.is_some());
    let note = tokio::time::timeout(std::time::Duration::from_secs(5), listener.recv())
        .await
        .expect("a notification")
        .unwrap();
    assert_eq!(note.payload(), "amounts-q1");
    let paused = store::transition(&db.pool, &offer, "amounts-q1", Status::Paused)
        .await
        .unwrap();
    assert_eq!(paused.status, Status::Paused);
    store::transition(&db.pool, &offer, "amounts-q1", Status::Running)
        .await
        .unwrap();
    let stopped = store::transition(&db.pool, &offer, "amounts-q1", Status::Stopped)
        .await
        .unwrap();
    assert!(stopped.stopped_at.is_some());
    assert_eq!(
        code(
            store::transition(&db.pool, &offer, "amounts-q1", Status::Running)
                .await
                .unwrap_err()
        ),
        "invalid_transition"
    );
    assert!(matches!(
        store::show(&db.pool, "nobody").await,
        Err(ExperimentError::NotFound(_))
    ));
    // A draft may be stopped without ever running.
    store::create(&db.pool, &offer, &spec("never-run"))
        .await
        .unwrap();
    let dropped = store::transition(&db.pool, &offer, "never-run", Status::Stopped)
        .await
        .unwrap();
    assert_eq!(
        (dropped.status, dropped.started_at),
        (Status::Stopped, None)
    );
}

#[tokio::test]
async fn every_instance_serves_a_started_experiment_within_seconds_and_forgets_a_paused_one() {
    let db = fresh_database().await;
    let offer = offer();
    let live = kopilka_experiments::live::LiveExperiments::default();
    // A poll far longer than the test: only the notification can bring the change.
    let _task = live.spawn_reloader(db.pool.clone(), std::time::Duration::from_secs(3_600));
    store::create(&db.pool, &offer, &spec("amounts-q1"))
        .await
        .unwrap();
    let mut low = spec("low-priority");
    low.priority = -1;
    store::create(&db.pool, &offer, &low).await.unwrap();
    let served = |live: &kopilka_experiments::live::LiveExperiments| {
        live.get()
            .iter()
            .map(|e| e.name.clone())
            .collect::<Vec<_>>()
    };
    // No wait for the reloader: it listens first and loads after, so a change made before
    // it listens is in its first load and a change after is announced to it.
    store::transition(&db.pool, &offer, "low-priority", Status::Running)
        .await
        .unwrap();
    store::transition(&db.pool, &offer, "amounts-q1", Status::Running)
        .await
        .unwrap();
    let wait_for = |want: Vec<&'static str>| {
        let live = live.clone();
        async move {
            tokio::time::timeout(std::time::Duration::from_secs(10), async {
                loop {
                    if served(&live) == want {
                        return;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("still serving {:?}", served(&live)));
        }
    };
    // Highest priority first.
    wait_for(vec!["amounts-q1", "low-priority"]).await;
    store::transition(&db.pool, &offer, "amounts-q1", Status::Paused)
        .await
        .unwrap();
    wait_for(vec!["low-priority"]).await;
    let seed = &live.get()[0].seed;
    assert_eq!(seed.len(), 16);
}
