//! The connection's API key and the scrubber that keeps it (and its look-alikes) out of every
//! error message.

use reqwest::header::HeaderValue;
use secrecy::{ExposeSecret, SecretString};
use vmx_domain::inference::{Credentials, ProviderError};

const REDACTED: &str = "[REDACTED]";

/// The connection's API key, with what is needed to keep it out of errors.
#[derive(Clone)]
pub(crate) struct ApiKey {
    key: SecretString,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(********)")
    }
}

impl ApiKey {
    pub fn from_credentials(credentials: &Credentials) -> Result<Self, ProviderError> {
        match credentials {
            Credentials::ApiKey(key) if !key.expose_secret().trim().is_empty() => {
                Ok(Self { key: key.clone() })
            }
            Credentials::ApiKey(_) => Err(ProviderError::Unauthorized {
                status: 401,
                message: "the connection's API key is empty".into(),
            }),
            Credentials::Aws { .. } => Err(ProviderError::Unauthorized {
                status: 401,
                message: "this provider takes an API key, not AWS credentials".into(),
            }),
        }
    }

    /// `prefix` + the key as a header value, marked sensitive (never printed by `Debug`).
    pub fn header(&self, prefix: &str) -> Result<HeaderValue, ProviderError> {
        let value = zeroize::Zeroizing::new(format!("{prefix}{}", self.key.expose_secret()));
        let mut v = HeaderValue::from_str(&value).map_err(|_| ProviderError::Unauthorized {
            status: 401,
            message: "the connection's API key contains characters not allowed in a header".into(),
        })?;
        v.set_sensitive(true);
        Ok(v)
    }

    pub fn scrub(&self, text: &str) -> String {
        scrub_secret(text, self.key.expose_secret())
    }

    /// The error with the key removed from every message in it.
    pub fn scrub_error(&self, e: ProviderError) -> ProviderError {
        match e {
            ProviderError::RateLimited {
                retry_after_secs,
                message,
                limits,
            } => ProviderError::RateLimited {
                retry_after_secs,
                message: self.scrub(&message),
                limits,
            },
            ProviderError::Unauthorized { status, message } => ProviderError::Unauthorized {
                status,
                message: self.scrub(&message),
            },
            ProviderError::BadRequest {
                status,
                message,
                param,
                code,
            } => ProviderError::BadRequest {
                status,
                message: self.scrub(&message),
                param: param.map(|p| self.scrub(&p)),
                code: code.map(|c| self.scrub(&c)),
            },
            ProviderError::Upstream { status, message } => ProviderError::Upstream {
                status,
                message: self.scrub(&message),
            },
            ProviderError::Timeout => ProviderError::Timeout,
            ProviderError::Network(m) => ProviderError::Network(self.scrub(&m)),
            ProviderError::Malformed(m) => ProviderError::Malformed(self.scrub(&m)),
        }
    }
}

/// Removes `secret` and its obvious variants from `text`: the secret itself, its
/// percent-encoded form, any word that shares 8 consecutive characters with it (a prefix, a
/// suffix, a middle part), and masked echoes such as `sk-proj-****...abcd` that keep its first
/// or last characters. Each becomes `[REDACTED]`.
pub fn scrub_secret(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        return text.to_owned();
    }
    let mut out = text.replace(secret, REDACTED);
    let encoded = zeroize::Zeroizing::new(percent_encode(secret));
    if encoded.as_str() != secret {
        out = out.replace(encoded.as_str(), REDACTED);
    }
    if secret.chars().count() < 8 {
        return out;
    }
    let is_word = |c: char| c.is_ascii_alphanumeric() || "-_.*~+/=%".contains(c);
    let mut result = String::with_capacity(out.len());
    let mut word_start: Option<usize> = None;
    for (i, c) in out.char_indices().chain(std::iter::once((out.len(), ' '))) {
        let boundary = i == out.len() || !is_word(c);
        match (word_start, boundary) {
            (None, false) => word_start = Some(i),
            (Some(start), true) => {
                let word = &out[start..i];
                result.push_str(if leaks(word, secret) { REDACTED } else { word });
                word_start = None;
                if i < out.len() {
                    result.push(c);
                }
            }
            (None, true) => {
                if i < out.len() {
                    result.push(c);
                }
            }
            (Some(_), false) => {}
        }
    }
    result
}

fn leaks(word: &str, secret: &str) -> bool {
    const WINDOW: usize = 8;
    if word.len() < WINDOW || word == REDACTED {
        return false;
    }
    let bytes = word.as_bytes();
    // Words are ASCII (see `is_word`), so byte windows are char windows.
    if bytes
        .windows(WINDOW)
        .any(|w| std::str::from_utf8(w).is_ok_and(|w| secret.contains(w)))
    {
        return true;
    }
    // A masked echo: stars plus the key's first or last characters.
    if word.contains("**") {
        let head: String = secret.chars().take(4).collect();
        let tail: String = {
            let n = secret.chars().count();
            secret.chars().skip(n.saturating_sub(4)).collect()
        };
        let trimmed = word.trim_end_matches(['.', ',']);
        return trimmed.ends_with(&tail) || trimmed.starts_with(&head);
    }
    false
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
