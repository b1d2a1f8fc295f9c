# Breakglass console image: the Fastify server and the Temporal worker in one Node process
# (BREAKGLASS_ROLES=server|worker splits them, as the Helm chart's worker.separate does).
#
#   docker build -t breakglass:0.1.0 .
#   docker run --read-only --tmpfs /tmp -v breakglass-data:/data \
#     -v /path/to/config.json:/etc/breakglass/config.json:ro -v /path/to/secrets:/etc/breakglass/secrets:ro \
#     -p 8080:8080 breakglass:0.1.0
#
# Nothing secret is baked in: the config (BREAKGLASS_CONFIG) and every key file are mounted at
# run time. The config must set listen.host to 0.0.0.0 and auth.mode to token or proxy (the
# server refuses the loopback-only "lab" mode on a non-loopback address).
#
# Base: Debian (glibc). The Temporal SDK's native addon ships glibc builds only, so no Alpine.
# Every stage uses the same exact Node tag so the production node_modules are installed by the
# runtime's own Node and npm. Bump the tag deliberately (and test/dockerfile.test.ts checks it
# stays an exact version).

# ---- build: all dependencies, then the UI, the bundled server and the workflow bundle ----
FROM node:20.20.2-bookworm-slim AS build
WORKDIR /src
ENV npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
COPY package.json package-lock.json ./
# --ignore-scripts: no dependency runs code at install time; the Temporal addon, esbuild,
# rolldown and swc all ship prebuilt per-platform binaries as packages, and ssh2's optional
# native crypto binding is not needed (it falls back to pure JS).
RUN npm ci --ignore-scripts
COPY tsconfig.json ./
COPY workflows ./workflows
COPY activities ./activities
COPY server ./server
COPY ui ./ui
COPY scripts/build-dist.ts ./scripts/build-dist.ts
# ui/dist: the Svelte console; dist/server.mjs: server/main.ts bundled (packages external);
# dist/workflow-bundle.js: the workflow code prebuilt, so production never runs webpack.
RUN npm run build:ui \
 && node_modules/.bin/tsx scripts/build-dist.ts dist \
 && test -s ui/dist/index.html && test -s dist/server.mjs && test -s dist/workflow-bundle.js

# ---- prod-deps: production dependencies only, for the runtime's platform ----
FROM node:20.20.2-bookworm-slim AS prod-deps
WORKDIR /app
ENV npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
COPY package.json package-lock.json ./
# The Temporal core-bridge package carries prebuilt addons for every OS; keep only this
# platform's (fail the build if it is missing) and drop the Rust sources it ships.
RUN npm ci --omit=dev --ignore-scripts \
 && npm cache clean --force \
 && target="$(node -p "({ x64: 'x86_64', arm64: 'aarch64' })[process.arch] + '-unknown-linux-gnu'")" \
 && bridge=node_modules/@temporalio/core-bridge \
 && test -f "$bridge/releases/$target/index.node" \
 && find "$bridge/releases" -mindepth 1 -maxdepth 1 ! -name "$target" -exec rm -rf {} + \
 && rm -rf "$bridge/sdk-core"

# ---- runtime ----
FROM node:20.20.2-bookworm-slim AS runtime
LABEL org.opencontainers.image.title="breakglass" \
      org.opencontainers.image.description="Emergency console for a wedged devvm (Temporal-durable, Claude-assisted)"
# A fixed numeric user (Kubernetes checks runAsNonRoot against the numeric id). The package
# managers are not needed at run time: remove them (less to patch, less to abuse).
RUN groupadd --system --gid 10001 breakglass \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin breakglass \
 && install -d -o 10001 -g 10001 -m 0750 /data \
 && rm -rf /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/corepack \
           /usr/local/bin/npm /usr/local/bin/npx /usr/local/bin/corepack \
           /opt/yarn-* /usr/local/bin/yarn /usr/local/bin/yarnpkg
WORKDIR /app
# Application files stay owned by root: the process can read but never rewrite its own code.
COPY --from=prod-deps /app/node_modules ./node_modules
COPY --from=build /src/package.json ./package.json
COPY --from=build /src/dist ./dist
# The server serves ../ui/dist relative to dist/server.mjs, i.e. /app/ui/dist.
COPY --from=build /src/ui/dist ./ui/dist
# The failure converter the worker loads by path (history encryption covers error messages too).
COPY --from=build /src/workflows/encoded-failures.cjs ./workflows/encoded-failures.cjs
# Writes go only to the data dir (forensics copies; a volume) and /tmp: the root filesystem
# can be read-only. The worker loads the prebuilt workflow bundle instead of bundling at start.
ENV NODE_ENV=production \
    BREAKGLASS_WORKFLOW_BUNDLE=/app/dist/workflow-bundle.js \
    BREAKGLASS_DATA_DIR=/data \
    BREAKGLASS_CONFIG=/etc/breakglass/config.json
USER 10001:10001
EXPOSE 8080
# /healthz says the process is up (readiness, /readyz, is the orchestrator's business).
# No curl in the slim image: Node's own fetch, with a deadline.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 8080) + '/healthz', { signal: AbortSignal.timeout(4000) }).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# Node is PID 1: server/main.ts handles SIGTERM/SIGINT itself (graceful close of the HTTP
# server and the worker).
ENTRYPOINT ["node", "--enable-source-maps", "dist/server.mjs"]
