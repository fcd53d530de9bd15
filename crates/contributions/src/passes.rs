//! Supporter passes and pass codes: the crypto rail's support for months, paid ahead (crypto
//! has no pull payments). Owns `passes`.
//!
//! A contribution may buy passes of `pass_months` each. A pass for its buyer (signed in, or
//! who gave an address) runs from the moment its invoice settles, or from the end of the
//! buyer's running pass (a renewal adds on). A pass bought with no address, or bought as
//! gifts, is a **code**: 125 random bits, shown once to the buyer, stored only as a keyed
//! HMAC. Redeeming the code starts the pass for whoever redeems it: a signed-in reader who
//! attaches it, or an anonymous holder known only by the keyed HMAC of a random holder token
//! their browser keeps. Nothing in a redemption names or reaches the buyer. A code is
//! redeemable once, for `passes.redeem_days` after it was paid; its buyer (anyone holding it
//! before it is redeemed) may revoke it.

use kopilka_accounts::keys::{Keys, Purpose};
use kopilka_domain::id::{ContributionId, ReaderId};
use sqlx::PgConnection;
use time::{Duration, OffsetDateTime};

use crate::ContributionError;

/// Crockford's base32: no I, L, O or U, so a code read aloud or typed survives.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Characters of a code's random part (5 bits each: 125 bits).
const CODE_CHARS: usize = 25;
/// What every code starts with, so a reader knows what it is.
const PREFIX: &str = "KP";

/// A fresh code: `KP-XXXXX-XXXXX-XXXXX-XXXXX-XXXXX`.
#[must_use]
pub fn new_code() -> String {
    let bytes = kopilka_accounts::keys::random_bytes::<16>();
    let bits = u128::from_be_bytes(bytes);
    let mut code = String::from(PREFIX);
    for i in 0..CODE_CHARS {
        if i % 5 == 0 {
            code.push('-');
        }
        let index = usize::try_from((bits >> (i * 5)) & 0x1f).unwrap_or(0);
        code.push(char::from(ALPHABET[index]));
    }
    code
}

/// The canonical form of a typed code (case, spaces, dashes and the look-alikes O/I/L
/// forgiven), or `None` when it cannot be a code.
#[must_use]
pub fn normalize_code(typed: &str) -> Option<String> {
    let mut kept: String = typed
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if kept.len() == CODE_CHARS + PREFIX.len() && kept.starts_with(PREFIX) {
        kept.drain(..PREFIX.len());
    }
    let kept: String = kept
        .chars()
        .map(|c| match c {
            'O' => '0',
            'I' | 'L' => '1',
            other => other,
        })
        .collect();
    (kept.len() == CODE_CHARS && kept.bytes().all(|b| ALPHABET.contains(&b))).then_some(kept)
}

fn code_digest(keys: &Keys, normalized: &str) -> String {
    keys.digest(Purpose::PassCode, normalized.as_bytes())
}

fn holder_digest(keys: &Keys, token: &str) -> String {
    keys.digest(Purpose::PassHolder, token.as_bytes())
}

/// What a checkout buys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassOrder {
    /// Months per pass.
    pub months: u8,
    /// How many passes.
    pub count: u8,
    /// As codes (gifts, or a buyer with no address) rather than for the buyer.
    pub as_codes: bool,
}

