//! Pass codes, giving without an account: `POST /v1/passes/redeem` starts the pass a code
//! names and answers with the supporter token; `POST /v1/passes/revoke` kills a code nobody
//! redeemed; `GET /v1/passes/entitlements` renews an anonymous holder's supporter token.
//! Codes are throttled like passwords (a failed attempt counts on the client's budget that
//! password sign-ins count on) and limited like every public write.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use kopilka_accounts::throttle::{self, LoginKeys};
use kopilka_contributions::passes::{self, CodeRefusal};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::identity::{ClientIp, MaybeSignedIn};
use crate::limits::Route;
use crate::{ApiJson, AppError, AppState, ErrorBody};

/// The anonymous holder's cookie (host-only): the random holder token, until the pass ends.
pub(crate) const PASS_COOKIE: &str = "__Host-kopilka_pass";

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(redeem))
        .routes(routes!(revoke))
        .routes(routes!(pass_entitlements))
}

/// `{code, attach?}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RedeemBody {
    /// The code, as typed (case, spaces and dashes do not matter).
    code: String,
    /// Signed in: attach the pass to the account (it then follows the reader to any device
    /// they sign in on). Otherwise the pass is held by this browser alone.
    #[serde(default)]
    attach: bool,
}

/// `{code}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RevokeBody {
    /// The code.
    code: String,
}

/// `{"revoked": true}`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Revoked {
    /// Always true.
    pub revoked: bool,
}

fn refused(refusal: CodeRefusal) -> AppError {
    let (code, message) = (refusal.code(), refusal.message().to_owned());
    match refusal {
        CodeRefusal::Unknown => AppError::Unprocessable { code, message },
        CodeRefusal::NotYetPaid | CodeRefusal::Redeemed => AppError::Conflict { code, message },
        CodeRefusal::Revoked | CodeRefusal::Expired => AppError::Gone { code, message },
    }
}

/// Counts one code attempt from `ip` (as a failure until it succeeds), or refuses it while
/// the client is backing off.
async fn reserve(state: &AppState, keys: &LoginKeys, now: OffsetDateTime) -> Result<(), AppError> {
    let mut tx = state
        .pool
        .begin()
        .await
        .map_err(kopilka_store::StoreError::from)?;
    if let Some(retry_after) =
        throttle::reserve(&mut tx, keys, &state.settings.accounts, now).await?
    {
        return Err(kopilka_accounts::AccountError::Throttled { retry_after }.into());
    }
    tx.commit().await.map_err(kopilka_store::StoreError::from)?;
    Ok(())
}

/// Redeems a pass code: the pass starts now (for a signed-in reader who attaches it, after
/// the end of the pass they hold) and the answer is a supporter token until it ends, also
/// set as the `__Host-kopilka_supporter` cookie. An anonymous holder also gets the
/// `__Host-kopilka_pass` cookie (and `holder_token` in the answer, for apps), which renews
/// the token at `GET /v1/passes/entitlements`. Nothing in the answer names the buyer.
#[utoipa::path(post, path = "/v1/passes/redeem", tag = "passes", request_body = RedeemBody,
    responses(
        (status = 200, description = "Redeemed: the supporter token", body = crate::entitlements::Entitlements),
        (status = 422, description = "`unknown_code`", body = ErrorBody),
        (status = 409, description = "`code_not_yet_paid`, `code_already_redeemed`", body = ErrorBody),
        (status = 410, description = "`code_revoked`, `code_expired`", body = ErrorBody),
        (status = 429, description = "Too many attempts (`too_many_attempts`) or requests (`rate_limited`); see Retry-After", body = ErrorBody)
    ))]
