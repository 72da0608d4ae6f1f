// One VM: its state and actions, its spec, its migrations with live progress and the
// measured downtime, its console output and its history of events.
import { useEffect, useState } from 'preact/hooks';
import { act } from '../actions';
import { all, describe, enc, get } from '../api';
import { hosts, lastMigration, loaded, operations, recent, vms } from '../cluster';
import { bytes, mib, when } from '../format';
import { served } from '../monitoring';
import { Graphs } from '../graphs';
import { Link, navigate } from '../router';
import { canOperate, isCluster } from '../session';
import type { ConsoleLines, Event, Operation, Vm } from '../types';
import { LiveConsole } from '../terminal';
import { ask, notify, OpProgress, Section } from '../widgets';
import { VmState } from './vms';

function Actions(props: { vm: Vm }) {
  const v = props.vm;
  const [busy, setBusy] = useState(false);
  const run = async (what: 'start' | 'stop' | 'delete') => {
    if (what === 'delete' && !(await ask(`Delete ${v.spec.name}?`, 'The VM and its disks are removed from its host.', 'Delete', true)))
      return;
    setBusy(true);
    try {
      await act(v, what);
      notify(`Asked to ${what} ${v.spec.name}.`);
      if (what === 'delete') navigate('/vms');
    } catch (e) {
      notify(`Could not ${what} ${v.spec.name}: ${describe(e)}`, true);
    } finally {
      setBusy(false);
    }
  };
  const deleting = v.desired === 'deleted';
  return (
    <div class="actions" role="group" aria-label="VM actions">
      <button type="button" disabled={busy || deleting || v.desired === 'running'} onClick={() => run('start')}>
        Start
      </button>
      <button type="button" disabled={busy || deleting || v.desired === 'stopped'} onClick={() => run('stop')}>
        Stop
      </button>
      <button type="button" class="danger" disabled={busy || deleting} onClick={() => run('delete')}>
        Delete
      </button>
    </div>
  );
}

function Migrate(props: { vm: Vm }) {
  const v = props.vm;
  const [to, setTo] = useState('');
  const [busy, setBusy] = useState(false);
  const candidates = [...hosts.value.values()].filter((h) => h.id !== v.host && h.state === 'ready' && !h.cordoned);
  const running = v.observed?.state === 'running' && v.desired === 'running' && !v.migrating;
  return (
    <form
      class="inline-form"
      onSubmit={async (e) => {
        e.preventDefault();
        setBusy(true);
        try {
          const op = await act(v, 'migrate', to || undefined);
          if (op) operations.value = new Map(operations.value).set(op.id, op);
          notify(`Migrating ${v.spec.name}.`);
        } catch (err) {
          notify(`Could not migrate ${v.spec.name}: ${describe(err)}`, true);
        } finally {
          setBusy(false);
        }
      }}
    >
      {isCluster.value && (
        <>
          <label for="migrate-to">Destination</label>
          <select id="migrate-to" value={to} onChange={(e) => setTo(e.currentTarget.value)}>
            <option value="">Let the scheduler choose</option>
            {candidates.map((h) => (
              <option key={h.id} value={h.id}>
                {h.id}
              </option>
            ))}
          </select>
        </>
      )}
      <button type="submit" class="primary" disabled={busy || !running}>
        Migrate
      </button>
      {!running && <span class="hint">A VM migrates while it runs.</span>}
    </form>
  );
}

function ConsoleOutput(props: { vm: Vm }) {
  const [out, setOut] = useState<ConsoleLines | null>(null);
  const [error, setError] = useState<string | null>(null);
  const read = () =>
    get<ConsoleLines>(`/v1/vms/${enc(props.vm.id)}/console?lines=40`).then(
      (c) => {
        setOut(c);
        setError(null);
      },
      (e) => setError(describe(e)),
    );
  const placed = !!props.vm.host;
  useEffect(() => {
    if (placed) void read();
  }, [placed, props.vm.observed?.state]);
  const s = served.value;
  return (
    <Section
      title="Console output"
      actions={
        <button type="button" onClick={read} disabled={!placed}>
          Read again
        </button>
      }
    >
      {!placed ? (
        <p class="hint">Not placed on a host yet.</p>
      ) : error ? (
        <p class="field-error">{error}</p>
      ) : out ? (
        <pre class="console" tabIndex={0} aria-label="Last console lines">
          {out.lines.join('\n') || '(nothing printed yet)'}
        </pre>
      ) : (
        <p>Reading…</p>
      )}
      <p class="hint">
        The last lines of the serial console, read on request.
        {s && !s.consoleSocket && ' An interactive console needs the console API, which this controller does not serve yet.'}
        {s?.consoleSocket && ' The live console is below.'}
      </p>
    </Section>
  );
}

/** The live console (xterm.js), opened on request; shown where the controller serves it. */
function Interactive(props: { vm: Vm }) {
  const [open, setOpen] = useState(false);
  const s = served.value;
  if (!s?.consoleSocket) return null;
  const running = props.vm.observed?.state === 'running';
  return (
    <Section title="Console" id="live-console">
      {open ? (
        <LiveConsole id={props.vm.id} onClose={() => setOpen(false)} />
      ) : (
        <>
          <p class="hint">The guest's serial console, live{canOperate.value ? ', with your keys going to the guest' : ' (read-only)'}.</p>
          <button type="button" disabled={!running} onClick={() => setOpen(true)}>
            Open console
          </button>
        </>
      )}
    </Section>
  );
}

