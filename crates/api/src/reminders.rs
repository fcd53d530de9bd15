//! "Remind me later" (no account needed), its one-click unsubscribe (RFC 8058), the banner's
//! state for every reader, and one-click plan links from emails.

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use kopilka_accounts::banner::{BannerChange, BannerState};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::identity::{ClientIp, MaybeSignedIn, cookie};
use crate::limits::Route;
use crate::me::{change_banner, conn};
use crate::{ApiJson, AppError, AppState, ErrorBody};

/// The anonymous reader's banner cookie (signed, host-only).
pub(crate) const BANNER_COOKIE: &str = "__Host-kopilka_banner";

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(remind_me))
        .routes(routes!(unsubscribe_page, unsubscribe))
        .routes(routes!(banner_state, set_banner))
        .routes(routes!(plan_link_page, use_plan_link))
}

/// `POST /v1/reminders`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ReminderBody {
    /// Where to send the reminder.
    email: String,
    /// `YYYY-MM-DD`, from tomorrow to a year ahead (configurable).
    remind_on: String,
}

/// `{"status": …}`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Status {
    /// What happened.
    pub status: String,
}

fn status(code: StatusCode, status: &str) -> (StatusCode, ApiJson<Status>) {
    (
        code,
        ApiJson(Status {
            status: status.into(),
        }),
    )
}

/// Stores a reminder (or moves the address's pending one). 202 `{"status":"scheduled"}`,
/// the same for every address.
#[utoipa::path(post, path = "/v1/reminders", tag = "reminders", request_body = ReminderBody,
    responses(
        (status = 202, description = "Scheduled", body = Status),
        (status = 422, description = "Invalid address or date out of range", body = ErrorBody)
    ))]
async fn remind_me(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<ReminderBody>,
) -> Result<(StatusCode, ApiJson<Status>), AppError> {
    let email = kopilka_accounts::parse_email(&body.email);
    let _admitted = state
        .limits
        .admit(Route::Reminder, ip, email.as_ref().ok())?;
    let email = email?;
    let remind_on = time::Date::parse(
        &body.remind_on,
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .map_err(|_| AppError::Unprocessable {
        code: "invalid_remind_on",
        message: "remind_on must be a date, YYYY-MM-DD".into(),
    })?;
    let today = OffsetDateTime::now_utc().date();
    let mut conn = conn(&state).await?;
    // Boxed: see `checkout`.
    Box::pin(
        state
            .accounts
            .remind_me(&mut conn, &email, remind_on, today),
    )
    .await?;
    Ok(status(StatusCode::ACCEPTED, "scheduled"))
}

/// The unsubscribe token.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct TokenQuery {
    /// From the reminder email's link.
    #[serde(default)]
    token: String,
}

/// The unsubscribe link's page: it asks for confirmation and changes nothing (a GET never
/// unsubscribes: mail scanners open links).
#[utoipa::path(get, path = "/v1/reminders/unsubscribe", tag = "reminders", params(TokenQuery),
    responses((status = 200, description = "A confirmation page", content_type = "text/html")))]
async fn unsubscribe_page(Query(query): Query<TokenQuery>) -> Response {
    crate::pages::UNSUBSCRIBE.with_token(&query.token)
}

/// One-click unsubscribe (RFC 8058: mail clients POST `List-Unsubscribe=One-Click`; any
/// body is accepted). Idempotent: 200 `{"status":"unsubscribed"}`.
#[utoipa::path(post, path = "/v1/reminders/unsubscribe", tag = "reminders", params(TokenQuery),
    responses(
        (status = 200, description = "Unsubscribed", body = Status),
        (status = 400, description = "Forged or malformed token", body = ErrorBody)
    ))]
async fn unsubscribe(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Query(query): Query<TokenQuery>,
) -> Result<(StatusCode, ApiJson<Status>), AppError> {
    let _admitted = state.limits.admit(Route::Reminder, ip, None)?;
    let mut conn = conn(&state).await?;
    kopilka_accounts::reminder::unsubscribe(&mut conn, &state.accounts.keys, &query.token).await?;
    Ok(status(StatusCode::OK, "unsubscribed"))
}

/// The banner's state: a signed-in reader's from the server, an anonymous reader's from
/// their signed cookie.
#[utoipa::path(get, path = "/v1/banner", tag = "reminders",
    responses((status = 200, body = Object)))]
