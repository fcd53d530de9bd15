//! The card-testing shield (issue #19, item 2). Card testers use a public checkout to try
//! stolen cards: many small payments, most declined. Kopilka counts failed card payments
//! per client (IP, IPv6 per /64), per address and per card (Stripe's card fingerprint), each
//! under a keyed HMAC, over `abuse.window_secs`:
//!
//! - every checkout records who started it ([`Attribution`], table `checkout_clients`), so a
//!   failure reported later by Stripe counts against that client and address;
//! - failures are learned from `charge.failed` and `payment_intent.payment_failed` when the
//!   webhook is received, before the event is projected (the fingerprint is never stored,
//!   only its HMAC): [`record_failure`], one row per attempt (table `payment_failures`);
//! - a client or address past its threshold, and every client and address that tried a card
//!   past `card_failures`, is blocked for `block_secs` (table `abuse_blocks`);
//! - past `attack_failures` from everyone, checkout is *under attack*
//!   ([`Snapshot::under_attack`]): the API requires a challenge when one is configured and
//!   multiplies the minimum amount.
//!
//! A failure of a supporter's saved card (a renewal, a plan change: a customer Kopilka was
//! already paid by) is not card testing and is not counted. `kopilka admin abuse` shows and
//! steers the state ([`status`], [`block`], [`unblock`], [`force_attack`], [`calm`]); each
//! steering is audited.

use std::collections::HashMap;

use kopilka_accounts::keys::{Keys, Purpose};
use kopilka_config::AbuseSettings;
use kopilka_domain::Email;
use kopilka_domain::id::ContributionId;
use kopilka_store::PgPool;
use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::ContributionError;

pub mod challenge;

/// The keyed HMAC a client is counted and blocked under (the same key the request limits
/// use): `ip` canonical, IPv6 per /64.
#[must_use]
pub fn client_key(keys: &Keys, ip: std::net::IpAddr) -> String {
    let canonical = kopilka_accounts::throttle::canonical(ip);
    keys.digest(Purpose::IpKey, canonical.as_bytes())
}

/// The keyed HMAC an address is counted and blocked under.
#[must_use]
pub fn address_key(keys: &Keys, email: &Email) -> String {
    keys.digest(Purpose::AddressKey, email.expose().as_bytes())
}

/// The keyed HMAC a card is counted under (Stripe's fingerprint is never stored).
#[must_use]
pub fn card_key(keys: &Keys, fingerprint: &str) -> String {
    keys.digest(Purpose::CardKey, fingerprint.as_bytes())
}

/// Who started a checkout, kept with it while its payment may fail.
#[derive(Debug, Clone, Default)]
pub struct Attribution {
    /// [`client_key`] of the request's client, when known.
    pub client_key: Option<String>,
    /// Under attack, the minimum amount is multiplied by this (1 otherwise).
    pub minimum_factor: u32,
}

impl Attribution {
    /// A checkout from `client_key` in normal times.
    #[must_use]
    pub fn new(client_key: Option<String>) -> Self {
        Self {
            client_key,
            minimum_factor: 1,
        }
    }
}

pub(crate) async fn attribute(
    conn: &mut PgConnection,
    contribution: ContributionId,
    client_key: Option<&str>,
    address_key: Option<&str>,
) -> Result<(), ContributionError> {
    sqlx::query(
        "INSERT INTO checkout_clients (contribution_id, client_key, address_key)
         VALUES ($1, $2, $3) ON CONFLICT (contribution_id) DO NOTHING",
    )
    .bind(contribution.as_uuid())
    .bind(client_key)
    .bind(address_key)
    .execute(conn)
    .await?;
    Ok(())
}

/// Until when `kind`/`key` is blocked, if it is now.
pub(crate) async fn blocked_until(
    conn: &mut PgConnection,
    kind: BlockKind,
    key: &str,
) -> Result<Option<OffsetDateTime>, ContributionError> {
    Ok(sqlx::query_scalar(
        "SELECT until FROM abuse_blocks WHERE kind = $1 AND key = $2 AND until > now()",
    )
    .bind(kind.as_str())
    .bind(key)
    .fetch_optional(conn)
    .await?)
}

