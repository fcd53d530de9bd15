//! The simulator on a free port and an HTTP client for it, shared by the simulator's test
//! binaries; each binary adds the calls it needs in its own `impl common::Sim` block.

use kopilka_stripe_sim::{SimOptions, Spawned, spawn};

/// A running simulator.
pub struct Sim {
    pub spawned: Spawned,
    pub http: reqwest::Client,
}

impl Sim {
    /// Starts a simulator with the default options on a free loopback port.
    pub async fn start() -> Self {
        let spawned = spawn("127.0.0.1:0".parse().unwrap(), SimOptions::default())
            .await
            .unwrap();
        Self {
            spawned,
            http: reqwest::Client::new(),
        }
    }

    /// The simulator's address for `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.spawned.addr)
    }
}
