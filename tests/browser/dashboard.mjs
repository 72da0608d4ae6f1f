// The dashboard's story in a real browser (Debian's Chromium, driven by playwright-core
// from controller/ui's node_modules), against the controller and hosts that
// tests/tests/dashboard.rs started. It logs in, creates a VM, sees it run and print,
// migrates it and watches the progress reach done with the downtime shown, types into
// its live console and sees the guest answer (a viewer only watches), stops
// two VMs at once, and checks that a viewer cannot press what changes things and that
// another tenant's VM is not shown. Every page is checked with axe-core and
// photographed at 1280 px and at phone size into NOVA_SCREENSHOTS. It prints one
// `MEASURE {json}` line (bundle size, load timings) and exits non-zero on any failure.
import { readFileSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const URL = env('NOVA_URL');
const UI_DIR = env('NOVA_UI_DIR');
const SHOTS = env('NOVA_SCREENSHOTS');
const KERNEL = env('NOVA_KERNEL');
const TOKENS = { admin: env('NOVA_ADMIN_TOKEN'), operator: env('NOVA_OPERATOR_TOKEN'), viewer: env('NOVA_VIEWER_TOKEN') };
const OTHER_TENANT_VM = { id: env('NOVA_OTHER_VM_ID'), name: env('NOVA_OTHER_VM_NAME') };
const require = createRequire(join(UI_DIR, 'package.json'));
const { chromium } = require('playwright-core');
const AXE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

const DESKTOP = { width: 1280, height: 900 };
const PHONE = { width: 390, height: 844 };
const JS_BUDGET = 300 * 1024;
const problems = [];
const step = (s) => console.log(`-- ${s}`);
function check(ok, what) {
  if (!ok) throw new Error(`check failed: ${what}`);
}

mkdirSync(SHOTS, { recursive: true });
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  // Playwright gives every launch a fresh --user-data-dir of its own.
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});

async function newPage() {
  const context = await browser.newContext({ viewport: DESKTOP });
  const page = await context.newPage();
  page.setDefaultTimeout(20000);
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  // API refusals the story provokes (4xx) are shown by the page; anything else is a fault.
  page.on('console', (m) => {
    if (m.type() === 'error' && !/the server responded with a status of 4\d\d/.test(m.text())) problems.push(`console error: ${m.text()}`);
  });
  page.on('response', (r) => {
    if (r.status() >= 500) problems.push(`${r.status()} from ${r.url()}`);
  });
  return page;
}

/** axe-core on the page as it is; serious or critical findings fail the run. */
async function accessible(page, name) {
  const found = await page.evaluate(async (src) => {
    if (!window.axe) (0, eval)(src);
    const r = await window.axe.run(document, { resultTypes: ['violations'] });
    return {
      passed: r.passes.length,
      violations: r.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.map((n) => n.target.join(' ')).slice(0, 3) })),
    };
  }, AXE);
  console.log(`   axe on ${name}: ${found.passed} rules passed, ${found.violations.length} violated`);
  for (const v of found.violations) {
    const line = `axe on ${name}: ${v.id} (${v.impact}) at ${v.nodes.join(', ')}`;
    if (v.impact === 'serious' || v.impact === 'critical') problems.push(line);
    else console.log(`   note: ${line}`);
  }
}

/** The page at 1280 px and at phone size. */
async function photograph(page, name) {
  await page.setViewportSize(DESKTOP);
  await page.screenshot({ path: join(SHOTS, `${name}-1280.png`), fullPage: true });
  await page.setViewportSize(PHONE);
  await page.screenshot({ path: join(SHOTS, `${name}-phone.png`), fullPage: true });
  await page.setViewportSize(DESKTOP);
}

async function visit(page, path, heading) {
  await page.goto(`${URL}/ui${path}`);
  await page.getByRole('heading', { level: 1, name: heading }).waitFor();
}

async function logIn(page, who) {
  await page.goto(`${URL}/ui/`);
  await page.getByLabel('API token').fill(TOKENS[who]);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('heading', { level: 1, name: 'Overview' }).waitFor();
  await page.locator('.link-state.live').waitFor();
}

const row = (page, name) => page.locator(`tr[data-vm="${name}"]`);

