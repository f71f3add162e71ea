//! Tokens for one API (a route's `exchange`, `refresh` or `client` credential), obtained on
//! first use and replaced before they expire, with the single-flight guarantee of the login's
//! refresh: per token, one request on this instance goes on (`local_lock.rs`) and one instance
//! of the deployment fetches (a lock in the store, `cluster_lock.rs`); every other call waits
//! and uses what it stored.
//!
//! A token the provider will not issue fails the route that needs it (`AccessError::Credential`);
//! the session and its other routes go on. A `refresh` credential spends the session's
//! refresh token, so it is fetched holding the session's own refresh lock too (a rotating
//! provider must never see that token twice), and a rotated refresh token is stored in the
//! session before anything else.

use super::cluster_lock::{ClusterLock, Wait};
use super::upstream_token::UpstreamToken;
use super::{AccessError, Refresher};
use crate::clock::unix_now;
use crate::metrics::metrics;
use crate::oidc::dpop::DpopKey;
use crate::oidc::{ApiGrant, ApiToken, OidcError};
use crate::routes::{Credential, TokenParameters};
use crate::session::held_tokens::{client_token_key, held_token_key};
use crate::session::{
    ActiveSession, Freshness, HeldToken, SessionCookie, SessionRecord, StoredDpopKey, StoredToken,
};

/// Whose token it is: a session's, or the client's own (shared by every session).
#[derive(Clone)]
enum Holder {
    /// The session of this cookie, which ends at `expires_at`.
    Session {
        cookie: SessionCookie,
        expires_at: u64,
        /// Its provider's refresh skew (its tokens for APIs are replaced as early).
        skew_secs: u64,
    },
    /// The client (Vestibule itself).
    Client,
}

impl Refresher {
    /// The token `credential` sends on a call by `session` (`None`: no session), fetched or
    /// replaced first when due, with its DPoP key when it is bound. `Ok(None)` for a
    /// credential that sends no token ([`Credential::None`], an assertion without
    /// `also_bearer`) or a session's own without a session.
    pub async fn credential_token(
        &self,
        session: Option<ActiveSession>,
        credential: &Credential,
    ) -> Result<Option<UpstreamToken>, AccessError> {
        match (credential, session) {
            (Credential::Assertion(spec), _) if !spec.also_bearer => Ok(None),
            (Credential::Session | Credential::Assertion(_), Some(session)) => {
                if self.fresh_enough(&session.record) {
                    // The hot path: the token and its binding as the record holds them.
                    return UpstreamToken::of_session(&session.record.tokens).map(Some);
                }
                let cookie = session.cookie.clone();
                let token = self.access_token(session).await?;
                self.as_stored(&cookie, token).await.map(Some)
            }
            (_, session) => self.held_or_fetched(session, credential, None).await,
        }
    }

    /// A new bearer token for `credential` on a call by the session of `cookie`, whose token
    /// `rejected` an upstream refused as invalid (`error="invalid_token"`) while it was
    /// believed valid: the login's (see [`Refresher::replace_rejected`]) or one held for this
    /// API, fetched again. Single-flight like [`Refresher::credential_token`]: calls that saw
    /// the same rejection share one grant. `None` when none is fetched: the rejected token
    /// came from such a replacement already (an upstream that refuses every token costs one
    /// grant, not one per call), or the credential has nothing to replace.
    pub async fn replace_rejected_credential(
        &self,
        cookie: Option<&SessionCookie>,
        credential: &Credential,
        rejected: &str,
    ) -> Result<Option<UpstreamToken>, AccessError> {
        match (credential, cookie) {
            (Credential::Session | Credential::Assertion(_), Some(cookie)) => {
                match self.replace_rejected(cookie, rejected).await? {
                    Some(token) => self.as_stored(cookie, token).await.map(Some),
                    None => Ok(None),
                }
            }
            (Credential::Exchange(_) | Credential::Refresh(_), Some(cookie)) => {
                let session = self.sessions.load(cookie).await?;
                self.held_or_fetched(session, credential, Some(rejected))
                    .await
            }
            _ => self.held_or_fetched(None, credential, Some(rejected)).await,
        }
    }