/// One failed payment attempt, as a provider reported it.
#[derive(Debug, Clone, Default)]
pub struct FailedAttempt {
    /// The attempt's id (a charge; a payment intent when it failed without one): one row
    /// per attempt, however many events report it.
    pub attempt: String,
    /// Kopilka's contribution, when the payment carries its id.
    pub contribution: Option<ContributionId>,
    /// The provider's customer, when the payment had one.
    pub customer: Option<String>,
    /// The card's fingerprint (hashed with the key before anything is stored).
    pub card_fingerprint: Option<String>,
    /// The billing address the payer typed, when the provider gave it.
    pub billing_email: Option<String>,
}

/// What counting a failure did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counted {
    /// Whether the attempt was new (not a second event about the same attempt).
    pub new: bool,
    /// Blocks made or extended: `(kind, reason)`.
    pub blocks: Vec<(BlockKind, &'static str)>,
}

/// What a block refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockKind {
    /// A client (IP; IPv6 per /64).
    Client,
    /// An address.
    Address,
}

impl BlockKind {
    /// As stored.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Address => "address",
        }
    }

    fn parse(s: &str) -> Self {
        if s == "address" {
            Self::Address
        } else {
            Self::Client
        }
    }
}

/// Counts one failed payment attempt (inside the caller's transaction, the one that stores
/// the event): once per attempt, against the client and address that started its checkout
/// and against its card; blocks whatever passed its threshold. A failure of a customer
/// Kopilka was already paid by (a renewal or plan change on a saved card) is not counted.
///
/// # Errors
/// Storage errors.
pub async fn record_failure(
    conn: &mut PgConnection,
    keys: &Keys,
    settings: &AbuseSettings,
    failure: &FailedAttempt,
) -> Result<Counted, ContributionError> {
    if let Some(customer) = &failure.customer {
        let supporter: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM contributions
                            WHERE stripe_customer_id = $1 AND status <> 'pending' AND status <> 'failed'
                              AND status <> 'abandoned')",
        )
        .bind(customer)
        .fetch_one(&mut *conn)
        .await?;
        if supporter {
            return Ok(Counted::default());
        }
    }
    let started: Option<(Option<String>, Option<String>)> =
        match failure.contribution {
            Some(contribution) => sqlx::query_as(
                "SELECT client_key, address_key FROM checkout_clients WHERE contribution_id = $1",
            )
            .bind(contribution.as_uuid())
            .fetch_optional(&mut *conn)
            .await?,
            None => None,
        };
    let (client, typed_address) = started.unwrap_or((None, None));
    let address = typed_address.or_else(|| {
        failure
            .billing_email
            .as_deref()
            .and_then(|raw| Email::parse(raw).ok())
            .map(|email| address_key(keys, &email))
    });
    let card = failure
        .card_fingerprint
        .as_deref()
        .filter(|f| !f.is_empty())
        .map(|f| card_key(keys, f));
    let inserted = sqlx::query(
        "INSERT INTO payment_failures (attempt, client_key, address_key, card_key)
         VALUES ($1, $2, $3, $4) ON CONFLICT (attempt) DO NOTHING",
    )
    .bind(&failure.attempt)
    .bind(&client)
    .bind(&address)
    .bind(&card)
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 0 {
        return Ok(Counted::default());
    }
    metrics::counter!("kopilka_payment_failures_total").increment(1);
    let mut counted = Counted {
        new: true,
        blocks: Vec::new(),
    };
    let window = i64::from(settings.window_secs);
    let block_secs = i64::from(settings.block_secs);
    for (kind, key, threshold, reason) in [
        (
            BlockKind::Client,
            &client,
            settings.client_failures,
            "client_failures",
        ),
        (
            BlockKind::Address,
            &address,
            settings.address_failures,
            "address_failures",
        ),
    ] {
        let Some(key) = key else { continue };
        // Counted since the window began, or since an operator last cleared this key.
        let statement = if kind == BlockKind::Client {
            "SELECT count(*) FROM payment_failures
             WHERE client_key = $1
               AND occurred_at > greatest(now() - make_interval(secs => $2::double precision),
                     (SELECT cleared_at FROM abuse_blocks WHERE kind = $3 AND key = $1),
                     (SELECT calm_since FROM abuse_state))"
        } else {
            "SELECT count(*) FROM payment_failures
             WHERE address_key = $1
               AND occurred_at > greatest(now() - make_interval(secs => $2::double precision),
                     (SELECT cleared_at FROM abuse_blocks WHERE kind = $3 AND key = $1),
                     (SELECT calm_since FROM abuse_state))"
        };
        let failures: i64 = sqlx::query_scalar(statement)
            .bind(key)
            .bind(window)
            .bind(kind.as_str())
            .fetch_one(&mut *conn)
            .await?;
        if failures >= i64::from(threshold) {
            block_key(&mut *conn, kind, key, block_secs, reason, failures).await?;
            counted.blocks.push((kind, reason));
        }
    }
    if let Some(card) = &card {
        let failures: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM payment_failures
             WHERE card_key = $1
               AND occurred_at > greatest(now() - make_interval(secs => $2::double precision),
                                          (SELECT calm_since FROM abuse_state))",
        )
        .bind(card)
        .bind(window)
        .fetch_one(&mut *conn)
        .await?;
        if failures >= i64::from(settings.card_failures) {
            // Everyone who tried this card in the window.
            let tried: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
                "SELECT DISTINCT client_key, address_key FROM payment_failures
                 WHERE card_key = $1 AND occurred_at > now() - make_interval(secs => $2::double precision)",
            )
            .bind(card)
            .bind(window)
            .fetch_all(&mut *conn)
            .await?;
            for (client, address) in tried {
                for (kind, key) in [(BlockKind::Client, client), (BlockKind::Address, address)] {
                    if let Some(key) = key {
                        block_key(
                            &mut *conn,
                            kind,
                            &key,
                            block_secs,
                            "card_failures",
                            failures,
                        )
                        .await?;
                        counted.blocks.push((kind, "card_failures"));
                    }
                }
            }
        }
    }
    for (kind, reason) in &counted.blocks {
        metrics::counter!("kopilka_abuse_blocks_total", "kind" => kind.as_str(), "reason" => *reason)
            .increment(1);
    }
    Ok(counted)
}

