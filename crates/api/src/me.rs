//! Self-service for a signed-in reader: profile, giving history, plans, sessions, banner
//! state, GDPR export and erasure. What is linked to the address (contributions, plans,
//! reminders, gifts) shows only once an emailed link proved the address.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kopilka_accounts::banner::{self, BannerChange, BannerState};
use kopilka_domain::{Interval, Money};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::identity::{SignedIn, cleared_session_cookie};
use crate::{ApiJson, AppError, AppState, ErrorBody};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(me, update_me, erase_me))
        .routes(routes!(my_contributions))
        .routes(routes!(my_sessions, sign_out_everywhere))
        .routes(routes!(change_password))
        .routes(routes!(revoke_session))
        .routes(routes!(change_plan))
        .routes(routes!(cancel_plan))
        .routes(routes!(resume_plan))
        .routes(routes!(update_card))
        .routes(routes!(export_me))
}

/// The Stripe client, or 502 when none is configured.
pub(crate) fn stripe(state: &AppState) -> Result<&kopilka_stripe::StripeClient, AppError> {
    state.stripe.as_ref().ok_or(AppError::Upstream {
        code: "payment_provider_not_configured",
        message: "payments are not configured".into(),
        retry: false,
    })
}

/// A pooled connection, or 503 when Postgres is unreachable.
pub(crate) async fn conn(state: &AppState) -> Result<kopilka_store::PooledConnection, AppError> {
    state
        .pool
        .acquire()
        .await
        .map_err(|e| AppError::from(kopilka_store::StoreError::from(e)))
}

/// `GET /v1/me`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Me {
    /// The reader's id.
    pub id: String,
    /// Their address.
    pub email: Option<String>,
    /// Their name.
    pub name: Option<String>,
    /// `en` or `ru`.
    pub locale: String,
    /// Whether an emailed link proved the address.
    pub verified: bool,
    /// Whether this session sees what is linked to the address.
    pub sees_linked: bool,
    /// The banner's state, the same on every device (`gave_at` only when `sees_linked`).
    #[schema(value_type = Object)]
    pub banner: BannerState,
    /// Pending and past reminders (only when `sees_linked`).
    #[schema(value_type = Vec<Object>)]
    pub reminders: Vec<kopilka_accounts::reminder::Reminder>,
}

/// The reader's profile, banner state and reminders.
#[utoipa::path(get, path = "/v1/me", tag = "self-service",
    responses((status = 200, body = Me), (status = 401, body = ErrorBody)))]
async fn me(State(state): State<AppState>, reader: SignedIn) -> Result<ApiJson<Me>, AppError> {
    let mut conn = conn(&state).await?;
    let found = kopilka_accounts::reader::by_id(&mut conn, reader.reader_id)
        .await?
        .ok_or(AppError::NotFound)?;
    let mut banner = banner::load(&mut conn, reader.reader_id).await?;
    let reminders = if reader.sees_linked {
        kopilka_accounts::reminder::of_reader(&mut conn, reader.reader_id).await?
    } else {
        banner.gave_at = None;
        Vec::new()
    };
    Ok(ApiJson(Me {
        id: reader.reader_id.to_string(),
        email: found.email.as_ref().map(|e| e.expose().to_owned()),
        // What others may have told us about the address shows only to its proven owner.
        name: found.name.filter(|_| reader.sees_linked),
        locale: found.locale.to_string(),
        verified: reader.sees_linked && found.verified_at.is_some(),
        sees_linked: reader.sees_linked,
        banner,
        reminders,
    }))
}

/// `PATCH /v1/me`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct MeChange {
    /// A new name (at most 200 characters).
    #[serde(default)]
    name: Option<String>,
    /// `en` or `ru`.
    #[serde(default)]
    locale: Option<String>,
}

