//! The hosted checkout page at a session's `url`: the amount and interval, and the buttons
//! a tester needs ("Pay", "Decline card", "Pay, then dispute"). Paying redirects to the
//! session's `success_url`, as Stripe's page does. Also the hosted invoice page, where an
//! open invoice (a declined or 3-D Secure switch) is paid.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::flows::Outcome;
use crate::{Simulator, flows};

pub fn routes(sim: Simulator) -> axum::Router {
    axum::Router::new()
        .route("/checkout/{id}", get(show))
        .route("/checkout/{id}/{action}", post(act))
        .route("/portal/{id}", get(portal))
        .route("/invoice/{id}", get(invoice_page))
        .route("/invoice/{id}/pay", post(invoice_pay))
        .with_state(sim)
}

/// The hosted invoice page (`hosted_invoice_url`): the amount due and a button that pays
/// it, as the donor would after 3-D Secure or with another card.
async fn invoice_page(State(sim): State<Simulator>, Path(id): Path<String>) -> Response {
    let Some(invoice) =
        sim.with_state(|state| state.get(&id).filter(|o| o["object"] == "invoice").cloned())
    else {
        return (StatusCode::NOT_FOUND, Html("<h1>No such invoice</h1>")).into_response();
    };
    let due = crate::currencies::display(
        invoice["amount_due"].as_i64().unwrap_or(0),
        invoice["currency"].as_str().unwrap_or("usd"),
    )
    .to_uppercase();
    let status = invoice["status"].as_str().unwrap_or("open");
    let button = if status == "open" {
        format!(
            r#"<form method="post" action="/invoice/{id}/pay"><button>Confirm and pay</button></form>"#,
            id = escape(&id)
        )
    } else {
        format!("<p>This invoice is {}.</p>", escape(status))
    };
    Html(format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Invoice (simulated)</title></head>
<body><h1>Invoice {id}</h1><p>Amount due: {due}</p>{button}</body></html>"#,
        id = escape(&id),
        due = escape(&due),
    ))
    .into_response()
}

async fn invoice_pay(State(sim): State<Simulator>, Path(id): Path<String>) -> Response {
    match sim.act(|state| flows::pay_invoice(state, &id)) {
        Ok(()) => Html("<p>Paid. You can close this page.</p>").into_response(),
        Err(err) => (
            StatusCode::CONFLICT,
            Html(format!("<p>{}</p>", escape(&format!("{err:?}")))),
        )
            .into_response(),
    }
}

/// The Billing Portal page: a card form stand-in and the way back.
async fn portal(State(sim): State<Simulator>, Path(id): Path<String>) -> Response {
    let Some(session) = sim.with_state(|state| state.get(&id).cloned()) else {
        return (
            StatusCode::NOT_FOUND,
            Html("<h1>No such portal session</h1>"),
        )
            .into_response();
    };
    let back = session["return_url"].as_str().unwrap_or("/");
    Html(format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Update your card (simulated)</title></head>
<body><h1>Update your card</h1><p>Stripe's customer portal ({flow}), simulated for customer {customer}.</p>
<p><a href="{back}">Return to the newsroom</a></p></body></html>"#,
        flow = escape(session["flow"]["type"].as_str().unwrap_or("portal")),
        customer = escape(session["customer"].as_str().unwrap_or("")),
        back = escape(back),
    ))
    .into_response()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn render(sim: &Simulator, id: &str, notice: Option<&str>) -> Response {
    let Some((session, plan)) =
        sim.with_state(|state| Some((state.get(id)?.clone(), state.sessions.get(id)?.clone())))
    else {
        return (
            StatusCode::NOT_FOUND,
            Html("<h1>No such checkout session</h1>"),
        )
            .into_response();
    };
    let amount = crate::currencies::display(plan.amount, &plan.currency).to_uppercase();
    let every = match plan.interval.as_deref() {
        Some("month") => " every month",
        Some("year") => " every year",
        _ => " once",
    };
    let status = session["status"].as_str().unwrap_or("open");
    let buttons = if status == "open" {
        format!(
            r#"<form method="post" action="/checkout/{id}/pay"><label>Email <input name="email" type="email" value="{email}"></label>
<button name="go" value="pay">Pay</button></form>
<form method="post" action="/checkout/{id}/decline"><button>Decline card</button></form>
<form method="post" action="/checkout/{id}/pay-then-dispute"><button>Pay, then dispute</button></form>"#,
            email = escape(
                session["customer_email"]
                    .as_str()
                    .unwrap_or("reader@example.org")
            ),
        )
    } else {
        format!("<p>This checkout session is {}.</p>", escape(status))
    };
    let notice = notice
        .map(|n| format!(r#"<p role="alert">{}</p>"#, escape(n)))
        .unwrap_or_default();
    Html(format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Stripe simulator checkout</title></head>
<body><main><h1>{product}</h1><p data-amount>{amount}{every}</p>{notice}{buttons}
<p><small>Kopilka's Stripe simulator: no money moves.</small></p></main></body></html>"#,
        product = escape(&plan.product_name),
    ))
    .into_response()
}

async fn show(State(sim): State<Simulator>, Path(id): Path<String>) -> Response {
    render(&sim, &id, None)
}

async fn act(
    State(sim): State<Simulator>,
    Path((id, action)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let Some(outcome) = parse_action(&action) else {
        return (StatusCode::NOT_FOUND, Html("<h1>No such action</h1>")).into_response();
    };
    let form = crate::form::decode(&body);
    let email = form
        .get("email")
        .and_then(|e| e.as_str())
        .filter(|e| !e.is_empty())
        .map(str::to_owned);
    if let Err(err) = sim.act(|state| flows::pay(state, &id, outcome, email.as_deref(), None)) {
        return (
            StatusCode::CONFLICT,
            Html(format!("<p>{}</p>", escape(&format!("{err:?}")))),
        )
            .into_response();
    }
    if outcome == Outcome::Decline {
        return render(&sim, &id, Some("Your card was declined."));
    }
    let success = sim.with_state(|state| {
        state
            .get(&id)
            .and_then(|s| s["success_url"].as_str().map(str::to_owned))
    });
    match success {
        Some(url) => Redirect::to(&url.replace("{CHECKOUT_SESSION_ID}", &id)).into_response(),
        None => ([(header::CONTENT_TYPE, "text/html")], "<p>Paid.</p>").into_response(),
    }
}

/// `pay`, `decline` or `pay-then-dispute`.
pub fn parse_action(action: &str) -> Option<Outcome> {
    match action {
        "pay" => Some(Outcome::Pay),
        "decline" => Some(Outcome::Decline),
        "pay-then-dispute" => Some(Outcome::PayThenDispute),
        _ => None,
    }
}
