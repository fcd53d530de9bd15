//! The OpenAPI document's frame; operations are added by each area's `routes()`.

use crate::{ErrorBody, ErrorDetail};

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Kopilka",
        description = "Reader-revenue backend: contributions, supporter tokens, reader accounts, Stripe reconciliation. Errors are always {\"error\":{\"code\",\"message\"}}.",
        license(name = "AGPL-3.0-only")
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    tags(
        (name = "health", description = "Liveness and readiness"),
        (name = "contributions", description = "The offer and the checkout"),
        (name = "webhooks", description = "Stripe's event deliveries")
    )
)]
pub(crate) struct ApiDoc;