/// Creates the passes of `contribution` (pending until its invoice settles) and returns the
/// codes, in the clear, to be shown once (none for a pass for its buyer).
///
/// # Errors
/// Storage errors.
pub(crate) async fn create(
    conn: &mut PgConnection,
    keys: &Keys,
    contribution: ContributionId,
    order: PassOrder,
    holder: Option<ReaderId>,
) -> Result<Vec<String>, ContributionError> {
    let mut codes = Vec::new();
    for _ in 0..order.count.max(1) {
        let code = order.as_codes.then(new_code);
        sqlx::query(
            "INSERT INTO passes (id, contribution_id, months, reader_id, code_hash)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(uuid::Uuid::now_v7())
        .bind(contribution.as_uuid())
        .bind(i16::from(order.months))
        .bind(holder.filter(|_| !order.as_codes).map(ReaderId::as_uuid))
        .bind(
            code.as_deref()
                .and_then(normalize_code)
                .map(|c| code_digest(keys, &c)),
        )
        .execute(&mut *conn)
        .await?;
        codes.extend(code);
    }
    Ok(codes)
}

/// Fresh codes for the code passes of `contribution` while nothing is paid (a checkout
/// retried before its answer reached the buyer: the first codes may never have been seen).
/// `None` when it has no such passes, or a payment was seen (codes are never shown twice,
/// and never replaced once paid for).
///
/// # Errors
/// Storage errors.
pub(crate) async fn reissue(
    conn: &mut PgConnection,
    keys: &Keys,
    contribution: ContributionId,
) -> Result<Option<Vec<String>>, ContributionError> {
    // Only while BTCPay has reported nothing paid (`paid_minor` is set from the first
    // delivery that shows a payment): codes a buyer may already have paid for are never
    // replaced. A payment made seconds before the retry, not yet delivered, is the window.
    let pending: Vec<uuid::Uuid> = sqlx::query_scalar(
        "SELECT p.id FROM passes p JOIN contributions c ON c.id = p.contribution_id
         WHERE p.contribution_id = $1 AND p.code_hash IS NOT NULL AND p.status = 'pending'
           AND c.status = 'pending' AND c.paid_minor IS NULL
         ORDER BY p.id FOR UPDATE OF p",
    )
    .bind(contribution.as_uuid())
    .fetch_all(&mut *conn)
    .await?;
    if pending.is_empty() {
        return Ok(None);
    }
    let mut codes = Vec::with_capacity(pending.len());
    for id in pending {
        let code = new_code();
        let digest = normalize_code(&code).map(|c| code_digest(keys, &c));
        sqlx::query("UPDATE passes SET code_hash = $2 WHERE id = $1")
            .bind(id)
            .bind(digest)
            .execute(&mut *conn)
            .await?;
        codes.push(code);
    }
    Ok(Some(codes))
}

/// The invoice of `contribution` settled at `at`: its passes are paid. A buyer's pass runs
/// from `at`, or from the end of the holder's running pass; a code may be redeemed for
/// `redeem_days`. Passes voided because the invoice expired or went invalid before it
/// settled come back when the operator marks it settled (a late or partial payment
/// accepted); never those of a payment taken back (a `reversal`). Returns whether anything
/// changed.
///
/// # Errors
/// Storage errors.
pub(crate) async fn paid(
    conn: &mut PgConnection,
    contribution: ContributionId,
    at: OffsetDateTime,
    redeem_days: u32,
) -> Result<bool, ContributionError> {
    // The holder of a buyer's pass is the contribution's reader (named by now, if ever). Their
    // row is locked first, so two passes settling at once (two workers) queue one after the
    // other instead of both starting where the running one ends.
    let holder: Option<uuid::Uuid> =
        sqlx::query_scalar("SELECT reader_id FROM contributions WHERE id = $1")
            .bind(contribution.as_uuid())
            .fetch_optional(&mut *conn)
            .await?
            .flatten();
    if let Some(holder) = holder {
        lock_holder(conn, ReaderId::from_uuid(holder)).await?;
    }
    let reversed: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM ledger_entries WHERE contribution_id = $1 AND kind = 'reversal')",
    )
    .bind(contribution.as_uuid())
    .fetch_one(&mut *conn)
    .await?;
    if reversed {
        return Ok(false);
    }
    let buyers = sqlx::query(
        "WITH holder AS (SELECT reader_id FROM contributions WHERE id = $1),
              running AS (SELECT max(p.ends_at) AS ends_at FROM passes p, holder h
                          WHERE p.reader_id = h.reader_id AND p.status = 'active')
         UPDATE passes SET status = 'active',
             reader_id = (SELECT reader_id FROM holder),
             starts_at = greatest($2, coalesce((SELECT ends_at FROM running), $2)),
             ends_at = greatest($2, coalesce((SELECT ends_at FROM running), $2))
                       + make_interval(months => months::int)
         WHERE contribution_id = $1 AND status IN ('pending', 'void') AND code_hash IS NULL
           AND redeemed_at IS NULL AND (SELECT reader_id FROM holder) IS NOT NULL",
    )
    .bind(contribution.as_uuid())
    .bind(at)
    .execute(&mut *conn)
    .await?;
    let codes = sqlx::query(
        "UPDATE passes SET status = 'active', redeem_by = $2
         WHERE contribution_id = $1 AND status IN ('pending', 'void') AND code_hash IS NOT NULL
           AND redeemed_at IS NULL",
    )
    .bind(contribution.as_uuid())
    .bind(at + Duration::days(i64::from(redeem_days)))
    .execute(&mut *conn)
    .await?;
    Ok(buyers.rows_affected() + codes.rows_affected() > 0)
}

