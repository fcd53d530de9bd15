"""Stripe's official Python SDK drives every flow Kopilka uses against the simulator.

Run by tests/python_sdk.rs with SIM_URL, STRIPE_KEY and WEBHOOK_SECRET set. Any exception
the SDK raises (a shape it cannot parse, an unexpected error) fails the test: a simulator
bug, not Kopilka's.
"""

import http.server
import json
import os
import threading
import time
import urllib.request

import stripe

SIM = os.environ["SIM_URL"]
SECRET = os.environ["WEBHOOK_SECRET"]
stripe.api_key = os.environ["STRIPE_KEY"]
stripe.api_base = SIM
stripe.max_network_retries = 0

received = []  # (payload bytes, Stripe-Signature header)
arrived = threading.Condition()


class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with arrived:
            received.append((body, self.headers.get("Stripe-Signature")))
            arrived.notify_all()
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def control(path, body=None):
    request = urllib.request.Request(
        SIM + path,
        data=json.dumps(body or {}).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request) as response:
        return json.load(response)


def check(condition, what):
    if not condition:
        raise AssertionError(what)


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
threading.Thread(target=server.serve_forever, daemon=True).start()
control("/_sim/delivery", {"webhook_url": f"http://127.0.0.1:{server.server_port}/hook"})

# Customers and the billing portal.
customer = stripe.Customer.create(email="reader@example.org", metadata={"reader_id": "r1"})
check(customer.metadata["reader_id"] == "r1", customer)
portal = stripe.billing_portal.Session.create(
    customer=customer.id,
    return_url="https://news.example.org/account",
    flow_data={"type": "payment_method_update"},
)
check(portal.url.startswith("http"), portal)

# A one-off payment, paid on the hosted page; refunded in part.
session = stripe.checkout.Session.create(
    mode="payment",
    line_items=[{
        "price_data": {"currency": "usd", "unit_amount": 2500, "product_data": {"name": "Gift"}},
        "quantity": 1,
    }],
    success_url="https://news.example.org/thanks",
    cancel_url="https://news.example.org/support",
    client_reference_id="c-1",
    metadata={"contribution_id": "c-1"},
    payment_intent_data={"metadata": {"contribution_id": "c-1"}},
    submit_type="donate",
    customer_email="donor@example.org",
)
check(session.status == "open" and session.amount_total == 2500, session)
control(f"/_sim/checkout/{session.id}/pay")
session = stripe.checkout.Session.retrieve(session.id)
check((session.status, session.payment_status) == ("complete", "paid"), session)
intent = stripe.PaymentIntent.retrieve(session.payment_intent)
check(intent.status == "succeeded", intent)
charge = stripe.Charge.retrieve(intent.latest_charge)
check(charge.paid and charge.amount == 2500, charge)
txn = stripe.BalanceTransaction.retrieve(charge.balance_transaction)
check(txn.net == txn.amount - txn.fee, txn)
refund = stripe.Refund.create(payment_intent=intent.id, amount=1000, metadata={"contribution_id": "c-1"})
check(refund.status == "succeeded" and refund.amount == 1000, refund)
check(stripe.Refund.retrieve(refund.id).id == refund.id, refund)
check(any(r.id == refund.id for r in stripe.Refund.list(payment_intent=intent.id).auto_paging_iter()), "refund listed")
check(stripe.Charge.retrieve(charge.id).amount_refunded == 1000, "amount_refunded")

# A declined one, and an expired one.
declined = stripe.checkout.Session.create(
    mode="payment",
    line_items=[{"price_data": {"currency": "eur", "unit_amount": 900, "product_data": {"name": "Gift"}}, "quantity": 1}],
    success_url="https://news.example.org/thanks",
)
control(f"/_sim/checkout/{declined.id}/decline")
expired = stripe.checkout.Session.expire(declined.id)
check(expired.status == "expired", expired)

# Sessions listed, page by page.
sessions = list(stripe.checkout.Session.list(limit=1).auto_paging_iter())
check({session.id, declined.id} <= {s.id for s in sessions}, sessions)

# A monthly plan: subscription, its invoice and the invoice's payment.
plan = stripe.checkout.Session.create(
    mode="subscription",
    line_items=[{
        "price_data": {"currency": "usd", "unit_amount": 500, "recurring": {"interval": "month"},
                       "product_data": {"name": "Membership"}},
        "quantity": 1,
    }],
    subscription_data={"metadata": {"contribution_id": "c-2"}},
    success_url="https://news.example.org/thanks",
)
control(f"/_sim/checkout/{plan.id}/pay")
plan = stripe.checkout.Session.retrieve(plan.id)
subscription = stripe.Subscription.retrieve(plan.subscription)
check(subscription.status == "active" and subscription.metadata["contribution_id"] == "c-2", subscription)
item = subscription["items"]["data"][0]
invoice = stripe.Invoice.retrieve(subscription.latest_invoice, expand=["payments"])
check(invoice.billing_reason == "subscription_create", invoice)
check(invoice.parent.subscription_details.subscription == subscription.id, invoice)
payment = invoice.payments.data[0]
check(payment.payment.payment_intent and payment.invoice == invoice.id, payment)
check("payments" not in stripe.Invoice.retrieve(invoice.id), "payments is includable")
check(any(i.id == invoice.id for i in stripe.Invoice.list(subscription=subscription.id).auto_paging_iter()), "invoice listed")
check(any(p.id == payment.id for p in stripe.InvoicePayment.list(invoice=invoice.id).auto_paging_iter()), "payment listed")

