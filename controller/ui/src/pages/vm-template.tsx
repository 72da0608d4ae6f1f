// A new VM from a template: the form is generated from the chosen version's
// parameter schema (a number input with its bounds for an integer, a text input for
// a hostname, a text area for SSH keys, one a line, and for user-data). Each input is
// named `parameters.<name>`, so a refusal naming a parameter marks that input.
import { useEffect, useState } from 'preact/hooks';
import { ApiError, call, describe, enc, get } from '../api';
import { navigate } from '../router';
import type { ParamValue, Template, TemplateParam, TemplateVersion, Vm } from '../types';
import { notify } from '../widgets';

/** What an input holds for `p` before any typing: its default, as text. */
function initial(p: TemplateParam): string {
  const d = p.default;
  if (d === undefined) return '';
  return Array.isArray(d) ? d.join('\n') : String(d);
}

/** The value the API gets for `p` from the input's text; undefined leaves it out. */
function valueOf(p: TemplateParam, text: string): ParamValue | undefined {
  const t = text.trim();
  if (t === '') return undefined;
  switch (p.kind) {
    case 'integer':
      // A non-number goes as text: the API refuses it naming the parameter.
      return /^\d+$/.test(t) ? Number(t) : t;
    case 'ssh_keys':
      return t
        .split('\n')
        .map((k) => k.trim())
        .filter(Boolean);
    default:
      return p.kind === 'text' ? text : t;
  }
}

function ParamInput(props: { p: TemplateParam; value: string; set: (v: string) => void; invalid: boolean }) {
  const { p, value, set, invalid } = props;
  const id = `param-${p.name}`;
  const attrs = {
    id,
    name: `parameters.${p.name}`,
    required: p.required,
    'aria-invalid': invalid ? ('true' as const) : undefined,
    'aria-describedby': invalid ? 'form-error' : p.description ? `${id}-help` : undefined,
  };
  const label = `${p.name}${p.required ? ' (required)' : ''}`;
  return (
    <div class="field">
      <label for={id}>{label}</label>
      {p.kind === 'integer' ? (
        <input type="number" min={p.min} max={p.max} value={value} onInput={(e) => set(e.currentTarget.value)} {...attrs} />
      ) : p.kind === 'ssh_keys' || p.kind === 'text' ? (
        <textarea rows={p.kind === 'text' ? 6 : 3} value={value} onInput={(e) => set(e.currentTarget.value)} {...attrs} />
      ) : (
        <input value={value} onInput={(e) => set(e.currentTarget.value)} {...attrs} />
      )}
      {p.description && (
        <small id={`${id}-help`} class="help">
          {p.description}
        </small>
      )}
    </div>
  );
}

export function VmFromTemplate() {
  const [templates, setTemplates] = useState<Template[]>([]);
  const [chosen, setChosen] = useState('');
  const [version, setVersion] = useState(0);
  const [name, setName] = useState('');
  const [values, setValues] = useState<Record<string, string>>({});
  const [mode, setMode] = useState<'clone' | 'cold'>('clone');
  const [error, setError] = useState<ApiError | null>(null);
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    get<Template[]>('/v1/templates').then(
      (ts) => {
        setTemplates(ts);
        if (ts.length) setChosen(ts[0].id);
      },
      (e) => setError(e instanceof ApiError ? e : new ApiError(0, describe(e))),
    );
  }, []);
  const t = templates.find((x) => x.id === chosen);
  const v: TemplateVersion | undefined = t?.versions.find((x) => x.version === (version || t.default_version));
  useEffect(() => {
    setValues(Object.fromEntries((v?.parameters ?? []).map((p) => [p.name, initial(p)])));
  }, [chosen, version, v?.version]);
  useEffect(() => {
    if (error?.field) document.querySelector<HTMLElement>(`[name="${CSS.escape(error.field)}"]`)?.focus();
  }, [error]);
  const fromSnapshot = v !== undefined && 'snapshot' in v.source;

  const submit = async (e: Event) => {
    e.preventDefault();
    if (!t || !v) return;
    const parameters: Record<string, ParamValue> = {};
    for (const p of v.parameters) {
      const val = valueOf(p, values[p.name] ?? '');
      if (val !== undefined) parameters[p.name] = val;
    }
    setBusy(true);
    setError(null);
    try {
      const body = { name: name.trim(), parameters, mode: fromSnapshot ? mode : 'cold' };
      const vm = await call<Vm>('POST', `/v1/templates/${enc(`${t.name}@${v.version}`)}/instantiate`, { body });
      notify(`Created ${vm.spec.name} from ${t.name}@${v.version}.`);
      navigate(`/vms/${vm.id}`);
    } catch (err) {
      setError(err instanceof ApiError ? err : new ApiError(0, describe(err)));
    } finally {
      setBusy(false);
    }
  };

  return (
    <>
      <h1 tabIndex={-1}>New VM from a template</h1>
      <form class="card form" onSubmit={submit} noValidate>
        {error && (
          <p id="form-error" class="field-error" role="alert">
            {describe(error)}
          </p>
        )}
        <div class="row">
          <div class="field">
            <label for="tpl-name">Template</label>
            <select
              id="tpl-name"
              name="template"
              value={chosen}
              onChange={(e) => {
                setChosen(e.currentTarget.value);
                setVersion(0);
              }}
            >
              {templates.map((x) => (
                <option key={x.id} value={x.id}>
                  {x.tenant === 'system' ? `${x.name} (system)` : x.name}
                </option>
              ))}
            </select>
          </div>
          <div class="field">
            <label for="tpl-version">Version</label>
            <select id="tpl-version" name="version" value={String(version)} onChange={(e) => setVersion(Number(e.currentTarget.value))}>
              <option value="0">default ({t?.default_version ?? '-'})</option>
              {(t?.versions ?? []).map((x) => (
                <option key={x.version} value={String(x.version)}>
                  {x.version}
                </option>
              ))}
            </select>
          </div>
        </div>
        {v?.description && <p>{v.description}</p>}
        <div class="field">
          <label for="tpl-vm-name">VM name</label>
          <input
            id="tpl-vm-name"
            name="name"
            required
            value={name}
            onInput={(e) => setName(e.currentTarget.value)}
            aria-invalid={error?.field === 'name' ? 'true' : undefined}
          />
        </div>
        {v && v.parameters.length > 0 && (
          <fieldset>
            <legend>Parameters</legend>
            {v.parameters.map((p) => (
              <ParamInput
                key={`${chosen}@${v.version}/${p.name}`}
                p={p}
                value={values[p.name] ?? ''}
                set={(x) => setValues({ ...values, [p.name]: x })}
                invalid={error?.field === `parameters.${p.name}`}
              />
            ))}
          </fieldset>
        )}
        {fromSnapshot && (
          <fieldset>
            <legend>How</legend>
            <label class="check">
              <input type="radio" name="mode" value="clone" checked={mode === 'clone'} onChange={() => setMode('clone')} /> Clone the golden
              snapshot (memory shared copy-on-write)
            </label>
            <label class="check">
              <input type="radio" name="mode" value="cold" checked={mode === 'cold'} onChange={() => setMode('cold')} /> Boot cold
            </label>
          </fieldset>
        )}
        <div class="actions">
          <button type="button" onClick={() => navigate('/vms')}>
            Cancel
          </button>
          <button type="submit" class="primary" disabled={busy || !v}>
            {busy ? 'Creating…' : 'Create VM'}
          </button>
        </div>
      </form>
    </>
  );
}
