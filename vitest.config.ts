import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Integration tests start real sshd and talk to the real broker; two cores
    // can run only a few of those at once without starving their timers.
    maxWorkers: 2,
  },
});
