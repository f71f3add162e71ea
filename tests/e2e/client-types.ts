// A TypeScript SPA's use of every part of `window.vestibule`, type-checked by client-types.mjs
// (`tsc --noEmit --strict`) against the client.d.ts Vestibule serves. Never run, only checked:
// each `@ts-expect-error` proves a declaration is precise (it fails as "unused" if the
// declaration were `any` or too loose).

async function everyPart(): Promise<void> {
  const me: Vestibule.User | null = await vestibule.user();
  if (me === null) {
    await vestibule.login();
    return;
  }
  const sub: string = me.sub;
  const idleEnd: number = me.session.idle_expires_at;
  const absoluteEnd: number = me.session.expires_at;
  const accessEnd: number | null = me.session.access_token_expires_at;
  const logoutLink: string = me.logout_url;
  const claim: unknown = me.claims['preferred_username'];
  // @ts-expect-error a claim is unknown until the SPA checks it
  const notChecked: string = me.claims['preferred_username'];

  const response: Response = await vestibule.fetch('/api/orders/42');
  await vestibule.fetch(new URL('/api/orders', location.href), { method: 'POST', body: '{}' });
  await vestibule.fetch('/api/admin', undefined, { rejectStepUp: true, rejectInsufficientPermissions: true });
  // @ts-expect-error an unknown option is refused
  await vestibule.fetch('/api/admin', {}, { rejectEverything: true });

  const refusal = vestibule.insufficientPermissions(response);
  if (refusal !== null) {
    const route: string | null = refusal.route;
    const status: 403 = refusal.status;
    const message: string | null = refusal.message;
    console.log(route, status, message);
  }
  const stopRefusals: () => void = vestibule.onInsufficientPermissions((seen, answer) => {
    const code: 'insufficient_permissions' = seen.code;
    const status: number = answer.status;
    console.log(code, status);
  });
  stopRefusals();

  try {
    await vestibule.fetch('/api/admin', {}, { rejectInsufficientPermissions: true });
  } catch (error) {
    if (error instanceof vestibule.VestibuleError) {
      const code: Vestibule.ErrorCode = error.code;
      const status: number = error.status;
      const route: string | null = error.route;
      const loginUrl: string | null = error.loginUrl;
      const answer: Response | null = error.response;
      // @ts-expect-error the code is one of two known strings
      const other: 'unauthenticated' = error.code;
      if (code === 'step_up_required' && loginUrl !== null) await vestibule.login(undefined, loginUrl);
      console.log(status, route, answer, other);
    }
  }

  const stopWarning: () => void = vestibule.onExpiring(60, (warning) => {
    const reason: 'idle' | 'absolute' = warning.reason;
    const expiresAt: number = warning.expiresAt;
    const secondsLeft: number = warning.secondsLeft;
    if (reason === 'idle') {
      warning.keepAlive().then((again: Vestibule.User | null) => console.log(again?.session.idle_expires_at));
    }
    // @ts-expect-error there is no third reason
    const never: 'revoked' = warning.reason;
    console.log(expiresAt, secondsLeft, never);
  });
  stopWarning();
  // @ts-expect-error seconds are a number
  vestibule.onExpiring('60', () => {});

  const sessions: Vestibule.SessionSummary[] = await vestibule.sessions();
  const current: boolean = sessions[0].current;
  const device: string = sessions[0].device;
  await vestibule.endSession(sessions[0].id);
  const ended: number = await vestibule.endOtherSessions();

  const silent: Promise<never> = vestibule.login('/', null, { prompt: 'none' });
  const silentResult: Vestibule.SilentLoginResult | null = vestibule.silentLoginResult();
  if (silentResult === 'login_required') await vestibule.login();
  vestibule.login('/admin', '/api/auth/login', { acrValues: ['mfa', 'hwk'], maxAge: 300 });
  // @ts-expect-error prompt takes OIDC's values only
  vestibule.login('/', null, { prompt: 'always' });
  vestibule.stepUp({ acrValues: 'mfa', maxAge: 300, returnTo: '/admin' });
  vestibule.stepUp();
  const fromWindow: Vestibule.Api = window.vestibule;
  await vestibule.logout();
  console.log(sub, idleEnd, absoluteEnd, accessEnd, logoutLink, claim, notChecked, current, device, ended, silent, silentResult, fromWindow);
}

everyPart();
