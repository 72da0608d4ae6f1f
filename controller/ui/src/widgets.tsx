// Small pieces every page uses: notices (read out by screen readers), a confirmation
// dialog (the native <dialog>, so focus stays in it), state badges, usage bars and
// an operation's progress.
import { signal } from '@preact/signals';
import type { ComponentChildren } from 'preact';
import { useEffect, useRef } from 'preact/hooks';
import { migrationResult } from './cluster';
import { bytes, ms, percent } from './format';
import type { Operation } from './types';

interface Notice {
  id: number;
  text: string;
  error: boolean;
}
const notices = signal<Notice[]>([]);
let seq = 0;

export function notify(text: string, error = false) {
  const id = ++seq;
  notices.value = [...notices.value, { id, text, error }];
  window.setTimeout(() => dismiss(id), error ? 15000 : 6000);
}

function dismiss(id: number) {
  notices.value = notices.value.filter((n) => n.id !== id);
}

export function Notices() {
  return (
    <div class="notices">
      <div role="status" aria-live="polite">
        {notices.value
          .filter((n) => !n.error)
          .map((n) => (
            <p class="notice" key={n.id}>
              {n.text}
            </p>
          ))}
      </div>
      <div role="alert">
        {notices.value
          .filter((n) => n.error)
          .map((n) => (
            <p class="notice error" key={n.id}>
              {n.text}{' '}
              <button type="button" class="link" onClick={() => dismiss(n.id)} aria-label="Dismiss">
                ×
              </button>
            </p>
          ))}
      </div>
    </div>
  );
}

interface Question {
  title: string;
  text: string;
  confirm: string;
  danger: boolean;
  answer: (yes: boolean) => void;
}
const question = signal<Question | null>(null);

/** Asks before something that cannot be undone; resolves to the answer. */
export function ask(title: string, text: string, confirm: string, danger = false): Promise<boolean> {
  return new Promise((answer) => {
    question.value = { title, text, confirm, danger, answer };
  });
}

export function Confirmations() {
  const ref = useRef<HTMLDialogElement>(null);
  const q = question.value;
  useEffect(() => {
    const d = ref.current;
    if (!d) return;
    if (q && !d.open) d.showModal();
    if (!q && d.open) d.close();
  }, [q]);
  const end = (yes: boolean) => {
    q?.answer(yes);
    question.value = null;
  };
  return (
    <dialog ref={ref} aria-labelledby="confirm-title" onCancel={() => end(false)}>
      {q && (
        <form
          method="dialog"
          onSubmit={(e) => {
            e.preventDefault();
            end(true);
          }}
        >
          <h2 id="confirm-title">{q.title}</h2>
          <p>{q.text}</p>
          <div class="actions">
            <button type="button" onClick={() => end(false)}>
              Cancel
            </button>
            <button type="submit" class={q.danger ? 'danger' : 'primary'} autofocus>
              {q.confirm}
            </button>
          </div>
        </form>
      )}
    </dialog>
  );
}

const STATE_CLASS: Record<string, string> = {
  running: 'ok',
  ready: 'ok',
  succeeded: 'ok',
  stopped: 'idle',
  pending: 'idle',
  creating: 'idle',
  down: 'bad',
  failed: 'bad',
  crashed: 'bad',
  unknown: 'bad',
  missing: 'bad',
  cancelled: 'idle',
  created: 'idle',
};

export function Badge(props: { state: string; label?: string }) {
  return <span class={`badge ${STATE_CLASS[props.state] ?? 'busy'}`}>{props.label ?? props.state}</span>;
}

/** How much of a resource is used, as a bar and as numbers. */
export function Usage(props: { label: string; used: number; total: number; show: (n: number) => string }) {
  const p = percent(props.used, props.total);
  return (
    <div class="usage">
      <span class="usage-label">{props.label}</span>
      <meter min={0} max={Math.max(props.total, 1)} value={props.used} high={props.total * 0.9} aria-label={props.label} />
      <span class="usage-figures">
        {props.show(props.used)} / {props.show(props.total)} ({p}%)
      </span>
    </div>
  );
}

/** An operation's progress, message, and (a migration's) downtime once done. */
export function OpProgress(props: { op: Operation; label?: string }) {
  const o = props.op;
  const r = migrationResult(o);
  return (
    <div class="op-progress" data-op={o.id} data-state={o.state}>
      <div class="op-line">
        <progress max={100} value={o.progress} aria-label={props.label ?? `${o.kind} ${o.target} progress`} />
        <span class="op-percent">{o.progress}%</span>
        <Badge state={o.state} />
      </div>
      <p class="op-message">
        {o.message}
        {o.cancel_requested && o.state !== 'cancelled' ? ' (cancel requested)' : ''}
      </p>
      {o.kind === 'migrate' && (r.downtime_ms !== undefined || r.total_ms !== undefined || r.bytes !== undefined) && (
        <dl class="facts inline">
          {r.from && (
            <>
              <dt>Route</dt>
              <dd>
                {r.from} → {r.to}
              </dd>
            </>
          )}
          {r.downtime_ms !== undefined && (
            <>
              <dt>Downtime</dt>
              <dd class="downtime">{ms(r.downtime_ms)}</dd>
            </>
          )}
          {r.total_ms !== undefined && (
            <>
              <dt>Total</dt>
              <dd>{ms(r.total_ms)}</dd>
            </>
          )}
          {r.bytes !== undefined && (
            <>
              <dt>Sent</dt>
              <dd>{bytes(r.bytes)}</dd>
            </>
          )}
          {r.mode && (
            <>
              <dt>Mode</dt>
              <dd>{r.mode}</dd>
            </>
          )}
        </dl>
      )}
    </div>
  );
}

export function Section(props: { title: string; children: ComponentChildren; actions?: ComponentChildren; id?: string }) {
  const id = props.id ?? `s-${props.title.toLowerCase().replace(/[^a-z0-9]+/g, '-')}`;
  return (
    <section class="card" aria-labelledby={id}>
      <div class="card-head">
        <h2 id={id}>{props.title}</h2>
        {props.actions}
      </div>
      {props.children}
    </section>
  );
}

/** A table of rows, in a wrapper that scrolls sideways on a narrow screen; the
 * columns named in `wide` are hidden on a phone. */
export function Table(props: { caption: string; head: ComponentChildren[]; wide?: string[]; class?: string; children: ComponentChildren }) {
  return (
    <div class="table-wrap">
      <table class={props.class}>
        <caption class="sr-only">{props.caption}</caption>
        <thead>
          <tr>
            {props.head.map((h, i) => (
              <th scope="col" key={i} class={typeof h === 'string' && props.wide?.includes(h) ? 'wide' : undefined}>
                {h}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>{props.children}</tbody>
      </table>
    </div>
  );
}
