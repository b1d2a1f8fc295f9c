import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // The Temporal worker's native addon crashes inside worker threads, and our
    // fixtures (sshd, Temporal dev server) are real processes: isolate by process.
    pool: 'forks',
    // Two files at a time: most suites wait on real processes (timeouts, guest boots), so a
    // second fork halves the wall time on 2 cores.
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 120_000,
    globalSetup: ['test/global-setup.ts'],
  },
});
