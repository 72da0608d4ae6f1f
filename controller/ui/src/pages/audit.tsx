// The audit log (admins): every mutating call, newest first. The API pages it oldest
// first, so the dashboard reads it to the end and keeps the newest entries.
import { useEffect, useState } from 'preact/hooks';
import { describe, get } from '../api';
import { when } from '../format';
import type { AuditEntry, Page } from '../types';
import { Table } from '../widgets';

const KEEP = 500;

async function newest(): Promise<{ items: AuditEntry[]; total: number }> {
  let kept: AuditEntry[] = [];
  let total = 0;
  let next: string | undefined;
  do {
    const q = next === undefined ? '' : `?continue=${encodeURIComponent(next)}`;
    const page = await get<Page<AuditEntry>>(`/v1/audit${q}`);
    total += page.items.length;
    kept = kept.concat(page.items).slice(-KEEP);
    next = page.continue;
  } while (next !== undefined);
  return { items: kept.reverse(), total };
}

export function Audit() {
  const [log, setLog] = useState<{ items: AuditEntry[]; total: number } | null>(null);
  const [error, setError] = useState<string | null>(null);
  const read = () => newest().then(setLog, (e) => setError(describe(e)));
  useEffect(() => {
    void read();
  }, []);
  return (
    <>
      <div class="page-head">
        <h1 tabIndex={-1}>Audit log</h1>
        <button type="button" onClick={read}>
          Read again
        </button>
      </div>
      {error && <p class="field-error">{error}</p>}
      {!log ? (
        <p>Loading…</p>
      ) : (
        <>
          <p class="hint">
            {log.total > log.items.length ? `The newest ${log.items.length} of ${log.total} entries.` : `${log.total} entries.`}
          </p>
          <Table caption="Audit log, newest first" head={['When', 'Who', 'Tenant', 'Call', 'Status']} wide={['Tenant']}>
            {log.items.map((e) => (
              <tr key={e.id}>
                <td>{when(e.at_ms)}</td>
                <td>{e.actor}</td>
                <td class="wide">{e.tenant}</td>
                <td class="break">
                  <code>
                    {e.method} {e.path}
                  </code>
                </td>
                <td>
                  <span class={e.status >= 400 ? 'status-bad' : undefined}>{e.status}</span>
                </td>
              </tr>
            ))}
          </Table>
        </>
      )}
    </>
  );
}
