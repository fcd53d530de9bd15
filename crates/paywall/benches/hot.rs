//! The per-page-view functions, per call: a supporter token verified from cold (the
//! Ed25519 signature) and remembered (the SHA-256-keyed cache), the meter cookie read and
//! counted, and the offer decision. Speed goals are ratios in `scripts/bench`; this shows
//! where the time of one view goes.

#![allow(
    missing_docs,
    reason = "criterion's macros write undocumented functions"
)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use kopilka_paywall::{KeyRecord, Keyring, Meter, MeterMode, SupporterClaims, decide};

const SECRET: &[u8] = b"a benchmark secret of at least thirty-two bytes";
const NOW: i64 = 1_800_000_000;

fn keyring() -> Keyring {
    let records = [KeyRecord {
        kid: "k1".into(),
        created_at: NOW - 10,
        retires_at: None,
    }];
    Keyring::new(
        SECRET,
        &records,
        NOW,
        "https://support.example.org",
        "https://support.example.org",
    )
}

fn claims() -> SupporterClaims {
    SupporterClaims {
        sub: "0190a8e2-0000-7000-8000-000000000000".into(),
        supporter: true,
        tier: Some("month".into()),
        interval: Some("month".into()),
        paid_through: Some(NOW + 86_400 * 20),
        hide_asks_until: Some(NOW + 86_400 * 20),
        iss: "https://support.example.org".into(),
        aud: "https://support.example.org".into(),
        iat: NOW,
        exp: NOW + 86_400,
    }
}

fn tokens(c: &mut Criterion) {
    let signer = keyring();
    let token = signer.sign(&claims()).expect("signs");
    c.bench_function("token verify, cold (signature)", |b| {
        // A fresh keyring remembers nothing, so every call checks the signature.
        b.iter_batched(
            keyring,
            |ring| black_box(ring.verify(black_box(&token), NOW).is_ok()),
            criterion::BatchSize::SmallInput,
        );
    });
    let warm = keyring();
    warm.verify(&token, NOW).expect("verifies");
    c.bench_function("token verify, remembered", |b| {
        b.iter(|| black_box(warm.verify(black_box(&token), NOW).is_ok()));
    });
}

fn meter_and_decision(c: &mut Criterion) {
    let now = time::OffsetDateTime::from_unix_timestamp(NOW).expect("a time");
    let cookie = Meter::from_cookie(SECRET, None, now)
        .view(MeterMode::Metered, 5)
        .0
        .to_cookie(SECRET);
    c.bench_function("meter cookie read and counted", |b| {
        b.iter(|| {
            let meter = Meter::from_cookie(SECRET, Some(black_box(&cookie)), now);
            let (next, view) = meter.view(MeterMode::Metered, 5);
            black_box((next.to_cookie(SECRET), view))
        });
    });
    let supporter = claims();
    c.bench_function("offer decision", |b| {
        b.iter(|| {
            black_box(decide(
                black_box(Some(&supporter)),
                black_box(None),
                black_box(None),
                NOW,
            ))
        });
    });
}

criterion_group!(benches, tokens, meter_and_decision);
criterion_main!(benches);
