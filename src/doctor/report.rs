//! What `vestibule doctor` prints: one line per check (ok, warn, fail or skip) with the remedy
//! of each problem, or the same as one JSON document, and the exit code a CI pipeline reads.
//!
//! Pure formatting: the checks decide, this module only shows. A remedy names keys and
//! commands, never a secret (the checks never put one in a line).

use serde::Serialize;

/// Exit code: every check passed (skipped ones included).
pub const EXIT_OK: u8 = 0;
/// Exit code: at least one check failed (Vestibule would not work, or not safely).
pub const EXIT_FAILED: u8 = 1;
/// Exit code: the configuration cannot be read (as for `--check-config`).
pub const EXIT_UNREADABLE_CONFIG: u8 = 2;
/// Exit code: no check failed, but at least one warned.
pub const EXIT_WARNINGS: u8 = 3;

/// A check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Nothing to do.
    Ok,
    /// Not checked (not applicable, or a topology the check does not cover); says why.
    Skip,
    /// Works, but probably not as intended.
    Warn,
    /// Vestibule would not work, or not safely.
    Fail,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Skip => "skip",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// One check's outcome: what was found and, for a problem, what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// A stable identifier (`provider.issuer`, `redis.acl`, …) for scripts.
    pub id: &'static str,
    /// The outcome.
    pub status: Status,
    /// What was found, in one line.
    pub summary: String,
    /// What to do (for a warning or a failure).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remedy: Option<String>,
}

impl Check {
    /// A passed check.
    pub fn ok(id: &'static str, summary: impl Into<String>) -> Self {
        Self::new(id, Status::Ok, summary, None)
    }

    /// A check that was not run, and why.
    pub fn skip(id: &'static str, summary: impl Into<String>) -> Self {
        Self::new(id, Status::Skip, summary, None)
    }

    /// A warning with its remedy.
    pub fn warn(id: &'static str, summary: impl Into<String>, remedy: impl Into<String>) -> Self {
        Self::new(id, Status::Warn, summary, Some(remedy.into()))
    }

    /// A failure with its remedy.
    pub fn fail(id: &'static str, summary: impl Into<String>, remedy: impl Into<String>) -> Self {
        Self::new(id, Status::Fail, summary, Some(remedy.into()))
    }

    fn new(
        id: &'static str,
        status: Status,
        summary: impl Into<String>,
        remedy: Option<String>,
    ) -> Self {
        Self {
            id,
            status,
            summary: summary.into(),
            remedy,
        }
    }
}

/// Every check's outcome, in the order they ran.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// The outcomes.
    pub checks: Vec<Check>,
    /// Whether the configuration could not be read (then it is the only check).
    #[serde(skip)]
    unreadable: bool,
}

/// The JSON document `--json` prints.
#[derive(Serialize)]
struct JsonReport<'a> {
    /// The worst status.
    status: Status,
    /// The exit code, as the process returns it.
    exit_code: u8,
    checks: &'a [Check],
}

impl Report {
    /// A report of `checks`.
    pub fn new(checks: Vec<Check>) -> Self {
        Self {
            checks,
            unreadable: false,
        }
    }

    /// The report of a configuration that cannot be loaded: one failed check with the
    /// loader's message (which names the key).
    pub fn unreadable_config(message: String) -> Self {
        Self {
            checks: vec![Check::fail(
                "config.load",
                message,
                "fix the key named above (`vestibule --check-config --config FILE` shows the \
                 same error); then run doctor again",
            )],
            unreadable: true,
        }
    }

    /// The worst status among the checks (`Ok` when there are none).
    pub fn worst(&self) -> Status {
        self.checks
            .iter()
            .map(|check| check.status)
            .filter(|status| *status != Status::Skip)
            .max()
            .unwrap_or(Status::Ok)
    }

    /// The process's exit code (see the `EXIT_*` constants).
    pub fn exit_code(&self) -> u8 {
        if self.unreadable {
            return EXIT_UNREADABLE_CONFIG;
        }
        match self.worst() {
            Status::Fail => EXIT_FAILED,
            Status::Warn => EXIT_WARNINGS,
            Status::Ok | Status::Skip => EXIT_OK,
        }
    }

    /// One line per check (`fail  provider.issuer  …`), the remedy indented below a problem,
    /// and a closing count.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        let width = self.checks.iter().map(|c| c.id.len()).max().unwrap_or(0);
        for check in &self.checks {
            text.push_str(&format!(
                "{:<4}  {:<width$}  {}\n",
                check.status.label(),
                check.id,
                check.summary
            ));
            if let Some(remedy) = &check.remedy {
                text.push_str(&format!("      {:<width$}  remedy: {remedy}\n", ""));
            }
        }
        let count = |status| self.checks.iter().filter(|c| c.status == status).count();
        text.push_str(&format!(
            "{} ok, {} warning(s), {} failure(s), {} skipped\n",
            count(Status::Ok),
            count(Status::Warn),
            count(Status::Fail),
            count(Status::Skip)
        ));
        text
    }

    /// The report as one JSON document: `{"status", "exit_code", "checks": [{"id", "status",
    /// "summary", "remedy"?}]}`.
    pub fn to_json(&self) -> String {
        let document = JsonReport {
            status: if self.unreadable {
                Status::Fail
            } else {
                self.worst()
            },
            exit_code: self.exit_code(),
            checks: &self.checks,
        };
        serde_json::to_string_pretty(&document).unwrap_or_else(|_| "{}".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exit_code_tells_failures_from_warnings_from_an_unreadable_config() {
        let ok = Report::new(vec![Check::ok("a", "fine"), Check::skip("b", "n/a")]);
        assert_eq!(ok.exit_code(), EXIT_OK);
        let warned = Report::new(vec![Check::ok("a", "fine"), Check::warn("b", "hm", "do")]);
        assert_eq!(warned.exit_code(), EXIT_WARNINGS);
        let failed = Report::new(vec![
            Check::fail("a", "bad", "fix"),
            Check::warn("b", "hm", "do"),
        ]);
        assert_eq!(failed.exit_code(), EXIT_FAILED);
        let unreadable = Report::unreadable_config("oidc.issuer: missing".into());
        assert_eq!(unreadable.exit_code(), EXIT_UNREADABLE_CONFIG);
        assert_ne!(EXIT_FAILED, EXIT_UNREADABLE_CONFIG);
    }

    #[test]
    fn text_shows_each_check_on_a_line_with_its_remedy_below() {
        let report = Report::new(vec![
            Check::ok("provider.discovery", "reachable"),
            Check::fail("provider.issuer", "differs", "set oidc.issuer"),
        ]);
        let text = report.to_text();
        assert!(
            text.contains("ok    provider.discovery  reachable\n"),
            "{text}"
        );
        assert!(
            text.contains("fail  provider.issuer     differs\n"),
            "{text}"
        );
        assert!(text.contains("remedy: set oidc.issuer"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["status"], "fail");
        assert_eq!(json["exit_code"], 1);
        assert_eq!(json["checks"][1]["remedy"], "set oidc.issuer");
        assert!(json["checks"][0].get("remedy").is_none());
    }
}
