// EXTENSION POINT for APIs the controller does not serve yet: metric history
// (`/v1/metrics/query`), capacity planning (`/v1/capacity`), alerts, and the VM
// console over a WebSocket. The dashboard asks the controller's own OpenAPI document
// which of them it serves, and says plainly when one is absent; until then the pages
// show live values from the event stream and the figures hostd reports. When one of
// these APIs lands, its client and view go here (and the page that says "not served"
// shows it instead). Nothing is simulated.
import { signal } from '@preact/signals';
import { get } from './api';

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
