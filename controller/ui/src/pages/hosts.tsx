// Hosts (the system tenant's): state, cordon and drain, the VMs on each, and the
// figures hostd reports, and graphs of its CPU and memory from the metric history.
import { useState } from 'preact/hooks';
import { call, describe, enc } from '../api';
import { hosts, loaded, operations, vms } from '../cluster';
import { bytes, mib, when } from '../format';
import { Graphs } from '../graphs';
import { Link } from '../router';
import { canOperate } from '../session';
import type { Host, Operation } from '../types';
import { ask, Badge, notify, OpProgress, Section, Table, Usage } from '../widgets';
import { VmState } from './vms';

function HostFlags(props: { h: Host }) {
  return (
    <>
      <Badge state={props.h.state} />
      {props.h.draining ? <Badge state="draining" /> : props.h.cordoned ? <Badge state="cordoned" /> : null}
    </>
  );
}

export function Hosts() {
  const list = [...hosts.value.values()].sort((a, b) => a.id.localeCompare(b.id));
  const count = (id: string) => [...vms.value.values()].filter((v) => v.host === id).length;
  return (
    <>
      <h1 tabIndex={-1}>Hosts</h1>
      {!loaded.value ? (
        <p>Loading…</p>
      ) : list.length === 0 ? (
        <p>No host has registered yet: start nova-hostd with --controller and the join token.</p>
      ) : (
        <Table caption="Hosts" head={['Host', 'State', 'VMs', 'vCPUs', 'Memory', 'Disk', 'KVM']} wide={['Memory', 'Disk', 'KVM']}>
          {list.map((h) => (
            <tr key={h.id} data-host={h.id}>
              <th scope="row">
                <Link to={`/hosts/${h.id}`}>{h.id}</Link>
              </th>
              <td>
                <HostFlags h={h} />
              </td>
              <td>{count(h.id)}</td>
              <td>
                {h.allocated.vcpus} / {h.capacity.vcpus}
              </td>
              <td class="wide">
                {mib(h.allocated.mem_mib)} / {mib(h.capacity.mem_mib)}
              </td>
              <td class="wide">
                {mib(h.allocated.disk_mib)} / {mib(h.capacity.disk_mib)}
              </td>
              <td class="wide">{h.kvm}</td>
            </tr>
          ))}
        </Table>
      )}
    </>
  );
}

const HOST_PLOTS = [
  { metric: 'host.cpu', label: 'CPU (cores busy)', show: (n: number) => n.toFixed(2) },
  { metric: 'host.mem_used_bytes', label: 'Memory used', show: bytes },
];

export function HostDetail(props: { id: string }) {
  const h = hosts.value.get(props.id);
  const [busy, setBusy] = useState(false);
  if (!h) {
    return (
      <>
        <h1 tabIndex={-1}>Host</h1>
        <p>{loaded.value ? 'No such host.' : 'Loading…'}</p>
      </>
    );
  }
  const on = [...vms.value.values()].filter((v) => v.host === h.id);
  const drains = [...operations.value.values()]
    .filter((o) => o.kind === 'drain' && o.target === h.id)
    .sort((a, b) => b.created_at_ms - a.created_at_ms);
  const run = async (what: 'cordon' | 'uncordon' | 'drain') => {
    if (what === 'drain' && !(await ask(`Drain ${h.id}?`, `It is cordoned and its ${on.length} VMs are live-migrated away.`, 'Drain')))
      return;
    setBusy(true);
    try {
      const r = await call<Host | Operation>('POST', `/v1/hosts/${enc(h.id)}/${what}`, { idempotent: what === 'drain' });
      if (what === 'drain') operations.value = new Map(operations.value).set(r.id, r as Operation);
      notify(`Asked to ${what} ${h.id}.`);
    } catch (e) {
      notify(`Could not ${what} ${h.id}: ${describe(e)}`, true);
    } finally {
      setBusy(false);
    }
  };
  return (
    <>
      <div class="page-head">
        <h1 tabIndex={-1}>{h.id}</h1>
        <HostFlags h={h} />
      </div>
      {canOperate.value && (
        <div class="actions" role="group" aria-label="Host actions">
          {h.cordoned ? (
            <button type="button" disabled={busy} onClick={() => run('uncordon')}>
              Uncordon
            </button>
          ) : (
            <button type="button" disabled={busy} onClick={() => run('cordon')}>
              Cordon
            </button>
          )}
          <button type="button" disabled={busy || h.draining} onClick={() => run('drain')}>
            Drain
          </button>
        </div>
      )}
      <div class="grid">
        <Section title="Figures">
          <Usage label="vCPUs allocated" used={h.allocated.vcpus} total={h.capacity.vcpus} show={String} />
          <Usage label="Memory allocated" used={h.allocated.mem_mib} total={h.capacity.mem_mib} show={mib} />
          <Usage label="Disk allocated" used={h.allocated.disk_mib} total={h.capacity.disk_mib} show={mib} />
          <dl class="facts">
            <dt>Hostname</dt>
            <dd>{h.hostname}</dd>
            <dt>hostd</dt>
            <dd class="break">{h.url}</dd>
            <dt>KVM</dt>
            <dd>{h.kvm}</dd>
            <dt>Registered</dt>
            <dd>{when(h.registered_at_ms)}</dd>
            <dt>Labels</dt>
            <dd>
              {Object.entries(h.labels)
                .map(([k, v]) => `${k}=${v}`)
                .join(', ') || 'none'}
            </dd>
          </dl>
          <p class="hint">As hostd reported at its last heartbeat.</p>
        </Section>
        <Graphs target={h.id} plots={HOST_PLOTS} />
        <Section title={`VMs on ${h.id}`}>
          {on.length === 0 ? (
            <p class="hint">None.</p>
          ) : (
            <ul class="plain">
              {on.map((v) => (
                <li key={v.id}>
                  <Link to={`/vms/${v.id}`}>{v.spec.name}</Link> ({v.tenant}) <VmState vm={v} />
                </li>
              ))}
            </ul>
          )}
        </Section>
        {drains[0] && (
          <Section title="Drain">
            <OpProgress op={drains[0]} label={`Drain of ${h.id}`} />
          </Section>
        )}
      </div>
    </>
  );
}