/// Locks reader `reader`'s row for the transaction: their passes' chain is computed by one
/// transaction at a time.
async fn lock_holder(conn: &mut PgConnection, reader: ReaderId) -> Result<(), ContributionError> {
    sqlx::query("SELECT 1 FROM readers WHERE id = $1 FOR UPDATE")
        .bind(reader.as_uuid())
        .execute(conn)
        .await?;
    Ok(())
}

/// The invoice of `contribution` will never settle (expired, invalid), or was taken back
/// after it settled: its passes are void (a running one stops; an unredeemed code dies).
///
/// # Errors
/// Storage errors.
pub(crate) async fn void(
    conn: &mut PgConnection,
    contribution: ContributionId,
) -> Result<bool, ContributionError> {
    let voided = sqlx::query(
        "UPDATE passes SET status = 'void' WHERE contribution_id = $1 AND status IN ('pending', 'active')",
    )
    .bind(contribution.as_uuid())
    .execute(conn)
    .await?;
    Ok(voided.rows_affected() > 0)
}

/// Why a code did nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeRefusal {
    /// Not a code Kopilka issued (or mistyped).
    Unknown,
    /// Issued, but its payment has not settled yet.
    NotYetPaid,
    /// Already redeemed.
    Redeemed,
    /// Revoked by its buyer, or its payment failed or was taken back.
    Revoked,
    /// Not redeemed in time.
    Expired,
}

impl CodeRefusal {
    /// The error code of the answer.
    #[must_use]
    pub fn code(self) -> &'static str {
        match self {
            Self::Unknown => "unknown_code",
            Self::NotYetPaid => "code_not_yet_paid",
            Self::Redeemed => "code_already_redeemed",
            Self::Revoked => "code_revoked",
            Self::Expired => "code_expired",
        }
    }

    /// A sentence for the reader.
    #[must_use]
    pub fn message(self) -> &'static str {
        match self {
            Self::Unknown => "this is not a valid pass code; check it and try again",
            Self::NotYetPaid => {
                "this pass code's payment has not been confirmed yet; try again later"
            }
            Self::Redeemed => "this pass code has already been used",
            Self::Revoked => "this pass code is no longer valid",
            Self::Expired => "this pass code was not used in time",
        }
    }
}

/// A redeemed pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redeemed {
    /// The pass.
    pub pass_id: uuid::Uuid,
    /// Its length.
    pub months: u8,
    /// When it ends.
    pub ends_at: OffsetDateTime,
    /// For an anonymous holder: the token that proves they hold it (shown once).
    pub holder_token: Option<String>,
}

type CodeRow = (
    uuid::Uuid,
    i16,
    String,
    Option<OffsetDateTime>,
    Option<OffsetDateTime>,
);

