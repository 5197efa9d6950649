//! The token cache: one token per key (the application's, or one per mailbox for a service
//! account), shared by every thread of the run. A token is handed out until little of its
//! lifetime is left; then one thread fetches the next while the others wait for it, and a
//! token the server refused can be fetched again at once (but only once, however many threads
//! saw it refused).

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The longest a token is refreshed before it expires; a short-lived one is refreshed when a
/// tenth of its lifetime is left, and never later than halfway.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// An access token. Its value is never printed.
#[derive(Clone)]
pub struct Token {
    value: Arc<str>,
    obtained: Instant,
    expires: Instant,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token(valid {:?}, not shown)", self.lifetime())
    }
}

impl PartialEq for Token {
    fn eq(&self, other: &Token) -> bool {
        Arc::ptr_eq(&self.value, &other.value) || *self.value == *other.value
    }
}

impl Token {
    pub fn new(value: String, lifetime: Duration) -> Token {
        let now = Instant::now();
        Token {
            value: value.into(),
            obtained: now,
            expires: now + lifetime,
        }
    }

    /// The bearer token itself, for the SASL response only.
    pub fn secret(&self) -> &str {
        &self.value
    }

    pub fn lifetime(&self) -> Duration {
        self.expires - self.obtained
    }

    /// Whether it is still worth handing out at `now`.
    fn fresh(&self, now: Instant) -> bool {
        let lifetime = self.lifetime();
        let margin = (lifetime / 10).max(REFRESH_MARGIN).min(lifetime / 2);
        now + margin < self.expires
    }
}

#[derive(Default)]
struct Slot {
    token: Option<Token>,
    fetching: bool,
}

/// Tokens by key.
#[derive(Default)]
pub struct TokenCache {
    slots: Mutex<HashMap<String, Slot>>,
    fetched: Condvar,
}

impl TokenCache {
    /// The cached token for `key` while it is fresh; else the one `fetch` gets, fetched by
    /// this thread while others asking for the same key wait. With `refused`, a cached token
    /// equal to it is not handed out again: it is fetched anew, unless another thread has
    /// already replaced it.
    pub fn get<E>(
        &self,
        key: &str,
        refused: Option<&Token>,
        fetch: impl FnOnce() -> Result<Token, E>,
    ) -> Result<Token, E> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let slot = slots.entry(key.to_string()).or_default();
            if slot.fetching {
                slots = self.fetched.wait(slots).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            if let Some(token) = &slot.token
                && token.fresh(Instant::now())
                && refused != Some(token)
            {
                return Ok(token.clone());
            }
            slot.fetching = true;
            break;
        }
        drop(slots);
        // Whatever happens in `fetch` (a panic included), the slot is freed for the others.
        struct Release<'a>(&'a TokenCache, &'a str, Option<Token>);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                let mut slots = self.0.slots.lock().unwrap_or_else(|e| e.into_inner());
                let slot = slots.entry(self.1.to_string()).or_default();
                slot.fetching = false;
                if let Some(token) = self.2.take() {
                    slot.token = Some(token);
                }
                self.0.fetched.notify_all();
            }
        }
        let mut release = Release(self, key, None);
        let token = fetch()?;
        release.2 = Some(token.clone());
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn counting(
        fetches: &AtomicUsize,
        lifetime: Duration,
    ) -> impl FnOnce() -> Result<Token, String> {
        move || {
            let n = fetches.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(50));
            Ok(Token::new(format!("token-{n}"), lifetime))
        }
    }

    #[test]
    fn a_fresh_token_is_shared_and_one_near_expiry_is_refreshed_first() {
        let cache = TokenCache::default();
        let fetches = AtomicUsize::new(0);
        let lifetime = Duration::from_millis(1000);
        let first = cache
            .get("app", None, counting(&fetches, lifetime))
            .unwrap();
        let again = cache
            .get("app", None, counting(&fetches, lifetime))
            .unwrap();
        assert_eq!(first, again);
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        // Past half of a short lifetime (the margin is capped there), before it expires.
        std::thread::sleep(Duration::from_millis(600));
        assert!(Instant::now() < first.expires);
        let next = cache
            .get("app", None, counting(&fetches, lifetime))
            .unwrap();
        assert_ne!(next, first);
        assert_eq!(next.secret(), "token-1");
        // Another key has its own token.
        let other = cache
            .get("bob", None, counting(&fetches, lifetime))
            .unwrap();
        assert_eq!(other.secret(), "token-2");
    }

    #[test]
    fn an_hour_token_is_refreshed_six_minutes_before_it_expires() {
        let hour = Token::new("t".into(), Duration::from_secs(3600));
        let now = hour.obtained;
        assert!(hour.fresh(now + Duration::from_secs(3600 - 361)));
        assert!(!hour.fresh(now + Duration::from_secs(3600 - 359)));
        let ten_minutes = Token::new("t".into(), Duration::from_secs(600));
        let now = ten_minutes.obtained;
        assert!(ten_minutes.fresh(now + Duration::from_secs(600 - 61)));
        assert!(!ten_minutes.fresh(now + Duration::from_secs(600 - 59)));
    }

    #[test]
    fn many_threads_wanting_a_token_cause_one_fetch() {
        let cache = TokenCache::default();
        let fetches = AtomicUsize::new(0);
        let tokens: Vec<Token> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..16)
                .map(|_| {
                    s.spawn(|| {
                        cache
                            .get("app", None, counting(&fetches, Duration::from_secs(3600)))
                            .unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        assert!(tokens.iter().all(|t| *t == tokens[0]));
    }

    #[test]
    fn a_refused_token_is_fetched_again_once_however_many_threads_saw_it_refused() {
        let cache = TokenCache::default();
        let fetches = AtomicUsize::new(0);
        let hour = Duration::from_secs(3600);
        let refused = cache.get("app", None, counting(&fetches, hour)).unwrap();
        let fresh: Vec<Token> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        cache
                            .get("app", Some(&refused), counting(&fetches, hour))
                            .unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(fetches.load(Ordering::SeqCst), 2, "one fetch for all eight");
        assert!(fresh.iter().all(|t| *t != refused && *t == fresh[0]));
    }

    #[test]
    fn a_failed_fetch_frees_the_slot_and_caches_nothing() {
        let cache = TokenCache::default();
        let e = cache
            .get("app", None, || {
                Err::<Token, _>("invalid_client".to_string())
            })
            .unwrap_err();
        assert_eq!(e, "invalid_client");
        let fetches = AtomicUsize::new(0);
        let t = cache
            .get("app", None, counting(&fetches, Duration::from_secs(60)))
            .unwrap();
        assert_eq!(t.secret(), "token-0");
        assert!(!format!("{t:?}").contains("token-0"));
    }
}
