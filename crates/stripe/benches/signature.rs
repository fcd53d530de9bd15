//! Per webhook: the `Stripe-Signature` header checked against the raw body (HMAC-SHA256 in
//! constant time), and the verified body parsed into the lenient event envelope. Throughput
//! goals are ratios in `scripts/bench`; this shows where one delivery's CPU goes.

#![allow(
    missing_docs,
    reason = "criterion's macros write undocumented functions"
)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use kopilka_stripe::webhook::{WebhookVerifier, sign};
use secrecy::SecretString;

const SECRET: &str = "whsec_benchmark";
const NOW: i64 = 1_800_000_000;
/// A Stripe event, as in Stripe's API reference (fixtures/event.json).
const EVENT: &str = include_str!("../tests/fixtures/event.json");

fn signatures(c: &mut Criterion) {
    let body = EVENT.as_bytes();
    let header = sign(SECRET, NOW, body);
    let one = WebhookVerifier::new(vec![SecretString::from(SECRET)], 300);
    c.bench_function("webhook signature verify", |b| {
        b.iter(|| black_box(one.verify(Some(black_box(&header)), black_box(body), NOW)));
    });
    // While rolling a secret, the old one is tried first and fails.
    let rolling = WebhookVerifier::new(
        vec![
            SecretString::from("whsec_previous"),
            SecretString::from(SECRET),
        ],
        300,
    );
    c.bench_function("webhook signature verify, second of two secrets", |b| {
        b.iter(|| black_box(rolling.verify(Some(black_box(&header)), black_box(body), NOW)));
    });
    c.bench_function("webhook verify and parse the envelope", |b| {
        b.iter(|| {
            black_box(
                one.verify_event(Some(black_box(&header)), black_box(body), NOW)
                    .is_ok(),
            )
        });
    });
}

criterion_group!(benches, signatures);
criterion_main!(benches);
