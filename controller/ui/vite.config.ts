// Builds the dashboard into dist/ for nova-controller to embed: hashed file names
// under assets/ (cached for a year), no inline script or style (the controller's
// Content-Security-Policy allows neither), gzip and brotli copies of every text file,
// and dist/assets.rs, the table of files that src/api/ui.rs includes with
// include_bytes!. The build is deterministic: `tests/tests/dashboard.rs` rebuilds it
// and compares it with the committed dist/.
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { brotliCompressSync, constants, gzipSync } from 'node:zlib';
import { defineConfig, type Plugin } from 'vite';

const COMPRESSIBLE = /\.(html|js|css|svg|json|txt)$/;

function files(dir: string): string[] {
  return readdirSync(dir)
    .sort()
    .flatMap((f) => (statSync(join(dir, f)).isDirectory() ? files(join(dir, f)) : [join(dir, f)]));
}

/** Writes the compressed copies and the Rust table of dist/. */
function embedInController(): Plugin {
  return {
    name: 'nova-embed',
    apply: 'build',
    writeBundle(options) {
      const dir = options.dir!;
      const rows: string[] = [];
      const at = (p: string) => `include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/dist/${p}"))`;
      for (const file of files(dir)) {
        const path = relative(dir, file).split('\\').join('/');
        if (path === 'assets.rs' || /\.(gz|br)$/.test(path)) continue;
        const body = readFileSync(file);
        const etag = createHash('sha256').update(body).digest('hex').slice(0, 20);
        let gzip = 'None';
        let br = 'None';
        if (COMPRESSIBLE.test(path) && body.length > 512) {
          writeFileSync(`${file}.gz`, gzipSync(body, { level: 9 }));
          writeFileSync(`${file}.br`, brotliCompressSync(body, { params: { [constants.BROTLI_PARAM_QUALITY]: 11 } }));
          gzip = `Some(${at(`${path}.gz`)})`;
          br = `Some(${at(`${path}.br`)})`;
        }
        rows.push(
          `    Asset {\n        path: ${JSON.stringify(path)},\n        etag: "\\"${etag}\\"",\n` +
            `        body: ${at(path)},\n        gzip: ${gzip},\n        br: ${br},\n    },`,
        );
      }
      writeFileSync(
        join(dir, 'assets.rs'),
        `// The dashboard's built files, written by \`npm run build\` (controller/ui/vite.config.ts).\n` +
          `// Do not edit: \`make ui\` rewrites it.\n[\n${rows.join('\n')}\n]\n`,
      );
    },
  };
}

export default defineConfig({
  base: '/ui/',
  esbuild: { jsx: 'automatic', jsxImportSource: 'preact' },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    reportCompressedSize: false,
  },
  plugins: [embedInController()],
});