function History(props: { id: string }) {
  const [stored, setStored] = useState<Event[] | null>(null);
  useEffect(() => {
    all<Event>(`/v1/vms/${enc(props.id)}/events`).then(setStored, () => setStored([]));
  }, [props.id]);
  const ops = operations.value;
  const concerns = (e: Event) => e.id === props.id || (e.kind.startsWith('operation.') && ops.get(e.id)?.target === props.id);
  const seen = new Set((stored ?? []).map((e) => e.revision));
  const live = recent.value.filter((e) => concerns(e) && !seen.has(e.revision));
  const events = [...live, ...(stored ?? []).slice().reverse()].slice(0, 30);
  return (
    <Section title="History">
      {stored === null ? (
        <p>Loading…</p>
      ) : (
        <ol class="events">
          {events.map((e) => (
            <li key={e.revision}>
              <time>{when(e.at_ms)}</time> <code>{e.kind}</code>{' '}
              {e.kind.startsWith('operation.') ? `${(e.data as unknown as Operation).progress ?? ''}%` : summary(e)}
            </li>
          ))}
        </ol>
      )}
    </Section>
  );
}

function summary(e: Event): string {
  const d = e.data ?? {};
  return ['state', 'host', 'desired', 'from', 'to', 'error']
    .filter((k) => typeof d[k] === 'string' && d[k])
    .map((k) => `${k} ${d[k]}`)
    .join(', ');
}

const VM_PLOTS = [
  { metric: 'vm.cpu', label: 'CPU (cores busy)', show: (n: number) => n.toFixed(2) },
  { metric: 'vm.mem_bytes', label: 'Memory', show: bytes },
];

export function VmDetail(props: { id: string }) {
  const v = vms.value.get(props.id);
  if (!v) {
    return (
      <>
        <h1 tabIndex={-1}>VM</h1>
        <p>{loaded.value ? 'No such VM (or not in your tenant).' : 'Loading…'}</p>
        <Link to="/vms">All VMs</Link>
      </>
    );
  }
  const m = lastMigration(v.id);
  const s = v.spec;
  return (
    <>
      <div class="page-head">
        <h1 tabIndex={-1}>{s.name}</h1>
        <VmState vm={v} />
      </div>
      {canOperate.value && <Actions vm={v} />}
      {v.observed?.error && <p class="field-error">{v.observed.error}</p>}
      <div class="grid">
        <Section title="Placement">
          <dl class="facts">
            <dt>ID</dt>
            <dd>
              <code>{v.id}</code>
            </dd>
            <dt>Tenant</dt>
            <dd>{v.tenant}</dd>
            <dt>Host</dt>
            <dd>{v.host ? isCluster.value ? <Link to={`/hosts/${v.host}`}>{v.host}</Link> : v.host : 'not placed'}</dd>
            <dt>Observed</dt>
            <dd>{v.observed ? `${v.observed.state} at ${when(v.observed.at_ms)}` : '–'}</dd>
            <dt>Desired</dt>
            <dd>{v.desired}</dd>
            <dt>Created</dt>
            <dd>{when(v.created_at_ms)}</dd>
          </dl>
        </Section>
        <Section title="Spec">
          <dl class="facts">
            <dt>vCPUs</dt>
            <dd>{s.vcpus}</dd>
            <dt>Memory</dt>
            <dd>{mib(s.mem_mib)}</dd>
            <dt>Kernel</dt>
            <dd class="break">{s.kernel}</dd>
            {s.cmdline && (
              <>
                <dt>Command line</dt>
                <dd class="break">{s.cmdline}</dd>
              </>
            )}
            <dt>Disks</dt>
            <dd>
              {s.disks.length === 0
                ? 'none'
                : s.disks.map((d, i) => (
                    <div key={i}>
                      {d.image ?? 'blank'} {d.size_mib ? mib(d.size_mib) : ''} {d.read_only ? '(read-only)' : ''}
                    </div>
                  ))}
            </dd>
            <dt>NICs</dt>
            <dd>{s.nics.length === 0 ? 'none' : s.nics.map((n) => n.mac ?? 'automatic MAC').join(', ')}</dd>
            <dt>Labels</dt>
            <dd>
              {Object.keys(s.labels).length === 0
                ? 'none'
                : Object.entries(s.labels).map(([k, val]) => (
                    <span class="tag" key={k}>
                      {k}={val}
                    </span>
                  ))}
            </dd>
            <dt>On host failure</dt>
            <dd>{s.on_host_failure}</dd>
          </dl>
        </Section>
        <Section title="Migration" id="migration">
          {canOperate.value && <Migrate vm={v} />}
          {m ? <OpProgress op={m} label={`Migration of ${s.name}`} /> : <p class="hint">Never migrated.</p>}
        </Section>
        <ConsoleOutput vm={v} />
        <Interactive vm={v} />
        <Graphs target={v.id} plots={VM_PLOTS} />
        <History id={v.id} />
      </div>
    </>
  );
}
