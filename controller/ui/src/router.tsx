// Client-side routes under /ui/ (the controller answers index.html for any of them,
// so a reload or a shared link lands on the same page).
import { signal } from '@preact/signals';
import type { ComponentChildren } from 'preact';

const BASE = '/ui';

function current(): string {
  const p = location.pathname.startsWith(BASE) ? location.pathname.slice(BASE.length) : '/';
  return p === '' ? '/' : p;
}

export const path = signal(current());

addEventListener('popstate', () => {
  path.value = current();
});

export function navigate(to: string, replace = false) {
  const url = BASE + to;
  if (replace) history.replaceState(null, '', url);
  else history.pushState(null, '', url);
  path.value = to;
}

/** `pattern` like `/vms/:id`; the captured parts, or null. */
export function match(pattern: string, p: string = path.value): Record<string, string> | null {
  const a = pattern.split('/');
  const b = p.split('/');
  if (a.length !== b.length) return null;
  const out: Record<string, string> = {};
  for (let i = 0; i < a.length; i++) {
    if (a[i].startsWith(':')) out[a[i].slice(1)] = decodeURIComponent(b[i]);
    else if (a[i] !== b[i]) return null;
  }
  return out;
}

export function Link(props: { to: string; children: ComponentChildren; class?: string; current?: boolean }) {
  return (
    <a
      href={BASE + props.to}
      class={props.class}
      aria-current={props.current ? 'page' : undefined}
      onClick={(e) => {
        if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
        e.preventDefault();
        navigate(props.to);
      }}
    >
      {props.children}
    </a>
  );
}
