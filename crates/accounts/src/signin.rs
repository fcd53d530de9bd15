//! Sign-up, sign-in with a password or an emailed link. None of them says whether an
//! address has an account: sign-up and link requests answer the same either way, and a
//! password check against an unknown address hashes against a dummy, so it takes as long.

use std::net::IpAddr;

use kopilka_domain::id::ReaderId;
use kopilka_domain::{Email, Locale};
use kopilka_store::PgPool;
use time::OffsetDateTime;

use crate::link::{self, LinkPurpose};
use crate::password::{Password, Verdict};
use crate::session::{self, NewSession, Proof};
use crate::throttle::{self, LoginKeys};
use crate::{AccountError, Accounts, reader};

/// A sign-up request after parsing.
#[derive(Debug, Clone)]
pub struct SignUp {
    /// The address.
    pub email: Email,
    /// The chosen password.
    pub password: Password,
    /// An optional name.
    pub name: Option<String>,
    /// The language for emails.
    pub locale: Locale,
}

/// Parses an address from a request, with the same error for every malformed one.
///
/// # Errors
/// [`AccountError::Refused`] `invalid_email`.
pub fn parse_email(raw: &str) -> Result<Email, AccountError> {
    Email::parse(raw).map_err(|e| AccountError::refused("invalid_email", e.to_string()))
}

