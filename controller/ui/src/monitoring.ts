// The monitoring APIs in the dashboard: which of them this controller serves (its
// OpenAPI document says), the metric history (`/v1/metrics/query`) behind the
// graphs, alerts (`/v1/alerts`, then kept current by the stream's `alert.*` events,
// which carry the alert whole) and the capacity forecast (`/v1/capacity`, read again
// when an alert or a host changes). Nothing is polled and nothing is simulated.
import { signal } from '@preact/signals';
import { get } from './api';
import type { Alert, Capacity, Event, QueryAnswer } from './types';

export interface Served {
  metricsHistory: boolean;
  capacityPlanning: boolean;
  alerts: boolean;
  consoleSocket: boolean;
}

export const served = signal<Served | null>(null);

/** Reads `/v1/openapi.json` (public) once and records which of the APIs exist. */
export async function discover() {
  if (served.value) return;
  try {
    const doc = await get<{ paths?: Record<string, unknown> }>('/v1/openapi.json');
    const paths = Object.keys(doc.paths ?? {});
    served.value = {
      metricsHistory: paths.includes('/v1/metrics/query'),
      capacityPlanning: paths.includes('/v1/capacity'),
      alerts: paths.some((p) => p.startsWith('/v1/alerts')),
      consoleSocket: paths.some((p) => /^\/v1\/vms\/\{id\}\/console\/.+/.test(p)),
    };
  } catch {
    served.value = { metricsHistory: false, capacityPlanning: false, alerts: false, consoleSocket: false };
  }
}

/** The ranges a graph offers, in seconds. */
export const RANGES: [string, number][] = [
  ['1h', 3600],
  ['1d', 86_400],
  ['30d', 30 * 86_400],
];

/**
 * One metric of one target over the last `rangeS` seconds, at most about 240 points
 * (a step the controller resamples to); the points of its one series, oldest first.
 */
export async function history(metric: string, target: string, rangeS: number): Promise<[number, number][]> {
  const end = Date.now();
  const step = Math.max(1, Math.floor(rangeS / 240));
  const q = new URLSearchParams({ metric, target, start_ms: String(end - rangeS * 1000), end_ms: String(end), step_s: String(step) });
  const a = await get<QueryAnswer>(`/v1/metrics/query?${q}`);
  return a.series.find((s) => s.target === target)?.points ?? [];
}

/** Alerts by id: active ones and those recently resolved. */
export const alerts = signal<Map<string, Alert>>(new Map());
export const capacity = signal<Capacity | null>(null);
export const monitoringError = signal<string | null>(null);

let capacityReading = false;
async function readCapacity() {
  if (!served.value?.capacityPlanning || capacityReading) return;
  capacityReading = true;
  try {
    capacity.value = await get<Capacity>('/v1/capacity');
  } catch {
    // A tenant may not read the cluster's capacity; the overview then shows none.
  } finally {
    capacityReading = false;
  }
}

/** Reads alerts and capacity (after login, when the stream is up). */
export async function loadMonitoring(cluster: boolean) {
  await discover();
  const s = served.value;
  if (!s) return;
  try {
    if (s.alerts) {
      const list = await get<Alert[]>('/v1/alerts');
      alerts.value = new Map(list.map((a) => [a.id, a]));
    }
    monitoringError.value = null;
  } catch (e) {
    monitoringError.value = String(e);
  }
  if (cluster) await readCapacity();
}

/** An event of the stream, as monitoring sees it. */
export function applyMonitoring(e: Event, cluster: boolean) {
  if (e.kind.startsWith('alert.')) {
    const a = e.data as unknown as Alert;
    if (a && typeof a.id === 'string') alerts.value = new Map(alerts.value).set(a.id, a);
    if (cluster) void readCapacity();
  } else if (cluster && e.kind.startsWith('host.')) {
    void readCapacity();
  }
}

export function resetMonitoring() {
  alerts.value = new Map();
  capacity.value = null;
}