async fn by_code(
    conn: &mut PgConnection,
    keys: &Keys,
    typed: &str,
) -> Result<Option<CodeRow>, ContributionError> {
    let Some(code) = normalize_code(typed) else {
        return Ok(None);
    };
    Ok(sqlx::query_as(
        "SELECT id, months, status, redeem_by, redeemed_at FROM passes
         WHERE code_hash = $1 FOR UPDATE",
    )
    .bind(code_digest(keys, &code))
    .fetch_optional(conn)
    .await?)
}

fn refusal(
    status: &str,
    redeem_by: Option<OffsetDateTime>,
    redeemed: bool,
    now: OffsetDateTime,
) -> Option<CodeRefusal> {
    match status {
        "pending" => Some(CodeRefusal::NotYetPaid),
        "void" | "revoked" => Some(CodeRefusal::Revoked),
        _ if redeemed => Some(CodeRefusal::Redeemed),
        _ if redeem_by.is_some_and(|by| by <= now) => Some(CodeRefusal::Expired),
        _ => None,
    }
}

/// Redeems `typed` at `now` for `reader` (a signed-in reader who attaches the pass), or
/// for a new anonymous holder. The pass runs from now (for a reader, from the end of their
/// running pass).
///
/// # Errors
/// Storage errors.
pub async fn redeem(
    conn: &mut PgConnection,
    keys: &Keys,
    typed: &str,
    reader: Option<ReaderId>,
    now: OffsetDateTime,
) -> Result<Result<Redeemed, CodeRefusal>, ContributionError> {
    let Some((id, months, status, redeem_by, redeemed_at)) = by_code(conn, keys, typed).await?
    else {
        return Ok(Err(CodeRefusal::Unknown));
    };
    if let Some(refused) = refusal(&status, redeem_by, redeemed_at.is_some(), now) {
        return Ok(Err(refused));
    }
    if let Some(reader) = reader {
        lock_holder(conn, reader).await?;
    }
    let starts: OffsetDateTime = match reader {
        Some(reader) => {
            sqlx::query_scalar(
                "SELECT greatest($2, coalesce(max(ends_at), $2)) FROM passes
             WHERE reader_id = $1 AND status = 'active'",
            )
            .bind(reader.as_uuid())
            .bind(now)
            .fetch_one(&mut *conn)
            .await?
        }
        None => now,
    };
    let holder_token = reader.is_none().then(kopilka_accounts::keys::random_token);
    let ends_at: OffsetDateTime = sqlx::query_scalar(
        "UPDATE passes SET redeemed_at = $2, starts_at = $3,
             ends_at = $3 + make_interval(months => months::int), reader_id = $4, holder_hash = $5
         WHERE id = $1 RETURNING ends_at",
    )
    .bind(id)
    .bind(now)
    .bind(starts)
    .bind(reader.map(ReaderId::as_uuid))
    .bind(holder_token.as_deref().map(|t| holder_digest(keys, t)))
    .fetch_one(&mut *conn)
    .await?;
    tracing::info!(pass_id = %id, attached = reader.is_some(), "pass code redeemed");
    Ok(Ok(Redeemed {
        pass_id: id,
        months: u8::try_from(months).unwrap_or(u8::MAX),
        ends_at,
        holder_token,
    }))
}

/// Revokes `typed` before anyone redeemed it (its buyer changed their mind, or fears the
/// code was seen). The money stays given.
///
/// # Errors
/// Storage errors.
pub async fn revoke(
    conn: &mut PgConnection,
    keys: &Keys,
    typed: &str,
    now: OffsetDateTime,
) -> Result<Result<(), CodeRefusal>, ContributionError> {
    let Some((id, _, status, redeem_by, redeemed_at)) = by_code(conn, keys, typed).await? else {
        return Ok(Err(CodeRefusal::Unknown));
    };
    match refusal(&status, redeem_by, redeemed_at.is_some(), now) {
        None | Some(CodeRefusal::NotYetPaid | CodeRefusal::Expired) => {}
        Some(refused) => return Ok(Err(refused)),
    }
    sqlx::query("UPDATE passes SET status = 'revoked', revoked_at = $2 WHERE id = $1")
        .bind(id)
        .bind(now)
        .execute(conn)
        .await?;
    tracing::info!(pass_id = %id, "pass code revoked");
    Ok(Ok(()))
}

