//! What a careless or hostile client sends: broken JSON, huge and deep bodies, impossible
//! amounts, names and addresses made to break storage or email.

use kopilka_test_support::{ApiResponse, send};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::stack::{SITE, Stack};

/// The bodies no route may choke on, by name.
fn bad_bodies() -> Vec<(&'static str, Vec<u8>)> {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_object = format!(
        "{{\"interval\":{}1{}}}",
        "{\"a\":".repeat(5_000),
        "}".repeat(5_000)
    );
    vec![
        (
            "truncated",
            b"{\"interval\": \"once\", \"amount_minor\": 5".to_vec(),
        ),
        ("not json", b"interval=once&amount_minor=500".to_vec()),
        ("empty", Vec::new()),
        ("a bare string", b"\"hello\"".to_vec()),
        ("null", b"null".to_vec()),
        (
            "wrong types",
            br#"{"interval": 5, "amount_minor": "500", "currency": ["usd"], "email": {}}"#.to_vec(),
        ),
        (
            "invalid utf-8",
            vec![b'{', b'"', 0xff, 0xfe, b'"', b':', b'1', b'}'],
        ),
        (
            "lone surrogate",
            br#"{"email": "\ud800@example.org", "password": "x"}"#.to_vec(),
        ),
        ("nul byte", b"{\"email\": \"a\0b@example.org\"}".to_vec()),
        ("deep arrays", deep.into_bytes()),
        ("deep objects", deep_object.into_bytes()),
        (
            "duplicate keys",
            br#"{"amount_minor": 500, "amount_minor": -1, "interval": "once", "currency": "usd"}"#
                .to_vec(),
        ),
    ]
}

/// POSTs 10 MB of JSON-ish spaces to `path` over a raw connection, announced by
/// `Content-Length` or streamed in chunks, and returns the answer's status and JSON body. The
/// body is written from a separate task whose errors are ignored: the server may answer and
/// close before taking it all, as it should.
async fn ten_megabytes(base: &str, path: &str, chunked: bool) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    const SIZE: usize = 10 << 20;
    let addr = base.trim_start_matches("http://").to_owned();
    let stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connects");
    let (mut reader, mut writer) = stream.into_split();
    let length = if chunked {
        "Transfer-Encoding: chunked".to_owned()
    } else {
        format!("Content-Length: {SIZE}")
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{length}\r\n\r\n"
    );
    writer
        .write_all(head.as_bytes())
        .await
        .expect("writes the head");
    let sending = tokio::spawn(async move {
        let chunk = vec![b' '; 64 << 10];
        for _ in 0..SIZE / chunk.len() {
            let written = if chunked {
                let size = format!("{:x}\r\n", chunk.len());
                writer.write_all(size.as_bytes()).await.is_ok()
                    && writer.write_all(&chunk).await.is_ok()
                    && writer.write_all(b"\r\n").await.is_ok()
            } else {
                writer.write_all(&chunk).await.is_ok()
            };
            if !written {
                return;
            }
        }
        if chunked {
            let _ = writer.write_all(b"0\r\n\r\n").await;
        }
    });
    let mut answer = Vec::new();
    let mut buf = [0_u8; 8192];
    let complete = |answer: &[u8]| {
        let text = String::from_utf8_lossy(answer);
        let (head, body) = text.split_once("\r\n\r\n")?;
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().to_owned())
            })?
            .parse()
            .ok()?;
        (body.len() >= length).then(|| (head.to_owned(), body[..length].to_owned()))
    };
    let (head, body) = loop {
        if let Some(done) = complete(&answer) {
            break done;
        }
        let read = tokio::time::timeout(std::time::Duration::from_secs(30), reader.read(&mut buf))
            .await
            .expect("an answer within 30 s")
            .expect("reads");
        assert!(
            read > 0,
            "closed without a complete answer: {}",
            String::from_utf8_lossy(&answer)
        );
        answer.extend_from_slice(&buf[..read]);
    };
    sending.abort();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    (status, serde_json::from_str(&body).unwrap_or_default())
}

