//! The fault and abuse suite: what Stripe, the network, Postgres, SMTP and attackers do to
//! Kopilka, one test per promise (README, "Guarantees"), each on the real `kopilka` binary
//! with a database of its own, the Stripe simulator and a real SMTP server; then bounded
//! fuzzing of the parsers that meet untrusted bytes. Ends with `faults: N passed, N failed`.
//!
//! `cargo test -p kopilka-tests --test faults [-- FILTER]`; `KOPILKA_FUZZ_SECS` sets each fuzz
//! target's time (default 3 s).

#![allow(
    clippy::print_stdout,
    reason = "a test harness reports on stdout, as libtest does"
)]

mod access;
mod accounts;
mod btcpay;
mod erasure;
mod fuzz;
mod input;
mod limits;
mod logs;
mod outages;
mod pages;
mod retention;
mod shield;
mod stack;
mod webhooks;

use std::future::Future;
use std::time::Duration;

use libtest_mimic::{Arguments, Trial};

/// No row may take longer (a hang is a failure, not a stuck suite).
const ROW_TIMEOUT: Duration = Duration::from_secs(240);

/// A row run on a runtime of its own.
fn row<F, Fut>(name: &str, test: F) -> Trial
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let what = name.to_owned();
    Trial::test(name, move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            tokio::time::timeout(ROW_TIMEOUT, test())
                .await
                .unwrap_or_else(|_| panic!("{what} took longer than {ROW_TIMEOUT:?}"));
        });
        Ok(())
    })
}

