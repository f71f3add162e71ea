// TypeScript declarations for Vestibule's browser helper, `window.vestibule`, which
// <script src="/api/auth/client.js"></script> defines (served beside it at
// /api/auth/client.d.ts). Save this file in the SPA's sources (or name it in tsconfig's
// "files"); it declares globals only, no module.

declare namespace Vestibule {
  /** `GET /api/auth/user`: who is logged in (never a token). */
  interface User {
    /** The provider's subject identifier. */
    sub: string;
    /** The user's claims (the ID token's, with the provider's UserInfo where it has one). */
    claims: Record<string, unknown>;
    /** The session's deadlines, unix seconds on the server's clock. */
    session: SessionDeadlines;
    /** A plain link that logs out (`GET`, carries the session's logout id). */
    logout_url: string;
  }

  /** When the session and its access token end (unix seconds, server clock). */
  interface SessionDeadlines {
    /** The absolute end: no use extends it. */
    expires_at: number;
    /** The idle end: every use pushes it back (never past `expires_at`). */
    idle_expires_at: number;
    /** When the current access token expires (Vestibule refreshes it before); null if unknown. */
    access_token_expires_at: number | null;
  }

  /** One of the user's sessions, as "my sessions" lists it. */
  interface SessionSummary {
    /** The session's public id (for `endSession`). */
    id: string;
    /** When it began (unix seconds). */
    created_at: number;
    /** When it was last used (unix seconds, as precise as Vestibule's touch interval). */
    last_seen_at: number;
    /** A coarse description of the browser and system, e.g. "Firefox on Linux". */
    device: string;
    /** The client's network, truncated (e.g. "192.0.2.0/24"). */
    network: string;
    /** Whether this is the session of this browser. */
    current: boolean;
  }

  /** The options of `vestibule.fetch`, beside the standard `RequestInit`. */
  interface FetchOptions {
    /** Reject with a `VestibuleError` ('step_up_required') instead of navigating to its login. */
    rejectStepUp?: boolean;
    /** Reject with a `VestibuleError` ('insufficient_permissions') instead of resolving to the 403. */
    rejectInsufficientPermissions?: boolean;
  }

  /** Parameters of a login sent on to the provider (OIDC Core §3.1.2.1). */
  interface LoginOptions {
    /** `none`: a silent check, the provider shows no page (the user is signed in there or not). */
    prompt?: 'none' | 'login' | 'consent' | 'select_account';
    /** Wanted authentication context classes, most preferred first (`acr_values`). */
    acrValues?: string | readonly string[];
    /** The longest time since the user last authenticated, in seconds (`max_age`). */
    maxAge?: number;
  }

  /** Why a silent check did not sign the user in (the provider's error, OIDC Core §3.1.2.6). */
  type SilentLoginResult =
    | 'login_required'
    | 'interaction_required'
    | 'consent_required'
    | 'account_selection_required';

  /** What `vestibule.stepUp` asks of the new login. */
  interface StepUpOptions {
    /** Wanted authentication context classes (`acr_values`). */
    acrValues?: string | readonly string[];
    /** The longest time since the user last authenticated, in seconds (`max_age`). */
    maxAge?: number;
    /** Where the browser comes back to (default: this page). */
    returnTo?: string;
  }

  /** A `403 {"error": "insufficient_permissions", "route"}` answer, as `fetch` read it. */
  interface InsufficientPermissions {
    code: 'insufficient_permissions';
    status: 403;
    /** The route whose rules the user does not meet (e.g. "/api/admin"). */
    route: string | null;
    /** Vestibule's explanation, for people. */
    message: string | null;
  }

  /** What Vestibule said that the SPA has to act on. */
  type ErrorCode = 'step_up_required' | 'insufficient_permissions';

  /** Rejection of `fetch` under `rejectStepUp` / `rejectInsufficientPermissions`. */
  class VestibuleError extends Error {
    private constructor(code: ErrorCode, message: string, details: object);
    readonly name: 'VestibuleError';
    readonly code: ErrorCode;
    /** The HTTP status (401 for a step-up, 403 for a refusal). */
    readonly status: number;
    /** The refusing route (insufficient_permissions), else null. */
    readonly route: string | null;
    /** Where to log in again (step_up_required, with its acr_values and max_age), else null. */
    readonly loginUrl: string | null;
    /** The answer itself, unread. */
    readonly response: Response | null;
  }

  /** Why the session is about to end. */
  type ExpiryReason = 'idle' | 'absolute';

  /** What an `onExpiring` callback is told. */
  interface ExpiryWarning {
    /** `idle`: no use for the idle timeout (keepAlive extends it); `absolute`: cannot be extended. */
    reason: ExpiryReason;
    /** When the session ends, unix seconds on the server's clock. */
    expiresAt: number;
    /** Seconds until then, measured on the server's clock (0 when the tab slept past it). */
    secondsLeft: number;
    /** Uses the session (`GET /api/auth/user`), which pushes the idle end back and re-arms the warning. */
    keepAlive(): Promise<User | null>;
  }

  /** `window.vestibule`. */
  interface Api {
    /**
     * `fetch` with the anti-forgery header. A 401 navigates to the login (a step-up answer to
     * its `login_url`) and never settles; every other answer resolves to the Response.
     */
    fetch(input: RequestInfo | URL, init?: RequestInit, options?: FetchOptions): Promise<Response>;
    /** The logged-in user, or null when logged out. */
    user(): Promise<User | null>;
    /** Navigates to the login, back to `returnTo` (default: this page); never settles. */
    login(returnTo?: string, loginUrl?: string | null, options?: LoginOptions): Promise<never>;
    /** Logs in again with a stronger or fresher authentication; never settles. */
    stepUp(options?: StepUpOptions): Promise<never>;
    /**
     * How a silent check (`login` with `prompt: 'none'`) that came back to this page ended: the
     * provider's answer when it could not sign the user in without a page, else null. Read
     * once: the `vestibule_login` query parameter is removed from the address bar.
     */
    silentLoginResult(): SilentLoginResult | null;
    /** Ends the session, then goes to the provider's end-session page (or `/`); never settles. */
    logout(): Promise<never>;
    /** This user's sessions, oldest first. */
    sessions(): Promise<SessionSummary[]>;
    /** Ends one of this user's sessions by its id. */
    endSession(id: string): Promise<void>;
    /** Ends every session of this user but this one; resolves to how many ended. */
    endOtherSessions(): Promise<number>;
    /**
     * Calls `callback` `secondsBefore` seconds before the session ends (idle or absolute),
     * once per deadline; returns a function that unsubscribes.
     */
    onExpiring(secondsBefore: number, callback: (warning: ExpiryWarning) => void): () => void;
    /** The refusal a 403 from `fetch` carried, or null for any other answer. */
    insufficientPermissions(response: Response): InsufficientPermissions | null;
    /** Calls `callback` for every refusal `fetch` sees; returns a function that unsubscribes. */
    onInsufficientPermissions(
      callback: (refusal: InsufficientPermissions, response: Response) => void,
    ): () => void;
    /** The class of `fetch`'s rejections, for `instanceof`. */
    readonly VestibuleError: typeof VestibuleError;
  }
}

/** Vestibule's browser helper (from /api/auth/client.js), also `window.vestibule`. */
declare var vestibule: Vestibule.Api;