// --- First load, measured on an empty cache -------------------------------------
step('first load');
const page = await newPage();
await page.goto(`${URL}/ui/`);
await page.getByLabel('API token').waitFor();
const load = await page.evaluate(() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const res = performance.getEntriesByType('resource');
  const of = (re) => res.filter((r) => re.test(r.name));
  const sum = (list, k) => list.reduce((a, r) => a + r[k], 0);
  const js = of(/\.js$/);
  return {
    js_files: js.length,
    js_compressed_bytes: sum(js, 'encodedBodySize'),
    js_bytes: sum(js, 'decodedBodySize'),
    css_compressed_bytes: sum(of(/\.css$/), 'encodedBodySize'),
    html_compressed_bytes: nav.encodedBodySize,
    dom_content_loaded_ms: nav.domContentLoadedEventEnd,
    load_event_ms: nav.loadEventEnd,
    // The app marks when its first page is rendered and takes input.
    interactive_ms: performance.getEntriesByName('nova:interactive')[0]?.startTime ?? -1,
  };
});
check(
  load.js_compressed_bytes > 0 && load.js_compressed_bytes < JS_BUDGET,
  `first load JavaScript ${load.js_compressed_bytes} B compressed, budget ${JS_BUDGET}`,
);
await accessible(page, 'login');
await photograph(page, 'login');

// --- The admin: overview, hosts, a new VM that runs and prints, its migration ---
step('admin logs in');
const t = Date.now();
await page.getByLabel('API token').fill(TOKENS.admin);
await page.getByRole('button', { name: 'Log in' }).click();
await page.getByText('2 ready', { exact: false }).first().waitFor();
await page.locator('.link-state.live').waitFor();
load.login_to_live_overview_ms = Date.now() - t;
// Alerts from /v1/alerts and the stream: the test's rule (every host is up) fires on
// each host, with its severity; the cluster's capacity forecast beside them.
step('overview: alerts and capacity');
const alertsSection = page.locator('section[aria-labelledby="alerts"]');
const ours = alertsSection.locator('li[data-alert^="dashboard-hosts-up:"]');
await ours.first().waitFor({ timeout: 60000 });
check((await ours.locator('.severity', { hasText: 'warning' }).count()) >= 1, 'the alert shows its severity');
await page.locator('section[aria-labelledby="capacity"] dd[data-resource]').first().waitFor();
console.log(`   alerts: ${(await alertsSection.locator('li').allInnerTexts()).join(' | ')}`);
await accessible(page, 'overview');
await photograph(page, 'overview');

step('hosts');
await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Hosts' }).click();
await page.getByRole('heading', { level: 1, name: 'Hosts' }).waitFor();
const hostIds = await page.locator('tr[data-host]').evaluateAll((rows) => rows.map((r) => r.dataset.host));
check(hostIds.length === 2, `two hosts listed: ${hostIds}`);
await accessible(page, 'hosts');
await photograph(page, 'hosts');

step('create a VM from the form');
await visit(page, '/vms/new', 'New VM');
await page.getByLabel('Tenant').selectOption('acme');
await page.getByLabel('Name').fill('web-1');
await page.getByLabel('Kernel', { exact: true }).fill(KERNEL);
await page.getByLabel('vCPUs').fill('1');
await page.getByLabel('Memory (MiB)').fill('64');
// `echo`: the guest answers each console line, for the live console below.
await page.getByLabel('Kernel command line (optional)').fill('nova.workload=echo');
await page.getByRole('button', { name: 'Add a label' }).click();
await page.getByLabel('Label 1 key').fill('app');
await page.getByLabel('Value').fill('web');
await accessible(page, 'new VM form');
await photograph(page, 'vm-new');
// A refusal names its field: a zero memory size marks the memory input.
await page.getByLabel('Memory (MiB)').fill('0');
await page.getByRole('button', { name: 'Create VM' }).click();
await page.locator('#vm-mem[aria-invalid="true"]').waitFor();
await page.getByLabel('Memory (MiB)').fill('64');
await page.getByRole('button', { name: 'Create VM' }).click();
await page.getByRole('heading', { level: 1, name: 'web-1' }).waitFor();
const vmUrl = page.url();
step('see it running, and its console');
await page.locator('.page-head .badge', { hasText: 'running' }).waitFor({ timeout: 60000 });
const consoleText = page.locator('pre.console');
for (let i = 0; i < 150 && !/NOVA-BOOTED/.test((await consoleText.textContent().catch(() => '')) ?? ''); i++) {
  await page.getByRole('button', { name: 'Read again' }).click();
  await page.waitForTimeout(200);
}
check(/NOVA-BOOTED/.test(await consoleText.textContent()), "the console shows the guest's output");