    /// The held token, or one fetched now (replacing `rejected`, when given), bound to the
    /// session's key when the provider bound it.
    async fn held_or_fetched(
        &self,
        session: Option<ActiveSession>,
        credential: &Credential,
        rejected: Option<&str>,
    ) -> Result<Option<UpstreamToken>, AccessError> {
        // The client's own token has no session, so no key: a bound one cannot be sent.
        let key: Option<StoredDpopKey> = match (credential, &session) {
            (Credential::Exchange(_) | Credential::Refresh(_), Some(session)) => {
                session.record.tokens.dpop_key.clone()
            }
            _ => None,
        };
        let held = self
            .held_or_fetched_unbound(session, credential, rejected)
            .await?;
        held.map(|(token, dpop_bound)| UpstreamToken::new(token, dpop_bound, key))
            .transpose()
    }

    /// [`Refresher::held_or_fetched`]'s token and whether the provider bound it.
    async fn held_or_fetched_unbound(
        &self,
        session: Option<ActiveSession>,
        credential: &Credential,
        rejected: Option<&str>,
    ) -> Result<Option<(String, bool)>, AccessError> {
        let (holder, session) = match (credential, session) {
            (Credential::Client(_), _) => (Holder::Client, None),
            (Credential::Exchange(_) | Credential::Refresh(_), Some(session)) => (
                Holder::Session {
                    cookie: session.cookie.clone(),
                    expires_at: session.record.expires_at,
                    skew_secs: self.skew_secs(&session.record),
                },
                Some(session),
            ),
            _ => return Ok(None),
        };
        let Some(parameters) = credential.held_token() else {
            return Ok(None);
        };
        let id = credential.id();
        if let Some(settled) = self
            .look(&holder, &id, rejected, Freshness::Recent)
            .await?
            .settled()
        {
            return Ok(settled);
        }
        let key = holder.key(&id);
        let local = self.local_locks.acquire(&key).await;
        if let Some(settled) = self
            .look(&holder, &id, rejected, Freshness::Current)
            .await?
            .settled()
        {
            if settled.is_some() {
                metrics().refresh_waited("local");
            }
            return Ok(settled);
        }
        let lock = ClusterLock::named(self.sessions.store(), format!("{key}:lock"));
        let wait = Wait::start();
        while !lock.try_take().await? {
            wait.next_poll().await?;
            if let Some(settled) = self
                .look(&holder, &id, rejected, Freshness::Current)
                .await?
                .settled()
            {
                if settled.is_some() {
                    metrics().refresh_waited("cluster");
                }
                return Ok(settled);
            }
        }
        // Fetched in a task of its own: a rotated refresh token is stored even if the call
        // that asked is cancelled.
        let this = self.clone();
        let credential = credential.clone();
        let parameters = parameters.clone();
        let rejected = rejected.map(str::to_owned);
        lock.hold_while(
            local,
            async move {
                let fetch = Fetch {
                    holder: &holder,
                    id: &id,
                    credential: &credential,
                    parameters: &parameters,
                    rejected: rejected.as_deref(),
                };
                this.fetch_holding_lock(fetch, session).await
            },
            || AccessError::Credential(OidcError::Unavailable("the token task failed".into())),
        )
        .await
    }