impl Accounts {
    /// Signs up (see the module docs): always ends in "check your email". A new address gets
    /// an unverified reader and a verification link; an address without a confirmed password
    /// gets this password, unconfirmed, and a verification link; an address with a confirmed
    /// password keeps it and gets an "already registered" email with a sign-in link.
    ///
    /// # Errors
    /// [`AccountError::Refused`] for a common breached password (before any lookup, so
    /// alike for every address); hashing and storage errors.
    pub async fn sign_up(
        &self,
        pool: &PgPool,
        request: &SignUp,
        now: OffsetDateTime,
    ) -> Result<(), AccountError> {
        crate::password::check_not_common(&request.password)?;
        let hash = self.passwords.hash(&request.password).await?;
        let mut tx = pool.begin().await?;
        let reader = reader::find_or_create(&mut tx, &request.email).await?;
        let confirmed: Option<bool> = sqlx::query_scalar(
            "SELECT confirmed_at IS NOT NULL FROM credentials WHERE reader_id = $1 FOR UPDATE",
        )
        .bind(reader.as_uuid())
        .fetch_optional(&mut *tx)
        .await?;
        let verified: bool =
            sqlx::query_scalar("SELECT verified_at IS NOT NULL FROM readers WHERE id = $1")
                .bind(reader.as_uuid())
                .fetch_one(&mut *tx)
                .await?;
        let purpose = if confirmed == Some(true) {
            LinkPurpose::AlreadyRegistered
        } else {
            // A replaced password ends the sessions the old one began.
            sqlx::query(
                "UPDATE sessions SET revoked_at = $2
                 WHERE reader_id = $1 AND proof = 'password' AND revoked_at IS NULL",
            )
            .bind(reader.as_uuid())
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO credentials (reader_id, password_hash, set_at) VALUES ($1, $2, $3)
                 ON CONFLICT (reader_id) DO UPDATE SET password_hash = $2, set_at = $3",
            )
            .bind(reader.as_uuid())
            .bind(&hash)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            // Name and language only for an address nobody has proven yet: an anonymous
            // sign-up must not rewrite what a proven reader's emails say.
            if !verified {
                reader::update_profile(
                    &mut tx,
                    reader,
                    request.name.as_deref(),
                    Some(request.locale),
                )
                .await?;
            }
            LinkPurpose::Verify
        };
        let lifetime = match purpose {
            LinkPurpose::Verify => self.verify_link_lifetime(),
            _ => self.sign_in_link_lifetime(),
        };
        let issued = link::issue(
            &mut tx,
            &self.keys,
            reader,
            purpose,
            lifetime,
            self.settings.links_per_hour,
            now,
        )
        .await?;
        if issued.is_none() {
            // Over the hourly limit: nothing is emailed, so nothing changes (dropping the
            // transaction rolls it back), and the answer is the same.
            return Ok(());
        }
        tx.commit().await.map_err(kopilka_store::StoreError::from)?;
        Ok(())
    }

    /// Signs in with a password from `ip`. Throttled per address and per IP with
    /// exponential backoff; a right password rehashes when the cost changed.
    ///
    /// # Errors
    /// [`AccountError::InvalidCredentials`], [`AccountError::Throttled`], storage errors.
    pub async fn sign_in_with_password(
        &self,
        pool: &PgPool,
        email: &Email,
        password: &str,
        ip: Option<IpAddr>,
        now: OffsetDateTime,
    ) -> Result<NewSession, AccountError> {
        let keys = LoginKeys::new(&self.keys, email, ip);
        // The attempt is counted (and any block set) before the password is checked.
        let mut tx = pool.begin().await?;
        if let Some(retry_after) = throttle::reserve(&mut tx, &keys, &self.settings, now).await? {
            return Err(AccountError::Throttled { retry_after });
        }
        let stored: Option<(uuid::Uuid, String, bool)> = sqlx::query_as(
            "SELECT r.id, c.password_hash, c.confirmed_at IS NOT NULL
             FROM readers r JOIN credentials c ON c.reader_id = r.id
             WHERE lower(r.email) = $1",
        )
        .bind(email.expose())
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await.map_err(kopilka_store::StoreError::from)?;
        let (reader, hash, confirmed) =
            stored.map_or((None, None, false), |(r, h, c)| (Some(r), Some(h), c));
        // A password of a length Kopilka refuses is simply wrong: it is hashed against the
        // dummy (so it takes as long), never compared as anything else with the stored hash.
        let (password, hash) = match Password::parse(password) {
            Ok(password) => (password, hash),
            Err(_) => (
                Password::parse(&"x".repeat(crate::password::MIN_CHARS))?,
                None,
            ),
        };
        let verdict = self.passwords.verify(hash, &password).await?;
        // A password nobody has confirmed from the mailbox is no password yet: refused like a
        // wrong one, after the same hashing (whether an address has a confirmed password must
        // not show through a sign-up followed by a sign-in).
        let reader = match (verdict, reader) {
            (verdict, Some(reader)) if confirmed && !matches!(verdict, Verdict::Wrong) => {
                (verdict, reader)
            }
            _ => {
                tracing::info!("password sign-in refused");
                return Err(AccountError::InvalidCredentials);
            }
        };
        let mut tx = pool.begin().await?;
        let reader = match reader {
            (Verdict::RightRehashed(new_hash), reader) => {
                sqlx::query("UPDATE credentials SET password_hash = $2 WHERE reader_id = $1")
                    .bind(reader)
                    .bind(new_hash)
                    .execute(&mut *tx)
                    .await?;
                tracing::info!(reader_id = %reader, "password rehashed with today's cost");
                reader
            }
            (_, reader) => reader,
        };
        throttle::succeeded(&mut tx, &keys, &self.settings).await?;
        let session = session::begin(
            &mut tx,
            ReaderId::from_uuid(reader),
            Proof::Password,
            self.settings.session_lifetime(),
            now,
        )
        .await?;
        tx.commit().await.map_err(kopilka_store::StoreError::from)?;
        Ok(session)
    }

    /// Emails a sign-in link to `email` if it has a reader (rate-limited per address). The
    /// caller answers "check your email" whatever happened.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn request_sign_in_link(
        &self,
        pool: &PgPool,
        email: &Email,
        now: OffsetDateTime,
    ) -> Result<(), AccountError> {
        let mut tx = pool.begin().await?;
        if let Some(reader) = reader::find(&mut tx, email).await? {
            link::issue(
                &mut tx,
                &self.keys,
                reader,
                LinkPurpose::SignIn,
                self.sign_in_link_lifetime(),
                self.settings.links_per_hour,
                now,
            )
            .await?;
        }
        tx.commit().await.map_err(kopilka_store::StoreError::from)?;
        Ok(())
    }

    /// Signs in with an emailed link's token (once): the address is verified from now on.
    ///
    /// A verification link confirms the password its sign-up set only when `password` is
    /// that password: whoever signed up may not be whoever owns the mailbox, and a click in
    /// the owner's mailbox must never make a stranger's password theirs. Without it (or with
    /// another), the address is verified and the reader signed in by the mailbox, and the
    /// unconfirmed password is dropped. Returns the session and whether a password was
    /// confirmed.
    ///
    /// # Errors
    /// [`AccountError::InvalidLink`], hashing and storage errors.
    pub async fn sign_in_with_link(
        &self,
        pool: &PgPool,
        token: &str,
        password: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<(NewSession, bool), AccountError> {
        // The password is checked before any lock is taken (hashing takes a while); the hash
        // it matched must still be the pending one under the lock.
        let proven_hash = match password.and_then(|p| Password::parse(p).ok()) {
            Some(given) => {
                let mut conn = pool
                    .acquire()
                    .await
                    .map_err(kopilka_store::StoreError::from)?;
                let pending = link::pending_password(&mut conn, &self.keys, token, now).await?;
                drop(conn);
                match pending {
                    Some(hash) => match self.passwords.verify(Some(hash.clone()), &given).await? {
                        Verdict::Wrong => None,
                        _ => Some(hash),
                    },
                    None => None,
                }
            }
            None => None,
        };
        let mut tx = pool.begin().await?;
        let used = link::consume(&mut tx, &self.keys, token, now).await?;
        let mut confirmed = false;
        if used.purpose == LinkPurpose::Verify {
            // The password set by the sign-up this link was sent for (not one set later) is
            // confirmed only if it is still the hash the given password matched.
            if let Some(hash) = &proven_hash {
                confirmed = sqlx::query(
                    "UPDATE credentials SET confirmed_at = $2
                     WHERE reader_id = $1 AND confirmed_at IS NULL AND set_at <= $3
                       AND password_hash = $4",
                )
                .bind(used.reader_id.as_uuid())
                .bind(now)
                .bind(used.issued_at)
                .bind(hash)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
            }
            if !confirmed {
                let dropped = sqlx::query(
                    "DELETE FROM credentials
                     WHERE reader_id = $1 AND confirmed_at IS NULL AND set_at <= $2",
                )
                .bind(used.reader_id.as_uuid())
                .bind(used.issued_at)
                .execute(&mut *tx)
                .await?;
                if dropped.rows_affected() > 0 {
                    // Sessions that password began (before passwords needed confirming) end.
                    sqlx::query(
                        "UPDATE sessions SET revoked_at = $2
                         WHERE reader_id = $1 AND proof = 'password' AND revoked_at IS NULL",
                    )
                    .bind(used.reader_id.as_uuid())
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    tracing::info!(
                        reader_id = %used.reader_id,
                        "an unconfirmed password was dropped: the link was used without it"
                    );
                }
            }
        }
        if used.first_proof && !confirmed {
            // The name came with an unproven sign-up, and whoever just proved the address
            // did not prove they made it (the sign-up's password): it never speaks for them.
            sqlx::query("UPDATE readers SET name = NULL WHERE id = $1")
                .bind(used.reader_id.as_uuid())
                .execute(&mut *tx)
                .await?;
        }
        let session = session::begin(
            &mut tx,
            used.reader_id,
            Proof::Mailbox,
            self.settings.session_lifetime(),
            now,
        )
        .await?;
        tx.commit().await.map_err(kopilka_store::StoreError::from)?;
        Ok((session, confirmed))
    }

    /// Changes the signed-in reader's password to `new`: with their `current` password, or
    /// without it from a session begun by an emailed link within the link's lifetime (how a
    /// forgotten password is reset: ask for a sign-in link, then set a new one). The new
    /// password counts as confirmed; every other session of the reader ends, and this one
    /// stays. Returns how many sessions ended.
    ///
    /// # Errors
    /// [`AccountError::Refused`] for a refused new password,
    /// [`AccountError::InvalidCredentials`] for a wrong current one,
    /// [`AccountError::ReauthenticationRequired`] without either proof; storage errors.
    pub async fn change_password(
        &self,
        pool: &PgPool,
        session_id: uuid::Uuid,
        reader: ReaderId,
        current: Option<&str>,
        new: &str,
        now: OffsetDateTime,
    ) -> Result<u64, AccountError> {
        let new = Password::parse(new)?;
        crate::password::check_not_common(&new)?;
        let mut conn = pool.acquire().await?;
        let (proof, begun): (String, OffsetDateTime) = sqlx::query_as(
            "SELECT proof, created_at FROM sessions WHERE id = $1 AND reader_id = $2",
        )
        .bind(session_id)
        .bind(reader.as_uuid())
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(AccountError::ReauthenticationRequired)?;
        let stored: Option<(String, bool)> = sqlx::query_as(
            "SELECT password_hash, confirmed_at IS NOT NULL FROM credentials WHERE reader_id = $1",
        )
        .bind(reader.as_uuid())
        .fetch_optional(&mut *conn)
        .await?;
        drop(conn);
        match current {
            Some(given) => {
                // Hashed whatever happens, so a wrong length takes as long as a wrong password.
                let (given, hash) = match Password::parse(given) {
                    Ok(given) => (
                        given,
                        stored.as_ref().filter(|(_, c)| *c).map(|(h, _)| h.clone()),
                    ),
                    Err(_) => (
                        Password::parse(&"x".repeat(crate::password::MIN_CHARS))?,
                        None,
                    ),
                };
                if matches!(
                    self.passwords.verify(hash.clone(), &given).await?,
                    Verdict::Wrong
                ) || hash.is_none()
                {
                    return Err(AccountError::InvalidCredentials);
                }
            }
            None => {
                let fresh = now - begun <= self.sign_in_link_lifetime();
                if !(proof == "mailbox" && fresh) {
                    return Err(AccountError::ReauthenticationRequired);
                }
            }
        }
        let hash = self.passwords.hash(&new).await?;
        let mut tx = pool.begin().await?;
        sqlx::query(
            "INSERT INTO credentials (reader_id, password_hash, set_at, confirmed_at) VALUES ($1, $2, $3, $3)
             ON CONFLICT (reader_id) DO UPDATE SET password_hash = $2, set_at = $3, confirmed_at = $3",
        )
        .bind(reader.as_uuid())
        .bind(&hash)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        // This session stays, tied to the new password if a password began it.
        sqlx::query(
            "UPDATE sessions SET credential_set_at = $2 WHERE id = $1 AND proof = 'password'",
        )
        .bind(session_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let ended = session::end_all(&mut tx, reader, Some(session_id), now).await?;
        tx.commit().await.map_err(kopilka_store::StoreError::from)?;
        tracing::info!(reader_id = %reader, "password changed");
        Ok(ended)
    }

    fn sign_in_link_lifetime(&self) -> time::Duration {
        time::Duration::minutes(i64::from(self.settings.magic_link_minutes))
    }

    fn verify_link_lifetime(&self) -> time::Duration {
        time::Duration::hours(i64::from(self.settings.verify_link_hours))
    }
}