step('migrate it and watch the progress');
const migration = page.locator('#migration').locator('xpath=ancestor::section');
const sourceHost = await page.locator('dt:text-is("Host") + dd').textContent();
// Every value the progress bar shows, as the page renders it (the migration of a
// small guest takes tens of milliseconds: sampling would miss steps).
await migration.evaluate((section) => {
  window.novaSeen = [];
  new MutationObserver(() => {
    const p = section.querySelector('.op-progress progress');
    const v = p && `${p.value}`;
    if (v !== null && window.novaSeen[window.novaSeen.length - 1] !== v) window.novaSeen.push(v);
  }).observe(section, { subtree: true, childList: true, attributes: true });
});
await migration.getByRole('button', { name: 'Migrate' }).click();
const progress = migration.locator('.op-progress');
await migration
  .locator('.op-progress[data-state=succeeded], .op-progress[data-state=failed], .op-progress[data-state=cancelled]')
  .waitFor({ timeout: 120000 });
const state = await progress.getAttribute('data-state');
check(state === 'succeeded', `the migration ended ${state}: ${await progress.textContent()}`);
const seen = await page.evaluate(() => window.novaSeen.map(Number));
check(seen[seen.length - 1] === 100, `progress reached 100 (seen ${seen.join(', ')})`);
check(await progress.locator('progress').evaluate((p) => p.value === 100), 'the bar shows 100');
const downtime = await migration.locator('.downtime').textContent();
check(/\d.*ms|\d.*s/.test(downtime), `the downtime is shown: ${downtime}`);
await page.locator('dt:text-is("Host") + dd', { hasNotText: sourceHost }).waitFor();
console.log(`   progress seen: ${seen.join(' -> ')}; downtime ${downtime}`);
await accessible(page, 'VM detail');
await photograph(page, 'vm-detail');

step('its live console (xterm.js over the console WebSocket), on the host it moved to');
await page.getByRole('button', { name: 'Open console' }).click();
const term = page.locator('.live-console .console-screen');
await page.locator('.live-console .console-screen[data-state=open]').waitFor();
await term.locator('.xterm-rows').waitFor();
await term.click();
await page.keyboard.type('hello from the browser');
await page.keyboard.press('Enter');
await term.locator('.xterm-rows', { hasText: 'NOVA-ECHO text=hello from the browser' }).waitFor();
console.log(`   console: ${(await term.locator('.xterm-rows').innerText()).trim().split('\n').pop()}`);
await photograph(page, 'vm-console');
await page.getByRole('button', { name: 'Close console' }).click();

step('operations, audit log, access, a host');
await visit(page, '/operations', 'Operations');
await page.locator('tr[data-op] .badge', { hasText: 'succeeded' }).first().waitFor();
await accessible(page, 'operations');
await photograph(page, 'operations');
await visit(page, '/audit', 'Audit log');
await page.locator('tbody tr').first().waitFor();
await accessible(page, 'audit log');
await photograph(page, 'audit');
await visit(page, '/access', 'Access');
await page.getByRole('cell', { name: 'acme' }).first().waitFor();
await accessible(page, 'access');
await photograph(page, 'access');
await visit(page, `/hosts/${hostIds[0]}`, hostIds[0]);
step("a host's graphs from the metric history");
// The memory graph: an <svg> whose polyline has points, labelled for a screen reader.
const graphOf = (m) => page.locator(`figure.graph[data-metric="${m}"] svg`);
const memGraph = graphOf('host.mem_used_bytes');
// (A flat line has no height: attached, not "visible", is what to wait for.)
await memGraph.locator('polyline[points]').waitFor({ state: 'attached', timeout: 30000 });
const memPoints = (await memGraph.locator('polyline').getAttribute('points')).trim().split(/\s+/);
const inside = memPoints.map((p) => p.split(',').map(Number)).filter(([x, y]) => x >= 0 && x <= 320 && y >= 0 && y <= 120);
check(memPoints.length >= 1 && inside.length === memPoints.length, `the memory graph has points, inside the plot: ${memPoints.join(' ')}`);
check(/Memory used of .*points/.test(await memGraph.getAttribute('aria-label')), 'the graph says what it shows');
await graphOf('host.cpu').waitFor();
// Another range reads the history again.
const ranges = page.getByRole('group', { name: 'Range of the graphs' });
await ranges.getByRole('button', { name: '1d' }).click();
await page.locator('figure.graph[data-metric="host.mem_used_bytes"] svg[aria-label*="last 1d"]').waitFor();
await ranges.getByRole('button', { name: '1h' }).click();
await page.locator('figure.graph[data-metric="host.mem_used_bytes"] svg[aria-label*="last 1h"]').waitFor();
console.log(`   ${await memGraph.getAttribute('aria-label')}`);
await accessible(page, 'host detail');
await photograph(page, 'host-detail');
await page.getByRole('button', { name: 'Log out' }).click();

