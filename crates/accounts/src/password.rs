//! Passwords: ASVS 5 rules (8 to 256 characters, no composition rules, nothing truncated),
//! argon2id hashes with the configured cost and optional pepper, rehash on login when the
//! cost changed. Hashing runs on its own threads, as many as `hash_concurrency`, at a lower
//! CPU priority (nice +10): a login storm waits its turn behind a semaphore, and while it
//! hashes, the API's own threads still win the CPU, so page views stay fast.

use std::sync::{Arc, Mutex, OnceLock, mpsc};

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use kopilka_config::{AccountsSettings, Argon2Settings};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

use crate::AccountError;

/// The shortest password accepted (ASVS 5 V6.2.1).
pub const MIN_CHARS: usize = 8;
/// The longest password accepted; far above ASVS's 64 (V6.2.9).
pub const MAX_CHARS: usize = 256;

/// A password that passed the rules. Never printed.
#[derive(Clone)]
pub struct Password(SecretString);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

impl Password {
    /// Checks the rules.
    ///
    /// # Errors
    /// [`AccountError::Refused`] with `password_too_short` or `password_too_long`.
    pub fn parse(raw: &str) -> Result<Self, AccountError> {
        let chars = raw.chars().count();
        if chars < MIN_CHARS {
            return Err(AccountError::refused(
                "password_too_short",
                format!("a password needs at least {MIN_CHARS} characters"),
            ));
        }
        if chars > MAX_CHARS {
            return Err(AccountError::refused(
                "password_too_long",
                format!("a password may have at most {MAX_CHARS} characters"),
            ));
        }
        Ok(Self(SecretString::from(raw.to_owned())))
    }

    fn bytes(&self) -> &[u8] {
        self.0.expose_secret().as_bytes()
    }
}

/// Refuses a new password that is one of the most common breached passwords, or a simple
/// variant of one (case, l33t substitutions, reversed): zxcvbn's ranked list of 30 000
/// passwords from breaches, shipped inside the binary (ASVS 5.0 V6.2.4). Only new passwords
/// are checked (sign-up and change), never one given to sign in.
///
/// # Errors
/// [`AccountError::Refused`] with `password_too_common`.
pub fn check_not_common(password: &Password) -> Result<(), AccountError> {
    let raw = password.0.expose_secret();
    // No common password is longer; a long passphrase is not matched against the list (and
    // matching is quadratic in the length).
    if raw.chars().count() > 64 {
        return Ok(());
    }
    let entropy = zxcvbn::zxcvbn(raw, &[]);
    let whole = raw.chars().count();
    let common = entropy.sequence().iter().any(|m| {
        m.i == 0
            && m.j + 1 == whole
            && matches!(&m.pattern, zxcvbn::matching::patterns::MatchPattern::Dictionary(d)
                // The dictionary's type is not exported; its Debug name is stable.
                if format!("{:?}", d.dictionary_name) == "Passwords")
    });
    if common {
        return Err(AccountError::refused(
            "password_too_common",
            "this password is among the most common ones in breaches; choose another",
        ));
    }
    Ok(())
}

/// What checking a password found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Right, and the stored hash has today's cost.
    Right,
    /// Right, but stored with another cost: store this new hash.
    RightRehashed(String),
    /// Wrong (or there was no stored hash).
    Wrong,
}

/// The password hasher: cost, pepper and the concurrency bound. Cheap to clone.
#[derive(Clone)]
pub struct Passwords {
    inner: Arc<Inner>,
}

struct Inner {
    cost: Argon2Settings,
    pepper: Option<SecretString>,
    permits: Semaphore,
    concurrency: usize,
    /// The hashing threads' queue, started on first use; `None` if no thread could start.
    threads: OnceLock<Option<mpsc::Sender<HashJob>>>,
    dummy: OnceLock<String>,
}

type HashJob = Box<dyn FnOnce() + Send>;

/// Lowers the calling thread's CPU priority to nice +10 (Linux: the nice value is per
/// thread). It cannot be raised again without privileges, so only hashing threads call it.
#[allow(unsafe_code, reason = "setpriority(2) has no wrapper in std")]
fn yield_to_serving() {
    #[cfg(target_os = "linux")]
    // SAFETY: a plain system call on the calling thread; no memory is shared with it.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
}

/// Starts `n` hashing threads; the sender feeds them. `None` when none could start.
fn start_threads(n: usize) -> Option<mpsc::Sender<HashJob>> {
    let (sender, receiver) = mpsc::channel::<HashJob>();
    let receiver = Arc::new(Mutex::new(receiver));
    let started = (0..n)
        .filter(|i| {
            let receiver = Arc::clone(&receiver);
            std::thread::Builder::new()
                .name(format!("kopilka-hash-{i}"))
                .spawn(move || {
                    yield_to_serving();
                    loop {
                        let job = match receiver.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        // Ends when the hasher is dropped (the sender with it).
                        let Ok(job) = job else { return };
                        // A panicking hash loses its answer (the caller sees an error), not
                        // the thread.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    }
                })
                .is_ok()
        })
        .count();
    (started > 0).then_some(sender)
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords")
            .field("cost", &self.inner.cost)
            .finish_non_exhaustive()
    }
}

