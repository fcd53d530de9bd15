//! Stripe's official Python SDK (`stripe` on PyPI, pinned) drives every flow Kopilka uses
//! against the simulator (`python_sdk.py`): checkout in both modes, retrieve and list,
//! subscription update and cancel, refunds, disputes, payouts, customer delete, the billing
//! portal, events, and webhook signatures verified with `stripe.Webhook.construct_event`.

use std::path::PathBuf;
use std::process::Command;

use kopilka_stripe_sim::{SimOptions, spawn};

const STRIPE_PYTHON: &str = "stripe==16.1.0";

/// A Python with the SDK: `KOPILKA_STRIPE_PYTHON` (the test script installs it), else
/// installed here into `<target>/tmp/stripe-python-venv` on first use.
fn python() -> PathBuf {
    if let Some(given) = std::env::var_os("KOPILKA_STRIPE_PYTHON").map(PathBuf::from) {
        assert!(
            given.is_file(),
            "KOPILKA_STRIPE_PYTHON={} is not a file",
            given.display()
        );
        return given;
    }
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("stripe-python-venv");
    let python = venv.join("bin/python");
    if !venv.join("ready").is_file() {
        let made = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .status();
        assert!(
            made.is_ok_and(|s| s.success()),
            "python3 -m venv failed: install python3 with venv"
        );
        let pip = Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                STRIPE_PYTHON,
            ])
            .status();
        assert!(
            pip.is_ok_and(|s| s.success()),
            "pip install {STRIPE_PYTHON} failed"
        );
        std::fs::write(venv.join("ready"), b"").unwrap();
    }
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripes_python_sdk_drives_every_flow_kopilka_uses() {
    let sim = spawn("127.0.0.1:0".parse().unwrap(), SimOptions::default())
        .await
        .unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python_sdk.py");
    let output = tokio::process::Command::new(python())
        .arg(script)
        .env("SIM_URL", format!("http://{}", sim.addr))
        .env("STRIPE_KEY", sim.simulator.secret_key())
        .env("WEBHOOK_SECRET", sim.simulator.webhook_secret())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the SDK failed against the simulator:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("events verified"), "{stdout}");
}