/// The running pass an anonymous holder's token names: its id and end.
///
/// # Errors
/// Storage errors.
pub async fn held(
    conn: &mut PgConnection,
    keys: &Keys,
    holder_token: &str,
    now: OffsetDateTime,
) -> Result<Option<(uuid::Uuid, OffsetDateTime)>, ContributionError> {
    Ok(sqlx::query_as(
        "SELECT id, ends_at FROM passes
         WHERE holder_hash = $1 AND status = 'active' AND ends_at > $2",
    )
    .bind(holder_digest(keys, holder_token))
    .bind(now)
    .fetch_optional(conn)
    .await?)
}

/// Until when `reader`'s passes keep them a supporter, if one runs at `now`: the end of the
/// last pass waiting behind it (a renewal starts where the running pass ends, so the chain
/// has no gap).
///
/// # Errors
/// Storage errors.
pub async fn paid_through(
    conn: &mut PgConnection,
    reader: ReaderId,
    now: OffsetDateTime,
) -> Result<Option<OffsetDateTime>, ContributionError> {
    Ok(sqlx::query_scalar(
        "SELECT CASE WHEN bool_or(starts_at <= $2) THEN max(ends_at) END FROM passes
         WHERE reader_id = $1 AND status = 'active' AND ends_at > $2",
    )
    .bind(reader.as_uuid())
    .bind(now)
    .fetch_one(conn)
    .await?)
}

/// A pass as a reader's export shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PassExport {
    /// The pass.
    pub id: uuid::Uuid,
    /// The contribution that bought it.
    pub contribution_id: uuid::Uuid,
    /// Its length.
    pub months: i16,
    /// `pending`, `active`, `void` or `revoked`.
    pub status: String,
    /// Whether the reader holds it (else they bought it as a code for someone).
    pub held: bool,
    /// Whether it is a code.
    pub code: bool,
    /// Whether its code was redeemed (by whom is not said).
    pub redeemed: bool,
    /// When it runs (only for a pass the reader holds).
    #[serde(with = "time::serde::rfc3339::option")]
    pub starts_at: Option<OffsetDateTime>,
    /// When it ends (only for a pass the reader holds).
    #[serde(with = "time::serde::rfc3339::option")]
    pub ends_at: Option<OffsetDateTime>,
}

/// The passes `reader` holds or bought.
///
/// # Errors
/// Storage errors.
pub async fn of_reader(
    conn: &mut PgConnection,
    reader: ReaderId,
) -> Result<Vec<PassExport>, ContributionError> {
    type Row = (
        uuid::Uuid,
        uuid::Uuid,
        i16,
        String,
        bool,
        bool,
        bool,
        Option<OffsetDateTime>,
        Option<OffsetDateTime>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT p.id, p.contribution_id, p.months, p.status, p.reader_id IS NOT DISTINCT FROM $1,
                p.code_hash IS NOT NULL, p.redeemed_at IS NOT NULL,
                CASE WHEN p.reader_id = $1 THEN p.starts_at END,
                CASE WHEN p.reader_id = $1 THEN p.ends_at END
         FROM passes p JOIN contributions c ON c.id = p.contribution_id
         WHERE p.reader_id = $1 OR c.reader_id = $1 ORDER BY p.created_at, p.id",
    )
    .bind(reader.as_uuid())
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(id, contribution_id, months, status, held, code, redeemed, starts_at, ends_at)| {
                PassExport {
                    id,
                    contribution_id,
                    months,
                    status,
                    held,
                    code,
                    redeemed,
                    starts_at,
                    ends_at,
                }
            },
        )
        .collect())
}