impl Passwords {
    /// A hasher with the configured cost, pepper and concurrency.
    #[must_use]
    pub fn from_settings(settings: &AccountsSettings) -> Self {
        let concurrency = match settings.hash_concurrency {
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            n => n,
        };
        Self {
            inner: Arc::new(Inner {
                cost: settings.argon2,
                pepper: settings.pepper.clone(),
                permits: Semaphore::new(concurrency),
                concurrency,
                threads: OnceLock::new(),
                dummy: OnceLock::new(),
            }),
        }
    }

    /// Hashes `password` (PHC string) on a hashing thread.
    ///
    /// # Errors
    /// [`AccountError::Hashing`] when argon2 fails.
    pub async fn hash(&self, password: &Password) -> Result<String, AccountError> {
        let inner = Arc::clone(&self.inner);
        let password = password.clone();
        self.blocking(move || inner.hash(password.bytes())).await
    }

    /// Checks `password` against `stored`; with no stored hash it checks against a dummy
    /// hash of the same cost, so an unknown address takes as long as a known one.
    ///
    /// # Errors
    /// [`AccountError::Hashing`] when argon2 fails.
    pub async fn verify(
        &self,
        stored: Option<String>,
        password: &Password,
    ) -> Result<Verdict, AccountError> {
        let inner = Arc::clone(&self.inner);
        let password = password.clone();
        self.blocking(move || inner.verify(stored.as_deref(), password.bytes()))
            .await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, AccountError> + Send + 'static,
    ) -> Result<T, AccountError> {
        let _permit = self
            .inner
            .permits
            .acquire()
            .await
            .map_err(|e| AccountError::Hashing(e.to_string()))?;
        let threads = self
            .inner
            .threads
            .get_or_init(|| start_threads(self.inner.concurrency));
        let Some(threads) = threads else {
            // No thread of our own: the runtime's blocking pool, at normal priority.
            return tokio::task::spawn_blocking(work)
                .await
                .map_err(|e| AccountError::Hashing(e.to_string()))?;
        };
        let (answer, answered) = tokio::sync::oneshot::channel();
        threads
            .send(Box::new(move || {
                let _ = answer.send(work());
            }))
            .map_err(|_| AccountError::Hashing("the hashing threads stopped".into()))?;
        answered
            .await
            .map_err(|_| AccountError::Hashing("a hash panicked".into()))?
    }
}

impl Inner {
    fn params(&self) -> Result<Params, AccountError> {
        Params::new(
            self.cost.memory_kib,
            self.cost.iterations,
            self.cost.parallelism,
            None,
        )
        .map_err(|e| AccountError::Hashing(e.to_string()))
    }