# The amount changes (a new price of the same product), then at the period's end.
updated = stripe.Subscription.modify(
    subscription.id,
    items=[{"id": item.id, "price_data": {"currency": "usd", "unit_amount": 900, "product": item.price.product,
                                          "recurring": {"interval": "month"}}}],
    proration_behavior="none",
)
check(updated["items"]["data"][0].price.unit_amount == 900, updated)
ending = stripe.Subscription.modify(subscription.id, cancel_at_period_end=True)
check(ending.cancel_at_period_end, ending)
resumed = stripe.Subscription.modify(subscription.id, cancel_at_period_end=False)
check(not resumed.cancel_at_period_end, resumed)
check(any(s.id == subscription.id for s in stripe.Subscription.list(customer=subscription.customer).auto_paging_iter()), "listed")
canceled = stripe.Subscription.cancel(subscription.id)
check(canceled.status == "canceled", canceled)

# Disputes, payouts.
pi = stripe.checkout.Session.create(
    mode="payment",
    line_items=[{"price_data": {"currency": "usd", "unit_amount": 1300, "product_data": {"name": "Gift"}}, "quantity": 1}],
    success_url="https://news.example.org/thanks",
)
control(f"/_sim/checkout/{pi.id}/pay-then-dispute")
dispute = next(stripe.Dispute.list(limit=1).auto_paging_iter())
check(dispute.status == "needs_response", dispute)
check(stripe.Dispute.close(dispute.id).status == "lost", "closed")
control("/_sim/clock/advance", {"seconds": 3 * 86400})
payouts = list(stripe.Payout.list().auto_paging_iter())
check(payouts, "a payout")
in_payout = list(stripe.BalanceTransaction.list(payout=payouts[0].id, limit=100).auto_paging_iter())
check(in_payout, "its transactions")

# An inquiry under review, escalated; an early fraud warning.
gift = stripe.checkout.Session.create(
    mode="payment",
    line_items=[{"price_data": {"currency": "usd", "unit_amount": 1400, "product_data": {"name": "Gift"}}, "quantity": 1}],
    success_url="https://news.example.org/thanks",
)
control(f"/_sim/checkout/{gift.id}/pay")
gift = stripe.checkout.Session.retrieve(gift.id)
inquiry = control("/_sim/disputes", {"payment_intent": gift.payment_intent, "kind": "inquiry"})
control(f"/_sim/disputes/{inquiry['id']}/review")
check(stripe.Dispute.retrieve(inquiry["id"]).status == "warning_under_review", "under review")
control(f"/_sim/disputes/{inquiry['id']}/escalate")
escalated = stripe.Dispute.retrieve(inquiry["id"])
check(escalated.status == "needs_response" and escalated.balance_transactions[0].amount == -1400, escalated)
warning = control("/_sim/early_fraud_warnings", {"payment_intent": gift.payment_intent})
warning = stripe.radar.EarlyFraudWarning.retrieve(warning["id"])
check(warning.charge == stripe.PaymentIntent.retrieve(gift.payment_intent).latest_charge, warning)

# A trial: a $0 first invoice.
trial = stripe.checkout.Session.create(
    mode="subscription",
    line_items=[{
        "price_data": {"currency": "usd", "unit_amount": 800, "recurring": {"interval": "month"},
                       "product_data": {"name": "Membership"}},
        "quantity": 1,
    }],
    subscription_data={"trial_period_days": 7},
    success_url="https://news.example.org/thanks",
)
control(f"/_sim/checkout/{trial.id}/pay")
trial = stripe.checkout.Session.retrieve(trial.id)
check(trial.payment_status == "no_payment_required", trial)
check(stripe.Subscription.retrieve(trial.subscription).status == "trialing", "trialing")
first = stripe.Invoice.retrieve(trial.invoice)
check((first.billing_reason, first.total, first.status) == ("subscription_create", 0, "paid"), first)

# A deleted customer.
deleted = stripe.Customer.delete(plan.customer)
check(deleted.deleted is True and deleted.id == plan.customer, deleted)
check(stripe.Customer.retrieve(plan.customer).deleted is True, "retrieve answers deleted")

# Errors as Stripe's: a missing object is InvalidRequestError 404 resource_missing.
try:
    stripe.Charge.retrieve("ch_missing")
    raise AssertionError("no error")
except stripe.InvalidRequestError as error:
    check(error.http_status == 404 and error.code == "resource_missing", error)

# Events listed, and every one delivered, signed, verifies with the SDK.
events = list(stripe.Event.list(limit=10).auto_paging_iter())
completed = list(stripe.Event.list(type="checkout.session.completed").auto_paging_iter())
check(len(completed) == 5, [e.data.object.id for e in completed])
deadline = time.monotonic() + 30
with arrived:
    while len(received) < len(events):
        remaining = deadline - time.monotonic()
        check(remaining > 0, f"{len(received)} of {len(events)} deliveries")
        arrived.wait(remaining)
for payload, signature in received:
    event = stripe.Webhook.construct_event(payload, signature, SECRET)
    check(event.type and event.data.object.id, event)
try:
    stripe.Webhook.construct_event(received[0][0] + b" ", received[0][1], SECRET)
    raise AssertionError("a tampered payload verified")
except stripe.SignatureVerificationError:
    pass
check({e.id for e in events} == {json.loads(p)["id"] for p, _ in received}, "each event delivered")
print(f"python sdk {stripe.VERSION}: {len(events)} events verified")
