// The wire types of nova-controller's /v1 API, as `nova-controller-api` (api/controller)
// defines them. Only what the dashboard reads or sends.

export type Role = 'viewer' | 'operator' | 'admin' | 'host';
export type HostState = 'ready' | 'down';
export type DesiredState = 'running' | 'stopped' | 'deleted';
export type OpState = 'pending' | 'running' | 'succeeded' | 'failed' | 'cancelled';

export interface Resources {
  vcpus: number;
  mem_mib: number;
  disk_mib: number;
}

export interface Whoami {
  user: string;
  tenant: string;
  role: Role;
  host?: string | null;
}

export interface Host {
  id: string;
  hostname: string;
  url: string;
  labels: Record<string, string>;
  state: HostState;
  cordoned: boolean;
  draining: boolean;
  capacity: Resources;
  allocated: Resources;
  kvm: string;
  registered_at_ms: number;
  last_heartbeat_ms: number;
  revision: number;
}

export interface DiskRequest {
  image?: string;
  size_mib?: number;
  read_only: boolean;
}

export interface NicRequest {
  mac?: string;
}

export interface Affinity {
  host_labels: Record<string, string>;
  with: string[];
  apart_from: string[];
}

export interface VmSpec {
  name: string;
  vcpus: number;
  mem_mib: number;
  kernel: string;
  initrd?: string;
  cmdline?: string;
  disks: DiskRequest[];
  nics: NicRequest[];
  labels: Record<string, string>;
  affinity: Affinity;
  on_host_failure: 'wait' | 'restart';
  start: boolean;
}

export interface Observed {
  state: string;
  host?: string | null;
  at_ms: number;
  error?: string;
}

export interface Vm {
  id: string;
  tenant: string;
  spec: VmSpec;
  desired: DesiredState;
  host?: string | null;
  observed?: Observed | null;
  migrating?: string;
  created_at_ms: number;
  revision: number;
}

/** The `result` of a migration operation (`MigrationResult`). */
export interface MigrationResult {
  from?: string;
  to?: string;
  mode?: string;
  downtime_ms?: number;
  total_ms?: number;
  bytes?: number;
  rounds?: number;
  error?: string;
}

export interface Operation {
  id: string;
  tenant: string;
  kind: string;
  target: string;
  state: OpState;
  progress: number;
  message: string;
  result: unknown;
  cancel_requested: boolean;
  created_at_ms: number;
  updated_at_ms: number;
  revision: number;
}

export interface Quota {
  vcpus: number;
  mem_mib: number;
  vms: number;
}

export interface Tenant {
  id: string;
  quota?: Quota | null;
  created_at_ms: number;
}

export interface User {
  id: string;
  tenant: string;
  role: Role;
  created_at_ms: number;
}

export interface Token {
  id: string;
  user: string;
  tenant: string;
  role: Role;
  host?: string | null;
  created_at_ms: number;
}

export interface CreatedToken {
  token: string;
  info: Token;
}

export interface AuditEntry {
  id: string;
  at_ms: number;
  actor: string;
  tenant: string;
  method: string;
  path: string;
  status: number;
}

export interface Event {
  revision: number;
  at_ms: number;
  kind: string;
  tenant: string;
  id: string;
  data: Record<string, unknown>;
}

export interface Page<T> {
  items: T[];
  continue?: string;
}

export interface ConsoleLines {
  lines: string[];
  bytes: number;
}

export interface ErrorBody {
  error: string;
  field?: string;
}

export const SYSTEM_TENANT = 'system';

/** `GET /v1/metrics/query`'s answer (api/controller/src/monitoring.rs). */
export interface QueryAnswer {
  step_s: number;
  resolution_s: number;
  series: { metric: string; target: string; points: [number, number][] }[];
}

export type AlertState = 'pending' | 'firing' | 'acknowledged' | 'silenced' | 'resolved';

export interface Alert {
  id: string;
  rule: string;
  target: string;
  metric: string;
  tenant: string;
  state: AlertState;
  severity: string;
  summary: string;
  value: number;
  since_ms: number;
  fired_ms?: number | null;
  resolved_ms?: number | null;
  count: number;
}

export interface ResourceForecast {
  resource: string;
  capacity: number;
  allocated: number;
  used?: number | null;
  free: number;
  trend_per_day: number;
  days_until_full?: number | null;
  used_trend_per_day?: number | null;
  days_until_used_full?: number | null;
}

export interface HostCapacity {
  host: string;
  resources: ResourceForecast[];
  fits_now: number;
  fits_in_30_days: number;
}

export interface Capacity {
  hosts: HostCapacity[];
  cluster: HostCapacity;
  vm_vcpus: number;
  vm_mem_mib: number;
}

// Templates (api/controller/src/snapshots.rs).
export type ParamKind = 'integer' | 'hostname' | 'ssh_keys' | 'text';
export type ParamValue = number | string | string[];

export interface TemplateParam {
  name: string;
  kind: ParamKind;
  description?: string;
  default?: ParamValue;
  required?: boolean;
  min?: number;
  max?: number;
}

export type TemplateSource = { image: VmSpec } | { snapshot: string };

export interface TemplateVersion {
  version: number;
  description?: string;
  parameters: TemplateParam[];
  source: TemplateSource;
  base: VmSpec;
  created_at_ms: number;
}

export interface Template {
  id: string;
  tenant: string;
  name: string;
  default_version: number;
  versions: TemplateVersion[];
}

export interface Instantiate {
  name: string;
  parameters: Record<string, ParamValue>;
  mode?: 'cold' | 'clone';
}
