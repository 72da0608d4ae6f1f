// Line graphs of a host's or a VM's metric history: hand-drawn SVG (a polyline, the
// value axis's top and bottom, the range's start and end), each with a <title> and an
// aria-label that say what it shows, and a range selector (1 h, 1 d, 30 d). The
// history is read when the page opens, when the range changes and when the event
// stream names the target (`touched`); never on a timer.
import { useEffect, useState } from 'preact/hooks';
import { describe } from './api';
import { touched } from './cluster';
import { history, RANGES, served } from './monitoring';
import { Section } from './widgets';

export interface Plotted {
  metric: string;
  label: string;
  show: (n: number) => string;
}

const W = 320;
const H = 120;
const PAD = { left: 64, right: 8, top: 8, bottom: 20 };

/** The points of `pts` in the plot's coordinates, as `points="x,y x,y"`. */
export function polyline(pts: [number, number][], t0: number, t1: number, max: number): string {
  const iw = W - PAD.left - PAD.right;
  const ih = H - PAD.top - PAD.bottom;
  const span = Math.max(1, t1 - t0);
  return pts
    .map(([t, v]) => {
      const x = PAD.left + ((t - t0) / span) * iw;
      const y = PAD.top + ih - (max > 0 ? (v / max) * ih : 0);
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    })
    .join(' ');
}

function clock(ms: number, rangeS: number): string {
  const d = new Date(ms);
  return rangeS > 86_400
    ? d.toISOString().slice(5, 10)
    : d.toLocaleTimeString(undefined, { hour12: false, hour: '2-digit', minute: '2-digit' });
}

function Graph(props: { target: string; p: Plotted; rangeS: number; rev: number }) {
  const { target, p, rangeS, rev } = props;
  const [pts, setPts] = useState<[number, number][] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [span, setSpan] = useState<[number, number]>([0, 0]);
  useEffect(() => {
    let live = true;
    const end = Date.now();
    history(p.metric, target, rangeS).then(
      (got) => {
        if (!live) return;
        // Points are [ms, value]; a sample stamped after `end` (clocks) sits at the end.
        setPts(got.map(([t, v]) => [Math.min(t, end), v]));
        setSpan([end - rangeS * 1000, end]);
        setError(null);
      },
      (e) => live && setError(describe(e)),
    );
    return () => {
      live = false;
    };
  }, [target, p.metric, rangeS, rev]);
  const name = `${p.label} of ${target}, last ${RANGES.find(([, s]) => s === rangeS)?.[0]}`;
  if (error) return <p class="field-error">{`${p.label}: ${error}`}</p>;
  if (!pts) return <p class="hint">{`${p.label}: loading…`}</p>;
  const max = Math.max(0, ...pts.map(([, v]) => v)) || 1;
  const latest = pts.length ? pts[pts.length - 1][1] : null;
  const line = polyline(pts, span[0], span[1], max);
  const [x0, y0] = line.split(' ')[0].split(',');
  const label = `${name}: ${pts.length} points${latest === null ? '' : `, latest ${p.show(latest)}, highest ${p.show(max)}`}`;
  return (
    <figure class="graph" data-metric={p.metric}>
      <figcaption>
        {p.label} {latest !== null && <strong>{p.show(latest)}</strong>}
      </figcaption>
      <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-label={label}>
        <title>{label}</title>
        <line class="axis" x1={PAD.left} y1={PAD.top} x2={PAD.left} y2={H - PAD.bottom} />
        <line class="axis" x1={PAD.left} y1={H - PAD.bottom} x2={W - PAD.right} y2={H - PAD.bottom} />
        <text x={PAD.left - 4} y={PAD.top + 8} text-anchor="end">
          {p.show(max)}
        </text>
        <text x={PAD.left - 4} y={H - PAD.bottom} text-anchor="end">
          {p.show(0)}
        </text>
        <text x={PAD.left} y={H - 4}>
          {clock(span[0], rangeS)}
        </text>
        <text x={W - PAD.right} y={H - 4} text-anchor="end">
          {clock(span[1], rangeS)}
        </text>
        {pts.length > 0 && <polyline class="line" points={line} />}
        {pts.length === 1 && <circle class="dot" r="2.5" cx={x0} cy={y0} />}
      </svg>
      {pts.length === 0 && <p class="hint">No samples in this range yet.</p>}
    </figure>
  );
}

/** A section of graphs of `target`'s metrics with one range selector. */
export function Graphs(props: { target: string; plots: Plotted[] }) {
  const [rangeS, setRange] = useState(3600);
  const s = served.value;
  const rev = touched.value.get(props.target) ?? 0;
  if (s && !s.metricsHistory) {
    return (
      <Section title="History">
        <p class="hint">This controller does not serve the metric history.</p>
      </Section>
    );
  }
  return (
    <Section
      title="Graphs"
      actions={
        <div class="range" role="group" aria-label="Range of the graphs">
          {RANGES.map(([name, secs]) => (
            <button type="button" key={name} aria-pressed={rangeS === secs} onClick={() => setRange(secs)}>
              {name}
            </button>
          ))}
        </div>
      }
    >
      {s === null ? (
        <p class="hint">Asking the controller…</p>
      ) : (
        props.plots.map((p) => <Graph key={p.metric} target={props.target} p={p} rangeS={rangeS} rev={rev} />)
      )}
    </Section>
  );
}