    /// What the store holds for the token `id` of `holder`, for a call that wants one (and
    /// not `rejected`).
    async fn look(
        &self,
        holder: &Holder,
        id: &str,
        rejected: Option<&str>,
        freshness: Freshness,
    ) -> Result<Held, AccessError> {
        let held = match holder {
            Holder::Session { cookie, .. } => {
                self.sessions.held_token(cookie, id, freshness).await?
            }
            Holder::Client => self.sessions.client_token(id, freshness).await?,
        };
        let Some(held) = held else {
            return Ok(Held::Due);
        };
        let skew_secs = match holder {
            Holder::Session { skew_secs, .. } => *skew_secs,
            // Client credentials are the first provider's (see `fetch_holding_lock`).
            Holder::Client => self.providers.first().refresh_skew().as_secs(),
        };
        if held.needs_replacing(unix_now(), skew_secs) {
            return Ok(Held::Due);
        }
        let token = held.text.clone();
        Ok(match rejected {
            Some(rejected) if token == rejected && held.forced => Held::Declined,
            Some(rejected) if token == rejected => Held::Due,
            _ => Held::Usable(token, held.dpop_bound),
        })
    }

    /// With the token's lock held: look once more, then fetch and keep it. `Ok(None)`: a
    /// replacement that is declined.
    async fn fetch_holding_lock(
        &self,
        fetch: Fetch<'_>,
        session: Option<ActiveSession>,
    ) -> Result<Option<(String, bool)>, AccessError> {
        let Fetch {
            holder,
            id,
            credential,
            parameters,
            rejected,
        } = fetch;
        if let Some(settled) = self
            .look(holder, id, rejected, Freshness::Current)
            .await?
            .settled()
        {
            return Ok(settled);
        }
        let forced = rejected.is_some();
        let started = std::time::Instant::now();
        let fetched = match (credential, session) {
            (Credential::Exchange(_), Some(session)) => {
                // Exchanged at the session's own provider, which issued the subject token.
                let provider = self.provider_of(&session.record)?.clone();
                let key = proof_key(&session.record, parameters)?;
                let subject_token = self.access_token(session).await?;
                provider
                    .api_token(
                        &ApiGrant::Exchange {
                            subject_token: &subject_token,
                        },
                        parameters,
                        key.as_ref(),
                    )
                    .await
            }
            (Credential::Refresh(_), Some(session)) => {
                return self
                    .refresh_for_resource(holder, id, session, parameters, forced)
                    .await
                    .map(Some);
            }
            // No session to follow: the client's own token comes from the first provider.
            _ => {
                self.providers
                    .first()
                    // No session, no key: client-credentials tokens are Bearer tokens.
                    .api_token(&ApiGrant::Client, parameters, None)
                    .await
            }
        };
        metrics()
            .refresh_duration
            .observe(started.elapsed().as_secs_f64());
        let token = fetched.map_err(AccessError::Credential)?;
        self.keep(holder, id, &token, forced).await.map(Some)
    }

    /// A `refresh` credential: the refresh grant for one resource, holding the session's own
    /// refresh lock (this instance's and the store's), so it never runs beside the login
    /// token's refresh; a rotated refresh token is stored in the session first.
    async fn refresh_for_resource(
        &self,
        holder: &Holder,
        id: &str,
        session: ActiveSession,
        parameters: &TokenParameters,
        forced: bool,
    ) -> Result<(String, bool), AccessError> {
        let cookie = session.cookie.clone();
        let _local = self.local_locks.acquire(&cookie.storage_key()).await;
        let lock = ClusterLock::new(self.sessions.store(), &cookie);
        let wait = Wait::start();
        while !lock.try_take().await? {
            wait.next_poll().await?;
        }
        lock.run_kept(self.refresh_for_resource_locked(holder, id, &cookie, parameters, forced))
            .await
    }

