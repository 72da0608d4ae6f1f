// Long-running operations (migrations, drains) with their live progress and results.
import { useState } from 'preact/hooks';
import { describe, enc, post } from '../api';
import { loaded, operations, vms } from '../cluster';
import { when } from '../format';
import { Link } from '../router';
import { canOperate, isCluster } from '../session';
import type { Operation } from '../types';
import { notify, OpProgress, Table } from '../widgets';

export function Operations() {
  const [busy, setBusy] = useState<string | null>(null);
  const list = [...operations.value.values()].sort((a, b) => b.created_at_ms - a.created_at_ms);
  const cancel = async (o: Operation) => {
    setBusy(o.id);
    try {
      await post(`/v1/operations/${enc(o.id)}/cancel`);
      notify(`Asked to cancel ${o.kind} of ${o.target}.`);
    } catch (e) {
      notify(`Could not cancel: ${describe(e)}`, true);
    } finally {
      setBusy(null);
    }
  };
  const target = (o: Operation) => {
    if (o.kind === 'migrate') return <Link to={`/vms/${o.target}`}>{vms.value.get(o.target)?.spec.name ?? o.target}</Link>;
    if (o.kind === 'drain' && isCluster.value) return <Link to={`/hosts/${o.target}`}>{o.target}</Link>;
    return o.target;
  };
  return (
    <>
      <h1 tabIndex={-1}>Operations</h1>
      {!loaded.value ? (
        <p>Loading…</p>
      ) : list.length === 0 ? (
        <p>No operations yet: migrations and drains appear here.</p>
      ) : (
        <Table
          caption="Operations, newest first"
          head={['Operation', 'Target', 'Progress', 'Started', ...(canOperate.value ? ['Actions'] : [])]}
          wide={['Started']}
        >
          {list.map((o) => (
            <tr key={o.id} data-op={o.id}>
              <th scope="row">
                {o.kind}
                {isCluster.value && <div class="hint">{o.tenant}</div>}
              </th>
              <td>{target(o)}</td>
              <td class="progress-cell">
                <OpProgress op={o} />
              </td>
              <td class="wide">{when(o.created_at_ms)}</td>
              {canOperate.value && (
                <td>
                  {!['succeeded', 'failed', 'cancelled'].includes(o.state) && !o.cancel_requested && (
                    <button type="button" disabled={busy === o.id} onClick={() => cancel(o)}>
                      Cancel
                    </button>
                  )}
                </td>
              )}
            </tr>
          ))}
        </Table>
      )}
    </>
  );
}