/// A POST on a connection of its own: a server may close a connection after refusing a body
/// it did not read, and a pooled one could be picked up just as it closes.
async fn post(stack: &Stack, path: &str, content_type: &str, body: Vec<u8>) -> ApiResponse {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("a client");
    send(
        client
            .request(Method::POST, format!("{}{path}", stack.bases[0]))
            .header("content-type", content_type)
            .body(body),
    )
    .await
}

/// The answer is a 4xx with the error envelope (exactly `code` and `message`).
fn assert_envelope(answer: &ApiResponse, what: &str) {
    assert!(
        answer.status.is_client_error(),
        "{what}: {} {}",
        answer.status,
        String::from_utf8_lossy(&answer.body)
    );
    let code = answer.error_code(answer.status.as_u16());
    assert!(!code.is_empty(), "{what}");
}

pub async fn malformed_oversized_deep_and_non_utf8_bodies_are_4xx_envelopes() {
    let stack = Stack::start_default().await;
    let routes = [
        "/v1/checkout",
        "/v1/accounts",
        "/v1/sessions",
        "/v1/sessions/magic-link",
        "/v1/sessions/magic-link/consume",
        "/v1/reminders",
    ];
    for route in routes {
        for (what, body) in bad_bodies() {
            let answer = post(&stack, route, "application/json", body).await;
            if what == "duplicate keys" && answer.status.is_success() {
                // serde keeps the last value; a duplicate is never a way past validation.
                continue;
            }
            assert_envelope(&answer, &format!("{route}, {what}"));
        }
        // 10 MB, announced or streamed: refused without reading it all.
        for chunked in [false, true] {
            let (status, body) = ten_megabytes(&stack.bases[0], route, chunked).await;
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (413, Some("payload_too_large")),
                "{route}, chunked: {chunked}"
            );
        }
        let wrong_type = post(&stack, route, "text/plain", b"{}".to_vec()).await;
        assert_eq!(
            wrong_type.error_code(415),
            "unsupported_media_type",
            "{route}"
        );
    }
    // The webhook route checks the signature before it parses anything.
    for (what, body) in bad_bodies() {
        let answer = post(&stack, "/v1/webhooks/stripe", "application/json", body).await;
        assert_eq!(
            answer.error_code(400),
            "signature_missing",
            "webhook, {what}"
        );
        let utf8 = String::from_utf8_lossy(
            &bad_bodies()
                .into_iter()
                .find(|(w, _)| *w == what)
                .expect("same list")
                .1,
        )
        .into_owned();
        let signed = stack.deliver(0, &utf8).await;
        assert_envelope(&signed, &format!("signed webhook, {what}"));
    }
    for chunked in [false, true] {
        let (status, body) = ten_megabytes(&stack.bases[0], "/v1/webhooks/stripe", chunked).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (413, Some("payload_too_large"))
        );
    }
    // A query string that is not what it should be.
    for query in [
        "currency=%FF%FE",
        "currency=usd&currency=eur",
        "country=%00",
        "currency=x".repeat(2000).as_str(),
    ] {
        let answer = stack.api().get(&format!("/v1/offer?{query}")).await;
        assert!(
            answer.status == StatusCode::OK || answer.status.is_client_error(),
            "offer?{query}: {}",
            answer.status
        );
        if !answer.status.is_success() {
            assert_envelope(&answer, query);
        }
    }
    // Nothing was created, and the server still serves.
    for table in [
        "contributions",
        "readers",
        "reminders",
        "provider_events",
        // A worker queues its daily retention sweep by itself.
        "jobs WHERE kind <> 'retention.sweep'",
    ] {
        assert_eq!(
            stack.count(&format!("SELECT count(*) FROM {table}")).await,
            0,
            "{table}"
        );
    }
    assert_eq!(stack.api().healthz().await.status, StatusCode::OK);
    assert_eq!(stack.api().readyz().await.status, StatusCode::OK);
    stack.finish().await;
}

async fn checkout_raw(stack: &Stack, body: &str) -> ApiResponse {
    post(
        stack,
        "/v1/checkout",
        "application/json",
        body.as_bytes().to_vec(),
    )
    .await
}