    /// [`Refresher::refresh_for_resource`] with the session's locks held.
    async fn refresh_for_resource_locked(
        &self,
        holder: &Holder,
        id: &str,
        cookie: &SessionCookie,
        parameters: &TokenParameters,
        forced: bool,
    ) -> Result<(String, bool), AccessError> {
        let Some(current) = self.sessions.load_fresh(cookie).await? else {
            return Err(AccessError::SessionEnded);
        };
        let Some(refresh_token) = current.record.tokens.refresh_token.as_ref() else {
            return Err(AccessError::Credential(OidcError::Refused(
                "the session has no refresh token".into(),
            )));
        };
        let refresh_token = refresh_token.text();
        let key = proof_key(&current.record, parameters)?;
        let token = self
            .provider_of(&current.record)?
            .api_token(
                &ApiGrant::Refresh {
                    refresh_token: &refresh_token,
                },
                parameters,
                key.as_ref(),
            )
            .await
            .map_err(AccessError::Credential)?;
        if let Some(rotated) = &token.refresh_token
            && *rotated != refresh_token
        {
            let mut record = SessionRecord::clone(&current.record);
            record.tokens.refresh_token = Some(StoredToken::new(rotated));
            let replacement = self.sessions.prepare_replacement(&current, &record)?;
            if !self.sessions.replace(&replacement).await? {
                // Ended meanwhile (the lock excludes every other writer of the tokens).
                return Err(AccessError::SessionEnded);
            }
        }
        self.keep(holder, id, &token, forced).await
    }

    /// Keeps `token` for its holder and answers it, and whether it is bound; `forced`: it
    /// replaces one an upstream rejected, and is never replaced that way itself.
    async fn keep(
        &self,
        holder: &Holder,
        id: &str,
        token: &ApiToken,
        forced: bool,
    ) -> Result<(String, bool), AccessError> {
        let held = HeldToken {
            access_token: StoredToken::new(&token.access_token),
            expires_at: token.expires_at,
            obtained_at: token.obtained_at,
            forced,
            dpop_bound: token.dpop_bound,
        };
        match holder {
            Holder::Session {
                cookie, expires_at, ..
            } => {
                self.sessions
                    .keep_held_token(cookie, id, &held, *expires_at)
                    .await?;
            }
            Holder::Client => self.sessions.keep_client_token(id, &held).await?,
        }
        Ok((token.access_token.clone(), token.dpop_bound))
    }
}

/// What the store holds for a call that wants a token.
enum Held {
    /// A token that will do, and whether it is DPoP-bound.
    Usable(String, bool),
    /// None, or one due (or the rejected one): fetch.
    Due,
    /// The rejected token came from a forced replacement: none is fetched for it.
    Declined,
}

impl Held {
    /// What the call gets without a fetch (`Some`: a token, or `None` for a declined
    /// replacement), or `None` when it must fetch.
    fn settled(self) -> Option<Option<(String, bool)>> {
        match self {
            Held::Usable(token, dpop_bound) => Some(Some((token, dpop_bound))),
            Held::Declined => Some(None),
            Held::Due => None,
        }
    }
}

/// One fetch of a held token, as the task that runs it needs it.
struct Fetch<'a> {
    holder: &'a Holder,
    id: &'a str,
    credential: &'a Credential,
    parameters: &'a TokenParameters,
    rejected: Option<&'a str>,
}

impl Holder {
    /// The store key of this holder's token `id` (also the name of its locks).
    fn key(&self, id: &str) -> String {
        match self {
            Holder::Session { cookie, .. } => held_token_key(&cookie.storage_key(), id),
            Holder::Client => client_token_key(id),
        }
    }
}

/// The key a session's grant for one API proves possession of (RFC 9449): the session's own,
/// when its tokens are bound to one, so the API's token is bound to it too; none for a route
/// whose upstream only knows `Bearer` (`[routes.credential] dpop = false`), whose token is
/// then asked for without a proof and comes back unbound.
fn proof_key(
    record: &SessionRecord,
    parameters: &TokenParameters,
) -> Result<Option<DpopKey>, AccessError> {
    if !parameters.dpop {
        return Ok(None);
    }
    record
        .tokens
        .dpop_key
        .as_ref()
        .map(StoredDpopKey::key)
        .transpose()
        .map_err(|error| {
            AccessError::Credential(OidcError::Unavailable(format!(
                "the session's DPoP key: {error}"
            )))
        })
}
