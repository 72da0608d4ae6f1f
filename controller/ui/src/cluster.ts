// What the dashboard knows of the cluster: VMs, hosts and operations, loaded once
// when the event stream is up and then kept current by its events. An event names
// the object that changed; operations carry themselves whole, VMs and hosts are read
// again (a burst of events about one object costs one read). Hosts are the system
// tenant's only: the API refuses them to tenants.
import { batch, signal, type Signal } from '@preact/signals';
import { all, ApiError, enc, get } from './api';
import { follow } from './live';
import { applyMonitoring, loadMonitoring, resetMonitoring } from './monitoring';
import { isCluster } from './session';
import type { Event, Host, MigrationResult, Operation, Vm } from './types';

export const vms = signal<Map<string, Vm>>(new Map());
export const hosts = signal<Map<string, Host>>(new Map());
export const operations = signal<Map<string, Operation>>(new Map());
export const loaded = signal(false);
export const loadError = signal<string | null>(null);
/** The last events seen, newest first (the overview's activity list). */
export const recent = signal<Event[]>([]);
/** The revision of the last event naming each VM or host (graphs read again on it). */
export const touched = signal<Map<string, number>>(new Map());

function put<T>(s: Signal<Map<string, T>>, item: T | null, id: string) {
  const m = new Map(s.value);
  if (item) m.set(id, item);
  else m.delete(id);
  s.value = m;
}

async function loadAll() {
  try {
    const [v, h, o] = await Promise.all([
      all<Vm>('/v1/vms'),
      isCluster.value ? all<Host>('/v1/hosts') : Promise.resolve([] as Host[]),
      all<Operation>('/v1/operations'),
    ]);
    batch(() => {
      vms.value = new Map(v.map((x) => [x.id, x]));
      hosts.value = new Map(h.map((x) => [x.id, x]));
      operations.value = new Map(o.map((x) => [x.id, x]));
      loaded.value = true;
      loadError.value = null;
    });
  } catch (e) {
    loadError.value = e instanceof ApiError ? e.message : String(e);
  }
}

const staleVms = new Set<string>();
const staleHosts = new Set<string>();
let flushing = false;

async function reread<T>(ids: Set<string>, path: string, s: Signal<Map<string, T>>) {
  const batchIds = [...ids];
  ids.clear();
  await Promise.all(
    batchIds.map(async (id) => {
      try {
        put(s, await get<T>(`${path}/${enc(id)}`), id);
      } catch (e) {
        if (e instanceof ApiError && e.status === 404) put(s, null, id);
      }
    }),
  );
}

function flush() {
  if (flushing) return;
  flushing = true;
  queueMicrotask(async () => {
    try {
      while (staleVms.size || staleHosts.size) {
        await Promise.all([reread<Vm>(staleVms, '/v1/vms', vms), reread<Host>(staleHosts, '/v1/hosts', hosts)]);
      }
    } finally {
      flushing = false;
    }
  });
}

function hostsNamedBy(e: Event): string[] {
  const d = e.data ?? {};
  return ['host', 'from', 'to'].map((k) => d[k]).filter((v): v is string => typeof v === 'string');
}

function apply(e: Event) {
  recent.value = [e, ...recent.value].slice(0, 50);
  const t = new Map(touched.value);
  for (const id of [e.id, ...hostsNamedBy(e)]) t.set(id, e.revision);
  touched.value = t;
  if (e.kind.startsWith('alert.')) {
    applyMonitoring(e, isCluster.value);
    return;
  }
  applyMonitoring(e, isCluster.value);
  if (e.kind.startsWith('operation.')) {
    if (e.kind === 'operation.progress' || e.kind === 'operation.done') {
      put(operations, e.data as unknown as Operation, e.id);
    } else {
      get<Operation>(`/v1/operations/${enc(e.id)}`).then(
        (o) => put(operations, o, e.id),
        () => {},
      );
    }
    return;
  }
  if (e.kind.startsWith('vm.')) {
    if (e.kind === 'vm.deleted') put(vms, null, e.id);
    else staleVms.add(e.id);
  }
  if (isCluster.value) {
    if (e.kind.startsWith('host.')) staleHosts.add(e.id);
    // A VM moving changes what its hosts hold (hostd reports it with the state).
    for (const h of hostsNamedBy(e)) staleHosts.add(h);
    const vm = vms.value.get(e.id);
    if (e.kind.startsWith('vm.') && vm?.host) staleHosts.add(vm.host);
  }
  flush();
}

/** Starts following the cluster (after login). */
export function start() {
  batch(() => {
    loaded.value = false;
    vms.value = new Map();
    hosts.value = new Map();
    operations.value = new Map();
    recent.value = [];
    touched.value = new Map();
    resetMonitoring();
  });
  // Lists are read once the stream is up, so no change falls between them; after a
  // reconnection the stream replays what was missed.
  follow(apply, (reload) => {
    if (reload) {
      void loadAll();
      void loadMonitoring(isCluster.value);
    }
  });
}

/** The newest migration of VM `id`, if any. */
export function lastMigration(id: string): Operation | undefined {
  let best: Operation | undefined;
  for (const o of operations.value.values()) {
    if (o.kind === 'migrate' && o.target === id && (!best || o.created_at_ms > best.created_at_ms)) best = o;
  }
  return best;
}

export function migrationResult(o: Operation): MigrationResult {
  return (o.result && typeof o.result === 'object' ? o.result : {}) as MigrationResult;
}