async fn redeem(
    State(state): State<AppState>,
    reader: MaybeSignedIn,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<RedeemBody>,
) -> Result<Response, AppError> {
    let _admitted = state.limits.admit(Route::PassCode, ip, None)?;
    let now = OffsetDateTime::now_utc();
    let keys = LoginKeys::for_code(&state.accounts.keys, ip);
    reserve(&state, &keys, now).await?;
    let holder = reader
        .0
        .filter(|reader| body.attach && reader.sees_linked)
        .map(|reader| reader.reader_id);
    let mut tx = state
        .pool
        .begin()
        .await
        .map_err(kopilka_store::StoreError::from)?;
    let redeemed = passes::redeem(&mut tx, &state.accounts.keys, &body.code, holder, now)
        .await?
        .map_err(refused)?;
    throttle::succeeded(&mut tx, &keys, &state.settings.accounts).await?;
    let status = match holder {
        Some(reader) => Some(
            kopilka_recurring::supporter_status(
                &mut tx,
                reader,
                now,
                state.settings.offer.supporter_days,
            )
            .await?,
        ),
        None => Some(pass_status(redeemed.ends_at)),
    };
    tx.commit().await.map_err(kopilka_store::StoreError::from)?;
    let sub = holder.map_or_else(|| pass_sub(redeemed.pass_id), |r| r.to_string());
    let mut response = crate::entitlements::signed_answer(
        &state,
        sub,
        status,
        None,
        redeemed.holder_token.clone(),
        now,
    )
    .await?;
    if let Some(token) = &redeemed.holder_token {
        response.headers_mut().append(
            header::SET_COOKIE,
            crate::identity::host_cookie(PASS_COOKIE, token, redeemed.ends_at),
        );
    }
    Ok(response)
}

/// The supporter token's `sub` for an anonymous holder: the pass, never a person.
fn pass_sub(pass: uuid::Uuid) -> String {
    format!("pass_{}", pass.simple())
}

fn pass_status(ends_at: OffsetDateTime) -> kopilka_recurring::SupporterStatus {
    kopilka_recurring::SupporterStatus {
        supporter: true,
        interval: Some(kopilka_domain::Interval::Once),
        paid_through: Some(ends_at),
        pass: true,
    }
}

/// Revokes a code nobody has redeemed (its buyer may fear it was seen, or change their
/// mind); the money stays given. Throttled like redemption.
#[utoipa::path(post, path = "/v1/passes/revoke", tag = "passes", request_body = RevokeBody,
    responses(
        (status = 200, description = "Revoked", body = Revoked),
        (status = 422, description = "`unknown_code`", body = ErrorBody),
        (status = 409, description = "`code_already_redeemed`", body = ErrorBody),
        (status = 410, description = "`code_revoked`", body = ErrorBody),
        (status = 429, description = "Too many attempts or requests; see Retry-After", body = ErrorBody)
    ))]
async fn revoke(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<RevokeBody>,
) -> Result<(StatusCode, ApiJson<Revoked>), AppError> {
    let _admitted = state.limits.admit(Route::PassCode, ip, None)?;
    let now = OffsetDateTime::now_utc();
    let keys = LoginKeys::for_code(&state.accounts.keys, ip);
    reserve(&state, &keys, now).await?;
    let mut tx = state
        .pool
        .begin()
        .await
        .map_err(kopilka_store::StoreError::from)?;
    passes::revoke(&mut tx, &state.accounts.keys, &body.code, now)
        .await?
        .map_err(refused)?;
    throttle::succeeded(&mut tx, &keys, &state.settings.accounts).await?;
    tx.commit().await.map_err(kopilka_store::StoreError::from)?;
    Ok((StatusCode::OK, ApiJson(Revoked { revoked: true })))
}

/// A fresh supporter token for the anonymous holder of a running pass (the
/// `__Host-kopilka_pass` cookie, or `Authorization: Bearer <holder_token>`); 401
/// `invalid_pass` when there is none, or the pass ended or was voided.
#[utoipa::path(get, path = "/v1/passes/entitlements", tag = "passes",
    responses((status = 200, body = crate::entitlements::Entitlements), (status = 401, body = ErrorBody)))]
async fn pass_entitlements(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let token = crate::identity::cookie(&headers, PASS_COOKIE).or_else(|| {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned)
    });
    let invalid = || AppError::Unauthorized {
        code: "invalid_pass",
        message: "no running pass is held here".into(),
    };
    // A holder token is 43 base64url characters (256 random bits): anything else is refused
    // without a query, so junk costs nothing.
    let token = token
        .filter(|t| {
            t.len() == 43
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .ok_or_else(invalid)?;
    let now = OffsetDateTime::now_utc();
    let mut conn = crate::me::conn(&state).await?;
    let (pass, ends_at) = passes::held(&mut conn, &state.accounts.keys, &token, now)
        .await?
        .ok_or_else(invalid)?;
    drop(conn);
    crate::entitlements::signed_answer(
        &state,
        pass_sub(pass),
        Some(pass_status(ends_at)),
        None,
        None,
        now,
    )
    .await
}
