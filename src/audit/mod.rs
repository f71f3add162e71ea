//! The audit trail: one JSON line per authentication event, on the log target
//! [`TARGET`] (`vestibule::audit`), whatever `log_format` and `VESTIBULE_LOG` say (see
//! [`crate::logging`]), so a log pipeline can route it to a SIEM by target.
//!
//! Every event has its time, its kind (`event`), and where it applies the request id and the
//! client's network (from [`context`]), the subject, the session's public handle (the id "my
//! sessions" shows), a reason and a count. The subject is a keyed hash by default
//! (HMAC-SHA256, 128 bits, base64url): the same user gives the same value on every instance,
//! so events correlate, but the log does not hold identities; `audit.subject = "clear"` logs
//! the `sub` itself. Never a token, cookie, code, state or secret: events are built from the
//! fixed fields below only.

pub mod context;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretBox};
use sha2::Sha256;

pub use context::RequestContext;

use crate::clock::{OncePerInterval, unix_now};

/// The log target of audit events.
pub const TARGET: &str = "vestibule::audit";

/// The purpose the subject key is derived for (from `audit.subject_key`, or from the encryption
/// key when that is not set): see [`crate::session::crypto::purpose_key`].
pub const SUBJECT_KEY_PURPOSE: &[u8] = b"vestibule audit subject v1";

/// Bytes of the HMAC kept in a subject hash (128 bits: no collisions among any real user base).
const SUBJECT_HASH_LEN: usize = 16;

/// The kinds of audit event; [`AuditEvent::name`] is the `event` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditEvent {
    /// A login completed: a session was created.
    LoginSucceeded,
    /// A login callback failed (`reason` says why).
    LoginFailed,
    /// A user logged out (or a login replaced the session the browser had).
    Logout,
    /// The provider ended sessions through back-channel logout.
    BackchannelLogout,
    /// The provider ended sessions through front-channel logout (an unauthenticated request
    /// naming the provider session).
    FrontchannelLogout,
    /// A refresh failed; `outcome` says whether the session ended.
    RefreshFailed,
    /// The operator ended a subject's sessions (`vestibule sessions revoke`).
    SessionsEndedByOperator,
    /// A user ended sessions from "my sessions".
    SessionsEndedByUser,
    /// A login beyond `session.max_per_user` ended the user's least recently used sessions.
    SessionsEvicted,
    /// A session was used in a way that suggests it is in someone else's hands.
    SuspiciousUse,
}

impl AuditEvent {
    /// The event's name in the `event` field.
    pub fn name(self) -> &'static str {
        match self {
            AuditEvent::LoginSucceeded => "login_succeeded",
            AuditEvent::LoginFailed => "login_failed",
            AuditEvent::Logout => "logout",
            AuditEvent::BackchannelLogout => "backchannel_logout",
            AuditEvent::FrontchannelLogout => "frontchannel_logout",
            AuditEvent::RefreshFailed => "refresh_failed",
            AuditEvent::SessionsEndedByOperator => "sessions_ended_by_operator",
            AuditEvent::SessionsEndedByUser => "sessions_ended_by_user",
            AuditEvent::SessionsEvicted => "sessions_evicted",
            AuditEvent::SuspiciousUse => "suspicious_use",
        }
    }

    /// A sentence for people reading the line.
    fn message(self) -> &'static str {
        match self {
            AuditEvent::LoginSucceeded => "login succeeded",
            AuditEvent::LoginFailed => "login failed",
            AuditEvent::Logout => "session ended by logout",
            AuditEvent::BackchannelLogout => "sessions ended by the provider (back-channel logout)",
            AuditEvent::FrontchannelLogout => {
                "sessions ended by the provider (front-channel logout)"
            }
            AuditEvent::RefreshFailed => "token refresh failed",
            AuditEvent::SessionsEndedByOperator => "sessions of a subject ended by the operator",
            AuditEvent::SessionsEndedByUser => "sessions ended by their user",
            AuditEvent::SessionsEvicted => "sessions ended: more than session.max_per_user",
            AuditEvent::SuspiciousUse => "suspicious use of a session",
        }
    }
}

/// What an event says besides its kind and its request; every field is optional and a fixed,
/// non-secret value (reasons are words from a small vocabulary, never another system's text).
#[derive(Debug, Default, Clone, Copy)]
pub struct Details<'a> {
    /// The user (the ID token's `sub`), logged as [`AuditTrail`] is configured.
    pub sub: Option<&'a str>,
    /// The session's public handle.
    pub session: Option<&'a str>,
    /// Why (`state_mismatch`, `refresh_rejected`, …).
    pub reason: Option<&'a str>,
    /// What came of it (`session_ended`, `session_kept`, …).
    pub outcome: Option<&'a str>,
    /// How many sessions ended.
    pub sessions_ended: Option<usize>,
    /// The network the session was created from (suspicious use).
    pub created_network: Option<&'a str>,
    /// The browser family the session was created with (suspicious use).
    pub created_browser: Option<&'a str>,
    /// The browser family of this request (suspicious use).
    pub browser: Option<&'a str>,
}

/// How subjects appear in audit events (`audit.subject`).
enum SubjectForm {
    /// A keyed hash under this key.
    Hashed(SecretBox<[u8; 32]>),
    /// The `sub` itself (the operator opted in).
    Clear,
}

/// How often an event that can be caused again and again is recorded, per key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeats {
    /// Once per second per client network and reason: a flood of forged callbacks from one
    /// place is a line a second, not a line a request.
    PerClientPerSecond,
    /// Once per minute per session: a provider that is down for a while is a line a minute
    /// per waiting session, not one per request; so is a user asking again and again to end
    /// sessions they do not have.
    PerSessionPerMinute,
}

