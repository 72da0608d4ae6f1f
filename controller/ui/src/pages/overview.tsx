// The cluster at a glance: hosts and their capacity (as hostd reports it), VMs by
// state, firing and pending alerts (kept current by the stream's `alert.*` events),
// the cluster's days until full (`/v1/capacity`), the latest operations and events.
import { Fragment } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { all } from '../api';
import { hosts, loaded, loadError, operations, recent, vms } from '../cluster';
import { mib, when } from '../format';
import { alerts, capacity, monitoringError, served } from '../monitoring';
import { Link } from '../router';
import { isCluster, me } from '../session';
import type { Resources, Tenant } from '../types';
import { Badge, OpProgress, Section, Usage } from '../widgets';

function sum(rs: Resources[]): Resources {
  return rs.reduce((a, r) => ({ vcpus: a.vcpus + r.vcpus, mem_mib: a.mem_mib + r.mem_mib, disk_mib: a.disk_mib + r.disk_mib }), {
    vcpus: 0,
    mem_mib: 0,
    disk_mib: 0,
  });
}

function Capacity() {
  const hs = [...hosts.value.values()];
  const ready = hs.filter((h) => h.state === 'ready');
  const cap = sum(ready.map((h) => h.capacity));
  const alloc = sum(ready.map((h) => h.allocated));
  return (
    <Section title="Hosts and capacity" actions={<Link to="/hosts">All hosts</Link>}>
      <p class="big-figures">
        <span>
          <strong>{ready.length}</strong> ready
        </span>
        <span>
          <strong>{hs.length - ready.length}</strong> down
        </span>
        <span>
          <strong>{hs.filter((h) => h.cordoned).length}</strong> cordoned
        </span>
      </p>
      <Usage label="vCPUs allocated" used={alloc.vcpus} total={cap.vcpus} show={String} />
      <Usage label="Memory allocated" used={alloc.mem_mib} total={cap.mem_mib} show={mib} />
      <Usage label="Disk allocated" used={alloc.disk_mib} total={cap.disk_mib} show={mib} />
      <p class="hint">Totals of ready hosts, as their hostd last reported.</p>
    </Section>
  );
}

function Quota() {
  const [tenant, setTenant] = useState<Tenant | null>(null);
  useEffect(() => {
    all<Tenant>('/v1/tenants').then(
      (ts) => setTenant(ts.find((t) => t.id === me.value?.tenant) ?? null),
      () => {},
    );
  }, []);
  const mine = [...vms.value.values()].filter((v) => v.desired !== 'deleted');
  const used = sum(mine.map((v) => ({ vcpus: v.spec.vcpus, mem_mib: v.spec.mem_mib, disk_mib: 0 })));
  const q = tenant?.quota;
  return (
    <Section title={`Tenant ${me.value?.tenant}`}>
      {q ? (
        <>
          <Usage label="VMs" used={mine.length} total={q.vms} show={String} />
          <Usage label="vCPUs" used={used.vcpus} total={q.vcpus} show={String} />
          <Usage label="Memory" used={used.mem_mib} total={q.mem_mib} show={mib} />
        </>
      ) : (
        <p>
          {mine.length} VMs, {used.vcpus} vCPUs, {mib(used.mem_mib)}; no quota.
        </p>
      )}
    </Section>
  );
}

const SEVERITY: Record<string, number> = { critical: 0, warning: 1, info: 2 };

function Alerts() {
  const s = served.value;
  const shown = [...alerts.value.values()]
    .filter((a) => a.state === 'firing' || a.state === 'pending')
    .sort((a, b) => (SEVERITY[a.severity] ?? 3) - (SEVERITY[b.severity] ?? 3) || b.since_ms - a.since_ms);
  return (
    <Section title="Alerts" id="alerts">
      {s === null ? (
        <p>Asking the controller…</p>
      ) : !s.alerts ? (
        <p class="hint">This controller does not serve alerts (the monitoring API is not installed).</p>
      ) : monitoringError.value ? (
        <p class="field-error">{monitoringError.value}</p>
      ) : shown.length === 0 ? (
        <p class="hint">No alert is firing or pending.</p>
      ) : (
        <ul class="plain alerts">
          {shown.map((a) => (
            <li key={a.id} data-alert={a.id}>
              <span class={`severity severity-${a.severity}`}>{a.severity}</span> <Badge state={a.state} /> <strong>{a.rule}</strong> on{' '}
              {a.target} {a.summary && <span>{a.summary}</span>} <span class="hint">since {when(a.since_ms)}</span>
            </li>
          ))}
        </ul>
      )}
    </Section>
  );
}