/// Changes the name or language.
#[utoipa::path(patch, path = "/v1/me", tag = "self-service", request_body = MeChange,
    responses((status = 204), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_me(
    State(state): State<AppState>,
    reader: SignedIn,
    ApiJson(change): ApiJson<MeChange>,
) -> Result<StatusCode, AppError> {
    if !reader.sees_linked {
        return Err(not_proven());
    }
    let name = kopilka_accounts::reader::parse_name(change.name.as_deref())?;
    let locale = change
        .locale
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e: kopilka_domain::LocaleError| AppError::Unprocessable {
            code: "invalid_locale",
            message: e.to_string(),
        })?;
    let mut conn = conn(&state).await?;
    kopilka_accounts::reader::update_profile(&mut conn, reader.reader_id, name.as_deref(), locale)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/me/contributions`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct History {
    /// Whether the address is proven for this session; when not, the lists are empty
    /// whatever the address has.
    pub sees_linked: bool,
    /// Contributions, newest first, each with its money movements (the receipts' data).
    #[schema(value_type = Vec<Object>)]
    pub contributions: Vec<kopilka_contributions::history::ContributionRecord>,
    /// Monthly and annual plans.
    #[schema(value_type = Vec<Object>)]
    pub plans: Vec<kopilka_recurring::privacy::PlanExport>,
}

/// The reader's giving history and plans.
#[utoipa::path(get, path = "/v1/me/contributions", tag = "self-service",
    responses((status = 200, body = History), (status = 401, body = ErrorBody)))]
async fn my_contributions(
    State(state): State<AppState>,
    reader: SignedIn,
) -> Result<ApiJson<History>, AppError> {
    if !reader.sees_linked {
        return Ok(ApiJson(History {
            sees_linked: false,
            contributions: Vec::new(),
            plans: Vec::new(),
        }));
    }
    let mut conn = conn(&state).await?;
    let contributions = kopilka_contributions::history::of_reader(&mut conn, reader.reader_id)
        .await
        .map_err(AppError::from)?;
    let plans = kopilka_recurring::plans_of_reader(&mut conn, reader.reader_id)
        .await
        .map_err(AppError::from)?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(ApiJson(History {
        sees_linked: true,
        contributions,
        plans,
    }))
}

/// The reader's live sessions (`current` marks this one).
#[utoipa::path(get, path = "/v1/me/sessions", tag = "self-service",
    responses((status = 200, body = Vec<Object>), (status = 401, body = ErrorBody)))]
async fn my_sessions(
    State(state): State<AppState>,
    reader: SignedIn,
) -> Result<ApiJson<Vec<kopilka_accounts::session::SessionInfo>>, AppError> {
    let mut conn = conn(&state).await?;
    let mut sessions = kopilka_accounts::session::list(
        &mut conn,
        reader.reader_id,
        reader.session_id,
        OffsetDateTime::now_utc(),
    )
    .await?;
    // A session that has not proven the address sees only itself.
    if !reader.sees_linked {
        sessions.retain(|s| s.current);
    }
    Ok(ApiJson(sessions))
}

/// Signs out everywhere: every session of the reader ends, this one too, and its cookie is
/// cleared.
#[utoipa::path(delete, path = "/v1/me/sessions", tag = "self-service",
    responses((status = 204, description = "Every session ended"), (status = 401, body = ErrorBody)))]
async fn sign_out_everywhere(
    State(state): State<AppState>,
    reader: SignedIn,
) -> Result<Response, AppError> {
    let mut conn = conn(&state).await?;
    kopilka_accounts::session::end_all(
        &mut conn,
        reader.reader_id,
        None,
        OffsetDateTime::now_utc(),
    )
    .await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cleared_session_cookie());
    Ok(response)
}

/// `POST /v1/me/password`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct PasswordChange {
    /// The current password; may be left out within the sign-in link's lifetime after
    /// signing in by an emailed link (how a forgotten password is reset).
    #[serde(default)]
    current_password: Option<String>,
    /// The new one: 8 to 256 characters, not a common breached password.
    new_password: String,
}

/// What a password change did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PasswordChanged {
    /// How many other sessions ended (this one stays).
    sessions_ended: u64,
}

/// Changes the reader's password; every other session ends.
#[utoipa::path(post, path = "/v1/me/password", tag = "self-service", request_body = PasswordChange,
    responses(
        (status = 200, body = PasswordChanged),
        (status = 401, description = "Not signed in, or the current password is wrong", body = ErrorBody),
        (status = 403, description = "reauthentication_required: give the current password or sign in by a fresh emailed link", body = ErrorBody),
        (status = 422, description = "The new password is too short, too long or too common", body = ErrorBody)
    ))]
async fn change_password(
    State(state): State<AppState>,
    reader: SignedIn,
    ApiJson(body): ApiJson<PasswordChange>,
) -> Result<ApiJson<PasswordChanged>, AppError> {
    let sessions_ended = state
        .accounts
        .change_password(
            &state.pool,
            reader.session_id,
            reader.reader_id,
            body.current_password.as_deref(),
            &body.new_password,
            OffsetDateTime::now_utc(),
        )
        .await?;
    Ok(ApiJson(PasswordChanged { sessions_ended }))
}

/// Ends one of the reader's sessions (e.g. a lost phone's).
#[utoipa::path(delete, path = "/v1/me/sessions/{id}", tag = "self-service",
    params(("id" = String, Path, description = "The session's id")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn revoke_session(
    State(state): State<AppState>,
    reader: SignedIn,
    Path(id): Path<uuid::Uuid>,
) -> Result<StatusCode, AppError> {
    if !reader.sees_linked && id != reader.session_id {
        return Err(AppError::NotFound);
    }
    let mut conn = conn(&state).await?;
    if kopilka_accounts::session::revoke(&mut conn, reader.reader_id, id, OffsetDateTime::now_utc())
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AppError::NotFound)
    }
}

/// `PATCH /v1/me/recurring/{id}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct PlanAmount {
    /// The new amount per interval, minor units, in the plan's currency.
    amount_minor: i64,
    /// `month` or `year` (default: unchanged).
    #[serde(default)]
    interval: Option<String>,
}

/// `POST /v1/me/recurring/{id}/cancel`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct CancelWhen {
    /// `period_end` (default: the reader keeps what they paid for) or `now`.
    #[serde(default)]
    at: Option<String>,
}

