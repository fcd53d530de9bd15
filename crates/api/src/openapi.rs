//! The OpenAPI document's frame; operations are added by each area's `routes()`.

use crate::{ErrorBody, ErrorDetail};

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Kopilka",
        description = "Reader-revenue backend: contributions, supporter tokens, reader accounts, Stripe and BTCPay Server reconciliation. Errors are always {\"error\":{\"code\",\"message\"}}.",
        license(name = "AGPL-3.0-only")
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    tags(
        (name = "health", description = "Liveness and readiness"),
        (name = "contributions", description = "The offer and the checkout"),
        (name = "webhooks", description = "The payment providers' event deliveries: Stripe's and BTCPay Server's"),
        (name = "accounts", description = "Sign-up and sign-in; answers never reveal whether an address has an account"),
        (name = "self-service", description = "A signed-in reader's profile, history, plans, sessions and data"),
        (name = "reminders", description = "Remind me later, one-click unsubscribe, the banner's state"),
        (name = "paywall", description = "The supporter token and its public keys"),
        (name = "passes", description = "Pass codes: redeem, revoke, an anonymous holder's supporter token")
    )
)]
pub(crate) struct ApiDoc;
