// A new VM from a spec: kernel, vCPUs, memory, disks, NICs, labels, placement rules.
// Each input is named after the spec's field, so a refusal that names a field
// (`disks[0].size_mib`) marks that input. A form generated from a template's
// parameters is `vm-template.tsx`.
import { useEffect, useState } from 'preact/hooks';
import { all, ApiError, call, describe } from '../api';
import { navigate } from '../router';
import { isCluster, me } from '../session';
import type { Tenant, Vm, VmSpec } from '../types';
import { notify } from '../widgets';

interface Disk {
  image: string;
  size: string;
  readOnly: boolean;
}
interface Pair {
  key: string;
  value: string;
}

function terms(s: string): string[] {
  return s
    .split(',')
    .map((t) => t.trim())
    .filter(Boolean);
}

/** `k=v, k2=v2` as a map; a term without `=` is a key with an empty value (the API names it). */
function labelsOf(s: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const t of terms(s)) {
    const i = t.indexOf('=');
    out[i < 0 ? t : t.slice(0, i)] = i < 0 ? '' : t.slice(i + 1);
  }
  return out;
}

export function NewVm() {
  const [tenants, setTenants] = useState<Tenant[]>([]);
  const [tenant, setTenant] = useState(me.value?.tenant ?? '');
  const [name, setName] = useState('');
  const [kernel, setKernel] = useState('');
  const [initrd, setInitrd] = useState('');
  const [cmdline, setCmdline] = useState('');
  const [vcpus, setVcpus] = useState('1');
  const [mem, setMem] = useState('256');
  const [disks, setDisks] = useState<Disk[]>([]);
  const [nics, setNics] = useState<string[]>([]);
  const [labels, setLabels] = useState<Pair[]>([]);
  const [hostLabels, setHostLabels] = useState('');
  const [withTerms, setWith] = useState('');
  const [apart, setApart] = useState('');
  const [restart, setRestart] = useState(false);
  const [start, setStart] = useState(true);
  const [error, setError] = useState<ApiError | null>(null);
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    if (isCluster.value) all<Tenant>('/v1/tenants').then(setTenants, () => {});
  }, []);
  useEffect(() => {
    if (error?.field) document.querySelector<HTMLElement>(`[name="${CSS.escape(error.field)}"]`)?.focus();
  }, [error]);

  const bad = (field: string) => (error?.field === field ? { 'aria-invalid': 'true' as const, 'aria-describedby': 'form-error' } : {});

  const submit = async (e: Event) => {
    e.preventDefault();
    const spec: VmSpec = {
      name: name.trim(),
      vcpus: Number(vcpus),
      mem_mib: Number(mem),
      kernel: kernel.trim(),
      initrd: initrd.trim() || undefined,
      cmdline: cmdline.trim() || undefined,
      disks: disks.map((d) => ({
        image: d.image.trim() || undefined,
        size_mib: d.size.trim() ? Number(d.size) : undefined,
        read_only: d.readOnly,
      })),
      nics: nics.map((mac) => ({ mac: mac.trim() || undefined })),
      labels: Object.fromEntries(labels.filter((l) => l.key.trim()).map((l) => [l.key.trim(), l.value.trim()])),
      affinity: { host_labels: labelsOf(hostLabels), with: terms(withTerms), apart_from: terms(apart) },
      on_host_failure: restart ? 'restart' : 'wait',
      start,
    };
    setBusy(true);
    setError(null);
    try {
      const q = isCluster.value && tenant && tenant !== me.value?.tenant ? `?tenant=${encodeURIComponent(tenant)}` : '';
      const vm = await call<Vm>('POST', `/v1/vms${q}`, { body: spec, idempotent: true });
      notify(`Created ${vm.spec.name}.`);
      navigate(`/vms/${vm.id}`);
    } catch (err) {
      setError(err instanceof ApiError ? err : new ApiError(0, describe(err)));
    } finally {
      setBusy(false);
    }
  };

  const set = <T,>(list: T[], i: number, v: T) => list.map((x, j) => (j === i ? v : x));
  return (
    <>
      <h1 tabIndex={-1}>New VM</h1>
      <form class="card form" onSubmit={submit} noValidate>
        {error && (
          <p id="form-error" class="field-error" role="alert">
            {describe(error)}
          </p>
        )}
        {isCluster.value && (
          <div class="field">
            <label for="vm-tenant">Tenant</label>
            <select id="vm-tenant" name="tenant" value={tenant} onChange={(e) => setTenant(e.currentTarget.value)} {...bad('tenant')}>
              {[me.value!.tenant, ...tenants.map((t) => t.id).filter((t) => t !== me.value!.tenant)].map((t) => (
                <option key={t} value={t}>
                  {t}
                </option>
              ))}
            </select>
          </div>
        )}
        <div class="field">
          <label for="vm-name">Name</label>
          <input id="vm-name" name="name" required value={name} onInput={(e) => setName(e.currentTarget.value)} {...bad('name')} />
        </div>
        <div class="field">
          <label for="vm-kernel">Kernel</label>
          <input
            id="vm-kernel"
            name="kernel"
            required
            value={kernel}
            placeholder="sha256:… (or a host path, for admins)"
            onInput={(e) => setKernel(e.currentTarget.value)}
            {...bad('kernel')}
          />
        </div>
        <div class="row">
          <div class="field">
            <label for="vm-vcpus">vCPUs</label>
            <input
              id="vm-vcpus"
              name="vcpus"
              type="number"
              min={1}
              max={255}
              value={vcpus}
              onInput={(e) => setVcpus(e.currentTarget.value)}
              {...bad('vcpus')}
            />
          </div>
          <div class="field">
            <label for="vm-mem">Memory (MiB)</label>
            <input
              id="vm-mem"
              name="mem_mib"
              type="number"
              min={64}
              step={16}
              value={mem}
              onInput={(e) => setMem(e.currentTarget.value)}
              {...bad('mem_mib')}
            />
          </div>
        </div>
        <div class="field">
          <label for="vm-initrd">Initrd (optional)</label>
          <input id="vm-initrd" name="initrd" value={initrd} onInput={(e) => setInitrd(e.currentTarget.value)} {...bad('initrd')} />
        </div>
        <div class="field">
          <label for="vm-cmdline">Kernel command line (optional)</label>
          <input id="vm-cmdline" name="cmdline" value={cmdline} onInput={(e) => setCmdline(e.currentTarget.value)} {...bad('cmdline')} />
        </div>

        <fieldset>
          <legend>Disks</legend>
          {disks.map((d, i) => (
            <div class="row" key={i}>
              <div class="field">
                <label for={`disk-${i}-image`}>Disk {i + 1} image (blank for an empty disk)</label>
                <input
                  id={`disk-${i}-image`}
                  name={`disks[${i}].image`}
                  value={d.image}
                  onInput={(e) => setDisks(set(disks, i, { ...d, image: e.currentTarget.value }))}
                  {...bad(`disks[${i}].image`)}
                />
              </div>
              <div class="field">
                <label for={`disk-${i}-size`}>Size (MiB)</label>
                <input
                  id={`disk-${i}-size`}
                  name={`disks[${i}].size_mib`}
                  type="number"
                  min={1}
                  value={d.size}
                  onInput={(e) => setDisks(set(disks, i, { ...d, size: e.currentTarget.value }))}
                  {...bad(`disks[${i}].size_mib`)}
                />
              </div>
              <label class="check">
                <input
                  type="checkbox"
                  checked={d.readOnly}
                  onChange={(e) => setDisks(set(disks, i, { ...d, readOnly: e.currentTarget.checked }))}
                />{' '}
                Read-only
              </label>
              <button type="button" onClick={() => setDisks(disks.filter((_, j) => j !== i))} aria-label={`Remove disk ${i + 1}`}>
                Remove
              </button>
            </div>
          ))}
          <button type="button" onClick={() => setDisks([...disks, { image: '', size: '64', readOnly: false }])}>
            Add a disk
          </button>
        </fieldset>

        <fieldset>
          <legend>Network interfaces</legend>
          {nics.map((mac, i) => (
            <div class="row" key={i}>
              <div class="field">
                <label for={`nic-${i}`}>NIC {i + 1} MAC (blank: automatic)</label>
                <input
                  id={`nic-${i}`}
                  name={`nics[${i}].mac`}
                  value={mac}
                  onInput={(e) => setNics(set(nics, i, e.currentTarget.value))}
                  {...bad(`nics[${i}].mac`)}
                />
              </div>
              <button type="button" onClick={() => setNics(nics.filter((_, j) => j !== i))} aria-label={`Remove NIC ${i + 1}`}>
                Remove
              </button>
            </div>
          ))}
          <button type="button" onClick={() => setNics([...nics, ''])}>
            Add a NIC
          </button>
        </fieldset>

        <fieldset>
          <legend>Labels</legend>
          {labels.map((l, i) => (
            <div class="row" key={i}>
              <div class="field">
                <label for={`label-${i}-key`}>Label {i + 1} key</label>
                <input
                  id={`label-${i}-key`}
                  name={`labels.${l.key}`}
                  value={l.key}
                  onInput={(e) => setLabels(set(labels, i, { ...l, key: e.currentTarget.value }))}
                  {...bad(`labels.${l.key.trim()}`)}
                />
              </div>
              <div class="field">
                <label for={`label-${i}-value`}>Value</label>
                <input
                  id={`label-${i}-value`}
                  value={l.value}
                  onInput={(e) => setLabels(set(labels, i, { ...l, value: e.currentTarget.value }))}
                />
              </div>
              <button type="button" onClick={() => setLabels(labels.filter((_, j) => j !== i))} aria-label={`Remove label ${i + 1}`}>
                Remove
              </button>
            </div>
          ))}
          <button type="button" onClick={() => setLabels([...labels, { key: '', value: '' }])}>
            Add a label
          </button>
        </fieldset>

        <fieldset>
          <legend>Placement</legend>
          <div class="field">
            <label for="vm-host-labels">Host labels the host must carry (k=v, comma separated)</label>
            <input
              id="vm-host-labels"
              name="affinity.host_labels"
              value={hostLabels}
              onInput={(e) => setHostLabels(e.currentTarget.value)}
              {...bad('affinity.host_labels')}
            />
          </div>
          <div class="field">
            <label for="vm-with">Run next to VMs labelled (k=v, comma separated)</label>
            <input
              id="vm-with"
              name="affinity.with"
              value={withTerms}
              onInput={(e) => setWith(e.currentTarget.value)}
              {...bad('affinity.with')}
            />
          </div>
          <div class="field">
            <label for="vm-apart">Never next to VMs labelled (k=v, comma separated)</label>
            <input
              id="vm-apart"
              name="affinity.apart_from"
              value={apart}
              onInput={(e) => setApart(e.currentTarget.value)}
              {...bad('affinity.apart_from')}
            />
          </div>
          <label class="check">
            <input type="checkbox" checked={restart} onChange={(e) => setRestart(e.currentTarget.checked)} /> Restart on another host when
            its host goes down
          </label>
        </fieldset>
        <label class="check">
          <input type="checkbox" checked={start} onChange={(e) => setStart(e.currentTarget.checked)} /> Start once placed
        </label>
        <div class="actions">
          <button type="button" onClick={() => navigate('/vms')}>
            Cancel
          </button>
          <button type="submit" class="primary" disabled={busy}>
            {busy ? 'Creating…' : 'Create VM'}
          </button>
        </div>
      </form>
    </>
  );
}