fn main() -> std::process::ExitCode {
    let args = Arguments::from_args();
    let trials = vec![
        row(
            "shield::a_card_tester_on_two_servers_is_blocked_by_both_and_the_operator_steers_the_shield",
            shield::a_card_tester_on_two_servers_is_blocked_by_both_and_the_operator_steers_the_shield,
        ),
        row(
            "webhooks::forged_tampered_unsigned_and_stale_deliveries_are_400_and_store_nothing",
            webhooks::forged_tampered_unsigned_and_stale_deliveries_are_400_and_store_nothing,
        ),
        row(
            "webhooks::rotated_secrets_and_several_signatures_are_accepted",
            webhooks::rotated_secrets_and_several_signatures_are_accepted,
        ),
        row(
            "webhooks::one_event_five_times_at_once_across_two_servers_has_one_effect",
            webhooks::one_event_five_times_at_once_across_two_servers_has_one_effect,
        ),
        row(
            "webhooks::a_plans_events_in_every_order_end_in_the_same_state",
            webhooks::a_plans_events_in_every_order_end_in_the_same_state,
        ),
        row(
            "webhooks::a_plan_payments_refund_and_dispute_land_in_every_order",
            webhooks::a_plan_payments_refund_and_dispute_land_in_every_order,
        ),
        row(
            "webhooks::an_event_stored_before_sigkill_is_applied_once_after_restart",
            webhooks::an_event_stored_before_sigkill_is_applied_once_after_restart,
        ),
        row(
            "webhooks::an_upgraded_database_and_another_products_objects_keep_no_personal_data",
            webhooks::an_upgraded_database_and_another_products_objects_keep_no_personal_data,
        ),
        row(
            "btcpay::forged_duplicated_and_racing_deliveries_on_two_servers_book_once",
            btcpay::forged_duplicated_and_racing_deliveries_on_two_servers_book_once,
        ),
        row(
            "btcpay::btcpay_down_at_checkout_and_in_the_worker_loses_nothing_and_books_once",
            btcpay::btcpay_down_at_checkout_and_in_the_worker_loses_nothing_and_books_once,
        ),
        row(
            "outages::postgres_restarted_mid_webhook_and_mid_checkout_leaves_no_partial_write",
            outages::postgres_restarted_mid_webhook_and_mid_checkout_leaves_no_partial_write,
        ),
        row(
            "outages::killed_and_racing_workers_do_each_job_once",
            outages::killed_and_racing_workers_do_each_job_once,
        ),
        row(
            "outages::smtp_down_421_and_550_during_reminders_lose_and_double_nothing",
            outages::smtp_down_421_and_550_during_reminders_lose_and_double_nothing,
        ),
        row(
            "outages::stripe_failing_or_slow_at_checkout_is_a_clear_5xx_and_retries_are_idempotent",
            outages::stripe_failing_or_slow_at_checkout_is_a_clear_5xx_and_retries_are_idempotent,
        ),
        row(
            "erasure::stripe_failing_or_slow_during_erasure_forgets_nothing_and_the_retry_ends_it_all",
            erasure::stripe_failing_or_slow_during_erasure_forgets_nothing_and_the_retry_ends_it_all,
        ),
        row(
            "retention::a_month_and_a_half_on_no_ip_no_spent_row_and_no_unlinked_reader_remain",
            retention::a_month_and_a_half_on_no_ip_no_spent_row_and_no_unlinked_reader_remain,
        ),
        row(
            "limits::two_servers_share_each_budget_and_refuse_alike_for_every_address",
            limits::two_servers_share_each_budget_and_refuse_alike_for_every_address,
        ),
        row(
            "input::malformed_oversized_deep_and_non_utf8_bodies_are_4xx_envelopes",
            input::malformed_oversized_deep_and_non_utf8_bodies_are_4xx_envelopes,
        ),
        row(
            "input::impossible_amounts_are_422_and_create_nothing",
            input::impossible_amounts_are_422_and_create_nothing,
        ),
        row(
            "input::hostile_names_and_addresses_are_kept_verbatim_or_refused_and_escaped_in_email",
            input::hostile_names_and_addresses_are_kept_verbatim_or_refused_and_escaped_in_email,
        ),
        row(
            "access::forged_supporter_tokens_are_401",
            access::forged_supporter_tokens_are_401,
        ),
        row(
            "access::guessing_is_throttled_and_the_emailed_link_still_works",
            access::guessing_is_throttled_and_the_emailed_link_still_works,
        ),
        row(
            "access::a_strangers_password_never_becomes_the_mailbox_owners",
            access::a_strangers_password_never_becomes_the_mailbox_owners,
        ),
        row(
            "access::answers_do_not_tell_whether_an_address_has_an_account",
            access::answers_do_not_tell_whether_an_address_has_an_account,
        ),
        row(
            "access::other_origins_and_cross_site_cookie_posts_are_refused",
            access::other_origins_and_cross_site_cookie_posts_are_refused,
        ),
        row(
            "pages::every_page_sends_its_security_headers_and_no_hostile_token_is_a_500",
            pages::every_page_sends_its_security_headers_and_no_hostile_token_is_a_500,
        ),
        row(
            "accounts::a_changed_or_reset_password_ends_every_other_session_and_common_ones_are_refused",
            accounts::a_changed_or_reset_password_ends_every_other_session_and_common_ones_are_refused,
        ),
        row(
            "accounts::a_name_given_for_an_unproven_address_appears_in_no_email",
            accounts::a_name_given_for_an_unproven_address_appears_in_no_email,
        ),
        row(
            "accounts::a_signed_in_readers_checkout_is_theirs_whatever_address_is_typed",
            accounts::a_signed_in_readers_checkout_is_theirs_whatever_address_is_typed,
        ),
        row(
            "logs::a_full_journey_with_abuse_logs_no_secret_or_personal_data",
            logs::a_full_journey_with_abuse_logs_no_secret_or_personal_data,
        ),
        Trial::test("fuzz::signature_header", fuzz::signature_header),
        Trial::test("fuzz::event_envelope", fuzz::event_envelope),
        Trial::test("fuzz::money", fuzz::money),
        Trial::test("fuzz::meter_cookie", fuzz::meter_cookie),
    ];
    let conclusion = libtest_mimic::run(&args, trials);
    println!(
        "faults: {} passed, {} failed",
        conclusion.num_passed, conclusion.num_failed
    );
    conclusion.exit_code()
}
