// Every VM the caller may see, with several selectable at once for bulk start, stop,
// migrate and delete (offered only to roles that may change things).
import { useState } from 'preact/hooks';
import { actOnMany, type VmAction } from '../actions';
import { lastMigration, loaded, vms } from '../cluster';
import { mib } from '../format';
import { Link } from '../router';
import { canOperate, isCluster } from '../session';
import type { Vm } from '../types';
import { ask, Badge, Table } from '../widgets';

export function VmState(props: { vm: Vm }) {
  const v = props.vm;
  const observed = v.observed?.state ?? 'pending';
  return (
    <span class="vm-state">
      <Badge state={observed} />
      {v.desired !== 'deleted' && v.desired !== observed && observed !== 'pending' && <span class="hint"> → {v.desired}</span>}
      {v.desired === 'deleted' && <span class="hint"> deleting</span>}
      {v.migrating && <Badge state="migrating" />}
    </span>
  );
}

const CONFIRM: Record<VmAction, [string, boolean]> = {
  start: ['Start', false],
  stop: ['Stop', false],
  migrate: ['Migrate', false],
  delete: ['Delete', true],
};

export function Vms() {
  const [selected, setSelected] = useState<Set<string>>(new Set());
  const [busy, setBusy] = useState(false);
  const list = [...vms.value.values()].sort((a, b) => a.spec.name.localeCompare(b.spec.name) || a.tenant.localeCompare(b.tenant));
  const chosen = list.filter((v) => selected.has(v.id));
  const toggle = (id: string, on: boolean) => {
    const s = new Set(selected);
    if (on) s.add(id);
    else s.delete(id);
    setSelected(s);
  };
  const bulk = async (a: VmAction) => {
    const [label, danger] = CONFIRM[a];
    const names = chosen.map((v) => v.spec.name).join(', ');
    const extra = a === 'migrate' ? ' The scheduler picks each destination.' : a === 'delete' ? ' Their disks go with them.' : '';
    if (!(await ask(`${label} ${chosen.length} VMs?`, `${names}.${extra}`, label, danger))) return;
    setBusy(true);
    await actOnMany(chosen, a);
    setBusy(false);
    if (a === 'delete') setSelected(new Set());
  };
  const operate = canOperate.value;
  return (
    <>
      <div class="page-head">
        <h1 tabIndex={-1}>Virtual machines</h1>
        {operate && (
          <span class="actions">
            <Link to="/vms/new/template" class="button">
              From a template
            </Link>
            <Link to="/vms/new" class="button primary">
              New VM
            </Link>
          </span>
        )}
      </div>
      {operate && (
        <div class="bulk" role="toolbar" aria-label="Actions on the selected VMs">
          <span aria-live="polite">{chosen.length} selected</span>
          {(['start', 'stop', 'migrate', 'delete'] as VmAction[]).map((a) => (
            <button
              key={a}
              type="button"
              class={a === 'delete' ? 'danger' : undefined}
              disabled={busy || chosen.length === 0}
              onClick={() => bulk(a)}
            >
              {CONFIRM[a][0]}
            </button>
          ))}
        </div>
      )}
      {!loaded.value ? (
        <p>Loading…</p>
      ) : list.length === 0 ? (
        <p>No VMs yet.</p>
      ) : (
        <Table
          caption="Virtual machines"
          head={[
            ...(operate
              ? [
                  <input
                    type="checkbox"
                    aria-label="Select all VMs"
                    checked={chosen.length === list.length}
                    onChange={(e) => setSelected(new Set(e.currentTarget.checked ? list.map((v) => v.id) : []))}
                  />,
                ]
              : []),
            'Name',
            ...(isCluster.value ? ['Tenant'] : []),
            'State',
            'Host',
            'vCPUs',
            'Memory',
            'Migration',
          ]}
          wide={['vCPUs', 'Memory', 'Migration']}
        >
          {list.map((v) => {
            const m = v.migrating ? lastMigration(v.id) : undefined;
            return (
              <tr key={v.id} data-vm={v.spec.name}>
                {operate && (
                  <td>
                    <input
                      type="checkbox"
                      aria-label={`Select ${v.spec.name}`}
                      checked={selected.has(v.id)}
                      onChange={(e) => toggle(v.id, e.currentTarget.checked)}
                    />
                  </td>
                )}
                <th scope="row">
                  <Link to={`/vms/${v.id}`}>{v.spec.name}</Link>
                </th>
                {isCluster.value && <td>{v.tenant}</td>}
                <td>
                  <VmState vm={v} />
                </td>
                <td>{v.host ? isCluster.value ? <Link to={`/hosts/${v.host}`}>{v.host}</Link> : v.host : '–'}</td>
                <td class="wide">{v.spec.vcpus}</td>
                <td class="wide">{mib(v.spec.mem_mib)}</td>
                <td class="wide">{m ? <progress max={100} value={m.progress} aria-label={`${v.spec.name} migration progress`} /> : ''}</td>
              </tr>
            );
          })}
        </Table>
      )}
    </>
  );
}