    fn argon2(&self, params: Params) -> Result<Argon2<'_>, AccountError> {
        match &self.pepper {
            Some(pepper) => Argon2::new_with_secret(
                pepper.expose_secret().as_bytes(),
                Algorithm::Argon2id,
                Version::V0x13,
                params,
            )
            .map_err(|e| AccountError::Hashing(e.to_string())),
            None => Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params)),
        }
    }

    fn hash(&self, password: &[u8]) -> Result<String, AccountError> {
        let salt = SaltString::encode_b64(&crate::keys::random_bytes::<16>())
            .map_err(|e| AccountError::Hashing(e.to_string()))?;
        Ok(self
            .argon2(self.params()?)?
            .hash_password(password, &salt)
            .map_err(|e| AccountError::Hashing(e.to_string()))?
            .to_string())
    }

    fn dummy(&self) -> Result<&str, AccountError> {
        if let Some(hash) = self.dummy.get() {
            return Ok(hash);
        }
        let hash = self.hash(&crate::keys::random_bytes::<24>())?;
        Ok(self.dummy.get_or_init(|| hash))
    }

    fn verify(&self, stored: Option<&str>, password: &[u8]) -> Result<Verdict, AccountError> {
        let known = stored.is_some();
        let stored = match stored {
            Some(hash) => hash,
            None => self.dummy()?,
        };
        let parsed = PasswordHash::new(stored).map_err(|e| AccountError::Hashing(e.to_string()))?;
        let stored_params =
            Params::try_from(&parsed).map_err(|e| AccountError::Hashing(e.to_string()))?;
        // Verify with the cost the hash was made with; the pepper is today's.
        let right = self
            .argon2(stored_params.clone())?
            .verify_password(password, &parsed)
            .is_ok();
        if !right || !known {
            return Ok(Verdict::Wrong);
        }
        let current = self.params()?;
        let same_cost = stored_params.m_cost() == current.m_cost()
            && stored_params.t_cost() == current.t_cost()
            && stored_params.p_cost() == current.p_cost()
            && parsed.algorithm == argon2::ARGON2ID_IDENT;
        if same_cost {
            Ok(Verdict::Right)
        } else {
            Ok(Verdict::RightRehashed(self.hash(password)?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_breached_passwords_and_their_variants_are_refused() {
        for common in [
            "password",
            "Password1",
            "P@ssw0rd",
            "qwertyuiop",
            "iloveyou",
            "drowssap",
            "12345678",
        ] {
            let parsed = Password::parse(common).unwrap();
            assert!(check_not_common(&parsed).is_err(), "{common}");
        }
        for fine in [
            "correct horse battery staple",
            "kopilka-donor-2026!x",
            &"z".repeat(200),
        ] {
            assert!(
                check_not_common(&Password::parse(fine).unwrap()).is_ok(),
                "{fine}"
            );
        }
    }

    fn settings(memory_kib: u32) -> AccountsSettings {
        let mut s = kopilka_config::Settings::for_env(
            kopilka_config::Environment::Test,
            std::path::Path::new("../../config"),
        )
        .unwrap()
        .accounts;
        s.argon2.memory_kib = memory_kib;
        s
    }

    #[test]
    fn the_rules_are_length_only() {
        assert!(Password::parse("short").is_err());
        assert!(Password::parse("aaaaaaaa").is_ok());
        assert!(Password::parse("пароль-🔑!").is_ok());
        assert!(Password::parse(&"x".repeat(MAX_CHARS)).is_ok());
        assert!(Password::parse(&"x".repeat(MAX_CHARS + 1)).is_err());
    }

    /// The nice value of each of this process's threads named `prefix…` (Linux).
    #[cfg(target_os = "linux")]
    fn nice_of_threads(prefix: &str) -> Vec<i64> {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .flatten()
            .filter(|task| {
                std::fs::read_to_string(task.path().join("comm"))
                    .is_ok_and(|name| name.starts_with(prefix))
            })
            .filter_map(|task| {
                let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
                // After the parenthesised name: state is field 3, nice field 19.
                let rest = &stat[stat.rfind(')')? + 2..];
                rest.split_whitespace().nth(16)?.parse().ok()
            })
            .collect()
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashing_runs_on_its_own_threads_at_a_lower_priority() {
        let mut config = settings(1024);
        config.hash_concurrency = 2;
        let passwords = Passwords::from_settings(&config);
        let pw = Password::parse("correct horse battery").unwrap();
        let hash = passwords.hash(&pw).await.unwrap();
        assert!(matches!(
            passwords.verify(Some(hash), &pw).await.unwrap(),
            Verdict::Right
        ));
        // (Other tests' hashers may be alive too: every such thread is at +10.)
        let nice = nice_of_threads("kopilka-hash-");
        assert!(nice.len() >= 2, "this hasher's two threads: {nice:?}");
        assert!(nice.iter().all(|n| *n == 10), "all at nice +10: {nice:?}");
        // The thread that asked keeps its priority.
        let own = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let own: i64 = own[own.rfind(')').unwrap() + 2..]
            .split_whitespace()
            .nth(16)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(own, 0);
    }

    #[tokio::test]
    async fn a_hash_is_argon2id_with_the_configured_cost_and_verifies() {
        let passwords = Passwords::from_settings(&settings(19_456));
        let pw = Password::parse("correct horse battery").unwrap();
        let hash = passwords.hash(&pw).await.unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert_eq!(
            passwords.verify(Some(hash.clone()), &pw).await.unwrap(),
            Verdict::Right
        );
        let wrong = Password::parse("incorrect horse").unwrap();
        assert_eq!(
            passwords.verify(Some(hash), &wrong).await.unwrap(),
            Verdict::Wrong
        );
        assert_eq!(passwords.verify(None, &pw).await.unwrap(), Verdict::Wrong);
    }

    #[tokio::test]
    async fn a_hash_with_an_old_cost_is_rehashed_on_login() {
        let old = Passwords::from_settings(&settings(8_192));
        let pw = Password::parse("correct horse battery").unwrap();
        let hash = old.hash(&pw).await.unwrap();
        let new = Passwords::from_settings(&settings(19_456));
        match new.verify(Some(hash), &pw).await.unwrap() {
            Verdict::RightRehashed(again) => assert!(again.contains("m=19456"), "{again}"),
            other => panic!("expected a rehash, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_pepper_takes_part() {
        let mut peppered = settings(8_192);
        peppered.pepper = Some(SecretString::from("pepper-pepper-pepper".to_owned()));
        let with = Passwords::from_settings(&peppered);
        let without = Passwords::from_settings(&settings(8_192));
        let pw = Password::parse("correct horse battery").unwrap();
        let hash = with.hash(&pw).await.unwrap();
        assert_eq!(
            with.verify(Some(hash.clone()), &pw).await.unwrap(),
            Verdict::Right
        );
        assert_eq!(
            without.verify(Some(hash), &pw).await.unwrap(),
            Verdict::Wrong
        );
    }
}
