//! How a failed refresh is told: the audit trail's records (every failure that ends a
//! session, those that keep it at most once a minute per session) and the small vocabulary of
//! reasons shared by the audit trail and the metrics.
//!
//! It never decides what a failure does to the session (`grant.rs` does), and never records a
//! token.

use super::Refresher;
use crate::audit::{AuditEvent, Details, Repeats};
use crate::oidc::OidcError;
use crate::session::{ActiveSession, SessionRecord};

impl Refresher {
    /// Records a failed refresh of `current`'s tokens.
    /// A failure that ends the session is always recorded; one that keeps it (the provider is
    /// down and every request retries) once a minute per session.
    pub(super) fn audit_failure(&self, current: &ActiveSession, reason: &str, outcome: &str) {
        let details = Details {
            sub: Some(&current.record.sub),
            session: Some(&current.record.handle),
            reason: Some(reason),
            outcome: Some(outcome),
            ..Details::default()
        };
        if outcome == "session_ended" {
            self.audit.record(AuditEvent::RefreshFailed, details);
        } else {
            self.audit.record_unless_repeated(
                AuditEvent::RefreshFailed,
                details,
                Repeats::PerSessionPerMinute,
            );
        }
    }

    /// The suspicious-use event for a refresh token the provider reports reused (a copy of it
    /// is in someone else's hands): the session has just ended, as on any refused refresh.
    pub(super) fn report_refresh_token_reuse(&self, record: &SessionRecord) {
        self.audit.record(
            AuditEvent::SuspiciousUse,
            Details {
                sub: Some(&record.sub),
                session: Some(&record.handle),
                reason: Some("refresh_token_reused"),
                outcome: Some("session_ended"),
                ..Details::default()
            },
        );
    }
}

/// Why a refresh failed, as a word of a small vocabulary (audit reasons and metric labels).
pub(super) fn failure_reason(error: &OidcError) -> &'static str {
    match error {
        OidcError::Rejected(_) => "refresh_rejected",
        OidcError::ReuseReported(_) => "refresh_token_reused",
        OidcError::SubjectChanged => "subject_changed",
        OidcError::RefreshedIdTokenInvalid(_) => "id_token_invalid",
        OidcError::Refused(_) => "provider_refused",
        OidcError::Unavailable(_) | OidcError::Deferred(_) => "provider_unavailable",
        OidcError::Invalid(_) => "invalid_response",
        // Not at a refresh (another subject there is `SubjectChanged`); named all the same.
        OidcError::UserInfo(error) => error.reason(),
        // Only a login is checked against what it asked for; named all the same.
        OidcError::NotAuthenticatedAsRequested(_) => "step_up_not_satisfied",
        // Only a login's start pushes; named all the same.
        OidcError::PushRefused(_) => "authorization_request_refused",
        // `oidc.dpop = "required"`, and the provider answered a Bearer token.
        OidcError::DpopUnsupported(_) => "dpop_unsupported",
    }
}
