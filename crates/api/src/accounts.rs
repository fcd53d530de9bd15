//! Sign-up, sign-in (password or emailed link) and sign-out. Sign-up and link requests
//! answer 202 `{"status":"check_email"}` whether or not the address has an account.

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use kopilka_accounts::{Password, SignUp, parse_email, reader::parse_name};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::identity::{ClientIp, SignedIn, cleared_session_cookie, session_cookie};
use crate::limits::Route;
use crate::{ApiJson, AppError, AppState, ErrorBody};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(sign_up))
        .routes(routes!(sign_in, sign_out))
        .routes(routes!(request_link, link_page))
        .routes(routes!(consume_link))
}

/// `POST /v1/accounts`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct SignUpBody {
    /// The address.
    email: String,
    /// 8 to 256 characters; no other rules.
    password: String,
    /// Optional.
    #[serde(default)]
    name: Option<String>,
    /// `en` (default) or `ru`.
    #[serde(default)]
    locale: Option<String>,
}

/// `POST /v1/sessions`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct SignInBody {
    /// The address.
    email: String,
    /// The password.
    password: String,
}

/// `POST /v1/sessions/magic-link`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct LinkRequestBody {
    /// The address.
    email: String,
}

/// `POST /v1/sessions/magic-link/consume`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ConsumeBody {
    /// The `token` of the emailed link.
    token: String,
    /// With a verification link: the password chosen at sign-up, which this confirms.
    /// Without it the reader is signed in by the mailbox and that password is dropped.
    #[serde(default)]
    password: Option<String>,
}

/// `{"status":"check_email"}`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheckEmail {
    /// Always `check_email`.
    pub status: String,
}

/// A new session: the token (use it as `Authorization: Bearer`) and when it ends; the same
/// token is set as the `__Host-kopilka_session` cookie.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionStarted {
    /// The bearer token.
    pub token: String,
    /// RFC 3339.
    pub expires_at: String,
    /// Whether this confirmed the password chosen at sign-up (only a verification link used
    /// with that password does); absent for password sign-ins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_confirmed: Option<bool>,
}

fn check_email() -> (StatusCode, ApiJson<CheckEmail>) {
    (
        StatusCode::ACCEPTED,
        ApiJson(CheckEmail {
            status: "check_email".into(),
        }),
    )
}

fn started(
    session: &kopilka_accounts::session::NewSession,
    password_confirmed: Option<bool>,
) -> Response {
    let expires_at = session
        .expires_at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut response = (
        StatusCode::CREATED,
        ApiJson(SessionStarted {
            token: session.token.expose_secret().to_owned(),
            expires_at,
            password_confirmed,
        }),
    )
        .into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(&session.token, session.expires_at),
    );
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        "no-store".parse().unwrap_or_else(|_| unreachable!()),
    );
    response
}

/// Signs up. Always 202 "check your email": a new address gets a verification link, an
/// address with an account gets a sign-in link. The password works once the verification
/// link is used with it (`POST /v1/sessions/magic-link/consume {token, password}`), which
/// proves that whoever chose it also reads the mailbox.
#[utoipa::path(post, path = "/v1/accounts", tag = "accounts", request_body = SignUpBody,
    responses(
        (status = 202, description = "Check your email", body = CheckEmail),
        (status = 422, description = "Invalid address, password length, name or locale", body = ErrorBody)
    ))]
async fn sign_up(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<SignUpBody>,
) -> Result<(StatusCode, ApiJson<CheckEmail>), AppError> {
    let email = parse_email(&body.email);
    let _admitted = state.limits.admit(Route::SignUp, ip, email.as_ref().ok())?;
    let request = SignUp {
        email: email?,
        password: Password::parse(&body.password)?,
        name: parse_name(body.name.as_deref())?,
        locale: match body.locale.as_deref() {
            None => kopilka_domain::Locale::default(),
            Some(raw) => {
                raw.parse()
                    .map_err(|e: kopilka_domain::LocaleError| AppError::Unprocessable {
                        code: "invalid_locale",
                        message: e.to_string(),
                    })?
            }
        },
    };
    // Boxed: see `checkout` (the hasher's and the mail job's state would ride in every
    // layer's copy of this handler's future).
    Box::pin(
        state
            .accounts
            .sign_up(&state.pool, &request, OffsetDateTime::now_utc()),
    )
    .await?;
    Ok(check_email())
}

