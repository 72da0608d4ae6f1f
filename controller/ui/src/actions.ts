// What a user can do to VMs, one at a time or several at once. Every call goes to the
// API as is (which checks roles and tenants again); the page learns the outcome from
// the event stream, and the notice says what was asked.
import { call, describe, enc, post } from './api';
import type { Operation, Vm } from './types';
import { notify } from './widgets';

export type VmAction = 'start' | 'stop' | 'delete' | 'migrate';

const VERB: Record<VmAction, string> = { start: 'start', stop: 'stop', delete: 'delete', migrate: 'migrate' };

/** Sends one action for one VM; answers the migration operation, if one started. */
export async function act(vm: Vm, a: VmAction, to?: string): Promise<Operation | undefined> {
  const id = enc(vm.id);
  switch (a) {
    case 'start':
      await post(`/v1/vms/${id}/start`);
      return;
    case 'stop':
      await post(`/v1/vms/${id}/stop`);
      return;
    case 'delete':
      await call('DELETE', `/v1/vms/${id}`);
      return;
    case 'migrate':
      return post<Operation>(`/v1/vms/${id}/migrate`, to ? { to } : {}, true);
  }
}

/** The same action on several VMs at once; says how many went through and why others did not. */
export async function actOnMany(list: Vm[], a: VmAction): Promise<number> {
  const results = await Promise.allSettled(list.map((v) => act(v, a)));
  const failed = results
    .map((r, i) => (r.status === 'rejected' ? `${list[i].spec.name}: ${describe(r.reason)}` : null))
    .filter((x): x is string => x !== null);
  const ok = list.length - failed.length;
  if (ok > 0) notify(`Asked to ${VERB[a]} ${ok} VM${ok === 1 ? '' : 's'}.`);
  if (failed.length) notify(`Could not ${VERB[a]} ${failed.join('; ')}`, true);
  return ok;
}