async fn banner_state(
    State(state): State<AppState>,
    reader: MaybeSignedIn,
    headers: axum::http::HeaderMap,
) -> Result<ApiJson<BannerState>, AppError> {
    match reader.0 {
        Some(reader) => {
            let mut conn = conn(&state).await?;
            let mut current = kopilka_accounts::banner::load(&mut conn, reader.reader_id).await?;
            if !reader.sees_linked {
                current.gave_at = None;
            }
            Ok(ApiJson(current))
        }
        None => Ok(ApiJson(
            cookie(&headers, BANNER_COOKIE)
                .and_then(|c| BannerState::from_cookie(&state.accounts.keys, &c))
                .unwrap_or_default(),
        )),
    }
}

/// Closes, reopens or snoozes the banner: `{"closed": true}`, `{"snoozed_until": "…"}`.
/// Stored on the server for a signed-in reader (the same on every device), in a signed
/// cookie for an anonymous one.
#[utoipa::path(put, path = "/v1/banner", tag = "reminders", request_body = Object,
    responses((status = 200, body = Object), (status = 422, body = ErrorBody)))]
async fn set_banner(
    State(state): State<AppState>,
    reader: MaybeSignedIn,
    headers: axum::http::HeaderMap,
    ApiJson(change): ApiJson<BannerChange>,
) -> Result<Response, AppError> {
    if let Some(reader) = reader.0 {
        return Ok(ApiJson(change_banner(&state, &reader, change).await?).into_response());
    }
    let current = cookie(&headers, BANNER_COOKIE)
        .and_then(|c| BannerState::from_cookie(&state.accounts.keys, &c))
        .unwrap_or_default();
    let next = current.after(change, OffsetDateTime::now_utc())?;
    let value = crate::identity::host_cookie(
        BANNER_COOKIE,
        &next.to_cookie(&state.accounts.keys),
        OffsetDateTime::now_utc() + time::Duration::days(400),
    );
    let mut response = ApiJson(next).into_response();
    response.headers_mut().insert(header::SET_COOKIE, value);
    Ok(response)
}

/// The page a one-click plan link opens: it asks for confirmation.
#[utoipa::path(get, path = "/v1/plan-links/{token}", tag = "self-service",
    params(("token" = String, Path, description = "From the email")),
    responses((status = 200, description = "A confirmation page", content_type = "text/html")))]
async fn plan_link_page(Path(token): Path<String>) -> Response {
    crate::pages::PLAN_LINK.with_token(&token)
}

/// Does what a one-click plan link says, without signing in (the link is signed and
/// expires): cancel at period end (answers the plan), update the card (answers `{"url"}`,
/// Stripe's page), or complete a renewal's payment (answers `{"url"}`, the open invoice's
/// hosted page read live from Stripe; 410 `nothing_to_pay` once it is paid). A link works once (410 `link_used` after), and only while
/// the plan runs and its reader is not erased (410 `link_revoked`).
#[utoipa::path(post, path = "/v1/plan-links/{token}", tag = "self-service",
    params(("token" = String, Path, description = "From the email")),
    responses((status = 200, body = Object), (status = 400, body = ErrorBody),
        (status = 410, description = "Used before, or the plan ended / the reader was erased", body = ErrorBody)))]
async fn use_plan_link(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path(token): Path<String>,
) -> Result<Response, AppError> {
    let _admitted = state.limits.admit(Route::PlanLink, ip, None)?;
    // A forged or expired link is 400 whether or not payments are configured: the token is
    // checked before anything needs Stripe.
    if kopilka_accounts::plan_link::verify(&state.accounts.keys, &token, OffsetDateTime::now_utc())
        .is_none()
    {
        return Err(kopilka_recurring::RecurringError::LinkInvalid.into());
    }
    let stripe = crate::me::stripe(&state)?;
    let done = kopilka_recurring::use_plan_link(
        &state.pool,
        stripe,
        &state.accounts.keys,
        &token,
        OffsetDateTime::now_utc(),
        state.settings.public_url.as_str(),
    )
    .await?;
    Ok(match done {
        kopilka_recurring::PlanLinkDone::Cancelled(plan) => {
            ApiJson(kopilka_recurring::privacy::PlanExport::from(plan)).into_response()
        }
        kopilka_recurring::PlanLinkDone::CardPage(url)
        | kopilka_recurring::PlanLinkDone::InvoicePage(url) => {
            ApiJson(crate::me::Redirect { url }).into_response()
        }
    })
}