/// The kind of the job that tells a pass's holder it ends soon (payload `pass_id`,
/// `ends_at`).
pub const ENDING_NOTICE_JOB: &str = "mail.pass_ending";

/// Queues the notice for every pass held by a reader that ends in `(now, until]` with no
/// pass behind it (a renewal moves the end, and the notice with it), once per end; each job
/// is due when the notice period starts. Returns how many were queued.
///
/// # Errors
/// Storage errors.
pub async fn queue_ending_notices(
    conn: &mut PgConnection,
    now: OffsetDateTime,
    until: OffsetDateTime,
) -> Result<usize, ContributionError> {
    let due: Vec<(uuid::Uuid, OffsetDateTime)> = sqlx::query_as(
        "UPDATE passes SET ending_notice_for = ends_at WHERE id IN (
             SELECT p.id FROM passes p
             WHERE p.status = 'active' AND p.reader_id IS NOT NULL
               AND p.ends_at > $1 AND p.ends_at <= $2
               AND p.ending_notice_for IS DISTINCT FROM p.ends_at
               AND NOT EXISTS (SELECT 1 FROM passes later
                               WHERE later.reader_id = p.reader_id AND later.status = 'active'
                                 AND later.ends_at > p.ends_at)
             FOR UPDATE SKIP LOCKED)
         RETURNING id, ends_at",
    )
    .bind(now)
    .bind(until)
    .fetch_all(&mut *conn)
    .await?;
    for (pass, ends_at) in &due {
        let job = kopilka_queue::NewJob::new(
            ENDING_NOTICE_JOB,
            serde_json::json!({"pass_id": pass, "ends_at": ends_at.unix_timestamp()}),
        )
        .attempts(kopilka_queue::PATIENT_ATTEMPTS)
        .dedup(format!(
            "mail:pass_ending:{pass}:{}",
            ends_at.unix_timestamp()
        ));
        let job = kopilka_queue::NewJob {
            run_at: Some(*ends_at - (until - now)),
            ..job
        };
        kopilka_queue::enqueue(&mut *conn, &job).await?;
    }
    Ok(due.len())
}

/// The holder of pass `id` and whether `ends_at` is still where their support ends (no
/// renewal since, not voided).
///
/// # Errors
/// Storage errors.
pub async fn ending_holder(
    conn: &mut PgConnection,
    id: uuid::Uuid,
    ends_at: OffsetDateTime,
) -> Result<Option<(ReaderId, bool)>, ContributionError> {
    let row: Option<(Option<uuid::Uuid>, bool)> = sqlx::query_as(
        "SELECT p.reader_id,
                p.status = 'active' AND p.ends_at = $2
                AND NOT EXISTS (SELECT 1 FROM passes later
                                WHERE later.reader_id = p.reader_id AND later.status = 'active'
                                  AND later.ends_at > p.ends_at)
         FROM passes p WHERE p.id = $1",
    )
    .bind(id)
    .bind(ends_at)
    .fetch_optional(conn)
    .await?;
    Ok(row.and_then(|(reader, still)| Some((ReaderId::from_uuid(reader?), still))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_long_random_and_forgive_how_they_are_typed() {
        let code = new_code();
        assert_eq!(code.len(), 2 + 5 * 6, "{code}");
        assert!(code.starts_with("KP-"), "{code}");
        assert_ne!(code, new_code());
        let canonical = normalize_code(&code).unwrap();
        assert_eq!(canonical.len(), 25);
        let sloppy = format!("  {} ", code.to_lowercase().replace('-', " "));
        assert_eq!(normalize_code(&sloppy).as_deref(), Some(canonical.as_str()));
        assert_eq!(
            normalize_code("KP-0O1IL-00000-00000-00000-00000").as_deref(),
            Some("0011100000000000000000000")
        );
        assert_eq!(normalize_code("KP-UUUUU-00000-00000-00000-00000"), None);
        assert_eq!(normalize_code("KP-00000"), None);
        assert_eq!(normalize_code(""), None);
    }
}