/// The reader's plan `id`, or 404 (also when the session may not see linked data).
async fn own_plan(
    state: &AppState,
    reader: &SignedIn,
    id: uuid::Uuid,
) -> Result<kopilka_recurring::Plan, AppError> {
    if !reader.sees_linked {
        return Err(AppError::NotFound);
    }
    let mut conn = conn(state).await?;
    kopilka_recurring::plans_of_reader(&mut conn, reader.reader_id)
        .await?
        .into_iter()
        .find(|p| p.id == id)
        .ok_or(AppError::NotFound)
}

/// The change's idempotency key: the request's `Idempotency-Key`, else a fresh one.
fn change_id(headers: &HeaderMap, plan: uuid::Uuid, what: &str) -> String {
    headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| (1..=200).contains(&k.len()))
        .map_or_else(
            || format!("{what}-{plan}-{}", uuid::Uuid::now_v7()),
            |k| format!("{what}-{plan}-{k}"),
        )
}

async fn apply_change(
    state: &AppState,
    plan: uuid::Uuid,
    change: kopilka_recurring::PlanChange,
    change_id: &str,
) -> Result<ApiJson<kopilka_recurring::privacy::PlanExport>, AppError> {
    let stripe = stripe(state)?;
    let plan = kopilka_recurring::change_plan(&state.pool, stripe, plan, change, change_id).await?;
    Ok(ApiJson(plan.into()))
}

