// The VM form generated from a template's parameters, in a real browser (Debian's
// Chromium driven by playwright-core from controller/ui's node_modules), against the
// controller tests/tests/templates.rs started with a template `counter` whose
// parameters are `vcpus` (integer 1..=2, default 1) and `hostname` (required). The
// form must show one input per parameter (a number input with the bounds and the
// default; a text input marked required), mark the parameter the API refuses, and
// create the VM with what was typed. Prints `CREATED <vm id>`; exits non-zero on any
// failure. A screenshot lands in NOVA_SCREENSHOTS.
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
const TOKEN = env('NOVA_TOKEN');
const require = createRequire(join(UI_DIR, 'package.json'));
const { chromium } = require('playwright-core');
const AXE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
const problems = [];
const check = (ok, what) => {
  if (!ok) throw new Error(`check failed: ${what}`);
};

mkdirSync(SHOTS, { recursive: true });
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
});
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(20000);
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('response', (r) => {
    if (r.status() >= 500) problems.push(`${r.status()} from ${r.url()}`);
  });

  await page.goto(`${URL}/ui/`);
  await page.getByLabel('API token').fill(TOKEN);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('heading', { level: 1, name: 'Overview' }).waitFor();

  // From the VM list to the template form.
  await page.goto(`${URL}/ui/vms`);
  await page.getByRole('link', { name: 'From a template' }).click();
  await page.getByRole('heading', { level: 1, name: 'New VM from a template' }).waitFor();
  await page.getByLabel('Template').selectOption({ label: 'counter (system)' });

  // One input per parameter, as the schema says.
  const vcpus = page.locator('[name="parameters.vcpus"]');
  await vcpus.waitFor();
  check((await vcpus.getAttribute('type')) === 'number', 'vcpus is a number input');
  check((await vcpus.getAttribute('min')) === '1' && (await vcpus.getAttribute('max')) === '2', 'vcpus carries its bounds');
  check((await vcpus.inputValue()) === '1', 'vcpus starts at its default');
  const hostname = page.getByLabel('hostname (required)');
  check((await hostname.getAttribute('name')) === 'parameters.hostname', 'hostname input named after its parameter');

  // A bad hostname: the API's refusal marks that input.
  await page.getByLabel('VM name').fill('ui-clone');
  await hostname.fill('not_a_host');
  await page.getByRole('button', { name: 'Create VM' }).click();
  const alert = page.locator('#form-error');
  await alert.waitFor();
  check((await alert.textContent()).includes('parameters.hostname'), 'the refusal names the parameter');
  check((await hostname.getAttribute('aria-invalid')) === 'true', 'the hostname input is marked invalid');

  const found = await page.evaluate(async (src) => {
    if (!window.axe) (0, eval)(src);
    const r = await window.axe.run(document, { resultTypes: ['violations'] });
    return r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical').map((v) => v.id);
  }, AXE);
  for (const v of found) problems.push(`axe on the template form: ${v}`);
  await page.screenshot({ path: join(SHOTS, 'vm-template-1280.png'), fullPage: true });

  // Good values: the VM is made and the page moves to it.
  await hostname.fill('ui-1');
  await vcpus.fill('2');
  await page.getByRole('button', { name: 'Create VM' }).click();
  await page.waitForURL(/\/ui\/vms\/vm-[0-9a-f]+$/);
  const id = page.url().split('/').pop();
  console.log(`CREATED ${id}`);
} finally {
  await browser.close();
}
if (problems.length) {
  console.error(problems.join('\n'));
  process.exit(1);
}