/// Blocks `kind`/`key` for `secs` from now (a longer block already in place stays).
async fn block_key(
    conn: &mut PgConnection,
    kind: BlockKind,
    key: &str,
    secs: i64,
    reason: &str,
    failures: i64,
) -> Result<(), ContributionError> {
    sqlx::query(
        "INSERT INTO abuse_blocks (kind, key, until, reason, failures)
         VALUES ($1, $2, now() + make_interval(secs => $3::double precision), $4, $5)
         ON CONFLICT (kind, key) DO UPDATE
         SET until = greatest(abuse_blocks.until, excluded.until),
             reason = CASE WHEN abuse_blocks.until > now() AND abuse_blocks.reason = 'operator'
                           THEN abuse_blocks.reason ELSE excluded.reason END,
             failures = excluded.failures, updated_at = now()",
    )
    .bind(kind.as_str())
    .bind(key)
    .bind(secs)
    .bind(reason)
    .bind(i32::try_from(failures).unwrap_or(i32::MAX))
    .execute(conn)
    .await?;
    Ok(())
}

/// What every `serve` keeps in memory (refreshed every `abuse.refresh_ms`), so a checkout
/// never waits on a query for the shield.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Whether checkout is under attack now.
    pub under_attack: bool,
    /// Blocked clients' keys and until when.
    pub blocked_clients: HashMap<String, OffsetDateTime>,
}

impl Snapshot {
    /// Until when the client `key` is blocked, if it is at `now`.
    #[must_use]
    pub fn client_blocked(&self, key: &str, now: OffsetDateTime) -> Option<OffsetDateTime> {
        self.blocked_clients
            .get(key)
            .copied()
            .filter(|until| *until > now)
    }
}

/// Reads the shield's state: two statements, each bounded (the failure count stops at the
/// threshold; at most `max_blocks` blocks, the newest).
///
/// # Errors
/// Storage errors.
pub async fn snapshot(
    pool: &PgPool,
    settings: &AbuseSettings,
) -> Result<Snapshot, ContributionError> {
    // The failures that count towards the threshold: in the window, after the operator's
    // last "calm", at most the threshold (counting stops there).
    let (forced, failures): (bool, i64) = sqlx::query_as(
        "SELECT coalesce((SELECT forced_until > now() FROM abuse_state), false),
                (SELECT count(*) FROM (
                    SELECT 1 FROM payment_failures
                    WHERE occurred_at > greatest(now() - make_interval(secs => $1::double precision),
                                                 (SELECT calm_since FROM abuse_state))
                    LIMIT $2) counted)",
    )
    .bind(i64::from(settings.window_secs))
    .bind(i64::from(settings.attack_failures))
    .fetch_one(pool)
    .await?;
    let blocked: Vec<(String, OffsetDateTime)> = sqlx::query_as(
        "SELECT key, until FROM abuse_blocks WHERE kind = 'client' AND until > now()
         ORDER BY updated_at DESC LIMIT $1",
    )
    .bind(i64::from(settings.max_blocks))
    .fetch_all(pool)
    .await?;
    Ok(Snapshot {
        under_attack: forced || failures >= i64::from(settings.attack_failures),
        blocked_clients: blocked.into_iter().collect(),
    })
}

