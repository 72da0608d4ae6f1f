// A VM's interactive serial console in the browser: an xterm.js terminal over the
// controller's `/v1/vms/{id}/console/ws` (binary both ways; the token travels as the
// `nova.bearer.<hex>` subprotocol, as for the event stream). xterm.js is loaded only
// when a console is opened, so the first load stays small. A viewer's terminal is
// read-only here, and the controller drops a viewer's input anyway.
import { useEffect, useRef, useState } from 'preact/hooks';
import { hex } from './live';
import { canOperate, token } from './session';

type State = 'connecting' | 'open' | 'closed';

export function LiveConsole(props: { id: string; onClose: () => void }) {
  const box = useRef<HTMLDivElement>(null);
  const [state, setState] = useState<State>('connecting');
  useEffect(() => {
    let ws: WebSocket | null = null;
    let dispose = () => {};
    let gone = false;
    void (async () => {
      const [{ Terminal }] = await Promise.all([import('@xterm/xterm'), import('@xterm/xterm/css/xterm.css')]);
      if (gone || !box.current) return;
      const term = new Terminal({
        convertEol: true,
        disableStdin: !canOperate.value,
        rows: 24,
        cols: 80,
        scrollback: 2000,
        fontFamily: 'ui-monospace, monospace',
      });
      term.open(box.current);
      const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
      ws = new WebSocket(`${scheme}://${location.host}/v1/vms/${encodeURIComponent(props.id)}/console/ws`, [
        'nova.v1',
        `nova.bearer.${hex(token.value ?? '')}`,
      ]);
      ws.binaryType = 'arraybuffer';
      ws.onopen = () => setState('open');
      ws.onclose = () => setState('closed');
      ws.onmessage = (m) => term.write(typeof m.data === 'string' ? m.data : new Uint8Array(m.data as ArrayBuffer));
      const enc = new TextEncoder();
      const typed = term.onData((d) => {
        if (canOperate.value && ws?.readyState === WebSocket.OPEN) ws.send(enc.encode(d));
      });
      term.focus();
      dispose = () => {
        typed.dispose();
        term.dispose();
      };
    })();
    return () => {
      gone = true;
      ws?.close();
      dispose();
    };
  }, [props.id]);
  return (
    <div class="live-console">
      <p class="hint" role="status">
        {state === 'connecting' ? 'Connecting…' : state === 'open' ? 'Connected.' : 'The console closed.'}{' '}
        {canOperate.value ? 'Keys go to the guest.' : 'Read-only: a viewer cannot type.'}
      </p>
      <div ref={box} class="console-screen" aria-label="Interactive console" data-state={state} />
      <button type="button" onClick={props.onClose}>
        Close console
      </button>
    </div>
  );
}
