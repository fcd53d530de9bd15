//! The hosted invoice page (`GET /i/{invoiceId}`, the invoice's `checkoutLink`): what is
//! due in fiat and in bitcoin, the status, and one button per thing a buyer (or time, or the
//! merchant) can do to the invoice. Each button posts to `/i/{invoiceId}/{action}` and comes
//! back to the page, or goes to `checkout.redirectURL` once settled when the invoice asks
//! for an automatic redirect.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use kopilka_domain::Money;

use crate::invoice::{Action, btc};
use crate::{Simulator, lock};

pub fn routes(sim: Simulator) -> Router {
    Router::new()
        .route("/i/{invoice_id}", get(show))
        .route("/i/{invoice_id}/{action}", post(click))
        .with_state(sim)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn show(State(sim): State<Simulator>, Path(invoice_id): Path<String>) -> Response {
    // Time passes for the page too.
    sim.advance(0);
    let Some(invoice) = lock(&sim.inner.state)
        .invoices
        .iter()
        .find(|i| i.id == invoice_id)
        .cloned()
    else {
        return (StatusCode::NOT_FOUND, Html("<h1>Invoice not found</h1>")).into_response();
    };
    let amount = Money::new(invoice.amount_minor, invoice.currency);
    let paid = Money::new(invoice.paid_minor(), invoice.currency);
    let buttons: String = Action::ALL
        .iter()
        .map(|(_, name, label)| {
            format!(
                r#"<form method="post" action="/i/{id}/{name}"><button type="submit" data-action="{name}">{label}</button></form>"#,
                id = escape(&invoice.id)
            )
        })
        .collect();
    let back = invoice
        .redirect_url
        .as_deref()
        .map_or_else(String::new, |url| {
            format!(
                r#"<p><a id="return" href="{}">Return to the store</a></p>"#,
                escape(url)
            )
        });
    Html(format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Invoice {id} · BTCPay simulator</title></head>
<body><main><h1>Pay {amount} {currency}</h1>
<p>BTC due: <span id="btc-due">{due}</span> (rate {rate} {currency}/BTC) to <code>{destination}</code></p>
<p>Status: <span id="status">{status}</span> (<span id="additional-status">{additional}</span>) · paid {paid} {currency}</p>
{buttons}{back}
<p><small>BTCPay Server simulator (Kopilka). No real money moves.</small></p></main></body></html>"#,
        id = escape(&invoice.id),
        amount = amount.format_major(),
        currency = invoice.currency.iso_code(),
        due = btc(invoice.due_sats - invoice.paid_sats()),
        rate = Money::new(invoice.rate_minor, invoice.currency).format_major(),
        destination = escape(&invoice.destination),
        status = invoice.status,
        additional = invoice.additional,
        paid = paid.format_major(),
    ))
    .into_response()
}

async fn click(
    State(sim): State<Simulator>,
    Path((invoice_id, action)): Path<(String, String)>,
) -> Response {
    let Some(action) = Action::from_name(&action) else {
        return (StatusCode::NOT_FOUND, Html("<h1>No such button</h1>")).into_response();
    };
    match sim.act_on(&invoice_id, action) {
        Ok(invoice) => {
            let settled = invoice["status"] == "Settled";
            let automatic = invoice["checkout"]["redirectAutomatically"] == true;
            match invoice["checkout"]["redirectURL"].as_str() {
                Some(url) if settled && automatic => Redirect::to(url).into_response(),
                _ => Redirect::to(&format!("/i/{invoice_id}")).into_response(),
            }
        }
        Err(why) => (
            StatusCode::CONFLICT,
            Html(format!("<h1>{}</h1>", escape(&why))),
        )
            .into_response(),
    }
}
