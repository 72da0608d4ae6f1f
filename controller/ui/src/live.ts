// The event stream: one WebSocket on `/v1/events` per session. A browser cannot set
// an Authorization header on a WebSocket, so the token travels as a subprotocol
// (`nova.bearer.<hex>`, beside `nova.v1`; the controller turns it into the bearer
// header). After a drop it reconnects with `?since=` the last revision it saw, so
// nothing is lost or repeated; there is no polling anywhere.
import { signal } from '@preact/signals';
import { token } from './session';
import type { Event } from './types';

export type LinkState = 'connecting' | 'live' | 'reconnecting' | 'closed';
export const link = signal<LinkState>('closed');

let socket: WebSocket | null = null;
let last: number | null = null;
let retry = 0;
let timer: number | undefined;

export function hex(s: string): string {
  return Array.from(new TextEncoder().encode(s), (b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * Opens the stream; `onEvent` runs for every event, `onOpen` each time it is up, told
 * whether the lists must be read again: first, and after a reconnection that cannot
 * resume (no event had arrived yet); otherwise `since` replays what was missed.
 */
export function follow(onEvent: (e: Event) => void, onOpen: (reload: boolean) => void) {
  stop();
  let first = true;
  const open = () => {
    const resuming = last !== null;
    const secret = token.value;
    if (!secret) return;
    link.value = first ? 'connecting' : 'reconnecting';
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const since = last === null ? '' : `?since=${last}`;
    const ws = new WebSocket(`${scheme}://${location.host}/v1/events${since}`, ['nova.v1', `nova.bearer.${hex(secret)}`]);
    socket = ws;
    ws.onopen = () => {
      retry = 0;
      link.value = 'live';
      onOpen(!resuming);
      first = false;
    };
    ws.onmessage = (m) => {
      let e: Event;
      try {
        e = JSON.parse(m.data as string) as Event;
      } catch {
        return;
      }
      if (last !== null && e.revision <= last) return;
      last = e.revision;
      onEvent(e);
    };
    ws.onclose = () => {
      if (socket !== ws) return;
      socket = null;
      if (!token.value) {
        link.value = 'closed';
        return;
      }
      link.value = 'reconnecting';
      // Back off 0.5 s, 1 s, 2 s ... 15 s between attempts to reach the controller.
      const wait = Math.min(15000, 500 * 2 ** retry++);
      timer = window.setTimeout(open, wait);
    };
  };
  open();
}

export function stop() {
  window.clearTimeout(timer);
  const ws = socket;
  socket = null;
  last = null;
  ws?.close();
  link.value = 'closed';
}