/// Changes the amount (and optionally monthly ↔ annual) through Stripe's subscription
/// update: no second plan, no double charge.
#[utoipa::path(patch, path = "/v1/me/recurring/{id}", tag = "self-service", request_body = PlanAmount,
    params(("id" = String, Path, description = "The plan's id")),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn change_plan(
    State(state): State<AppState>,
    reader: SignedIn,
    Path(id): Path<uuid::Uuid>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<PlanAmount>,
) -> Result<ApiJson<kopilka_recurring::privacy::PlanExport>, AppError> {
    let plan = own_plan(&state, &reader, id).await?;
    let interval = match body.interval.as_deref() {
        None => plan.interval,
        Some(raw) => raw
            .parse::<Interval>()
            .ok()
            .filter(|i| *i != Interval::Once)
            .ok_or_else(|| AppError::Unprocessable {
                code: "invalid_interval",
                message: "interval must be month or year".into(),
            })?,
    };
    let currency = plan.amount.currency();
    let limits = state
        .settings
        .offer
        .currencies
        .get(&currency)
        .map(|offer| offer.interval(interval));
    if let Some(limits) = limits
        && !(limits.minimum_minor..=limits.maximum_minor).contains(&body.amount_minor)
    {
        return Err(AppError::Unprocessable {
            code: "amount_out_of_range",
            message: format!(
                "the {interval} amount must be between {} and {}",
                Money::new(limits.minimum_minor, currency),
                Money::new(limits.maximum_minor, currency)
            ),
        });
    }
    let amount = Money::new(body.amount_minor, currency);
    // Whatever the offer says now, nothing Stripe would refuse is sent to it.
    amount
        .check_chargeable()
        .map_err(|refusal| AppError::Unprocessable {
            code: refusal.code(),
            message: refusal.to_string(),
        })?;
    let change = kopilka_recurring::PlanChange::Amount { amount, interval };
    apply_change(&state, id, change, &change_id(&headers, id, "amount")).await
}

/// Cancels at the end of the paid period (default) or now.
#[utoipa::path(post, path = "/v1/me/recurring/{id}/cancel", tag = "self-service", request_body = CancelWhen,
    params(("id" = String, Path, description = "The plan's id")),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn cancel_plan(
    State(state): State<AppState>,
    reader: SignedIn,
    Path(id): Path<uuid::Uuid>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<ApiJson<kopilka_recurring::privacy::PlanExport>, AppError> {
    // The body is optional: none means "at the period's end".
    let when: CancelWhen = if body.iter().all(u8::is_ascii_whitespace) {
        CancelWhen::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| AppError::Unprocessable {
            code: "invalid_body",
            message: e.to_string(),
        })?
    };
    own_plan(&state, &reader, id).await?;
    let change = match when.at.as_deref() {
        None | Some("period_end") => kopilka_recurring::PlanChange::CancelAtPeriodEnd,
        Some("now") => kopilka_recurring::PlanChange::CancelNow,
        Some(_) => {
            return Err(AppError::Unprocessable {
                code: "invalid_cancel_at",
                message: "at must be period_end or now".into(),
            });
        }
    };
    apply_change(&state, id, change, &change_id(&headers, id, "cancel")).await
}

/// Takes back a cancellation at period end.
#[utoipa::path(post, path = "/v1/me/recurring/{id}/resume", tag = "self-service",
    params(("id" = String, Path, description = "The plan's id")),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn resume_plan(
    State(state): State<AppState>,
    reader: SignedIn,
    Path(id): Path<uuid::Uuid>,
    headers: HeaderMap,
) -> Result<ApiJson<kopilka_recurring::privacy::PlanExport>, AppError> {
    own_plan(&state, &reader, id).await?;
    apply_change(
        &state,
        id,
        kopilka_recurring::PlanChange::Resume,
        &change_id(&headers, id, "resume"),
    )
    .await
}

/// `{"url": …}`: where to send the reader.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Redirect {
    /// Stripe's page.
    pub url: String,
}

/// Stripe's page where the reader updates the card their plan charges (a Billing Portal
/// session); they return to `public_url`.
#[utoipa::path(post, path = "/v1/me/recurring/{id}/card", tag = "self-service",
    params(("id" = String, Path, description = "The plan's id")),
    responses((status = 200, body = Redirect), (status = 404, body = ErrorBody)))]
