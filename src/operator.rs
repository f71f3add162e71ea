//! The operator's kill switch: `vestibule sessions revoke --sub …` ends every session of a
//! subject (incident response, a disabled account) and `vestibule sessions count [--sub …]`
//! counts sessions, without touching Redis by hand.
//!
//! These are commands, not endpoints: they run with the deployment's own configuration (its
//! Redis credentials and keys, from the same file and environment) wherever the operator can
//! run the binary (`kubectl exec`, `docker compose exec`), and talk to Redis directly. Nothing
//! here listens, so nothing of it can be reached from the public listener. They need Redis:
//! the in-memory store lives inside one running process.

use serde_json::{Value, json};

use crate::app::{audit_trail, open_store, providers_for, sessions_in};
use crate::audit::{AuditEvent, Details};
use crate::config::Settings;

/// What the operator asked for.
pub enum SessionsCommand {
    /// Count live sessions, in total and, with `sub`, of that subject.
    Count {
        /// The subject to count, too.
        sub: Option<String>,
        /// The id of the provider `sub` is a subject of; `None`: the first provider.
        provider: Option<String>,
    },
    /// End every session of `sub` and revoke their refresh tokens.
    Revoke {
        /// The subject whose sessions end.
        sub: String,
        /// The id of the provider `sub` is a subject of; `None`: the first provider.
        provider: Option<String>,
    },
}

/// Runs `command` against the deployment `settings` describe; the report is JSON for scripts.
pub async fn run(settings: Settings, command: SessionsCommand) -> anyhow::Result<Value> {
    if settings.session.redis.is_none() {
        anyhow::bail!(
            "session commands need session.redis_url: the in-memory store lives inside the running instance"
        );
    }
    let redirect_uri = settings.redirect_uri();
    let Settings {
        oidc,
        other_providers,
        session,
        audit,
        ..
    } = settings;
    let providers = providers_for(oidc, other_providers, &redirect_uri)?;
    let wanted = match &command {
        SessionsCommand::Count { provider, .. } | SessionsCommand::Revoke { provider, .. } => {
            provider.as_deref()
        }
    };
    let provider = match wanted {
        None => providers.first().clone(),
        Some(id) => providers
            .by_id(id)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("--provider {id}: no provider has this id"))?,
    };
    // A subject is one provider's: the indexes file each provider's users apart.
    let key = providers.key_of(&provider);
    let user = |sub: &str| crate::session::scoped_identifier(key.as_deref(), sub).into_owned();
    let audit = audit_trail(audit, &session.keys);
    let store = open_store(&session, false).await?;
    let sessions = sessions_in(store, session);
    match command {
        SessionsCommand::Count { sub, .. } => {
            let mut report = json!({ "live_sessions": sessions.count_live().await? });
            if let Some(sub) = sub {
                report["sub"] = json!(sub);
                report["sessions_of_sub"] = json!(sessions.count_of(&user(&sub)).await?);
            }
            Ok(report)
        }
        SessionsCommand::Revoke { sub, .. } => {
            let ended = sessions.end_all_of(&user(&sub)).await?;
            let mut revoked = 0;
            for token in &ended.refresh_tokens {
                revoked += usize::from(provider.revoke_refresh_token(token.text()).await);
            }
            crate::metrics::metrics().sessions_ended("revoked", ended.count);
            audit.record(
                AuditEvent::SessionsEndedByOperator,
                Details {
                    sub: Some(&sub),
                    reason: Some("operator_command"),
                    sessions_ended: Some(ended.count),
                    ..Details::default()
                },
            );
            Ok(json!({
                "sub": sub,
                "ended": ended.count,
                "refresh_tokens_revoked": revoked,
                "refresh_tokens_not_revoked": ended.refresh_tokens.len() - revoked,
            }))
        }
    }
}