// --- A tenant operator: only its tenant's VMs; stops two at once ----------------
step('tenant operator: bulk stop');
await logIn(page, 'operator');
await visit(page, '/vms', 'Virtual machines');
for (const n of ['web-1', 'web-2', 'web-3']) await row(page, n).waitFor();
check((await row(page, OTHER_TENANT_VM.name).count()) === 0, "another tenant's VM is not listed");
// By keyboard alone: Space ticks a box, Enter presses a button, the dialog opens on
// its confirming button.
await page.getByLabel('Select web-2').focus();
await page.keyboard.press('Space');
await page.getByLabel('Select web-3').focus();
await page.keyboard.press('Space');
await page.getByRole('toolbar').getByRole('button', { name: 'Stop' }).focus();
await page.keyboard.press('Enter');
await page.getByRole('dialog').getByRole('button', { name: 'Stop' }).waitFor();
check(
  await page
    .getByRole('dialog')
    .getByRole('button', { name: 'Stop' })
    .evaluate((b) => b === document.activeElement),
  'the dialog focuses its confirming button',
);
await page.keyboard.press('Enter');
for (const n of ['web-2', 'web-3']) await row(page, n).locator('.badge', { hasText: 'stopped' }).waitFor({ timeout: 60000 });
check((await row(page, 'web-1').locator('.badge', { hasText: 'running' }).count()) === 1, 'web-1 still runs');
await accessible(page, 'VM list');
await photograph(page, 'vms');
await page.getByRole('button', { name: 'Log out' }).click();

// --- A viewer: sees, cannot change; the API refuses anyway ----------------------
step('viewer');
await logIn(page, 'viewer');
const nav = page.getByRole('navigation', { name: 'Main' });
check((await nav.getByRole('link', { name: 'Access' }).count()) === 0, 'no Access page for a viewer');
check((await nav.getByRole('link', { name: 'Hosts' }).count()) === 0, 'no Hosts page for a tenant');
await visit(page, '/vms', 'Virtual machines');
await row(page, 'web-1').waitFor();
check((await row(page, OTHER_TENANT_VM.name).count()) === 0, "another tenant's VM is not listed for the viewer");
check((await page.locator('input[type=checkbox]').count()) === 0, 'a viewer gets no selection');
check((await page.getByRole('toolbar').count()) === 0, 'a viewer gets no bulk actions');
check((await page.getByRole('link', { name: 'New VM' }).count()) === 0, 'a viewer gets no New VM');
await page.goto(vmUrl);
await page.getByRole('heading', { level: 1, name: 'web-1' }).waitFor();
for (const b of ['Start', 'Stop', 'Delete', 'Migrate'])
  check((await page.getByRole('button', { name: b, exact: true }).count()) === 0, `a viewer gets no ${b} button`);
await photograph(page, 'vm-detail-viewer');
// The viewer watches the console (its backlog has the operator's echo) but cannot type.
await page.getByRole('button', { name: 'Open console' }).click();
await page
  .locator('.live-console .console-screen .xterm-rows', { hasText: 'NOVA-ECHO text=hello from the browser' })
  .waitFor();
await page.getByText('Read-only: a viewer cannot type.').waitFor();
await page.locator('.live-console .console-screen').click();
await page.keyboard.type('viewer typing');
await page.keyboard.press('Enter');
await page.waitForTimeout(1000);
check(
  !(await page.locator('.live-console .console-screen .xterm-rows').innerText()).includes('text=viewer typing'),
  "a viewer's typing does not reach the guest",
);
await page.getByRole('button', { name: 'Close console' }).click();
const refused = await page.evaluate(async (id) => {
  const r = await fetch(`/v1/vms/${id}/stop`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${sessionStorage.getItem('nova.token')}` },
  });
  return r.status;
}, vmUrl.split('/').pop());
check(refused === 403, `the API refuses a viewer's stop (${refused})`);
await page.goto(`${URL}/ui/vms/${OTHER_TENANT_VM.id}`);
await page.getByText('No such VM').waitFor();

await browser.close();
console.log(`MEASURE ${JSON.stringify(load)}`);
if (problems.length) {
  console.error(problems.join('\n'));
  process.exit(1);
}
console.log('dashboard story: ok');