async fn update_card(
    State(state): State<AppState>,
    reader: SignedIn,
    Path(id): Path<uuid::Uuid>,
) -> Result<ApiJson<Redirect>, AppError> {
    own_plan(&state, &reader, id).await?;
    card_page(&state, id).await
}

/// Stripe's card page for plan `id`.
pub(crate) async fn card_page(
    state: &AppState,
    id: uuid::Uuid,
) -> Result<ApiJson<Redirect>, AppError> {
    let stripe = stripe(state)?;
    let url = kopilka_recurring::card_update_page(
        &state.pool,
        stripe,
        id,
        state.settings.public_url.as_str(),
    )
    .await?;
    Ok(ApiJson(Redirect { url }))
}

/// Everything Kopilka holds about the reader, as JSON (GDPR art. 15 and 20). A session that
/// has not proven the address gets its account only.
#[utoipa::path(get, path = "/v1/me/export", tag = "self-service",
    responses((status = 200, body = Object), (status = 401, body = ErrorBody)))]
async fn export_me(State(state): State<AppState>, reader: SignedIn) -> Result<Response, AppError> {
    let mut conn = conn(&state).await?;
    let body = if reader.sees_linked {
        serde_json::to_value(
            kopilka_jobs::privacy::export_reader(&mut conn, reader.reader_id).await?,
        )
    } else {
        // Only what this session itself brought: the address it signed up with.
        let account = kopilka_accounts::privacy::export(&mut conn, reader.reader_id).await?;
        serde_json::to_value(
            serde_json::json!({"account": {"id": account.id, "email": account.email}}),
        )
    }
    .map_err(AppError::internal)?;
    Ok((
        [
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"kopilka-export.json\"",
            ),
        ],
        axum::Json(body),
    )
        .into_response())
}

/// 403 for a session that has not proven the address.
fn not_proven() -> AppError {
    AppError::Forbidden {
        code: "address_not_verified",
        message: "confirm the address with an emailed link first".into(),
    }
}

/// Erases the reader (GDPR art. 17), ending everything first: open checkouts expire, live
/// plans are cancelled at Stripe at once and their Stripe customers deleted; then every row
/// tied to them goes or loses its link (the ledger keeps amounts, currencies, dates and
/// Stripe ids), and their supporter tokens stop working. Only a session that proved the
/// address may do it. If Stripe fails, nothing is erased (503) and a retry is safe.
#[utoipa::path(delete, path = "/v1/me", tag = "self-service",
    responses((status = 200, body = Object, description = "`{erased, plans_cancelled, customers_deleted, checkouts_expired, stripe_retains:[{object, why}]}`"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn erase_me(State(state): State<AppState>, reader: SignedIn) -> Result<Response, AppError> {
    if !reader.sees_linked {
        return Err(not_proven());
    }
    let erasure = kopilka_jobs::privacy::erase_reader(
        &state.pool,
        state.stripe.as_ref(),
        &state.accounts.keys,
        reader.reader_id,
        OffsetDateTime::now_utc(),
        time::Duration::hours(i64::from(state.settings.paywall.token_hours)),
    )
    .await?;
    state.revoked.revoke(reader.reader_id);
    let mut response = ([(header::CACHE_CONTROL, "no-store")], axum::Json(erasure)).into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cleared_session_cookie());
    Ok(response)
}

/// `PUT /v1/banner` for a signed-in reader.
pub(crate) async fn change_banner(
    state: &AppState,
    reader: &SignedIn,
    change: BannerChange,
) -> Result<BannerState, AppError> {
    let mut conn = conn(state).await?;
    let mut next = banner::change(
        &mut conn,
        reader.reader_id,
        change,
        OffsetDateTime::now_utc(),
    )
    .await?;
    if !reader.sees_linked {
        next.gave_at = None;
    }
    Ok(next)
}