const RESOURCE: Record<string, string> = { vcpus: 'vCPUs', memory_bytes: 'Memory', disk_bytes: 'Disk' };

function days(d: number | null | undefined): string {
  if (d === null || d === undefined) return 'not growing';
  if (d <= 0) return 'full';
  return d >= 1000 ? 'full in over 1000 days' : `full in ${d.toFixed(d < 10 ? 1 : 0)} days`;
}

function Forecast() {
  const c = capacity.value;
  if (!served.value?.capacityPlanning || !c) return null;
  return (
    <Section title="Capacity forecast" id="capacity">
      <dl class="facts">
        {c.cluster.resources.map((r) => (
          <Fragment key={r.resource}>
            <dt>{RESOURCE[r.resource] ?? r.resource}</dt>
            <dd data-resource={r.resource}>
              allocation {days(r.days_until_full)}
              {r.used !== null && r.used !== undefined && `; use ${days(r.days_until_used_full)}`}
            </dd>
          </Fragment>
        ))}
      </dl>
      <p class="hint">
        {c.cluster.fits_now} more VMs of {c.vm_vcpus} vCPU and {mib(c.vm_mem_mib)} fit now, {c.cluster.fits_in_30_days} in 30 days at the
        trend.
      </p>
    </Section>
  );
}

export function Overview() {
  const all = [...vms.value.values()];
  const byState = new Map<string, number>();
  for (const v of all) {
    const s = v.observed?.state ?? 'pending';
    byState.set(s, (byState.get(s) ?? 0) + 1);
  }
  const ops = [...operations.value.values()].sort((a, b) => b.updated_at_ms - a.updated_at_ms).slice(0, 6);
  return (
    <>
      <h1 tabIndex={-1}>Overview</h1>
      {loadError.value && (
        <p role="alert" class="field-error">
          {loadError.value}
        </p>
      )}
      {!loaded.value && !loadError.value && <p>Loading…</p>}
      <div class="grid">
        {isCluster.value ? <Capacity /> : <Quota />}
        <Section title="Virtual machines" actions={<Link to="/vms">All VMs</Link>}>
          <p class="big-figures">
            <span>
              <strong>{all.length}</strong> VMs
            </span>
            {[...byState.entries()].map(([s, n]) => (
              <span key={s}>
                <strong>{n}</strong> <Badge state={s} />
              </span>
            ))}
          </p>
        </Section>
        <Alerts />
        {isCluster.value && <Forecast />}
        <Section title="Recent operations" actions={<Link to="/operations">All operations</Link>}>
          {ops.length === 0 ? (
            <p class="hint">No operations yet.</p>
          ) : (
            <ul class="plain">
              {ops.map((o) => (
                <li key={o.id}>
                  <strong>{o.kind}</strong>{' '}
                  {o.kind === 'migrate' ? <Link to={`/vms/${o.target}`}>{vms.value.get(o.target)?.spec.name ?? o.target}</Link> : o.target}
                  <OpProgress op={o} />
                </li>
              ))}
            </ul>
          )}
        </Section>
        <Section title="Live events">
          {recent.value.length === 0 ? (
            <p class="hint">Changes appear here as they happen.</p>
          ) : (
            <ol class="events" aria-live="off">
              {recent.value.slice(0, 12).map((e) => (
                <li key={e.revision}>
                  <time>{when(e.at_ms)}</time> <code>{e.kind}</code> {e.id}
                </li>
              ))}
            </ol>
          )}
        </Section>
      </div>
    </>
  );
}
