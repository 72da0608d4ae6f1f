// NovaCron's dashboard: log in with an API token, then every page follows the
// cluster live through the event stream. See controller/ui/README.md.
import { render } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { call, describe } from './api';
import { start } from './cluster';
import { link, stop } from './live';
import { discover } from './monitoring';
import { Link, match, navigate, path } from './router';
import { forget, isAdmin, isCluster, me, remember, token } from './session';
import type { Whoami } from './types';
import { Confirmations, Notices } from './widgets';
import { Access } from './pages/access';
import { Audit } from './pages/audit';
import { HostDetail, Hosts } from './pages/hosts';
import { Operations } from './pages/operations';
import { Overview } from './pages/overview';
import { NewVm } from './pages/vm-new';
import { VmFromTemplate } from './pages/vm-template';
import { VmDetail } from './pages/vm';
import { Vms } from './pages/vms';
import './styles.css';

async function logIn(secret: string) {
  const who = await call<Whoami>('GET', '/v1/whoami', { bearer: secret });
  if (who.role === 'host') throw new Error('a host credential cannot log in to the dashboard');
  remember(secret, who);
  start();
  void discover();
}

function logOut() {
  stop();
  forget();
  navigate('/', true);
}

function Login(props: { expired: boolean }) {
  const [secret, setSecret] = useState('');
  const [error, setError] = useState<string | null>(props.expired ? 'Your session ended: log in again.' : null);
  const [busy, setBusy] = useState(false);
  return (
    <main id="main" class="login">
      <h1>NovaCron</h1>
      <form
        class="card"
        onSubmit={async (e) => {
          e.preventDefault();
          setBusy(true);
          setError(null);
          try {
            await logIn(secret.trim());
          } catch (err) {
            setError(describe(err));
          } finally {
            setBusy(false);
          }
        }}
      >
        <h2>Log in</h2>
        <p class="hint">
          Paste an API token (<code>novactl token create USER</code> makes one). It is kept for this tab only.
        </p>
        <label for="token">API token</label>
        <input
          id="token"
          name="token"
          type="password"
          autocomplete="off"
          required
          value={secret}
          aria-invalid={error ? 'true' : undefined}
          aria-describedby={error ? 'login-error' : undefined}
          onInput={(e) => setSecret(e.currentTarget.value)}
        />
        {error && (
          <p id="login-error" class="field-error" role="alert">
            {error}
          </p>
        )}
        <button class="primary" type="submit" disabled={busy || !secret.trim()}>
          {busy ? 'Logging in…' : 'Log in'}
        </button>
      </form>
    </main>
  );
}

const LINK_TEXT = { connecting: 'connecting…', live: 'live', reconnecting: 'reconnecting…', closed: 'offline' };

function Shell() {
  const p = path.value;
  const mainRef = useRef<HTMLElement>(null);
  // A new page: move focus to its heading for keyboard and screen reader users.
  useEffect(() => {
    mainRef.current?.querySelector<HTMLElement>('h1')?.focus();
  }, [p]);
  const nav: [string, string, boolean][] = [
    ['/', 'Overview', true],
    ['/vms', 'VMs', true],
    ['/hosts', 'Hosts', isCluster.value],
    ['/operations', 'Operations', true],
    ['/audit', 'Audit log', isAdmin.value],
    ['/access', 'Access', isAdmin.value],
  ];
  const section = '/' + (p.split('/')[1] ?? '');
  let page;
  let m;
  if (p === '/') page = <Overview />;
  else if (p === '/vms') page = <Vms />;
  else if (p === '/vms/new') page = <NewVm />;
  else if (p === '/vms/new/template') page = <VmFromTemplate />;
  else if ((m = match('/vms/:id'))) page = <VmDetail id={m.id} />;
  else if (p === '/hosts' && isCluster.value) page = <Hosts />;
  else if ((m = match('/hosts/:id')) && isCluster.value) page = <HostDetail id={m.id} />;
  else if (p === '/operations') page = <Operations />;
  else if (p === '/audit' && isAdmin.value) page = <Audit />;
  else if (p === '/access' && isAdmin.value) page = <Access />;
  else
    page = (
      <>
        <h1 tabIndex={-1}>Not found</h1>
        <p>
          No such page. <Link to="/">Back to the overview</Link>.
        </p>
      </>
    );
  const who = me.value!;
  return (
    <>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <Link to="/" class="brand">
          NovaCron
        </Link>
        <nav aria-label="Main">
          <ul>
            {nav
              .filter(([, , shown]) => shown)
              .map(([to, label]) => (
                <li key={to}>
                  <Link to={to} current={to === '/' ? p === '/' : section === to}>
                    {label}
                  </Link>
                </li>
              ))}
          </ul>
        </nav>
        <div class="who">
          <span class={`link-state ${link.value}`} title="event stream">
            <span class="dot" aria-hidden="true" />
            <span class="sr-only">Updates: </span>
            {LINK_TEXT[link.value]}
          </span>
          <span class="user" data-role={who.role}>
            {who.user}@{who.tenant} · {who.role}
          </span>
          <button type="button" onClick={logOut}>
            Log out
          </button>
        </div>
      </header>
      <main id="main" ref={mainRef}>
        {page}
      </main>
      <Notices />
      <Confirmations />
    </>
  );
}

function App() {
  const [expired, setExpired] = useState(false);
  const [resuming, setResuming] = useState(!!token.value && !me.value);
  // A reload: the token is still in sessionStorage; ask who it is again.
  useEffect(() => {
    if (!resuming) return;
    logIn(token.value!)
      .catch(() => {
        forget();
        setExpired(true);
      })
      .finally(() => setResuming(false));
  }, []);
  // The API refused the token mid-session (revoked): back to the login.
  useEffect(() => {
    if (!token.value && me.value === null && !resuming) stop();
  }, [token.value]);
  if (resuming) return <p class="splash">Loading…</p>;
  if (!token.value || !me.value) return <Login expired={expired} />;
  return <Shell />;
}

render(<App />, document.getElementById('app')!);
// When the first page (the login form, or a resumed session's splash) is on screen and
// answers input: the browser tests read it as the time to interactive.
performance.mark('nova:interactive');
