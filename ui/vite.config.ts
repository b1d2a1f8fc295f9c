/**
 * The console's build: `npx vite build --config ui/vite.config.ts` writes ui/dist, which the
 * server serves at `/` (SPA fallback to index.html). The server's CSP allows only same-origin
 * scripts and styles, so every style must end up in an emitted .css file: Svelte's component
 * CSS is compiled as `external` (emitCss) and bundled, never injected at runtime.
 */
import { svelte } from '@sveltejs/vite-plugin-svelte';
import { defineConfig } from 'vite';

const root = decodeURIComponent(new URL('.', import.meta.url).pathname);

export default defineConfig({
  root,
  base: '/',
  publicDir: 'public',
  plugins: [svelte({ configFile: false, emitCss: true })],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    // Never inline assets as data: URIs into JS/CSS (keeps the CSP story simple).
    assetsInlineLimit: 0,
    sourcemap: false,
    modulePreload: { polyfill: false },
  },
  server: {
    // `vite dev` against a running console: the API and SSE stay same-origin via the proxy.
    proxy: { '/api': { target: 'http://127.0.0.1:8080', changeOrigin: false } },
  },
});