/// One block, as `admin abuse status` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Block {
    /// `client` or `address`.
    pub kind: BlockKind,
    /// The keyed HMAC (no IP or address is stored).
    pub key: String,
    /// `client_failures`, `address_failures`, `card_failures` or `operator`.
    pub reason: String,
    /// Failures counted when it was made.
    pub failures: i32,
    /// Until when (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    pub until: OffsetDateTime,
}

/// The shield as `admin abuse status` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    /// Whether checkout is under attack now.
    pub under_attack: bool,
    /// `forced` (the operator), `failures` (the threshold), or `calm`.
    pub why: &'static str,
    /// Failures counted towards the threshold (in the window, after the last calm).
    pub failures: i64,
    /// The threshold.
    pub attack_failures: u32,
    /// The window, in seconds.
    pub window_secs: u32,
    /// Until when the operator holds the state on.
    #[serde(with = "time::serde::rfc3339::option")]
    pub forced_until: Option<OffsetDateTime>,
    /// Failures before this do not count (the operator declared the attack over).
    #[serde(with = "time::serde::rfc3339::option")]
    pub calm_since: Option<OffsetDateTime>,
    /// Under attack, the minimum is multiplied by this.
    pub attack_minimum_factor: u32,
    /// The challenge provider, when one is configured.
    pub challenge: Option<&'static str>,
    /// Blocks in force, newest first.
    pub blocks: Vec<Block>,
}

/// The shield's state for the operator.
///
/// # Errors
/// Storage errors.
pub async fn status(pool: &PgPool, settings: &AbuseSettings) -> Result<Status, ContributionError> {
    let (forced_until, calm_since, failures): (
        Option<OffsetDateTime>,
        Option<OffsetDateTime>,
        i64,
    ) = sqlx::query_as(
        "SELECT (SELECT forced_until FROM abuse_state), (SELECT calm_since FROM abuse_state),
                (SELECT count(*) FROM (
                    SELECT 1 FROM payment_failures
                    WHERE occurred_at > greatest(now() - make_interval(secs => $1::double precision),
                                                 (SELECT calm_since FROM abuse_state))
                    LIMIT $2) counted)",
    )
    .bind(i64::from(settings.window_secs))
    .bind(i64::MAX)
    .fetch_one(pool)
    .await?;
    let rows: Vec<(String, String, String, i32, OffsetDateTime)> = sqlx::query_as(
        "SELECT kind, key, reason, failures, until FROM abuse_blocks WHERE until > now()
         ORDER BY updated_at DESC, kind, key",
    )
    .fetch_all(pool)
    .await?;
    let now = OffsetDateTime::now_utc();
    let forced = forced_until.is_some_and(|until| until > now);
    let tripped = failures >= i64::from(settings.attack_failures);
    Ok(Status {
        under_attack: forced || tripped,
        why: if forced {
            "forced"
        } else if tripped {
            "failures"
        } else {
            "calm"
        },
        failures,
        attack_failures: settings.attack_failures,
        window_secs: settings.window_secs,
        forced_until: forced_until.filter(|until| *until > now),
        calm_since,
        attack_minimum_factor: settings.attack_minimum_factor,
        challenge: settings.challenge.configured().map(|c| c.provider.as_str()),
        blocks: rows
            .into_iter()
            .map(|(kind, key, reason, failures, until)| Block {
                kind: BlockKind::parse(&kind),
                key,
                reason,
                failures,
                until,
            })
            .collect(),
    })
}

/// The operator blocks `kind`/`key` for `secs` (audited as `abuse.block` by `actor`).
///
/// # Errors
/// Storage errors.
pub async fn block(
    pool: &PgPool,
    actor: &str,
    kind: BlockKind,
    key: &str,
    secs: i64,
) -> Result<(), ContributionError> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO abuse_blocks (kind, key, until, reason)
         VALUES ($1, $2, now() + make_interval(secs => $3::double precision), 'operator')
         ON CONFLICT (kind, key) DO UPDATE
         SET until = excluded.until, reason = 'operator', updated_at = now()",
    )
    .bind(kind.as_str())
    .bind(key)
    .bind(secs)
    .execute(&mut *tx)
    .await?;
    kopilka_accounts::audit::record(
        &mut tx,
        actor,
        "abuse.block",
        None,
        &serde_json::json!({"kind": kind.as_str(), "key": key, "secs": secs}),
    )
    .await?;
    tx.commit().await.map_err(kopilka_store::StoreError::from)?;
    Ok(())
}