/// Signs in with a password. Throttled per address and per IP: 429 with `Retry-After`
/// (an emailed link still works).
#[utoipa::path(post, path = "/v1/sessions", tag = "accounts", request_body = SignInBody,
    responses(
        (status = 201, description = "Signed in; also sets the session cookie", body = SessionStarted),
        (status = 401, description = "Wrong address or password", body = ErrorBody),
        (status = 429, description = "Too many failures; wait or use an emailed link", body = ErrorBody)
    ))]
async fn sign_in(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<SignInBody>,
) -> Result<Response, AppError> {
    let email = parse_email(&body.email);
    let _admitted = state.limits.admit(Route::SignIn, ip, email.as_ref().ok())?;
    let email = email?;
    // Boxed: see `checkout`.
    let session = Box::pin(state.accounts.sign_in_with_password(
        &state.pool,
        &email,
        &body.password,
        ip,
        OffsetDateTime::now_utc(),
    ))
    .await?;
    Ok(started(&session, None))
}

/// Signs out: the session ends and its cookie is cleared.
#[utoipa::path(delete, path = "/v1/sessions", tag = "accounts",
    responses((status = 204, description = "Signed out"), (status = 401, description = "Not signed in", body = ErrorBody)))]
async fn sign_out(State(state): State<AppState>, reader: SignedIn) -> Result<Response, AppError> {
    let mut conn = state
        .pool
        .acquire()
        .await
        .map_err(|e| AppError::from(kopilka_store::StoreError::from(e)))?;
    kopilka_accounts::session::end(&mut conn, reader.session_id, OffsetDateTime::now_utc()).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cleared_session_cookie());
    Ok(response)
}

/// Emails a sign-in link (15 minutes, single use) if the address has an account. Always
/// 202 "check your email", answered before the address is even looked up.
#[utoipa::path(post, path = "/v1/sessions/magic-link", tag = "accounts", request_body = LinkRequestBody,
    responses(
        (status = 202, description = "Check your email", body = CheckEmail),
        (status = 422, description = "Not an address", body = ErrorBody)
    ))]
async fn request_link(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<LinkRequestBody>,
) -> Result<(StatusCode, ApiJson<CheckEmail>), AppError> {
    let email = parse_email(&body.email);
    let _admitted = state
        .limits
        .admit(Route::SignInLink, ip, email.as_ref().ok())?;
    let email = email?;
    // Whether the address has a reader decides how much work follows; doing it after the
    // answer makes the answer take the same time either way. At most
    // `limits.background_tasks` such requests run at once; past that, 503 `busy` (never an
    // unbounded pile of tasks, and never a 202 whose work is then dropped).
    let permit = state.limits.task()?;
    tokio::spawn(async move {
        let _permit = permit;
        if let Err(err) = state
            .accounts
            .request_sign_in_link(&state.pool, &email, OffsetDateTime::now_utc())
            .await
        {
            tracing::warn!(error = %err, "sign-in link not issued");
        }
    });
    Ok(check_email())
}

/// The token of a link page.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct LinkQuery {
    /// The emailed link's token.
    #[serde(default)]
    token: String,
}

/// The page an emailed link opens. It does not use the link (mail scanners open links):
/// its button posts the token to `/v1/sessions/magic-link/consume`.
#[utoipa::path(get, path = "/v1/sessions/magic-link", tag = "accounts", params(LinkQuery),
    responses((status = 200, description = "A page with a sign-in button", content_type = "text/html")))]
async fn link_page(Query(query): Query<LinkQuery>) -> Response {
    crate::pages::MAGIC_LINK.with_token(&query.token)
}

/// Uses an emailed link (once): the address counts as verified, and a session begins.
#[utoipa::path(post, path = "/v1/sessions/magic-link/consume", tag = "accounts", request_body = ConsumeBody,
    responses(
        (status = 201, description = "Signed in; also sets the session cookie", body = SessionStarted),
        (status = 400, description = "Unknown, used, expired or forged link", body = ErrorBody)
    ))]
async fn consume_link(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<ConsumeBody>,
) -> Result<Response, AppError> {
    let _admitted = state.limits.admit(Route::SignIn, ip, None)?;
    let (session, confirmed) = state
        .accounts
        .sign_in_with_link(
            &state.pool,
            &body.token,
            body.password.as_deref(),
            OffsetDateTime::now_utc(),
        )
        .await?;
    Ok(started(&session, Some(confirmed)))
}
