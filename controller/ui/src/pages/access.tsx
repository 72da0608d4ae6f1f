// Tenants (system admins), users and API tokens (admins of a tenant). A new token's
// secret is shown once, as the API answers it once.
import { useEffect, useState } from 'preact/hooks';
import { all, call, describe, enc } from '../api';
import { when } from '../format';
import { isCluster, me } from '../session';
import type { CreatedToken, Role, Tenant, Token, User } from '../types';
import { ask, notify, Section, Table } from '../widgets';

const ROLES: Role[] = ['viewer', 'operator', 'admin'];

export function Access() {
  const [tenants, setTenants] = useState<Tenant[]>([]);
  const [users, setUsers] = useState<User[]>([]);
  const [tokens, setTokens] = useState<Token[]>([]);
  const [secret, setSecret] = useState<CreatedToken | null>(null);
  const reload = async () => {
    try {
      const [t, u, k] = await Promise.all([all<Tenant>('/v1/tenants'), all<User>('/v1/users'), all<Token>('/v1/tokens')]);
      setTenants(t);
      setUsers(u);
      setTokens(k.filter((x) => x.role !== 'host'));
    } catch (e) {
      notify(describe(e), true);
    }
  };
  useEffect(() => {
    void reload();
  }, []);
  const attempt = async (what: string, f: () => Promise<unknown>) => {
    try {
      await f();
      notify(what);
      await reload();
      return true;
    } catch (e) {
      notify(describe(e), true);
      return false;
    }
  };
  return (
    <>
      <h1 tabIndex={-1}>Access</h1>
      <div class="grid">
        {isCluster.value && (
          <Section title="Tenants">
            <NewTenant
              onCreate={(id, quota) =>
                attempt(`Created tenant ${id}.`, () => call('POST', '/v1/tenants', { body: { id, quota }, idempotent: true }))
              }
            />
            <Table caption="Tenants" head={['Tenant', 'Quota', 'Created']} wide={['Created']}>
              {tenants.map((t) => (
                <tr key={t.id}>
                  <th scope="row">{t.id}</th>
                  <td>{t.quota ? `${t.quota.vms} VMs, ${t.quota.vcpus} vCPUs, ${t.quota.mem_mib} MiB` : 'none'}</td>
                  <td class="wide">{when(t.created_at_ms)}</td>
                </tr>
              ))}
            </Table>
          </Section>
        )}
        <Section title="Users">
          <NewUser
            tenants={isCluster.value ? tenants.map((t) => t.id) : [me.value!.tenant]}
            onCreate={(id, role, tenant) =>
              attempt(`Created user ${id}.`, () => call('POST', '/v1/users', { body: { id, role, tenant }, idempotent: true }))
            }
          />
          <Table caption="Users" head={['User', 'Tenant', 'Role']}>
            {users.map((u) => (
              <tr key={u.id}>
                <th scope="row">{u.id}</th>
                <td>{u.tenant}</td>
                <td>{u.role}</td>
              </tr>
            ))}
          </Table>
        </Section>
        <Section title="API tokens">
          <NewToken
            users={users.map((u) => u.id)}
            onCreate={async (user, role) => {
              try {
                setSecret(await call<CreatedToken>('POST', '/v1/tokens', { body: { user, role: role || undefined } }));
                await reload();
              } catch (e) {
                notify(describe(e), true);
              }
            }}
          />
          {secret && (
            <div class="secret" role="status">
              <p>
                The new token of <strong>{secret.info.user}</strong> ({secret.info.role}). Copy it now: it is not shown again.
              </p>
              <label for="new-secret">Token</label>
              <input id="new-secret" readOnly value={secret.token} onFocus={(e) => e.currentTarget.select()} />
              <button type="button" onClick={() => setSecret(null)}>
                Done
              </button>
            </div>
          )}
          <Table caption="API tokens" head={['Token', 'User', 'Role', 'Created', 'Actions']} wide={['Created']}>
            {tokens.map((t) => (
              <tr key={t.id}>
                <th scope="row">
                  <code>{t.id}</code>
                </th>
                <td>
                  {t.user}
                  {isCluster.value && <div class="hint">{t.tenant}</div>}
                </td>
                <td>{t.role}</td>
                <td class="wide">{when(t.created_at_ms)}</td>
                <td>
                  <button
                    type="button"
                    class="danger"
                    aria-label={`Revoke token ${t.id} of ${t.user}`}
                    onClick={async () => {
                      if (await ask('Revoke this token?', `Token ${t.id} of ${t.user} stops working at once.`, 'Revoke', true))
                        await attempt(`Revoked token ${t.id}.`, () => call('DELETE', `/v1/tokens/${enc(t.id)}`));
                    }}
                  >
                    Revoke
                  </button>
                </td>
              </tr>
            ))}
          </Table>
        </Section>
      </div>
    </>
  );
}