/// The operator lifts the block on `kind`/`key`; failures before now no longer count
/// against it. Returns whether a block was in force. Audited as `abuse.unblock`.
///
/// # Errors
/// Storage errors.
pub async fn unblock(
    pool: &PgPool,
    actor: &str,
    kind: BlockKind,
    key: &str,
) -> Result<bool, ContributionError> {
    let mut tx = pool.begin().await?;
    let was: Option<OffsetDateTime> = sqlx::query_scalar(
        "SELECT until FROM abuse_blocks WHERE kind = $1 AND key = $2 AND until > now()",
    )
    .bind(kind.as_str())
    .bind(key)
    .fetch_optional(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO abuse_blocks (kind, key, until, reason, cleared_at)
         VALUES ($1, $2, now(), 'operator', now())
         ON CONFLICT (kind, key) DO UPDATE
         SET until = now(), cleared_at = now(), updated_at = now()",
    )
    .bind(kind.as_str())
    .bind(key)
    .execute(&mut *tx)
    .await?;
    kopilka_accounts::audit::record(
        &mut tx,
        actor,
        "abuse.unblock",
        None,
        &serde_json::json!({"kind": kind.as_str(), "key": key, "was_blocked": was.is_some()}),
    )
    .await?;
    tx.commit().await.map_err(kopilka_store::StoreError::from)?;
    Ok(was.is_some())
}

/// The operator holds checkout under attack for `secs` (audited as `abuse.attack`).
///
/// # Errors
/// Storage errors.
pub async fn force_attack(pool: &PgPool, actor: &str, secs: i64) -> Result<(), ContributionError> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "UPDATE abuse_state SET forced_until = now() + make_interval(secs => $1::double precision), updated_at = now()",
    )
    .bind(secs)
    .execute(&mut *tx)
    .await?;
    kopilka_accounts::audit::record(
        &mut tx,
        actor,
        "abuse.attack",
        None,
        &serde_json::json!({"secs": secs}),
    )
    .await?;
    tx.commit().await.map_err(kopilka_store::StoreError::from)?;
    Ok(())
}

/// The operator declares the attack over: the hold ends and failures before now no longer
/// count towards the threshold (blocks stay; lift them one by one). Audited as
/// `abuse.calm`.
///
/// # Errors
/// Storage errors.
pub async fn calm(pool: &PgPool, actor: &str) -> Result<(), ContributionError> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "UPDATE abuse_state SET forced_until = NULL, calm_since = now(), updated_at = now()",
    )
    .execute(&mut *tx)
    .await?;
    kopilka_accounts::audit::record(&mut tx, actor, "abuse.calm", None, &serde_json::json!({}))
        .await?;
    tx.commit().await.map_err(kopilka_store::StoreError::from)?;
    Ok(())
}

/// One batch of the retention sweep, as of `now`: deletes up to `batch` rows of each of
/// the shield's tables that are no longer needed — checkout attributions a day past the
/// window (a checkout's page lives at most a day), failures past the window, blocks over
/// for longer than the window. Returns how many rows went.
///
/// # Errors
/// Storage errors.
pub async fn forget_spent(
    conn: &mut PgConnection,
    settings: &AbuseSettings,
    now: OffsetDateTime,
    batch: i64,
) -> Result<u64, ContributionError> {
    let before = now - time::Duration::seconds(i64::from(settings.window_secs));
    let mut total = 0;
    for statement in [
        "DELETE FROM checkout_clients WHERE contribution_id IN (
            SELECT contribution_id FROM checkout_clients
            WHERE created_at < $1 - interval '1 day' LIMIT $2)",
        "DELETE FROM payment_failures WHERE attempt IN (
            SELECT attempt FROM payment_failures WHERE occurred_at < $1 LIMIT $2)",
        "DELETE FROM abuse_blocks WHERE (kind, key) IN (
            SELECT kind, key FROM abuse_blocks WHERE until < $1 LIMIT $2)",
    ] {
        total += sqlx::query(statement)
            .bind(before)
            .bind(batch)
            .execute(&mut *conn)
            .await?
            .rows_affected();
    }
    Ok(total)
}
