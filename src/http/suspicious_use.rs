//! Suspicious use: a session used from another network *and* another browser family than it
//! was created with (a stolen cookie replayed elsewhere looks like that; a laptop that changes
//! Wi-Fi, or a browser update, does not), or whose refresh token the provider reports reused.
//!
//! (The second is reported where refreshes are decided, in [`crate::refresh`].)
//!
//! Each finding is a `suspicious_use` event of the audit trail ([`crate::audit`]), at most
//! once per session per [`REPORT_INTERVAL`] and instance. `session.suspicious_use`
//! decides what else happens: `log` (the default) only reports, `end` also ends the session
//! (its refresh token revoked) and answers `401`. The network is compared first, so the usual
//! request (same network) costs no User-Agent parsing.

use std::net::IpAddr;
use std::time::Duration;

use axum::http::{HeaderMap, header};

use super::device::describe;
use crate::audit::{AuditEvent, AuditTrail, Details};
use crate::clock::{OncePerInterval, unix_now};
use crate::http::server::client_address::client_network;
use crate::session::SessionRecord;
pub use crate::session::SuspiciousUseAction;

/// How often one session's suspicious use is reported again by one instance.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(600);

/// Sessions whose findings this instance reported recently (bounded).
const RECENT_REPORTS: usize = 4_096;

/// A session used from another network with another browser family than it was created with.
#[derive(Debug, PartialEq, Eq)]
pub struct Finding {
    /// The network and browser family the session was created with.
    pub created: (String, String),
    /// The network and browser family of this request.
    pub now: (String, String),
}

/// Compares this request with where `record`'s session was created; `None` when either the
/// network or the browser family is the same (or the session predates the record of both).
pub fn assess(record: &SessionRecord, client: IpAddr, headers: &HeaderMap) -> Option<Finding> {
    if record.origin_network.is_empty() {
        return None;
    }
    // Compared as networks, without formatting one on every request.
    let network = client_network(client);
    if record.origin_network.parse::<ipnet::IpNet>().ok() == Some(network) {
        return None;
    }
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|value| value.to_str().ok());
    let (browser, _) = describe(user_agent);
    if browser == record.origin_browser {
        return None;
    }
    Some(Finding {
        created: (record.origin_network.clone(), record.origin_browser.clone()),
        now: (network.to_string(), browser),
    })
}

/// The configured action and this instance's memory of what it reported.
pub struct SuspiciousUsePolicy {
    /// What happens besides the report.
    pub action: SuspiciousUseAction,
    reported: OncePerInterval,
    audit: AuditTrail,
}

impl SuspiciousUsePolicy {
    /// A policy taking `action`, reporting to `audit`.
    pub fn new(action: SuspiciousUseAction, audit: AuditTrail) -> Self {
        Self {
            action,
            reported: OncePerInterval::new(REPORT_INTERVAL, RECENT_REPORTS),
            audit,
        }
    }

    /// Records the audit event for `finding` on the session of `record`, unless this instance
    /// reported that session within [`REPORT_INTERVAL`] (always when the session ends).
    pub fn report(&self, record: &SessionRecord, finding: &Finding) {
        let ending = self.action == SuspiciousUseAction::End;
        if !ending && !self.due(&record.handle) {
            return;
        }
        self.audit.record(
            AuditEvent::SuspiciousUse,
            Details {
                sub: Some(&record.sub),
                session: Some(&record.handle),
                reason: Some("network_and_browser_changed"),
                outcome: Some(if ending { "session_ended" } else { "logged" }),
                created_network: Some(&finding.created.0),
                created_browser: Some(&finding.created.1),
                browser: Some(&finding.now.1),
                ..Details::default()
            },
        );
    }

    fn due(&self, handle: &str) -> bool {
        self.reported.due(handle, unix_now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0";
    const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36";

    fn record(network: &str, browser: &str) -> SessionRecord {
        SessionRecord {
            origin_network: network.into(),
            origin_browser: browser.into(),
            ..SessionRecord::for_testing("alice", 1)
        }
    }

    fn agent(user_agent: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::USER_AGENT,
            HeaderValue::from_str(user_agent).unwrap(),
        );
        headers
    }

    #[test]
    fn only_another_network_with_another_browser_is_suspicious() {
        let session = record("203.0.113.0/24", "Firefox");
        let home: IpAddr = "203.0.113.9".parse().unwrap();
        let elsewhere: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(assess(&session, home, &agent(CHROME)), None, "same network");
        assert_eq!(
            assess(&session, elsewhere, &agent(FIREFOX)),
            None,
            "same browser"
        );
        assert_eq!(
            assess(&session, elsewhere, &agent(CHROME)),
            Some(Finding {
                created: ("203.0.113.0/24".into(), "Firefox".into()),
                now: ("198.51.100.0/24".into(), "Chrome".into()),
            })
        );
        assert_eq!(
            assess(&record("", ""), elsewhere, &agent(CHROME)),
            None,
            "sessions created before origins were recorded are not judged"
        );
    }

    #[test]
    fn a_session_is_reported_once_per_interval_unless_it_ends() {
        let finding = Finding {
            created: ("a".into(), "b".into()),
            now: ("c".into(), "d".into()),
        };
        let policy = SuspiciousUsePolicy::new(SuspiciousUseAction::Log, AuditTrail::clear());
        assert!(policy.due("s1"));
        assert!(!policy.due("s1"));
        assert!(policy.due("s2"));
        let record = SessionRecord {
            handle: "s3".into(),
            ..SessionRecord::for_testing("alice", 1)
        };
        policy.report(&record, &finding);
        assert!(!policy.due("s3"), "the report was remembered");
    }
}