function NewTenant(props: { onCreate: (id: string, quota: { vms: number; vcpus: number; mem_mib: number } | null) => Promise<boolean> }) {
  const [id, setId] = useState('');
  const [vms, setVms] = useState('');
  const [vcpus, setVcpus] = useState('');
  const [mem, setMem] = useState('');
  const quota = vms || vcpus || mem ? { vms: Number(vms || 0), vcpus: Number(vcpus || 0), mem_mib: Number(mem || 0) } : null;
  return (
    <form
      class="inline-form"
      onSubmit={async (e) => {
        e.preventDefault();
        if (await props.onCreate(id.trim(), quota)) setId('');
      }}
    >
      <label for="tenant-id">New tenant</label>
      <input id="tenant-id" required value={id} onInput={(e) => setId(e.currentTarget.value)} />
      <label for="tenant-vms">Quota: VMs</label>
      <input id="tenant-vms" type="number" min={0} class="short" value={vms} onInput={(e) => setVms(e.currentTarget.value)} />
      <label for="tenant-vcpus">vCPUs</label>
      <input id="tenant-vcpus" type="number" min={0} class="short" value={vcpus} onInput={(e) => setVcpus(e.currentTarget.value)} />
      <label for="tenant-mem">MiB</label>
      <input id="tenant-mem" type="number" min={0} class="short" value={mem} onInput={(e) => setMem(e.currentTarget.value)} />
      <button type="submit" class="primary" disabled={!id.trim()}>
        Create tenant
      </button>
    </form>
  );
}

function NewUser(props: { tenants: string[]; onCreate: (id: string, role: Role, tenant: string) => Promise<boolean> }) {
  const [id, setId] = useState('');
  const [role, setRole] = useState<Role>('viewer');
  const [tenant, setTenant] = useState(me.value!.tenant);
  const choices = [...new Set([me.value!.tenant, ...props.tenants])];
  return (
    <form
      class="inline-form"
      onSubmit={async (e) => {
        e.preventDefault();
        if (await props.onCreate(id.trim(), role, tenant)) setId('');
      }}
    >
      <label for="user-id">New user</label>
      <input id="user-id" required value={id} onInput={(e) => setId(e.currentTarget.value)} />
      <label for="user-role">Role</label>
      <select id="user-role" value={role} onChange={(e) => setRole(e.currentTarget.value as Role)}>
        {ROLES.map((r) => (
          <option key={r}>{r}</option>
        ))}
      </select>
      {choices.length > 1 && (
        <>
          <label for="user-tenant">Tenant</label>
          <select id="user-tenant" value={tenant} onChange={(e) => setTenant(e.currentTarget.value)}>
            {choices.map((t) => (
              <option key={t}>{t}</option>
            ))}
          </select>
        </>
      )}
      <button type="submit" class="primary" disabled={!id.trim()}>
        Create user
      </button>
    </form>
  );
}

function NewToken(props: { users: string[]; onCreate: (user: string, role: Role | '') => Promise<void> }) {
  const [user, setUser] = useState('');
  const [role, setRole] = useState<Role | ''>('');
  return (
    <form
      class="inline-form"
      onSubmit={async (e) => {
        e.preventDefault();
        await props.onCreate(user, role);
      }}
    >
      <label for="token-user">New token for</label>
      <select id="token-user" required value={user} onChange={(e) => setUser(e.currentTarget.value)}>
        <option value="">choose a user</option>
        {props.users.map((u) => (
          <option key={u}>{u}</option>
        ))}
      </select>
      <label for="token-role">Role</label>
      <select id="token-role" value={role} onChange={(e) => setRole(e.currentTarget.value as Role | '')}>
        <option value="">the user's</option>
        {ROLES.map((r) => (
          <option key={r}>{r}</option>
        ))}
      </select>
      <button type="submit" class="primary" disabled={!user}>
        Create token
      </button>
    </form>
  );
}