pub async fn impossible_amounts_are_422_and_create_nothing() {
    let stack = Stack::start_default().await;
    let cases = [
        (
            r#"{"interval":"once","amount_minor":-500,"currency":"usd"}"#,
            "amount_below_minimum",
        ),
        (
            r#"{"interval":"once","amount_minor":0,"currency":"usd"}"#,
            "amount_below_minimum",
        ),
        (
            r#"{"interval":"month","amount_minor":199,"currency":"usd"}"#,
            "amount_below_minimum",
        ),
        (
            r#"{"interval":"once","amount_minor":9223372036854775807,"currency":"usd"}"#,
            "amount_above_maximum",
        ),
        // 2^63 and beyond do not fit: the body is refused as a whole.
        (
            r#"{"interval":"once","amount_minor":9223372036854775808,"currency":"usd"}"#,
            "invalid_body",
        ),
        (
            r#"{"interval":"once","amount_minor":-9223372036854775809,"currency":"usd"}"#,
            "invalid_body",
        ),
        (
            r#"{"interval":"once","amount_minor":1e30,"currency":"usd"}"#,
            "invalid_body",
        ),
        // Yen have no minor unit: a fraction is not an amount.
        (
            r#"{"interval":"once","amount_minor":500.5,"currency":"jpy"}"#,
            "invalid_body",
        ),
        (
            r#"{"interval":"once","amount_minor":"500","currency":"jpy"}"#,
            "invalid_body",
        ),
        (
            r#"{"interval":"once","amount_minor":500,"currency":"zzz"}"#,
            "unknown_currency",
        ),
        (
            r#"{"interval":"once","amount_minor":500,"currency":"US"}"#,
            "unknown_currency",
        ),
        (
            r#"{"interval":"once","amount_minor":500,"currency":""}"#,
            "unknown_currency",
        ),
        (r#"{"interval":"once","amount_minor":500}"#, "invalid_body"),
    ];
    for (body, code) in cases {
        let answer = checkout_raw(&stack, body).await;
        assert_eq!(
            answer.status.as_u16(),
            422,
            "{body}: {:?}",
            String::from_utf8_lossy(&answer.body)
        );
        assert_eq!(answer.error_code(422), code, "{body}");
    }
    assert_eq!(stack.count("SELECT count(*) FROM contributions").await, 0);
    assert_eq!(
        stack.count("SELECT count(*) FROM checkout_requests").await,
        0
    );
    let sessions = stack.sim_get("/v1/checkout/sessions?limit=10").await["data"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(sessions, 0, "nothing reached Stripe");
    // The smallest allowed amount passes, so the refusals above were about the amounts.
    let fine = checkout_raw(
        &stack,
        r#"{"interval":"once","amount_minor":100,"currency":"jpy"}"#,
    )
    .await;
    assert_eq!(
        fine.status,
        StatusCode::CREATED,
        "{:?}",
        String::from_utf8_lossy(&fine.body)
    );
    stack.finish().await;
}

pub async fn hostile_names_and_addresses_are_kept_verbatim_or_refused_and_escaped_in_email() {
    let mut stack = Stack::options()
        .worker_in_serve(true)
        .env("KOPILKA__ACCOUNTS__LINKS_PER_HOUR", "100")
        .start()
        .await;
    let email = "hostile-names@example.org";
    let password = "a long enough password, surely";
    stack.watch([email, password]);
    let (_, token) = stack.sign_up_confirmed(email, password, 1).await;
    let names = [
        "Robert'); DROP TABLE readers;--",
        "<script>alert('x')</script> & <b>bold</b>",
        "\u{202e}evil.exe\u{202c} Аня",
        "🦀 Ferris 🦀 \u{200d}👩\u{200d}👩\u{200d}👧",
        "\"quoted\" \\ backslash ${jndi:ldap://x}",
        "שלום עליכם",
    ];
    // The verification email was the first; each name's sign-in email follows.
    for (sent, name) in (2..).zip(names) {
        let change = send(
            stack
                .api()
                .request(Method::PATCH, "/v1/me")
                .bearer_auth(&token)
                .json(&json!({"name": name})),
        )
        .await;
        assert_eq!(
            change.status,
            StatusCode::NO_CONTENT,
            "{name}: {:?}",
            change.body
        );
        let me = send(
            stack
                .api()
                .request(Method::GET, "/v1/me")
                .bearer_auth(&token),
        )
        .await;
        assert_eq!(me.json()["name"], name, "stored and answered verbatim");
        // The name goes into the next email: escaped in HTML, never a header.
        let link = stack
            .api()
            .post_json("/v1/sessions/magic-link", &json!({"email": email}))
            .await;
        assert!(link.status.is_success());
        let smtp = &stack.smtp;
        let message = kopilka_test_support::eventually(
            "the email with the name",
            std::time::Duration::from_secs(20),
            || async { smtp.messages().into_iter().nth(sent - 1) },
        )
        .await;
        // minijinja's HTML escaping.
        let escaped = name
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\'', "&#x27;")
            .replace('/', "&#x2f;");
        assert!(
            message.html.contains(&format!("Hello {escaped},")),
            "{name} escaped in: {}",
            message.html
        );
        assert!(!message.html.contains("<script>"), "{}", message.html);
        assert!(
            message.text.contains(name),
            "the text part keeps it as it is"
        );
        for (header, value) in &message.headers {
            assert!(
                !value.contains("DROP TABLE") && !value.contains("<script"),
                "{header}: {value}"
            );
        }
    }
    let readers = stack.count("SELECT count(*) FROM readers").await;
    assert_eq!(readers, 1, "the readers table is intact");
    // Too long, or with line breaks (header injection): refused, nothing changed.
    for name in [
        "x".repeat(10 * 1024),
        "Ana\r\nBcc: victim@example.org".to_owned(),
        "a\0b".to_owned(),
    ] {
        let change = send(
            stack
                .api()
                .request(Method::PATCH, "/v1/me")
                .bearer_auth(&token)
                .json(&json!({"name": name})),
        )
        .await;
        assert_eq!(change.error_code(422), "invalid_name");
    }
    let me = send(
        stack
            .api()
            .request(Method::GET, "/v1/me")
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(
        me.json()["name"],
        names[names.len() - 1],
        "unchanged by the refusals"
    );

    // Addresses: odd but valid ones are kept (lowercased, as every address is); the rest
    // are refused, and an address never reaches a header unencoded.
    let long_local = format!("{}@example.org", "a".repeat(10 * 1024));
    let addresses = [
        ("o'neil+news@example.org", true),
        ("\"robert'); drop table readers;--\"@example.org", true),
        ("<script>@example.org", false),
        ("victim@example.org\r\nbcc: other@example.org", false),
        ("\u{202e}gro.elpmaxe@liam", false),
        (long_local.as_str(), false),
        ("ferris🦀@example.org", true),
    ];
    for (address, may_be_kept) in addresses {
        let answer = stack
            .api()
            .post_json(
                "/v1/reminders",
                &json!({"email": address, "remind_on": (time::OffsetDateTime::now_utc() + time::Duration::days(3)).date().to_string()}),
            )
            .await;
        if answer.status.is_success() {
            assert!(may_be_kept, "{address} should have been refused");
            let kept = stack
                .count(&format!(
                    "SELECT count(*) FROM readers WHERE email = '{}'",
                    address.to_lowercase().replace('\'', "''")
                ))
                .await;
            assert_eq!(kept, 1, "{address} is stored verbatim (lowercased)");
        } else {
            assert_eq!(answer.error_code(422), "invalid_email", "{address}");
        }
    }
    assert_eq!(
        stack
            .count("SELECT count(*) FROM readers WHERE length(email) > 254")
            .await,
        0
    );
    // The cross-site check lets the site itself through.
    let from_site = send(
        stack
            .api()
            .request(Method::PATCH, "/v1/me")
            .bearer_auth(&token)
            .header("origin", SITE)
            .json(&json!({"name": "Ana"})),
    )
    .await;
    assert_eq!(from_site.status, StatusCode::NO_CONTENT);
    stack.finish().await;
}