/// Keys remembered per throttle (bounded; an old key is forgotten, never refused).
const THROTTLED_KEYS: usize = 4_096;

/// Where audit events are recorded. Cloning shares it.
#[derive(Clone)]
pub struct AuditTrail(Arc<Trail>);

struct Trail {
    subjects: SubjectForm,
    per_client: OncePerInterval,
    per_session: OncePerInterval,
}

impl AuditTrail {
    /// Subjects as keyed hashes under `key` (instances sharing the key agree on them).
    pub fn hashed(key: SecretBox<[u8; 32]>) -> Self {
        Self::with(SubjectForm::Hashed(key))
    }

    /// Subjects as they are.
    pub fn clear() -> Self {
        Self::with(SubjectForm::Clear)
    }

    fn with(subjects: SubjectForm) -> Self {
        Self(Arc::new(Trail {
            subjects,
            per_client: OncePerInterval::new(Duration::from_secs(1), THROTTLED_KEYS),
            per_session: OncePerInterval::new(Duration::from_secs(60), THROTTLED_KEYS),
        }))
    }

    /// Records `event` unless the same kind of it was recorded for the same key (the client's
    /// network and the reason, or the session) within the interval `repeats` names.
    pub fn record_unless_repeated(
        &self,
        event: AuditEvent,
        details: Details<'_>,
        repeats: Repeats,
    ) {
        let (throttle, key) = match repeats {
            Repeats::PerClientPerSecond => (
                &self.0.per_client,
                format!(
                    "{}|{}|{}",
                    event.name(),
                    RequestContext::current()
                        .map(|context| context.client_network.to_string())
                        .unwrap_or_default(),
                    details.reason.unwrap_or_default()
                ),
            ),
            Repeats::PerSessionPerMinute => (
                &self.0.per_session,
                format!("{}|{}", event.name(), details.session.unwrap_or_default()),
            ),
        };
        if throttle.due(&key, unix_now()) {
            self.record(event, details);
        }
    }

    /// How `sub` appears in events.
    pub fn subject(&self, sub: &str) -> String {
        match &self.0.subjects {
            SubjectForm::Clear => sub.to_owned(),
            SubjectForm::Hashed(key) => {
                // HMAC accepts keys of any length, so this cannot fail.
                let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key.expose_secret()) else {
                    return String::new();
                };
                mac.update(sub.as_bytes());
                let digest = mac.finalize().into_bytes();
                URL_SAFE_NO_PAD.encode(&digest[..SUBJECT_HASH_LEN])
            }
        }
    }

    /// Records `event` with `details`, in the current request's context (if any).
    pub fn record(&self, event: AuditEvent, details: Details<'_>) {
        let context = RequestContext::current();
        let request_id = context.as_ref().map(RequestContext::request_id);
        let client_network = context
            .as_ref()
            .map(|context| tracing::field::display(context.client_network));
        let subject = details.sub.map(|sub| self.subject(sub));
        macro_rules! emit {
            ($level:expr) => {
                tracing::event!(
                    target: TARGET,
                    $level,
                    event = event.name(),
                    request_id,
                    client_network,
                    subject = subject.as_deref(),
                    session = details.session,
                    reason = details.reason,
                    outcome = details.outcome,
                    sessions_ended = details.sessions_ended,
                    created_network = details.created_network,
                    created_browser = details.created_browser,
                    browser = details.browser,
                    "{}",
                    event.message()
                )
            };
        }
        match event {
            AuditEvent::SuspiciousUse | AuditEvent::LoginFailed => emit!(tracing::Level::WARN),
            _ => emit!(tracing::Level::INFO),
        }
    }
}

impl std::fmt::Debug for AuditTrail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match &self.0.subjects {
            SubjectForm::Hashed(_) => "AuditTrail(hashed subjects)",
            SubjectForm::Clear => "AuditTrail(clear subjects)",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyed(byte: u8) -> AuditTrail {
        AuditTrail::hashed(SecretBox::new(Box::new([byte; 32])))
    }

    #[test]
    fn subjects_hash_the_same_under_one_key_and_differently_under_another() {
        let trail = keyed(1);
        let alice = trail.subject("alice");
        assert_eq!(alice, keyed(1).subject("alice"), "instances agree");
        assert_eq!(alice.len(), 22, "128 bits, base64url");
        assert!(!alice.contains("alice"));
        assert_ne!(alice, trail.subject("bob"));
        assert_ne!(alice, keyed(2).subject("alice"), "keyed: not a plain hash");
        assert_eq!(AuditTrail::clear().subject("alice"), "alice");
    }

    #[test]
    fn an_event_anyone_can_repeat_is_recorded_once_per_interval_and_key() {
        let trail = keyed(3);
        let details = Details {
            session: Some("s1"),
            reason: Some("provider_unavailable"),
            ..Details::default()
        };
        let key = |session| format!("refresh_failed|{session}");
        assert!(trail.0.per_session.due(&key("s0"), unix_now()));
        trail.record_unless_repeated(
            AuditEvent::RefreshFailed,
            details,
            Repeats::PerSessionPerMinute,
        );
        assert!(
            !trail.0.per_session.due(&key("s1"), unix_now()),
            "remembered"
        );
        assert!(
            trail.0.per_session.due(&key("s2"), unix_now()),
            "another session"
        );
    }

    #[test]
    fn the_debug_form_never_shows_the_key() {
        assert_eq!(format!("{:?}", keyed(7)), "AuditTrail(hashed subjects)");
    }
}
